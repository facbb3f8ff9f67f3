package lifecycle

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/pkg/sys/reaper"
	"github.com/containerd/errdefs"
	runc "github.com/containerd/go-runc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// startReaped starts script under sh through the reaper, as a container's
// init is: its exit is reported on the returned subscription.
func startReaped(t *testing.T, script string) (*exec.Cmd, chan runc.Exit) {
	t.Helper()
	cmd := exec.Command("sh", "-c", script)
	ec, err := reaper.Default.Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	return cmd, ec
}

func waitBounded(t *testing.T, m *StateMachine) ExitStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	e, err := m.Wait(ctx)
	if err != nil {
		t.Fatalf("wait: %v", err)
	}
	return e
}

// The init's exit comes from the reaper, turned into the container's by
// exitOf, recorded once and persisted for the delete command.
func TestInitRecordsTheReapedExit(t *testing.T) {
	reapLikeTheShim(t)
	bundle := t.TempDir()
	l := NewInit(bundle, PersistedState{ID: "c1", Namespace: "ns"})
	l.SetExitOf(func(e ExitStatus) ExitStatus { e.Status += 100; return e })
	cmd, ec := startReaped(t, "exit 7")
	pid := cmd.Process.Pid
	if err := l.Record(func(st *PersistedState) { st.Pid = pid }); err != nil {
		t.Fatal(err)
	}
	go l.WatchExit(ec, pid)
	exit := waitBounded(t, l.StateMachine)
	if exit.Pid != pid || exit.Status != 107 || exit.At.IsZero() {
		t.Fatalf("exit %+v, want pid %d status 107", exit, pid)
	}
	st := l.State()
	if st.ID != "c1" || st.Bundle != bundle || st.Pid != pid || st.Status != StatusStopped || st.Exit != exit {
		t.Fatalf("state %+v", st)
	}
	persisted, err := ReadState(bundle)
	if err != nil || persisted.Exit == nil || persisted.Exit.Status != 107 || persisted.ID != "c1" || l.Persisted().Pid != pid {
		t.Fatalf("persisted %+v %v", persisted, err)
	}
	if l.ID() != "c1" || l.Bundle() != bundle || l.Pid() != pid {
		t.Fatal("ID, Bundle, Pid")
	}
}

// A delete that did not wait for the init (a plain container's bounded
// wait) removed the record: the late exit is still answered to waiters
// but must not write the record again.
func TestInitLateExitAfterDelete(t *testing.T) {
	reapLikeTheShim(t)
	bundle := t.TempDir()
	l := NewInit(bundle, PersistedState{ID: "c2"})
	cmd, ec := startReaped(t, "exec sleep 60")
	go l.WatchExit(ec, cmd.Process.Pid)
	if err := l.Record(func(st *PersistedState) { st.Pid = cmd.Process.Pid }); err != nil {
		t.Fatal(err)
	}
	if _, err := l.DeleteOnce(func(Status) error { return os.Remove(StatePath(bundle)) }); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if exit := waitBounded(t, l.StateMachine); exit.Status != 137 {
		t.Fatalf("exit %+v", exit)
	}
	if HasState(bundle) {
		t.Fatal("a late exit wrote the deleted container's record again")
	}
	if _, err := l.DeleteOnce(nil); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("delete after delete: %v", err)
	}
}

// Release undoes what the record lists, poststop hooks first, and keeps
// the record while anything failed, so that it can be retried.
func TestRelease(t *testing.T) {
	reapLikeTheShim(t)
	bundle := t.TempDir()
	hookOut := filepath.Join(bundle, "hook-state")
	spec := specs.Spec{Version: specs.Version, Annotations: map[string]string{"a": "b"},
		Hooks: &specs.Hooks{Poststop: []specs.Hook{{Path: "/bin/sh", Args: []string{"sh", "-c", "cat > " + hookOut}}}}}
	data, _ := json.Marshal(spec)
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(bundle, MonitorRootDir, "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	st := &PersistedState{ID: "c3", Pid: 9, PoststopHooks: true, Rootfs: filepath.Join(bundle, "rootfs")}
	if err := WriteState(bundle, st); err != nil {
		t.Fatal(err)
	}
	kindErr := errors.New("tap busy")
	if err := Release(context.Background(), nil, bundle, st, kindErr); !errors.Is(err, kindErr) || !HasState(bundle) {
		t.Fatalf("release with a failed part: %v, state kept %v", err, HasState(bundle))
	}
	tl := NewTimeline()
	if err := Release(context.Background(), tl, bundle, st); err != nil {
		t.Fatal(err)
	}
	if HasState(bundle) {
		t.Fatal("state file left")
	}
	if _, err := os.Stat(filepath.Join(bundle, MonitorRootDir)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("monitor root left: %v", err)
	}
	var got specs.State
	raw, _ := os.ReadFile(hookOut)
	if err := json.Unmarshal(raw, &got); err != nil || got.ID != "c3" || got.Status != specs.StateStopped || got.Pid != 9 || got.Annotations["a"] != "b" {
		t.Fatalf("poststop hook got %q (%v)", raw, err)
	}
	if !strings.Contains(tl.String(), "unmount=") {
		t.Fatalf("timeline %q", tl.String())
	}
}

// A hook's failure says which hook and why: its status, its time-out, a
// missing binary.
func TestRunHooksFailures(t *testing.T) {
	reapLikeTheShim(t)
	one := 1
	state := HookState("c", "/b", 1, specs.StateCreating, nil)
	for _, tc := range []struct {
		hook specs.Hook
		want string
	}{
		{specs.Hook{Path: "/bin/sh", Args: []string{"sh", "-c", "echo nope; exit 4"}}, "createRuntime hook /bin/sh exited with status 4: nope"},
		{specs.Hook{Path: "/bin/sh", Args: []string{"sh", "-c", "exec sleep 30"}, Timeout: &one}, "killed after its timeout of 1s"},
		{specs.Hook{Path: "/no/such/hook"}, "createRuntime hook /no/such/hook"},
	} {
		err := RunHooks(context.Background(), "createRuntime", []specs.Hook{tc.hook}, state)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want %q", tc.hook.Args, err, tc.want)
		}
	}
}

