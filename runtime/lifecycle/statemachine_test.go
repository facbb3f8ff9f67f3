package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
)

// machineAt is a machine in phase p, its exit recorded when p comes only
// after one (stopped).
func machineAt(p phase) *StateMachine {
	m := NewStateMachine("exec e1")
	m.phase = p
	if p == phaseStopped {
		m.exit = ExitStatus{Pid: 7, Status: 3}
		close(m.exited)
	}
	return m
}

// The whole table, written out independently of it: for each event and
// phase, the phase it ends in ("running"), or the refusal's kind ("FP"
// FailedPrecondition, "NF" NotFound). An operation's interim phase is
// checked while it runs, and its failure's return to where it was.
func TestTransitionTable(t *testing.T) {
	all := func(def string, cells map[phase]string) map[phase]string {
		out := map[phase]string{}
		for _, p := range phases {
			out[p] = def
		}
		out[phaseDeleted] = "NF"
		for p, v := range cells {
			out[p] = v
		}
		return out
	}
	want := map[Event]map[phase]string{
		EventStart:  all("FP", map[phase]string{phaseCreated: "running"}),
		EventPause:  all("FP", map[phase]string{phaseRunning: "paused"}),
		EventResume: all("FP", map[phase]string{phasePaused: "running"}),
		EventKill: all("NF", map[phase]string{phaseCreated: "created", phaseStarting: "starting", phaseRunning: "running",
			phasePausing: "pausing", phasePaused: "paused", phaseResuming: "resuming"}),
		EventExec:   all("FP", map[phase]string{phaseRunning: "running"}),
		EventDelete: all("FP", map[phase]string{phaseCreated: "deleted", phaseStopped: "deleted"}),
	}
	interim := map[Event]phase{EventStart: phaseStarting, EventPause: phasePausing, EventResume: phaseResuming, EventDelete: phaseDeleting}
	for ev, cells := range want {
		for _, from := range phases {
			expect := cells[from]
			t.Run(fmt.Sprintf("%s_in_%s", ev, from), func(t *testing.T) {
				m := machineAt(from)
				ran := false
				err := m.Do(ev, func(Status) error {
					ran = true
					if via, ok := interim[ev]; ok && m.phase != via {
						t.Errorf("while %s runs: phase %s, want %s", ev, m.phase, via)
					}
					return nil
				})
				switch expect {
				case "FP", "NF":
					kind := map[string]error{"FP": errdefs.ErrFailedPrecondition, "NF": errdefs.ErrNotFound}[expect]
					if !errors.Is(err, kind) {
						t.Fatalf("err %v, want %s", err, kind)
					}
					if msg := "exec e1 is " + string(from); !strings.Contains(err.Error(), msg) {
						t.Errorf("error %q does not say %q", err, msg)
					}
					if ran || m.phase != from {
						t.Errorf("refused %s ran its op (%v) or moved to %s", ev, ran, m.phase)
					}
				default:
					if err != nil || !ran || string(m.phase) != expect {
						t.Fatalf("err %v, ran %v, phase %s; want nil, true, %s", err, ran, m.phase, expect)
					}
				}
				if _, ok := interim[ev]; !ok || err != nil {
					return
				}
				// The same operation failing leaves the process where it was.
				m = machineAt(from)
				boom := errors.New("boom")
				if err := m.Do(ev, func(Status) error { return boom }); !errors.Is(err, boom) || m.phase != from {
					t.Fatalf("failed %s: err %v, phase %s, want boom, %s", ev, err, m.phase, from)
				}
			})
		}
	}
}

