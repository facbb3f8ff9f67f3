package lifecycle

import (
	"context"
	"fmt"
	"sync"

	"github.com/containerd/errdefs"
)

// Event is something asked of a process, or that happens to it.
type Event string

const (
	EventStart  Event = "start"
	EventPause  Event = "pause"
	EventResume Event = "resume"
	// EventKill and EventExec change nothing: they are asked of a process
	// in a state that allows them (a signal, an exec into the container).
	EventKill Event = "kill"
	EventExec Event = "exec"
	// EventExit is the reaper's report that the process ended.
	EventExit   Event = "exit"
	EventDelete Event = "delete"
)

// phase is where a process is in its life, finer than the Status callers
// see: an operation under way (starting, pausing, resuming, deleting) has
// a phase of its own, so that no lock is held while it runs and a second
// operation, or the process's exit, meets a defined answer.
type phase string

const (
	phaseCreated  phase = "created"
	phaseStarting phase = "starting"
	phaseRunning  phase = "running"
	phasePausing  phase = "pausing"
	phasePaused   phase = "paused"
	phaseResuming phase = "resuming"
	phaseStopped  phase = "stopped"
	phaseDeleting phase = "deleting"
	phaseDeleted  phase = "deleted"
)

var phases = []phase{phaseCreated, phaseStarting, phaseRunning, phasePausing, phasePaused,
	phaseResuming, phaseStopped, phaseDeleting, phaseDeleted}

// move is one cell of the transition table: the phase an event leads to,
// or why it is refused. An operation (via set) holds via while it runs and
// ends in to when it succeeds, back in the phase it left when it fails.
type move struct {
	via, to phase
	refuse  error  // errdefs kind of a refusal; nil when allowed
	why     string // the refusal's reason, after "<process> is <phase>"
}

func allow(to phase) move        { return move{to: to} }
func operate(via, to phase) move { return move{via: via, to: to} }
func refuse(why string) move     { return move{refuse: errdefs.ErrFailedPrecondition, why: why} }
func gone(why string) move       { return move{refuse: errdefs.ErrNotFound, why: why} }
func (m move) allowed() bool     { return m.refuse == nil }
func (m move) operation() bool   { return m.via != "" }

// transitions is every move of a process's life, for the unikernel
// container, the plain container and an exec alike. A cell left out is
// refused as FailedPrecondition; after delete everything is NotFound.
// Kill of a process that has finished is NotFound too: containerd (a CRI
// stop, a pod's teardown) takes that as done. Kill during a delete is as
// well, since the delete ends the process itself.
var transitions = map[Event]map[phase]move{
	EventStart: {
		phaseCreated:  operate(phaseStarting, phaseRunning),
		phaseStarting: refuse("already being started"),
	},
	EventPause: {
		phaseRunning: operate(phasePausing, phasePaused),
		phaseCreated: refuse("not started: cannot pause"),
	},
	EventResume: {
		phasePaused: operate(phaseResuming, phaseRunning),
	},
	EventKill: {
		phaseCreated:  allow(phaseCreated),
		phaseStarting: allow(phaseStarting),
		phaseRunning:  allow(phaseRunning),
		phasePausing:  allow(phasePausing),
		phasePaused:   allow(phasePaused),
		phaseResuming: allow(phaseResuming),
		phaseStopped:  gone("process already finished"),
		phaseDeleting: gone("being deleted, which ends its process"),
	},
	EventExec: {
		phaseRunning: allow(phaseRunning),
		phaseCreated: refuse("not started: cannot exec"),
	},
	EventExit: {
		phaseCreated:  allow(phaseStopped),
		phaseStarting: allow(phaseStopped),
		phaseRunning:  allow(phaseStopped),
		phasePausing:  allow(phaseStopped),
		phasePaused:   allow(phaseStopped),
		phaseResuming: allow(phaseStopped),
		// A delete ends a created process and waits for its exit.
		phaseDeleting: allow(phaseDeleting),
		// A delete that gave up waiting still records a late exit.
		phaseDeleted: allow(phaseDeleted),
		phaseStopped: refuse("exit already recorded"),
	},
	EventDelete: {
		phaseCreated:  operate(phaseDeleting, phaseDeleted),
		phaseStopped:  operate(phaseDeleting, phaseDeleted),
		phaseStarting: refuse("being started: kill it before delete"),
		phaseRunning:  refuse("kill it before delete"),
		phasePausing:  refuse("kill it before delete"),
		phasePaused:   refuse("kill it before delete"),
		phaseResuming: refuse("kill it before delete"),
		phaseDeleting: refuse("another delete is under way"),
	},
}

// next is the table's answer for ev in phase p.
func next(ev Event, p phase) move {
	if m, ok := transitions[ev][p]; ok {
		return m
	}
	if p == phaseDeleted {
		return gone("already deleted")
	}
	return refuse("cannot " + string(ev))
}

