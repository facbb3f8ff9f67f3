package lifecycle

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/containerd/errdefs"
)

// Exec is what every exec shares, whoever runs it (runc in a plain
// container, the guest agent in a VM): its StateMachine, its ID, its
// container's bundle, and its pid once started. The runtime's exec embeds
// it and adds Start, Kill and Console.
type Exec struct {
	*StateMachine
	id, bundle string

	mu  sync.Mutex // guards pid
	pid int
}

// NewExec returns exec id of the container of bundle, created, not yet
// started.
func NewExec(id, bundle string) Exec {
	return Exec{StateMachine: NewStateMachine("exec " + id), id: id, bundle: bundle}
}

// ID returns the exec ID.
func (e *Exec) ID() string { return e.id }

// Pid returns the exec's pid (in the guest for a VM's), 0 before Start.
func (e *Exec) Pid() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.pid
}

// SetPid records the pid of the exec Start runs.
func (e *Exec) SetPid(pid int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.pid = pid
}

// State returns a snapshot of the exec.
func (e *Exec) State() State {
	status, exit := e.Current()
	return State{ID: e.id, Bundle: e.bundle, Pid: e.Pid(), Status: status, Exit: exit}
}

// KillStarted runs signal with the exec's pid once it has one; before (created,
// or its runner still starting it) there is no process to signal, and
// after its exit the StateMachine answers NotFound.
func (e *Exec) KillStarted(signal func(pid int) error) error {
	return e.Do(EventKill, func(Status) error {
		pid := e.Pid()
		if pid == 0 {
			return fmt.Errorf("exec %s is not started: %w", e.id, errdefs.ErrFailedPrecondition)
		}
		return signal(pid)
	})
}

// Delete forgets the exec and returns its exit, for an exec that holds
// nothing past its process's end.
func (e *Exec) Delete(context.Context) (ExitStatus, error) { return e.DeleteReleasing(nil) }

// DeleteReleasing forgets the exec and returns its exit; release, when
// set, frees what a started exec still holds (the guest's copy of it). A
// never started exec exits with status 0 now, so that its waiters end.
func (e *Exec) DeleteReleasing(release func()) (ExitStatus, error) {
	return e.DeleteOnce(func(from Status) error {
		if !from.Started() {
			e.RecordExit(ExitStatus{At: time.Now()}, nil)
		} else if release != nil {
			release()
		}
		return nil
	})
}
