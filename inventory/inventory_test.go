package inventory

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// makeBundle writes a bundle under stateDir/ns/id with the given files.
func makeBundle(t *testing.T, stateDir, ns, id string, files map[string]string) string {
	t.Helper()
	b := filepath.Join(stateDir, ns, id)
	if err := os.MkdirAll(b, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(b, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

// state is the runtime's persisted state of a unikernel container as the
// shim writes it (version 1). The pid is one no process has.
func state(ns, id string) string {
	return `{"version":1,"id":"` + id + `","namespace":"` + ns + `","pid":2147483646,"pidStartTime":1,` +
		`"rootfsMode":"initrd","guestType":"linux","monitor":"qemu","taps":[{"name":"tap0_urunc","netns":"/n","link":"eth0","address":"198.18.0.2/24"}]}`
}

func bootstrap(addr string) string {
	return `{"version":2,"address":"unix://` + addr + `","protocol":"ttrpc"}`
}

func TestListClassifiesEachBundle(t *testing.T) {
	dir := t.TempDir()
	live, hung := ttrpcShim(t), silentShim(t)
	makeBundle(t, dir, "default", "live", map[string]string{"urunc-state.json": state("default", "live"), "bootstrap.json": bootstrap(live)})
	// containerd 1.7 writes the address file instead.
	makeBundle(t, dir, "default", "hung", map[string]string{"urunc-state.json": state("default", "hung"), "address": "unix://" + hung + "\n"})
	makeBundle(t, dir, "k8s.io", "gone", map[string]string{"urunc-state.json": state("k8s.io", "gone"), "bootstrap.json": bootstrap(socketPath(t))})
	makeBundle(t, dir, "k8s.io", "noaddr", map[string]string{"urunc-state.json": state("k8s.io", "noaddr")})
	makeBundle(t, dir, "default", "exited", map[string]string{"bootstrap.json": bootstrap(live),
		"urunc-state.json": `{"version":1,"id":"exited","namespace":"default","pid":7,"exit":{"pid":7,"status":3,"at":"2026-01-02T03:04:05Z"},"runc":true}`})
	makeBundle(t, dir, "default", "newer", map[string]string{"urunc-state.json": `{"version":2,"id":"newer"}`, "bootstrap.json": bootstrap(live)})
	makeBundle(t, dir, "default", "garbled", map[string]string{"urunc-state.json": `{"version":`, "bootstrap.json": bootstrap(live)})
	// Another runtime's bundle (runc's): not listed.
	makeBundle(t, dir, "default", "runc", map[string]string{"config.json": "{}", "bootstrap.json": bootstrap(live)})

	// Live shims must answer within it; the hung one costs it once.
	timeout := 2 * time.Second
	entries, err := List(context.Background(), dir, timeout)
	if err != nil {
		t.Fatal(err)
	}
	type want struct {
		shim   ShimState
		orphan bool
		err    string
	}
	wants := map[string]want{
		"default/exited":  {ShimAnswers, false, ""},
		"default/garbled": {ShimAnswers, false, "parse state"},
		"default/hung":    {ShimHung, false, ""}, // no shim.pid: not known dead
		"default/live":    {ShimAnswers, false, ""},
		"default/newer":   {ShimAnswers, false, "version 2"},
		"k8s.io/gone":     {ShimGone, true, ""},
		"k8s.io/noaddr":   {ShimGone, true, ""},
	}
	var order []string
	for _, e := range entries {
		name, _ := filepath.Rel(dir, e.Bundle)
		order = append(order, name)
		w, ok := wants[name]
		if !ok {
			t.Errorf("listed %s", name)
			continue
		}
		if e.Shim != w.shim || e.Orphan() != w.orphan {
			t.Errorf("%s: shim %s orphan %v, want %s %v", name, e.Shim, e.Orphan(), w.shim, w.orphan)
		}
		if (e.Err == nil) != (w.err == "") || (e.Err != nil && !strings.Contains(e.Err.Error(), w.err)) {
			t.Errorf("%s: err %v, want %q", name, e.Err, w.err)
		}
	}
	if got := strings.Join(order, " "); got != "default/exited default/garbled default/hung default/live default/newer k8s.io/gone k8s.io/noaddr" {
		t.Errorf("order %s", got)
	}
	byName := map[string]Entry{}
	for _, e := range entries {
		byName[e.ID] = e
	}
	if e := byName["live"]; e.GuestType != "linux" || e.Monitor != "qemu" || e.RootfsMode != "initrd" || e.Pid != 2147483646 ||
		e.Alive || len(e.Taps) != 1 || e.Taps[0].Address != "198.18.0.2/24" || e.Namespace != "default" {
		t.Errorf("live's summary: %+v", e.Summary)
	}
	if e := byName["exited"]; !e.Plain || e.Exit == nil || e.Exit.Status != 3 || e.Alive {
		t.Errorf("exited's summary: %+v", e.Summary)
	}

	orphans, err := Orphans(context.Background(), dir, timeout)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range orphans {
		names = append(names, e.ID)
	}
	if got := strings.Join(names, " "); got != "hung gone noaddr" {
		t.Errorf("orphans %q, want hung gone noaddr", got)
	}
}

// Shims are probed together: many hung shims cost about one timeout.
func TestListProbesHungShimsTogether(t *testing.T) {
	dir := t.TempDir()
	const n = 8
	for i := 0; i < n; i++ {
		id := "c" + string(rune('0'+i))
		makeBundle(t, dir, "default", id, map[string]string{"urunc-state.json": state("default", id), "bootstrap.json": bootstrap(silentShim(t))})
	}
	start := time.Now()
	entries, err := List(context.Background(), dir, probeTimeout)
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	if len(entries) != n {
		t.Fatalf("%d entries, want %d", len(entries), n)
	}
	for _, e := range entries {
		if e.Shim != ShimHung {
			t.Errorf("%s: %s, want hung", e.ID, e.Shim)
		}
	}
	if took >= n*probeTimeout/2 {
		t.Errorf("listing %d hung shims took %s with a %s timeout: probed one by one", n, took, probeTimeout)
	}
}

func TestListMissingStateDir(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nothing")
	_, err := List(context.Background(), missing, probeTimeout)
	if err == nil || !strings.Contains(err.Error(), missing) || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("List(missing) = %v, want the path and no such file", err)
	}
}

func TestShimAddress(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files map[string]string
		want  string
	}{
		{"bootstrap.json (containerd 2)", map[string]string{"bootstrap.json": `{"version":2,"address":"unix:///run/s/abc","protocol":"ttrpc"}`}, "unix:///run/s/abc"},
		{"address (containerd 1.7)", map[string]string{"address": "unix:///run/s/def\n"}, "unix:///run/s/def"},
		{"bootstrap.json wins", map[string]string{"bootstrap.json": `{"address":"unix:///a"}`, "address": "unix:///b"}, "unix:///a"},
		{"garbled bootstrap.json, address", map[string]string{"bootstrap.json": `{`, "address": "unix:///b"}, "unix:///b"},
		{"neither", nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := makeBundle(t, t.TempDir(), "ns", "id", tc.files)
			if got := ShimAddress(b); got != tc.want {
				t.Errorf("ShimAddress = %q, want %q", got, tc.want)
			}
		})
	}
}

