package lifecycle

import (
	"context"
	"errors"
	"testing"

	"github.com/containerd/errdefs"
)

// A never started exec's delete ends its waiters with status 0 and
// releases nothing; a started one's keeps the exit its process had and
// releases what it holds, once.
func TestExecDelete(t *testing.T) {
	ctx := context.Background()
	unstarted := NewExec("e1", "/bundle")
	released := 0
	exit, err := unstarted.DeleteReleasing(func() { released++ })
	if err != nil || exit.Status != 0 || exit.At.IsZero() || released != 0 || !unstarted.HasExited() {
		t.Fatalf("unstarted delete = %+v, %v, released %d times, exited %v; want status 0 now, nothing released", exit, err, released, unstarted.HasExited())
	}

	started := NewExec("e2", "/bundle")
	if err := started.Do(EventStart, func(Status) error { started.SetPid(42); return nil }); err != nil {
		t.Fatal(err)
	}
	if st := started.State(); st.ID != "e2" || st.Bundle != "/bundle" || st.Pid != 42 || st.Status != StatusRunning {
		t.Fatalf("State = %+v, want e2 in /bundle, pid 42, running", st)
	}
	started.RecordExit(ExitStatus{Pid: 42, Status: 3}, nil)
	exit, err = started.DeleteReleasing(func() { released++ })
	if err != nil || exit.Status != 3 || released != 1 {
		t.Fatalf("started delete = %+v, %v, released %d times; want status 3, released once", exit, err, released)
	}
	if _, err := started.Delete(ctx); err == nil {
		t.Fatal("second delete succeeded")
	}
}

// An exec without a pid yet has nothing to signal (FailedPrecondition, and
// the signal is not sent); a running one's signal gets its pid; an ended
// one is NotFound.
func TestExecKillStarted(t *testing.T) {
	e := NewExec("e1", "/bundle")
	var sentTo []int
	signal := func(pid int) error { sentTo = append(sentTo, pid); return nil }
	if err := e.KillStarted(signal); !errors.Is(err, errdefs.ErrFailedPrecondition) || len(sentTo) != 0 {
		t.Fatalf("created: %v, sent to %v; want FailedPrecondition, nothing sent", err, sentTo)
	}
	if err := e.Do(EventStart, func(Status) error { e.SetPid(42); return nil }); err != nil {
		t.Fatal(err)
	}
	if err := e.KillStarted(signal); err != nil || len(sentTo) != 1 || sentTo[0] != 42 {
		t.Fatalf("running: %v, sent to %v; want pid 42", err, sentTo)
	}
	e.RecordExit(ExitStatus{Pid: 42, Status: 143}, nil)
	if err := e.KillStarted(signal); !errors.Is(err, errdefs.ErrNotFound) || len(sentTo) != 1 {
		t.Fatalf("ended: %v, sent to %v; want NotFound, nothing more sent", err, sentTo)
	}
}