// An exit moves every live phase to stopped, leaves a delete where it is,
// and is recorded once: a second report changes nothing.
func TestExitTransitions(t *testing.T) {
	want := map[phase]phase{
		phaseCreated: phaseStopped, phaseStarting: phaseStopped, phaseRunning: phaseStopped,
		phasePausing: phaseStopped, phasePaused: phaseStopped, phaseResuming: phaseStopped,
		phaseDeleting: phaseDeleting, phaseDeleted: phaseDeleted,
	}
	for _, from := range phases {
		t.Run(string(from), func(t *testing.T) {
			m := machineAt(from)
			persisted := 0
			recorded := m.RecordExit(ExitStatus{Pid: 9, Status: 1}, func(ExitStatus) { persisted++ })
			to, live := want[from]
			if !live {
				if recorded || m.exit.Pid != 7 || persisted != 0 {
					t.Fatalf("second exit recorded %v, exit %+v, persisted %d", recorded, m.exit, persisted)
				}
				return
			}
			if !recorded || m.phase != to || m.exit.Pid != 9 || !m.HasExited() {
				t.Fatalf("recorded %v, phase %s, exit %+v; want true, %s, pid 9", recorded, m.phase, m.exit, to)
			}
			// The delete removed the record: a late exit must not write it again.
			if wantPersisted := map[bool]int{true: 0, false: 1}[from == phaseDeleted]; persisted != wantPersisted {
				t.Fatalf("persisted %d times, want %d", persisted, wantPersisted)
			}
			if m.RecordExit(ExitStatus{Pid: 10}, nil) || m.exit.Pid != 9 {
				t.Fatalf("a second exit overwrote the first: %+v", m.exit)
			}
		})
	}
	if err := NewStateMachine("c").Do(EventExit, nil); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("Do(exit): %v", err)
	}
}

// What callers see of each phase: an operation under way shows where it
// started from.
func TestStatusOfPhases(t *testing.T) {
	for p, want := range map[phase]Status{
		phaseCreated: StatusCreated, phaseStarting: StatusCreated, phaseRunning: StatusRunning,
		phasePausing: StatusRunning, phasePaused: StatusPaused, phaseResuming: StatusPaused,
		phaseStopped: StatusStopped, phaseDeleting: StatusCreated, phaseDeleted: StatusStopped,
	} {
		if got := machineAt(p).Status(); got != want {
			t.Errorf("%s: status %s, want %s", p, got, want)
		}
	}
	m := machineAt(phaseDeleting)
	m.RecordExit(ExitStatus{}, nil)
	if m.Status() != StatusStopped {
		t.Errorf("deleting after the exit: %s", m.Status())
	}
	if StatusCreated.Started() || !StatusStopped.Started() || !StatusPaused.Frozen() || StatusRunning.Frozen() {
		t.Error("Started/Frozen")
	}
}

// Every Wait, early or late, gets the one exit; a Wait whose ctx ends
// returns its error.
func TestWaitAnswersEveryCaller(t *testing.T) {
	m := NewStateMachine("container c")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := m.Wait(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("wait with a cancelled ctx: %v", err)
	}
	exit := ExitStatus{Pid: 42, Status: 137, At: time.Unix(1700000000, 5)}
	const waiters = 64
	got := make(chan ExitStatus, 2*waiters)
	var wg sync.WaitGroup
	for range waiters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e, err := m.Wait(context.Background())
			if err != nil {
				t.Error(err)
			}
			got <- e
		}()
	}
	// Racing reporters: only one exit is recorded.
	var recorded sync.WaitGroup
	wins := make(chan bool, 4)
	for i := range 4 {
		recorded.Add(1)
		go func() {
			defer recorded.Done()
			e := exit
			if i > 0 {
				e.Status = i
			}
			wins <- m.RecordExit(e, nil)
		}()
	}
	recorded.Wait()
	close(wins)
	n := 0
	for w := range wins {
		if w {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d exits recorded", n)
	}
	_, first := m.Current()
	wg.Wait()
	for range waiters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e, _ := m.Wait(context.Background())
			got <- e
		}()
	}
	wg.Wait()
	close(got)
	for e := range got {
		if e != first {
			t.Fatalf("a waiter got %+v, another %+v", e, first)
		}
	}
}

