package runtime

import (
	"context"
	"errors"
	"testing"

	"golang.org/x/sys/unix"
)

// A harmless signal never ends a task, even one that is only created (its
// launcher would have been killed).
func TestHarmlessSignalSparesCreatedTask(t *testing.T) {
	c := &Container{lifecycle: newLifecycle("c", "ns", t.TempDir())}
	// c.process is nil: any kill would panic.
	for _, sig := range []unix.Signal{unix.SIGWINCH, unix.SIGHUP, unix.SIGCONT} {
		if err := c.Kill(context.Background(), sig, false); err != nil {
			t.Fatalf("%v: %v", sig, err)
		}
	}
	if c.status() != StatusCreated {
		t.Fatalf("status %s", c.status())
	}
}

// One Delete at a time: a concurrent one fails instead of releasing twice
// (which panicked the shim), a failed one can be retried, and after the
// Delete it is NotFound.
func TestDeleteIsExclusive(t *testing.T) {
	l := newLifecycle("c", "ns", t.TempDir())
	l.state = StatusStopped
	if _, err := l.beginDelete(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.beginDelete(); !errors.Is(err, errFailedPrecondition) {
		t.Fatalf("concurrent delete: %v", err)
	}
	l.endDelete(false)
	if _, err := l.beginDelete(); err != nil {
		t.Fatalf("retry after a failed delete: %v", err)
	}
	l.endDelete(true)
	if _, err := l.beginDelete(); !errors.Is(err, errNotFound) {
		t.Fatalf("delete after delete: %v", err)
	}
}

// runc's kill of a container whose process just exited is the NotFound
// containerd expects, not a failure: a CRI StopPodSandbox failed on it
// (found by critest's HostNetwork spec).
func TestProcessGone(t *testing.T) {
	for msg, want := range map[string]bool{
		"runc did not terminate successfully: exit status 1: container not running": true,
		"os: process already finished":                                              true,
		"kill: no such process":                                                     true,
		// runc kill --all freezes a cgroup v1 container first; an init that
		// has just exited makes it refuse (critest again, a later run).
		"runc did not terminate successfully: exit status 1: invalid state transition from stopped to paused": true,
		"runc did not terminate successfully: exit status 1: permission denied":                               false,
	} {
		if got := processGone(msg); got != want {
			t.Errorf("processGone(%q) = %v, want %v", msg, got, want)
		}
	}
}
