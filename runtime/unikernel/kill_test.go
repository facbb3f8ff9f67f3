package unikernel

import (
	"context"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/lifecycle"
)

// A harmless signal never ends a task, even one that is only created (its
// launcher would have been killed).
func TestHarmlessSignalSparesCreatedTask(t *testing.T) {
	c := &Container{Init: lifecycle.NewInit(t.TempDir(), lifecycle.PersistedState{ID: "c", Namespace: "ns"})}
	// c.process is nil: any kill would panic.
	for _, sig := range []unix.Signal{unix.SIGWINCH, unix.SIGHUP, unix.SIGCONT} {
		if err := c.Kill(context.Background(), sig, false); err != nil {
			t.Fatalf("%v: %v", sig, err)
		}
	}
	if c.Status() != lifecycle.StatusCreated {
		t.Fatalf("status %s", c.Status())
	}
}
