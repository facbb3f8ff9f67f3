package runtime

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
	runc "github.com/containerd/go-runc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// PlainContainer is an OCI container that is not a unikernel, run by runc
// through go-runc, so that a whole pod (its pause container, sidecars)
// works under this shim. The caller must set runc.Monitor to the reaper
// that owns wait4 in its process (containerd's reaper.Default in a shim).
type PlainContainer struct {
	lifecycle
	runc       *runc.Runc
	cgroupPath string
}

// runcFor returns go-runc for namespace ns, its state under the runtime's
// state dir (never the system runc's).
func runcFor(host HostConfig, namespace, bundle string) *runc.Runc {
	return &runc.Runc{
		Command:   "runc",
		Root:      filepath.Join(host.StateDir(), "runc", namespace),
		Log:       filepath.Join(bundle, "runc-log.json"),
		LogFormat: runc.JSON,
	}
}

// stdioIO hands the caller's stdio files to runc create; runc passes them
// to the container's init.
type stdioIO struct{ s Stdio }

func (stdioIO) Close() error          { return nil }
func (stdioIO) Stdin() io.WriteCloser { return nil }
func (stdioIO) Stdout() io.ReadCloser { return nil }
func (stdioIO) Stderr() io.ReadCloser { return nil }
func (i stdioIO) Set(cmd *exec.Cmd)   { setStdio(cmd, i.s) }
func setStdio(cmd *exec.Cmd, s Stdio) {
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nilOr(s.Stdin), nilOr(s.Stdout), nilOr(s.Stderr)
}
func nilOr(f *os.File) io.ReadWriter {
	if f == nil {
		return nil
	}
	return f
}

// createPlain runs `runc create` for the bundle, whose rootfs the caller
// has mounted (and recorded in st).
func createPlain(ctx context.Context, opts CreateOptions, spec *specs.Spec, st persistedState) (_ *PlainContainer, retErr error) {
	if spec.Process != nil && spec.Process.Terminal {
		return nil, fmt.Errorf("plain container %s: a terminal is not supported for containers run by runc: %w", opts.ID, errNotImplemented)
	}
	p := &PlainContainer{
		lifecycle: newLifecycle(opts.ID, opts.Namespace, opts.Bundle),
		runc:      runcFor(opts.Host, opts.Namespace, opts.Bundle),
	}
	p.persist = st
	if spec.Linux != nil {
		p.cgroupPath = spec.Linux.CgroupsPath
	}
	// Recorded before runc create: a shim dying inside it leaves a runc
	// init that the delete command must remove.
	if err := p.record(func(st *persistedState) { st.Runc, st.RuncRoot = true, p.runc.Root }); err != nil {
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
	crashPoint("plain:created")
	start, _ := processStartTime(pid)
	err = p.record(func(st *persistedState) { st.Pid, st.PidStartTime = pid, start })
	go p.watchExit(ec, pid)
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
func (p *PlainContainer) OOM() <-chan struct{} { return nil }

// OOMKilled tells whether the kernel's OOM killer ended a process of the
// container (runc's cgroup).
func (p *PlainContainer) OOMKilled() bool {
	if p.cgroupPath == "" {
		return false
	}
	cg, err := loadCgroup(p.cgroupPath)
	return err == nil && cg.OOMKills() > 0
}

func (p *PlainContainer) Start(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.state != StatusCreated {
		return fmt.Errorf("container %s is %s, not created: %w", p.id, p.state, errFailedPrecondition)
	}
	if err := p.runc.Start(ctx, p.id); err != nil {
		return fmt.Errorf("runc start: %w%s", err, runcLogError(p.runc.Log))
	}
	p.state = StatusRunning
	return nil
}

func (p *PlainContainer) Kill(ctx context.Context, sig syscall.Signal, all bool) error {
	if _, err := p.checkAlive(); err != nil {
		return err
	}
	if err := p.runc.Kill(ctx, p.id, int(sig), &runc.KillOpts{All: all}); err != nil {
		msg := runcLogError(p.runc.Log)
		st := p.persisted()
		initGone := st.PidStartTime != 0 && !sameProcess(st.Pid, st.PidStartTime)
		if processGone(err.Error()+msg) || initGone {
			// The process ended before the reaper told us: the same
			// NotFound as checkAlive's, which containerd (a CRI stop, a
			// pod's teardown) takes as done. runc words it several ways,
			// so the init, a zombie or gone by now, is asked too. Found
			// by critest, twice.
			return fmt.Errorf("container %s: process already finished: %w", p.id, errNotFound)
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

func (p *PlainContainer) Delete(ctx context.Context) (ExitStatus, error) {
	state, err := p.beginDelete()
	if err != nil {
		return ExitStatus{}, err
	}
	if state == StatusCreated {
		_ = unix.Kill(p.Pid(), unix.SIGKILL)
		select {
		case <-p.exited:
		case <-ctx.Done():
			p.endDelete(false)
			return ExitStatus{}, ctx.Err()
		case <-time.After(10 * time.Second):
		}
	}
	st := p.persisted()
	if err := releaseResources(ctx, nil, p.bundle, &st); err != nil {
		p.endDelete(false)
		return ExitStatus{}, err
	}
	return p.endDelete(true), nil
}

func (p *PlainContainer) Pids(ctx context.Context) ([]int, error) {
	if p.status() == StatusStopped {
		return []int{p.Pid()}, nil
	}
	pids, err := p.runc.Ps(ctx, p.id)
	if err != nil {
		return nil, fmt.Errorf("runc ps: %w", err)
	}
	return pids, nil
}

func (p *PlainContainer) Pause(ctx context.Context) error {
	return p.transition(StatusRunning, StatusPaused, func() error { return p.runc.Pause(ctx, p.id) })
}

func (p *PlainContainer) Resume(ctx context.Context) error {
	return p.transition(StatusPaused, StatusRunning, func() error { return p.runc.Resume(ctx, p.id) })
}

func (p *PlainContainer) Metrics(ctx context.Context) (any, error) {
	if p.cgroupPath == "" {
		return nil, fmt.Errorf("container %s has no cgroup: %w", p.id, errNotFound)
	}
	cg, err := loadCgroup(p.cgroupPath)
	if err != nil {
		return nil, err
	}
	return cg.Metrics()
}

func (p *PlainContainer) Update(ctx context.Context, res *specs.LinuxResources) error {
	return p.runc.Update(ctx, p.id, res)
}

// deletePlain is the runc part of cleanup after a dead shim.
func deletePlain(ctx context.Context, st *persistedState) error {
	r := &runc.Runc{Command: "runc", Root: st.RuncRoot}
	err := r.Delete(ctx, st.ID, &runc.DeleteOpts{Force: true})
	if err != nil && !strings.Contains(err.Error(), "not exist") {
		return fmt.Errorf("runc delete %s: %w", st.ID, err)
	}
	return nil
}

// withDevNull fills the unset files of s with /dev/null.
func withDevNull(s Stdio) (Stdio, func(), error) {
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