// Process identity guards every signal to a recorded pid.
func TestProcessIdentity(t *testing.T) {
	reapLikeTheShim(t)
	cmd, _ := startReaped(t, "exec sleep 60")
	pid := cmd.Process.Pid
	start, err := ProcessStartTime(pid)
	if err != nil || start == 0 {
		t.Fatalf("start time: %d %v", start, err)
	}
	if !SameProcess(pid, start) || SameProcess(pid, start+1) || SameProcess(pid, 0) || SameProcess(0, start) {
		t.Fatal("SameProcess")
	}
	if at := StartedAt(start); time.Since(at) > time.Minute || time.Until(at) > 2*time.Second {
		t.Fatalf("started at %s, now %s", at, time.Now())
	}
	found := false
	for _, p := range Descendants(os.Getpid()) {
		found = found || p == pid
	}
	if !found {
		t.Fatalf("child %d not among the descendants", pid)
	}
	if _, err := ProcessStartTime(-1); err == nil {
		t.Fatal("start time of no process")
	}
}

// Describe is what urunc ps shows of a bundle.
func TestDescribe(t *testing.T) {
	bundle := t.TempDir()
	if _, err := Describe(bundle); err == nil {
		t.Fatal("described a bundle without state")
	}
	start, _ := ProcessStartTime(os.Getpid())
	st := &PersistedState{ID: "c", Namespace: "ns", Runc: true, Pid: os.Getpid(), PidStartTime: start, RootfsMode: "initrd"}
	if err := WriteState(bundle, st); err != nil {
		t.Fatal(err)
	}
	s, err := Describe(bundle)
	if err != nil || !s.Alive || s.Started.IsZero() || !s.Plain || s.ID != "c" || s.RootfsMode != "initrd" {
		t.Fatalf("live: %+v %v", s, err)
	}
	st.Exit = &ExitStatus{Status: 1}
	if err := WriteState(bundle, st); err != nil {
		t.Fatal(err)
	}
	if s, _ := Describe(bundle); s.Alive || s.Exit == nil {
		t.Fatalf("exited: %+v", s)
	}
}

func TestBundleSpec(t *testing.T) {
	bundle := t.TempDir()
	if _, err := LoadSpec(bundle); err == nil {
		t.Fatal("loaded a missing spec")
	}
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadSpec(bundle); err == nil || !strings.Contains(err.Error(), "parse OCI spec") {
		t.Fatalf("bad spec: %v", err)
	}
	for root, want := range map[*specs.Root]string{
		nil:                   filepath.Join(bundle, "rootfs"),
		{Path: "rfs"}:         filepath.Join(bundle, "rfs"),
		{Path: "/abs/rootfs"}: "/abs/rootfs",
	} {
		if got := RootfsDir(bundle, &specs.Spec{Root: root}); got != want {
			t.Errorf("root %+v: %s, want %s", root, got, want)
		}
	}
}

// A crash point not named does nothing and leaves the file for its step.
func TestCrashPointOtherStep(t *testing.T) {
	f := filepath.Join(t.TempDir(), "crash")
	if err := os.WriteFile(f, []byte("create:ready\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv(CrashFileEnv, f)
	CrashPoint("delete")
	if _, err := os.Stat(f); err != nil {
		t.Fatalf("the crash file of another step went: %v", err)
	}
	var tl *Timeline
	tl.Mark("nothing") // a nil timeline records nothing
}