// status is what callers see of phase p: an operation under way shows
// the status it started from until it is done.
func (p phase) status(exited bool) Status {
	switch p {
	case phaseCreated, phaseStarting:
		return StatusCreated
	case phaseRunning, phasePausing:
		return StatusRunning
	case phasePaused, phaseResuming:
		return StatusPaused
	case phaseDeleting:
		if !exited {
			return StatusCreated
		}
	}
	return StatusStopped
}

// StateMachine is a process's life (a container's init or an exec): its
// phase, moved only through the transition table; its exit, recorded
// exactly once; Wait for that exit; and one delete at a time. It holds no
// lock while an operation runs.
type StateMachine struct {
	name string // "container c1", "exec e1", for errors

	mu     sync.Mutex
	phase  phase
	exit   ExitStatus
	exited chan struct{} // closed once the exit is recorded
}

// NewStateMachine starts a created process named name ("container c1").
func NewStateMachine(name string) *StateMachine {
	return &StateMachine{name: name, phase: phaseCreated, exited: make(chan struct{})}
}

// Do runs op for event ev if the table allows ev now, else returns the
// table's typed error naming the process and its phase. For an operation
// the process holds the table's interim phase while op runs, without a
// lock, and then the operation's end phase, or the one it left if op
// failed; an exit recorded meanwhile wins. op gets the status it started
// from and may be nil.
func (m *StateMachine) Do(ev Event, op func(from Status) error) error {
	if ev == EventExit {
		return fmt.Errorf("%s: an exit is recorded by RecordExit: %w", m.name, errdefs.ErrInvalidArgument)
	}
	m.mu.Lock()
	from := m.phase
	mv := next(ev, from)
	if !mv.allowed() {
		m.mu.Unlock()
		return fmt.Errorf("%s is %s: %s: %w", m.name, from, mv.why, mv.refuse)
	}
	exited := m.hasExitedLocked()
	if mv.operation() {
		m.phase = mv.via
	} else {
		m.phase = mv.to
	}
	m.mu.Unlock()
	var err error
	if op != nil {
		err = op(from.status(exited))
	}
	if !mv.operation() {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.phase != mv.via {
		// The exit came while op ran and moved the process on.
		return err
	}
	switch {
	case err == nil:
		m.phase = mv.to
	case m.hasExitedLocked():
		m.phase = phaseStopped
	default:
		m.phase = from
	}
	return err
}

// DeleteOnce runs op as the process's one delete (EventDelete) and
// returns the exit recorded by then.
func (m *StateMachine) DeleteOnce(op func(from Status) error) (ExitStatus, error) {
	if err := m.Do(EventDelete, op); err != nil {
		return ExitStatus{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.exit, nil
}

// RecordExit records the process's exit (EventExit) the first time it is
// reported; later reports change nothing and return false. onRecord, when
// set, runs under the machine's lock before any waiter is released (it
// persists the exit), and not at all once the process is deleted, so
// that it cannot recreate what the delete removed.
func (m *StateMachine) RecordExit(e ExitStatus, onRecord func(ExitStatus)) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.hasExitedLocked() {
		return false
	}
	mv := next(EventExit, m.phase)
	if onRecord != nil && m.phase != phaseDeleted {
		onRecord(e)
	}
	m.exit = e
	m.phase = mv.to
	close(m.exited)
	return true
}

func (m *StateMachine) hasExitedLocked() bool {
	select {
	case <-m.exited:
		return true
	default:
		return false
	}
}

// Exited is closed once the exit is recorded.
func (m *StateMachine) Exited() <-chan struct{} { return m.exited }

// HasExited tells whether the exit is recorded.
func (m *StateMachine) HasExited() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.hasExitedLocked()
}

// Status returns what callers see of the process's phase.
func (m *StateMachine) Status() Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.phase.status(m.hasExitedLocked())
}

// Current returns the status and the exit recorded (zero until then).
func (m *StateMachine) Current() (Status, ExitStatus) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.phase.status(m.hasExitedLocked()), m.exit
}

// Wait blocks until the exit is recorded or ctx ends; every caller, early
// or late, gets the one recorded status and time.
func (m *StateMachine) Wait(ctx context.Context) (ExitStatus, error) {
	select {
	case <-m.exited:
		m.mu.Lock()
		defer m.mu.Unlock()
		return m.exit, nil
	case <-ctx.Done():
		return ExitStatus{}, ctx.Err()
	}
}

// Started tells whether a process in status s was let run: a created one
// (a launcher waiting for Start, runc's init before runc start, an exec
// not yet run) has no workload running yet.
func (s Status) Started() bool { return s != StatusCreated }

// Frozen tells whether a process in status s is paused: a signal reaches
// it only once it is thawed.
func (s Status) Frozen() bool { return s == StatusPaused }
