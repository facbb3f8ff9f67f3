package plain

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/console"
	"github.com/containerd/containerd/v2/pkg/sys/reaper"
	"github.com/containerd/errdefs"
	runc "github.com/containerd/go-runc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/lifecycle"
)

// Exec is an extra process in a running plain container (a sidecar's
// probe, `kubectl exec`), run by `runc exec --detach` as containerd's runc
// shim does: runc exits once the process runs, and the process, reparented
// to this subreaper, is reaped by the one reaper.
type Exec struct {
	id        string
	container *Container
	spec      specs.Process

	exited chan struct{}
	// console is the pty master of a terminal exec, runc's since Start.
	console console.Console
	mu      sync.Mutex
	pid     int
	state   lifecycle.Status
	exit    lifecycle.ExitStatus
	deleted bool
}

// NewExec checks and prepares process spec as exec id in the container;
// Start runs it. Nothing is opened until Start.
func (p *Container) NewExec(id string, spec *specs.Process) (lifecycle.Process, error) {
	if p.Status() != lifecycle.StatusRunning {
		return nil, fmt.Errorf("container %s is %s, not running: %w", p.ID(), p.Status(), errdefs.ErrFailedPrecondition)
	}
	if spec == nil || len(spec.Args) == 0 {
		return nil, fmt.Errorf("exec %s: no process args: %w", id, errdefs.ErrInvalidArgument)
	}
	return &Exec{id: id, container: p, spec: *spec, exited: make(chan struct{}), state: lifecycle.StatusCreated}, nil
}

// ID returns the exec ID.
func (e *Exec) ID() string { return e.id }

// Pid returns the exec'd process's pid, 0 before Start.
func (e *Exec) Pid() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.pid
}

// Start runs the process with stdio and returns once it runs. The caller
// keeps stdio's files and closes them after Start. A terminal exec takes
// no stdio: its pty master is Console's.
func (e *Exec) Start(ctx context.Context, stdio lifecycle.Stdio) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.state != lifecycle.StatusCreated {
		return fmt.Errorf("exec %s is %s, not created: %w", e.id, e.state, errdefs.ErrFailedPrecondition)
	}
	p := e.container
	pidFile := filepath.Join(p.Bundle(), "exec-"+e.id+".pid")
	defer os.Remove(pidFile)
	opts := &runc.ExecOpts{PidFile: pidFile, Detach: true}
	var socket *runc.Socket
	if e.spec.Terminal {
		// runc makes the pty in the container and hands the master over
		// this socket, as containerd's runc shim has it do.
		var err error
		if socket, err = runc.NewTempConsoleSocket(); err != nil {
			return fmt.Errorf("exec %s: console socket: %w", e.id, err)
		}
		defer socket.Close()
		opts.ConsoleSocket = socket
	} else {
		stdio, closeNull, err := withDevNull(stdio)
		if err != nil {
			return err
		}
		defer closeNull()
		opts.IO = stdioIO{stdio}
	}
	// Subscribed before runc runs: the process may end before its pid is
	// read back.
	ec := reaper.Default.Subscribe()
	if err := p.runc.Exec(ctx, p.ID(), e.spec, opts); err != nil {
		reaper.Default.Unsubscribe(ec)
		return fmt.Errorf("runc exec: %w%s", err, runcLogError(p.runc.Log))
	}
	if socket != nil {
		master, err := socket.ReceiveMaster()
		if err != nil {
			reaper.Default.Unsubscribe(ec)
			return fmt.Errorf("exec %s: receive the pty master: %w", e.id, err)
		}
		e.console = master
	}
	pid, err := runc.ReadPidFile(pidFile)
	if err != nil {
		reaper.Default.Unsubscribe(ec)
		return fmt.Errorf("read exec pid: %w", err)
	}
	e.pid, e.state = pid, lifecycle.StatusRunning
	go e.watchExit(ec, pid)
	return nil
}

func (e *Exec) watchExit(ec chan runc.Exit, pid int) {
	for x := range ec {
		if x.Pid != pid {
			continue
		}
		reaper.Default.Unsubscribe(ec)
		e.mu.Lock()
		e.state = lifecycle.StatusStopped
		e.exit = lifecycle.ExitStatus{Pid: pid, Status: x.Status, At: x.Timestamp}
		e.mu.Unlock()
		close(e.exited)
		return
	}
}

// Console is the pty master of a terminal exec once it started, else
// nil; the caller copies it and closes it.
func (e *Exec) Console() console.Console {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.console
}

// Exited is closed once the process has exited.
func (e *Exec) Exited() <-chan struct{} { return e.exited }

// State returns a snapshot of the exec.
func (e *Exec) State() lifecycle.State {
	e.mu.Lock()
	defer e.mu.Unlock()
	return lifecycle.State{ID: e.id, Bundle: e.container.Bundle(), Pid: e.pid, Status: e.state, Exit: e.exit}
}

// Wait blocks until the process has exited or ctx ends.
func (e *Exec) Wait(ctx context.Context) (lifecycle.ExitStatus, error) {
	select {
	case <-e.exited:
		e.mu.Lock()
		defer e.mu.Unlock()
		return e.exit, nil
	case <-ctx.Done():
		return lifecycle.ExitStatus{}, ctx.Err()
	}
}

// Kill signals the process; after its exit it is NotFound.
func (e *Exec) Kill(ctx context.Context, sig syscall.Signal) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	switch e.state {
	case lifecycle.StatusStopped:
		return fmt.Errorf("exec %s: process already finished: %w", e.id, errdefs.ErrNotFound)
	case lifecycle.StatusCreated:
		return fmt.Errorf("exec %s is not started: %w", e.id, errdefs.ErrFailedPrecondition)
	}
	if err := unix.Kill(e.pid, sig); err != nil && err != unix.ESRCH {
		return fmt.Errorf("kill exec %s: %w", e.id, err)
	}
	return nil
}

// Delete forgets a finished (or never started) exec and returns its exit.
func (e *Exec) Delete(ctx context.Context) (lifecycle.ExitStatus, error) {
	e.mu.Lock()
	switch {
	case e.deleted:
		e.mu.Unlock()
		return lifecycle.ExitStatus{}, fmt.Errorf("exec %s: %w", e.id, errdefs.ErrNotFound)
	case e.state == lifecycle.StatusRunning:
		e.mu.Unlock()
		return lifecycle.ExitStatus{}, fmt.Errorf("exec %s is running: kill it before delete: %w", e.id, errdefs.ErrFailedPrecondition)
	}
	e.deleted = true
	if e.state == lifecycle.StatusCreated {
		e.exit = lifecycle.ExitStatus{At: time.Now()}
	}
	exit := e.exit
	e.mu.Unlock()
	return exit, nil
}
