package runtime

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestStateRoundTripAndVersion(t *testing.T) {
	dir := t.TempDir()
	if st, err := readState(dir); err != nil || st != nil {
		t.Fatalf("empty bundle: %v %v", st, err)
	}
	in := &persistedState{ID: "c1", Pid: 42, PidStartTime: 7, Cgroup: "/default/c1",
		Taps: []Tap{{Name: "tap0", Netns: "/var/run/netns/x", Link: "eth0"}},
		Exit: &ExitStatus{Pid: 42, Status: 137, At: time.Unix(100, 0).UTC()}}
	if err := writeState(dir, in); err != nil {
		t.Fatal(err)
	}
	out, err := readState(dir)
	if err != nil {
		t.Fatal(err)
	}
	if out.ID != "c1" || out.Pid != 42 || out.Exit.Status != 137 || out.Taps[0].Name != "tap0" || out.Version != stateVersion {
		t.Fatalf("round trip: %+v", out)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("temp files left next to the state: %v", entries)
	}
	if err := os.WriteFile(statePath(dir), []byte(`{"version":99}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := readState(dir); err == nil || !strings.Contains(err.Error(), "version 99") {
		t.Fatalf("err = %v, want a version error", err)
	}
}

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
	start, err := processStartTime(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	// A start time that differs, or none at all, proves nothing.
	for _, recorded := range []uint64{start + 1, 0} {
		if err := writeState(dir, &persistedState{ID: "c", Pid: cmd.Process.Pid, PidStartTime: recorded}); err != nil {
			t.Fatal(err)
		}
		exit, err := Cleanup(context.Background(), dir)
		if err != nil {
			t.Fatal(err)
		}
		if exit.Pid != cmd.Process.Pid || exit.Status != 137 {
			t.Fatalf("exit = %+v", exit)
		}
		if !sameProcess(cmd.Process.Pid, start) {
			t.Fatalf("Cleanup killed a process whose start time %d did not match", recorded)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, stateFile)); !os.IsNotExist(err) {
		t.Fatalf("state file left: %v", err)
	}
	// With the right start time it is killed.
	if err := writeState(dir, &persistedState{ID: "c", Pid: cmd.Process.Pid, PidStartTime: start}); err != nil {
		t.Fatal(err)
	}
	if _, err := Cleanup(context.Background(), dir); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err == nil {
		t.Fatal("sleep was not killed")
	}
}
