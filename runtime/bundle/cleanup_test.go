package bundle

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/lifecycle"
)

func TestCleanupWithoutStateIsANoop(t *testing.T) {
	dir := t.TempDir()
	for i := 0; i < 2; i++ {
		exit, err := Cleanup(context.Background(), dir)
		if err != nil {
			t.Fatal(err)
		}
		if exit.Status != 137 {
			t.Fatalf("status = %d, want 137", exit.Status)
		}
	}
}

// A persisted pid whose start time does not match is another process
// that got the pid: Cleanup must not signal it.
func TestCleanupSparesReusedPid(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	dir := t.TempDir()
	start, err := lifecycle.ProcessStartTime(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	// A start time that differs, or none at all, proves nothing.
	for _, recorded := range []uint64{start + 1, 0} {
		if err := lifecycle.WriteState(dir, &lifecycle.PersistedState{ID: "c", Pid: cmd.Process.Pid, PidStartTime: recorded}); err != nil {
			t.Fatal(err)
		}
		exit, err := Cleanup(context.Background(), dir)
		if err != nil {
			t.Fatal(err)
		}
		if exit.Pid != cmd.Process.Pid || exit.Status != 137 {
			t.Fatalf("exit = %+v", exit)
		}
		if !lifecycle.SameProcess(cmd.Process.Pid, start) {
			t.Fatalf("Cleanup killed a process whose start time %d did not match", recorded)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, lifecycle.StateFile)); !os.IsNotExist(err) {
		t.Fatalf("state file left: %v", err)
	}
	// With the right start time it is killed.
	if err := lifecycle.WriteState(dir, &lifecycle.PersistedState{ID: "c", Pid: cmd.Process.Pid, PidStartTime: start}); err != nil {
		t.Fatal(err)
	}
	if _, err := Cleanup(context.Background(), dir); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err == nil {
		t.Fatal("sleep was not killed")
	}
}
