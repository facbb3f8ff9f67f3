package lifecycle

import (
	"sync"

	runc "github.com/containerd/go-runc"
	"github.com/containerd/log"
)

// Init is a container's init process as a unikernel container (its
// monitor) and a plain one (runc's init) track it: its StateMachine, the
// exit recorded from the reaper's report, and the record persisted in the
// bundle that cleanup works from.
type Init struct {
	*StateMachine
	id, bundle string

	mu      sync.Mutex // guards persist and exitOf
	persist PersistedState
	// exitOf, when set, turns the reaper's status into the container's
	// (a guest's own exit code, reported on its console).
	exitOf func(ExitStatus) ExitStatus
}

// NewInit starts a created container's lifecycle from what Create has
// persisted so far (its ID and namespace at least).
func NewInit(bundle string, st PersistedState) Init {
	return Init{
		StateMachine: NewStateMachine("container " + st.ID),
		id:           st.ID,
		bundle:       bundle,
		persist:      st,
	}
}

// SetExitOf makes exitOf turn the reaper's status into the container's
// (a guest's own exit code, reported on its console). Create sets it
// before the init can exit.
func (l *Init) SetExitOf(exitOf func(ExitStatus) ExitStatus) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.exitOf = exitOf
}

// ID returns the container ID.
func (l *Init) ID() string { return l.id }

// Bundle returns the bundle path.
func (l *Init) Bundle() string { return l.bundle }

// Pid returns the pid of the container's init: the monitor for a
// unikernel.
func (l *Init) Pid() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.persist.Pid
}

// State returns a snapshot of the container.
func (l *Init) State() State {
	status, exit := l.Current()
	return State{ID: l.id, Bundle: l.bundle, Pid: l.Pid(), Status: status, Exit: exit}
}

// WatchExit records the init's exit, once, from the reaper's report on
// ec, and persists it so the delete command can report it after a dead
// shim.
func (l *Init) WatchExit(ec chan runc.Exit, pid int) {
	exit := ReapedExit(ec, pid)
	l.mu.Lock()
	exitOf := l.exitOf
	l.mu.Unlock()
	if exitOf != nil {
		exit = exitOf(exit)
	}
	l.RecordExit(exit, func(e ExitStatus) {
		// Persisted before Delete can begin, which removes the file.
		err := l.Record(func(st *PersistedState) { st.Exit = &e })
		if err != nil {
			log.L.WithError(err).Warn("persist exit status")
		}
	})
}

// Record applies update to the persisted state and writes it: the init's
// exit can land while Create is still recording what it set up.
func (l *Init) Record(update func(*PersistedState)) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	update(&l.persist)
	return WriteState(l.bundle, &l.persist)
}

// Persisted returns a copy of the persisted state.
func (l *Init) Persisted() PersistedState {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.persist
}
