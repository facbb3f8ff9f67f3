package runtime

import (
	"context"
	"fmt"
	"sync"

	"github.com/containerd/containerd/v2/pkg/sys/reaper"
	runc "github.com/containerd/go-runc"
	"github.com/containerd/log"
)

// lifecycle is what a unikernel container and a plain one share: the
// status machine, the exit recorded once from the reaper's report, Wait,
// and the persisted record cleanup works from.
type lifecycle struct {
	id, bundle string
	exited     chan struct{} // closed once the init (monitor) is reaped

	mu      sync.Mutex
	state   Status
	exit    ExitStatus
	deleted bool
	// deleting is held by the one Delete in progress: two concurrent
	// Deletes would release twice (a double close panicked the shim).
	deleting bool
	persist  persistedState
	// exitOf, when set, turns the reaper's status into the container's
	// (a guest's own exit code, reported on its console).
	exitOf func(ExitStatus) ExitStatus
}

func newLifecycle(id, namespace, bundle string) lifecycle {
	return lifecycle{
		id:      id,
		bundle:  bundle,
		exited:  make(chan struct{}),
		state:   StatusCreated,
		persist: persistedState{ID: id, Namespace: namespace},
	}
}

// ID returns the container ID.
func (l *lifecycle) ID() string { return l.id }

// Bundle returns the bundle path.
func (l *lifecycle) Bundle() string { return l.bundle }

// Pid returns the pid of the container's init: the monitor for a
// unikernel.
func (l *lifecycle) Pid() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.persist.Pid
}

// Exited is closed once the init has exited.
func (l *lifecycle) Exited() <-chan struct{} { return l.exited }

func (l *lifecycle) status() Status {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.state
}

// State returns a snapshot of the container.
func (l *lifecycle) State() State {
	l.mu.Lock()
	defer l.mu.Unlock()
	return State{ID: l.id, Bundle: l.bundle, Pid: l.persist.Pid, Status: l.state, Exit: l.exit}
}

// Wait blocks until the init has exited or ctx ends; every caller, early
// or late, gets the one recorded status and time.
func (l *lifecycle) Wait(ctx context.Context) (ExitStatus, error) {
	select {
	case <-l.exited:
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.exit, nil
	case <-ctx.Done():
		return ExitStatus{}, ctx.Err()
	}
}

// watchExit records the init's exit, once, from the reaper's report on
// ec, and persists it so the delete command can report it after a dead
// shim.
func (l *lifecycle) watchExit(ec chan runc.Exit, pid int) {
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
		if err := writeState(l.bundle, &l.persist); err != nil {
			log.L.WithError(err).Warn("persist exit status")
		}
		l.mu.Unlock()
		close(l.exited)
		return
	}
}

// checkAlive is Kill's precondition: a finished process is NotFound.
func (l *lifecycle) checkAlive() (Status, error) {
	state := l.status()
	if state == StatusStopped {
		return state, fmt.Errorf("container %s: process already finished: %w", l.id, errNotFound)
	}
	return state, nil
}

// beginDelete is Delete's precondition: a second Delete is NotFound, a
// running container is refused, and a Delete already under way makes a
// concurrent one fail. On success the caller owns the delete and must end
// it with endDelete.
func (l *lifecycle) beginDelete() (Status, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.deleted {
		return l.state, fmt.Errorf("container %s: %w", l.id, errNotFound)
	}
	if l.deleting {
		return l.state, fmt.Errorf("container %s: another delete is under way: %w", l.id, errFailedPrecondition)
	}
	if l.state == StatusRunning || l.state == StatusPaused {
		return l.state, fmt.Errorf("container %s is %s: kill it before delete: %w", l.id, l.state, errFailedPrecondition)
	}
	l.deleting = true
	return l.state, nil
}

// endDelete ends the Delete begun by beginDelete: done records it (and
// returns the exit it reports); a failed Delete can be retried.
func (l *lifecycle) endDelete(done bool) ExitStatus {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.deleting = false
	l.deleted = done
	return l.exit
}

// transition runs op and moves from one status to another, refusing when
// the container is not in from.
func (l *lifecycle) transition(from, to Status, op func() error) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.state != from {
		return fmt.Errorf("container %s is %s, not %s: %w", l.id, l.state, from, errFailedPrecondition)
	}
	if err := op(); err != nil {
		return err
	}
	l.state = to
	return nil
}

// record applies update to the persisted state and writes it, under the
// lock watchExit takes too: the init's exit can land while Create is still
// recording what it set up.
func (l *lifecycle) record(update func(*persistedState)) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	update(&l.persist)
	return writeState(l.bundle, &l.persist)
}

// persisted returns a copy of the persisted state.
func (l *lifecycle) persisted() persistedState {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.persist
}