// The process exits before Start: Start is refused, Delete gives the exit.
func TestExitBeforeStart(t *testing.T) {
	m := NewStateMachine("container c")
	m.RecordExit(ExitStatus{Pid: 5, Status: 2}, nil)
	if err := m.Do(EventStart, func(Status) error { t.Fatal("start ran"); return nil }); !errors.Is(err, errdefs.ErrFailedPrecondition) ||
		!strings.Contains(err.Error(), "container c is stopped") {
		t.Fatalf("start after exit: %v", err)
	}
	exit, err := m.DeleteOnce(func(from Status) error {
		if !from.Started() {
			t.Errorf("delete of an exited process sees %s", from)
		}
		return nil
	})
	if err != nil || exit.Status != 2 {
		t.Fatalf("delete: %+v %v", exit, err)
	}
}

// The exit lands while Start's op runs: the start succeeds and the
// process stays stopped; a Start failing after the exit leaves it stopped.
func TestExitDuringStart(t *testing.T) {
	for _, fail := range []bool{false, true} {
		m := NewStateMachine("container c")
		err := m.Do(EventStart, func(Status) error {
			m.RecordExit(ExitStatus{Status: 1}, nil)
			if fail {
				return errors.New("exec failed")
			}
			return nil
		})
		if (err != nil) != fail || m.Status() != StatusStopped {
			t.Fatalf("fail=%v: err %v, status %s", fail, err, m.Status())
		}
	}
}

// Delete of a created process ends it and waits for the exit, which lands
// during the delete; a delete failing after that leaves it stopped, and a
// retry succeeds.
func TestExitDuringDelete(t *testing.T) {
	m := NewStateMachine("container c")
	_, err := m.DeleteOnce(func(from Status) error {
		if from.Started() {
			t.Errorf("from %s", from)
		}
		go m.RecordExit(ExitStatus{Pid: 3, Status: 137}, nil) // the kill's exit
		<-m.Exited()
		return errors.New("unmount busy")
	})
	if err == nil || m.phase != phaseStopped {
		t.Fatalf("failed delete: %v, phase %s", err, m.phase)
	}
	exit, err := m.DeleteOnce(func(Status) error { return nil })
	if err != nil || exit.Status != 137 || m.phase != phaseDeleted {
		t.Fatalf("retry: %+v %v %s", exit, err, m.phase)
	}
}

// One delete at a time: a concurrent one is refused while the first runs,
// and after it every delete is NotFound.
func TestDeleteOnce(t *testing.T) {
	m := machineAt(phaseStopped)
	inside, release := make(chan struct{}), make(chan struct{})
	done := make(chan error)
	go func() {
		_, err := m.DeleteOnce(func(Status) error { close(inside); <-release; return nil })
		done <- err
	}()
	<-inside
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := m.DeleteOnce(func(Status) error { t.Error("second delete ran"); return nil }); !errors.Is(err, errdefs.ErrFailedPrecondition) ||
				!strings.Contains(err.Error(), "another delete is under way") {
				t.Errorf("concurrent delete: %v", err)
			}
		}()
	}
	wg.Wait()
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := m.DeleteOnce(nil); !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), "exec e1 is deleted") {
		t.Fatalf("delete after delete: %v", err)
	}
}

// Kills, status reads, an exit and a delete racing (run with -race).
func TestConcurrentUse(t *testing.T) {
	m := NewStateMachine("container c")
	if err := m.Do(EventStart, nil); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				err := m.Do(EventKill, nil)
				if err != nil && !errors.Is(err, errdefs.ErrNotFound) {
					t.Errorf("kill: %v", err)
				}
				_ = m.Status()
				_, _ = m.Current()
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		m.RecordExit(ExitStatus{Status: 143}, nil)
	}()
	if _, err := m.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	if exit, err := m.DeleteOnce(nil); err != nil || exit.Status != 143 {
		t.Fatalf("delete: %+v %v", exit, err)
	}
	wg.Wait()
}
