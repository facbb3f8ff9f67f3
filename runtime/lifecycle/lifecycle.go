package lifecycle

import (
	"context"
	"fmt"
	"sync"

	"github.com/containerd/containerd/v2/pkg/sys/reaper"
	"github.com/containerd/errdefs"
	runc "github.com/containerd/go-runc"
	"github.com/containerd/log"
)

// Machine is what a unikernel container and a plain one share: the
// status machine, the exit recorded once from the reaper's report, Wait,
// and the persisted record cleanup works from.
type Machine struct {
	id, bundle string
	exited     chan struct{} // closed once the init (monitor) is reaped

	mu      sync.Mutex
	state   Status
	exit    ExitStatus
	deleted bool
	// deleting is held by the one Delete in progress: two concurrent
	// Deletes would release twice (a double close panicked the shim).
	deleting bool
	persist  PersistedState
	// exitOf, when set, turns the reaper's status into the container's
	// (a guest's own exit code, reported on its console).
	exitOf func(ExitStatus) ExitStatus
}

// NewMachine starts a created container's lifecycle from what Create
// has persisted so far (its ID and namespace at least).
func NewMachine(bundle string, st PersistedState) Machine {
	return Machine{
		id:      st.ID,
		bundle:  bundle,
		exited:  make(chan struct{}),
		state:   StatusCreated,
		persist: st,
	}
}

// SetExitOf makes exitOf turn the reaper's status into the container's
// (a guest's own exit code, reported on its console). Create sets it
// before the init can exit.
func (l *Machine) SetExitOf(exitOf func(ExitStatus) ExitStatus) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.exitOf = exitOf
}

// ID returns the container ID.
func (l *Machine) ID() string { return l.id }

// Bundle returns the bundle path.
func (l *Machine) Bundle() string { return l.bundle }

// Pid returns the pid of the container's init: the monitor for a
// unikernel.
func (l *Machine) Pid() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.persist.Pid
}

// Exited is closed once the init has exited.
func (l *Machine) Exited() <-chan struct{} { return l.exited }

// Status returns the container's status.
func (l *Machine) Status() Status {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.state
}

// State returns a snapshot of the container.
func (l *Machine) State() State {
	l.mu.Lock()
	defer l.mu.Unlock()
	return State{ID: l.id, Bundle: l.bundle, Pid: l.persist.Pid, Status: l.state, Exit: l.exit}
}

// Wait blocks until the init has exited or ctx ends; every caller, early
// or late, gets the one recorded status and time.
func (l *Machine) Wait(ctx context.Context) (ExitStatus, error) {
	select {
	case <-l.exited:
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.exit, nil
	case <-ctx.Done():
		return ExitStatus{}, ctx.Err()
	}
}

// WatchExit records the init's exit, once, from the reaper's report on
// ec, and persists it so the delete command can report it after a dead
// shim.
func (l *Machine) WatchExit(ec chan runc.Exit, pid int) {
	for e := range ec {
		if e.Pid != pid {
			continue
		}
		reaper.Default.Unsubscribe(ec)
		exit := ExitStatus{Pid: pid, Status: e.Status, At: e.Timestamp}
		if l.exitOf != nil {
			exit = l.exitOf(exit)
		}
		l.mu.Lock()
		l.state = StatusStopped
		l.exit = exit
		l.persist.Exit = &l.exit
		if err := WriteState(l.bundle, &l.persist); err != nil {
			log.L.WithError(err).Warn("persist exit status")
		}
		l.mu.Unlock()
		close(l.exited)
		return
	}
}

// CheckAlive is Kill's precondition: a finished process is NotFound.
func (l *Machine) CheckAlive() (Status, error) {
	state := l.Status()
	if state == StatusStopped {
		return state, fmt.Errorf("container %s: process already finished: %w", l.id, errdefs.ErrNotFound)
	}
	return state, nil
}

// BeginDelete is Delete's precondition: a second Delete is NotFound, a
// running container is refused, and a Delete already under way makes a
// concurrent one fail. On success the caller owns the delete and must end
// it with EndDelete.
func (l *Machine) BeginDelete() (Status, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.deleted {
		return l.state, fmt.Errorf("container %s: %w", l.id, errdefs.ErrNotFound)
	}
	if l.deleting {
		return l.state, fmt.Errorf("container %s: another delete is under way: %w", l.id, errdefs.ErrFailedPrecondition)
	}
	if l.state == StatusRunning || l.state == StatusPaused {
		return l.state, fmt.Errorf("container %s is %s: kill it before delete: %w", l.id, l.state, errdefs.ErrFailedPrecondition)
	}
	l.deleting = true
	return l.state, nil
}

// EndDelete ends the Delete begun by BeginDelete: done records it (and
// returns the exit it reports); a failed Delete can be retried.
func (l *Machine) EndDelete(done bool) ExitStatus {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.deleting = false
	l.deleted = done
	return l.exit
}

// Transition runs op and moves from one status to another, refusing when
// the container is not in from.
func (l *Machine) Transition(from, to Status, op func() error) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.state != from {
		return fmt.Errorf("container %s is %s, not %s: %w", l.id, l.state, from, errdefs.ErrFailedPrecondition)
	}
	if err := op(); err != nil {
		return err
	}
	l.state = to
	return nil
}

// Record applies update to the persisted state and writes it, under the
// lock WatchExit takes too: the init's exit can land while Create is still
// recording what it set up.
func (l *Machine) Record(update func(*PersistedState)) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	update(&l.persist)
	return WriteState(l.bundle, &l.persist)
}

// Persisted returns a copy of the persisted state.
func (l *Machine) Persisted() PersistedState {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.persist
}
