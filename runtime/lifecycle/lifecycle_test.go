package lifecycle

import (
	"errors"
	"testing"

	"github.com/containerd/errdefs"
)

// One Delete at a time: a concurrent one fails instead of releasing twice
// (which panicked the shim), a failed one can be retried, and after the
// Delete it is NotFound.
func TestDeleteIsExclusive(t *testing.T) {
	l := NewMachine(t.TempDir(), PersistedState{ID: "c", Namespace: "ns"})
	l.state = StatusStopped
	if _, err := l.BeginDelete(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.BeginDelete(); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("concurrent delete: %v", err)
	}
	l.EndDelete(false)
	if _, err := l.BeginDelete(); err != nil {
		t.Fatalf("retry after a failed delete: %v", err)
	}
	l.EndDelete(true)
	if _, err := l.BeginDelete(); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("delete after delete: %v", err)
	}
}
