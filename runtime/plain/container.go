// Package plain runs the OCI containers that are not unikernels (a pod's
// pause container, a sidecar) with runc through go-runc, and the processes
// exec'd into them.
package plain

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/containerd/v2/pkg/sys/reaper"
	"github.com/containerd/errdefs"
	runc "github.com/containerd/go-runc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/cgroup"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/config"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/lifecycle"
)

// Container is an OCI container that is not a unikernel, run by runc
// through go-runc, so that a whole pod (its pause container, sidecars)
// works under this shim. The caller must set runc.Monitor to the reaper
// that owns wait4 in its process (containerd's reaper.Default in a shim).
type Container struct {
	lifecycle.Init
	runc       *runc.Runc
	cgroupPath string
}

// runcFor returns go-runc for namespace ns, its state under the runtime's
// state dir (never the system runc's).
func runcFor(host config.HostConfig, namespace, bundle string) *runc.Runc {
	return &runc.Runc{
		Command:   "runc",
		Root:      filepath.Join(host.StateDir(), "runc", namespace),
		Log:       filepath.Join(bundle, "runc-log.json"),
		LogFormat: runc.JSON,
	}
}

// stdioIO hands the caller's stdio files to runc create; runc passes them
// to the container's init.
type stdioIO struct{ s lifecycle.Stdio }

func (stdioIO) Close() error          { return nil }
func (stdioIO) Stdin() io.WriteCloser { return nil }
func (stdioIO) Stdout() io.ReadCloser { return nil }
func (stdioIO) Stderr() io.ReadCloser { return nil }
func (i stdioIO) Set(cmd *exec.Cmd)   { setStdio(cmd, i.s) }
func setStdio(cmd *exec.Cmd, s lifecycle.Stdio) {
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nilOr(s.Stdin), nilOr(s.Stdout), nilOr(s.Stderr)
}
func nilOr(f *os.File) io.ReadWriter {
	if f == nil {
		return nil
	}
	return f
}

// Create runs `runc create` for the bundle, whose rootfs the caller
// has mounted (and recorded in st).
func Create(ctx context.Context, opts lifecycle.CreateOptions, spec *specs.Spec, st lifecycle.PersistedState) (_ *Container, retErr error) {
	if spec.Process != nil && spec.Process.Terminal {
		return nil, fmt.Errorf("plain container %s: a terminal is not supported for containers run by runc: %w", opts.ID, errdefs.ErrNotImplemented)
	}
	p := &Container{
		Init: lifecycle.NewInit(opts.Bundle, st),
		runc: runcFor(opts.Host, opts.Namespace, opts.Bundle),
	}
	if spec.Linux != nil {
		p.cgroupPath = spec.Linux.CgroupsPath
	}
	// Recorded before runc create: a shim dying inside it leaves a runc
	// init that the delete command must remove.
	if err := p.Record(func(st *lifecycle.PersistedState) { st.Runc, st.RuncRoot = true, p.runc.Root }); err != nil {
		return nil, err
	}
	// runc's init inherits runc create's stdio; left unset, go-runc would
	// capture it in a pipe the init holds open forever and create would
	// never return. What the request does not wire goes to /dev/null.
	stdio, closeNull, err := withDevNull(opts.Stdio)
	if err != nil {
		return nil, err
	}
	defer closeNull()
	opts.Stdio = stdio
	// Subscribe before runc create: the init may exit before its pid is
	// read back, and its exit must not be missed.
	ec := reaper.Default.Subscribe()
	pidFile := filepath.Join(opts.Bundle, "init.pid")
	if err := p.runc.Create(ctx, opts.ID, opts.Bundle, &runc.CreateOpts{PidFile: pidFile, IO: stdioIO{opts.Stdio}}); err != nil {
		reaper.Default.Unsubscribe(ec)
		_ = p.runc.Delete(context.WithoutCancel(ctx), opts.ID, &runc.DeleteOpts{Force: true})
		return nil, fmt.Errorf("runc create: %w%s", err, runcLogError(p.runc.Log))
	}
	pid, err := runc.ReadPidFile(pidFile)
	if err != nil {
		reaper.Default.Unsubscribe(ec)
		_ = p.runc.Delete(context.WithoutCancel(ctx), opts.ID, &runc.DeleteOpts{Force: true})
		return nil, fmt.Errorf("read init pid: %w", err)
	}
	lifecycle.CrashPoint("plain:created")
	start, _ := lifecycle.ProcessStartTime(pid)
	err = p.Record(func(st *lifecycle.PersistedState) { st.Pid, st.PidStartTime = pid, start })
	go p.WatchExit(ec, pid)
	if err != nil {
		_ = p.runc.Delete(context.WithoutCancel(ctx), opts.ID, &runc.DeleteOpts{Force: true})
		return nil, err
	}
	return p, nil
}

// runcLogError returns the last error runc logged, to make its failures
// say why.
func runcLogError(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	var last string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var entry struct {
			Level string `json:"level"`
			Msg   string `json:"msg"`
		}
		if json.Unmarshal(sc.Bytes(), &entry) == nil && entry.Level == "error" {
			last = entry.Msg
		}
	}
	if last == "" {
		return ""
	}
	return ": " + last
}

