package unikernel

import (
	"fmt"
	"os"
	"os/exec"
	goruntime "runtime"
	"syscall"

	"github.com/containerd/containerd/v2/pkg/sys/reaper"
	runc "github.com/containerd/go-runc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// nsPlan says which namespaces the launcher is cloned into (new) and which
// it joins by path.
type nsPlan struct {
	cloneFlags uintptr
	join       []nsJoin
}

type nsJoin struct {
	path string
	kind int // CLONE_NEW* constant for setns
}

// planNamespaces maps the spec's namespaces. pid and mount are always new:
// the monitor is PID 1 of its own pid namespace and its confined root lives
// in its own mount namespace. A user namespace is not supported.
func planNamespaces(spec *specs.Spec) (nsPlan, error) {
	p := nsPlan{cloneFlags: unix.CLONE_NEWPID | unix.CLONE_NEWNS}
	if spec.Linux == nil {
		return p, nil
	}
	for _, ns := range spec.Linux.Namespaces {
		var flag int
		switch ns.Type {
		case specs.PIDNamespace, specs.MountNamespace:
			continue
		case specs.NetworkNamespace:
			flag = unix.CLONE_NEWNET
		case specs.IPCNamespace:
			flag = unix.CLONE_NEWIPC
		case specs.UTSNamespace:
			flag = unix.CLONE_NEWUTS
		case specs.CgroupNamespace:
			flag = unix.CLONE_NEWCGROUP
		case specs.UserNamespace:
			return p, fmt.Errorf("user namespaces are not supported for unikernel containers")
		default:
			continue
		}
		if ns.Path == "" {
			p.cloneFlags |= uintptr(flag)
		} else {
			p.join = append(p.join, nsJoin{path: ns.Path, kind: flag})
		}
	}
	return p, nil
}

// startInNamespaces starts cmd, registered with the reaper, inside the
// joined namespaces. setns of net, ipc, uts and cgroup namespaces applies
// to the calling OS thread only, and a child forked from a thread inherits
// that thread's namespaces; so the joins and the fork happen on one locked
// thread, which is then discarded (the goroutine exits still locked)
// rather than returned to the Go scheduler in foreign namespaces. The
// child must not use Pdeathsig: it would fire when that thread exits.
func startInNamespaces(cmd *exec.Cmd, p nsPlan) (chan runc.Exit, error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Cloneflags |= p.cloneFlags
	type result struct {
		ec  chan runc.Exit
		err error
	}
	done := make(chan result, 1)
	go func() {
		goruntime.LockOSThread()
		if len(p.join) == 0 {
			defer goruntime.UnlockOSThread()
		}
		for _, j := range p.join {
			if err := setns(j); err != nil {
				done <- result{err: err}
				return
			}
		}
		ec, err := reaper.Default.Start(cmd)
		done <- result{ec: ec, err: err}
	}()
	r := <-done
	return r.ec, r.err
}

func setns(j nsJoin) error {
	f, err := os.Open(j.path)
	if err != nil {
		return fmt.Errorf("open namespace %s: %w", j.path, err)
	}
	defer f.Close()
	if err := unix.Setns(int(f.Fd()), j.kind); err != nil {
		return fmt.Errorf("join namespace %s: %w", j.path, err)
	}
	return nil
}
