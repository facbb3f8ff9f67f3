package plain

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"

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
// to this subreaper, is reaped by the one reaper. Its ID, pid, State,
// life and Delete are every exec's lifecycle.Exec: once ended it holds
// nothing of runc's to release.
type Exec struct {
	lifecycle.Exec
	container *Container
	spec      specs.Process

	mu sync.Mutex // guards console
	// console is the pty master of a terminal exec, runc's since Start.
	console console.Console
}

// NewExec checks and prepares process spec as exec id in the container;
// Start runs it. Nothing is opened until Start.
func (p *Container) NewExec(id string, spec *specs.Process) (lifecycle.Process, error) {
	if err := p.Do(lifecycle.EventExec, nil); err != nil {
		return nil, err
	}
	if spec == nil || len(spec.Args) == 0 {
		return nil, fmt.Errorf("exec %s: no process args: %w", id, errdefs.ErrInvalidArgument)
	}
	return &Exec{Exec: lifecycle.NewExec(id, p.Bundle()), container: p, spec: *spec}, nil
}

// Start runs the process with stdio and returns once it runs. The caller
// keeps stdio's files and closes them after Start. A terminal exec takes
// no stdio: its pty master is Console's.
func (e *Exec) Start(ctx context.Context, stdio lifecycle.Stdio) error {
	return e.Do(lifecycle.EventStart, func(lifecycle.Status) error { return e.start(ctx, stdio) })
}

func (e *Exec) start(ctx context.Context, stdio lifecycle.Stdio) error {
	p := e.container
	pidFile := filepath.Join(p.Bundle(), "exec-"+e.ID()+".pid")
	defer os.Remove(pidFile)
	opts := &runc.ExecOpts{PidFile: pidFile, Detach: true}
	var socket *runc.Socket
	if e.spec.Terminal {
		// runc makes the pty in the container and hands the master over
		// this socket, as containerd's runc shim has it do.
		var err error
		if socket, err = runc.NewTempConsoleSocket(); err != nil {
			return fmt.Errorf("exec %s: console socket: %w", e.ID(), err)
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
			return fmt.Errorf("exec %s: receive the pty master: %w", e.ID(), err)
		}
		e.mu.Lock()
		e.console = master
		e.mu.Unlock()
	}
	pid, err := runc.ReadPidFile(pidFile)
	if err != nil {
		reaper.Default.Unsubscribe(ec)
		return fmt.Errorf("read exec pid: %w", err)
	}
	e.SetPid(pid)
	go func() { e.RecordExit(lifecycle.ReapedExit(ec, pid), nil) }()
	return nil
}

// Console is the pty master of a terminal exec once it started, else
// nil; the caller copies it and closes it.
func (e *Exec) Console() console.Console {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.console
}

// Kill signals the process; after its exit it is NotFound.
func (e *Exec) Kill(ctx context.Context, sig syscall.Signal) error {
	return e.KillStarted(func(pid int) error {
		if err := unix.Kill(pid, sig); err != nil && err != unix.ESRCH {
			return fmt.Errorf("kill exec %s: %w", e.ID(), err)
		}
		return nil
	})
}