// The dry run names each orphan and why, and leaves the live container
// out; it changes nothing.
func TestOrphansMainDryRun(t *testing.T) {
	dir := t.TempDir()
	makeBundle(t, dir, "default", "live", map[string]string{"urunc-state.json": state("default", "live"), "bootstrap.json": bootstrap(ttrpcShim(t))})
	silent := silentShim(t)
	stopped := stoppedProcess(t)
	self := strconv.Itoa(os.Getpid())
	makeBundle(t, dir, "default", "hung", map[string]string{"urunc-state.json": state("default", "hung"), "bootstrap.json": bootstrap(silent),
		ShimPidFile: strconv.Itoa(stopped)})
	makeBundle(t, dir, "default", "slow", map[string]string{"urunc-state.json": state("default", "slow"), "bootstrap.json": bootstrap(silent),
		ShimPidFile: self})
	gone := makeBundle(t, dir, "default", "gone", map[string]string{"urunc-state.json": state("default", "gone")})
	var stdout, stderr bytes.Buffer
	code := OrphansMain(context.Background(), []string{"-state-dir", dir, "-dry-run", "-shim-timeout", "2s"}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	want := "default/gone: shim gone\ndefault/hung: shim hung (accepts, no answer in 2s), pid " + strconv.Itoa(stopped) + " stopped\n" +
		"default/slow: not cleaned: shim hung (accepts, no answer in 2s), pid " + self + " running; clean it once its shim is gone or stopped\n"
	if stdout.String() != want {
		t.Errorf("stdout:\n%s\nwant:\n%s", stdout.String(), want)
	}
	if _, err := os.Stat(filepath.Join(gone, "urunc-state.json")); err != nil {
		t.Errorf("the dry run changed the bundle: %v", err)
	}
}

// Without a state dir to read it says what it looked for.
func TestOrphansMainNoState(t *testing.T) {
	var stdout, stderr bytes.Buffer
	cfg := filepath.Join(t.TempDir(), "config.toml")
	code := OrphansMain(context.Background(), []string{"-containerd-config", cfg}, &stdout, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), cfg) || !strings.Contains(stderr.String(), "no such file") {
		t.Errorf("exit %d, stderr %q: want 1 naming %s", code, stderr.String(), cfg)
	}
}

// stoppedProcess starts a process and stops it (SIGSTOP), as a shim an
// operator or a debugger stopped; it returns once /proc shows it stopped.
func stoppedProcess(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("sleep", "600")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	if err := cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	b := t.TempDir()
	if err := os.WriteFile(filepath.Join(b, ShimPidFile), []byte(strconv.Itoa(cmd.Process.Pid)), 0o600); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 1000; i++ {
		if _, st := shimProcessOf(b, "/proc"); st == ShimProcessStopped {
			return cmd.Process.Pid
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("process %d not stopped", cmd.Process.Pid)
	return 0
}

// A hung shim's process is read from the bundle's shim.pid and
// /proc/PID/stat, whose command name may hold parentheses and spaces.
func TestShimProcessOf(t *testing.T) {
	proc := t.TempDir()
	for pid, stat := range map[string]string{
		"10": "10 (shim) S 1 10 10 0",
		"11": "11 (a) T (b) R 1 11 11 0",
		"12": "12 (x) Z 1 12",
		"13": "13 (x) t 1 13",
	} {
		if err := os.MkdirAll(filepath.Join(proc, pid), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(proc, pid, "stat"), []byte(stat), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for content, want := range map[string]ShimProcess{
		"10": ShimProcessRunning, "11\n": ShimProcessRunning, "12": ShimProcessDead, "13": ShimProcessStopped,
		"14": ShimProcessDead, "x": ShimProcessUnknown, "": ShimProcessUnknown,
	} {
		b := t.TempDir()
		if content != "" {
			if err := os.WriteFile(filepath.Join(b, ShimPidFile), []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		if _, got := shimProcessOf(b, proc); got != want {
			t.Errorf("shim.pid %q: %s, want %s", content, got, want)
		}
	}
}