// OOM is nil: a plain container's OOM kills are read through OOMKilled.
func (p *Container) OOM() <-chan struct{} { return nil }

// OOMKilled tells whether the kernel's OOM killer ended a process of the
// container (runc's cgroup).
func (p *Container) OOMKilled() bool {
	if p.cgroupPath == "" {
		return false
	}
	cg, err := cgroup.Load(p.cgroupPath)
	return err == nil && cg.OOMKills() > 0
}

// Start runs the container's process (runc start).
func (p *Container) Start(ctx context.Context) error {
	return p.Do(lifecycle.EventStart, func(lifecycle.Status) error {
		if err := p.runc.Start(ctx, p.ID()); err != nil {
			return fmt.Errorf("runc start: %w%s", err, runcLogError(p.runc.Log))
		}
		return nil
	})
}

func (p *Container) Kill(ctx context.Context, sig syscall.Signal, all bool) error {
	return p.Do(lifecycle.EventKill, func(lifecycle.Status) error { return p.kill(ctx, sig, all) })
}

func (p *Container) kill(ctx context.Context, sig syscall.Signal, all bool) error {
	if err := p.runc.Kill(ctx, p.ID(), int(sig), &runc.KillOpts{All: all}); err != nil {
		msg := runcLogError(p.runc.Log)
		st := p.Persisted()
		initGone := st.PidStartTime != 0 && !lifecycle.SameProcess(st.Pid, st.PidStartTime)
		if processGone(err.Error()+msg) || initGone {
			// The process ended before the reaper told us: the same
			// NotFound as checkAlive's, which containerd (a CRI stop, a
			// pod's teardown) takes as done. runc words it several ways,
			// so the init, a zombie or gone by now, is asked too. Found
			// by critest, twice.
			return fmt.Errorf("container %s: process already finished: %w", p.ID(), errdefs.ErrNotFound)
		}
		return fmt.Errorf("runc kill: %w%s", err, msg)
	}
	return nil
}

// processGone tells whether runc's kill failed because the container's
// process has already exited: containerd's runc shim's readings, and the
// cgroup v1 freeze that runc kill --all does first, refused for a
// container whose init has exited.
func processGone(msg string) bool {
	for _, s := range []string{"container not running", "process already finished", "no such process",
		"invalid state transition from stopped to paused"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

func (p *Container) Delete(ctx context.Context) (lifecycle.ExitStatus, error) {
	return p.DeleteOnce(func(from lifecycle.Status) error {
		if !from.Started() {
			_ = unix.Kill(p.Pid(), unix.SIGKILL)
			select {
			case <-p.Exited():
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(10 * time.Second):
			}
		}
		st := p.Persisted()
		return Release(ctx, p.Bundle(), &st)
	})
}

func (p *Container) Pids(ctx context.Context) ([]int, error) {
	if p.HasExited() {
		return []int{p.Pid()}, nil
	}
	pids, err := p.runc.Ps(ctx, p.ID())
	if err != nil {
		return nil, fmt.Errorf("runc ps: %w", err)
	}
	return pids, nil
}

func (p *Container) Pause(ctx context.Context) error {
	return p.Do(lifecycle.EventPause, func(lifecycle.Status) error { return p.runc.Pause(ctx, p.ID()) })
}

func (p *Container) Resume(ctx context.Context) error {
	return p.Do(lifecycle.EventResume, func(lifecycle.Status) error { return p.runc.Resume(ctx, p.ID()) })
}

func (p *Container) Metrics(ctx context.Context) (any, error) {
	if p.cgroupPath == "" {
		return nil, fmt.Errorf("container %s has no cgroup: %w", p.ID(), errdefs.ErrNotFound)
	}
	cg, err := cgroup.Load(p.cgroupPath)
	if err != nil {
		return nil, err
	}
	return cg.Metrics()
}

func (p *Container) Update(ctx context.Context, res *specs.LinuxResources) error {
	return p.runc.Update(ctx, p.ID(), res)
}

// Release undoes a plain container from its persisted state alone: runc's
// container, then what every container holds (lifecycle.Release).
func Release(ctx context.Context, bundle string, st *lifecycle.PersistedState) error {
	return lifecycle.Release(ctx, nil, bundle, st, deletePlain(ctx, st))
}

// deletePlain is the runc part of a plain container's release.
func deletePlain(ctx context.Context, st *lifecycle.PersistedState) error {
	r := &runc.Runc{Command: "runc", Root: st.RuncRoot}
	err := r.Delete(ctx, st.ID, &runc.DeleteOpts{Force: true})
	if err != nil && !strings.Contains(err.Error(), "not exist") {
		return fmt.Errorf("runc delete %s: %w", st.ID, err)
	}
	return nil
}

// withDevNull fills the unset files of s with /dev/null.
func withDevNull(s lifecycle.Stdio) (lifecycle.Stdio, func(), error) {
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return s, func() {}, err
	}
	for _, f := range []**os.File{&s.Stdin, &s.Stdout, &s.Stderr} {
		if *f == nil {
			*f = null
		}
	}
	return s, func() { null.Close() }, nil
}
