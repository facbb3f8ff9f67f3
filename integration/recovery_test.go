//go:build integration

package integration

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	containerd "github.com/containerd/containerd/v2/client"
	"google.golang.org/protobuf/proto"
)

// Five guests keep running across a containerd crash: after the restart
// containerd reconnects to their shims, which list the monitors.
func TestContainerdRestartKeepsGuestsRunning(t *testing.T) {
	const n = 5
	var ids []string
	monitors := map[string]int{}
	for i := 0; i < n; i++ {
		id := newID(t)
		ids = append(ids, id)
		ctr(t, "run", "-d", "--runtime", runtimeName, image, id, "/init", "sleep")
		pids := taskPids(t, id)
		if len(pids) == 0 || !isMonitor(pids[0]) {
			t.Fatalf("%s: task ps lists %v, want the monitor", id, pids)
		}
		monitors[id] = pids[0]
	}
	env.killDaemon()
	if err := env.startDaemon(); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if st := taskStatus(t, id); st != "RUNNING" {
			t.Errorf("%s after restart: status %q, want RUNNING", id, st)
		}
		pids := taskPids(t, id)
		if len(pids) == 0 || pids[0] != monitors[id] || !isMonitor(pids[0]) {
			t.Errorf("%s after restart: task ps lists %v, want monitor %d", id, pids, monitors[id])
		}
	}
	for _, id := range ids {
		killAndRemove(t, id)
	}
}

// A guest that exits while containerd is down: afterwards State, Wait and
// Delete give its real exit code, and the TaskExit held by the shim has
// been delivered (the task is STOPPED without anyone asking the shim).
func TestExitWhileContainerdIsDown(t *testing.T) {
	withHostConfig(t, env.standinHostConfig())
	id := newID(t)
	ctr(t, "run", "-d", "--runtime", runtimeName, image, id, "/init", "exit", "42")
	env.killDaemon()
	// The stand-in exits a second after it starts.
	waitFor(t, 10*time.Second, "the monitor to exit", func() bool { return len(monitorProcesses()) == 0 })
	time.Sleep(500 * time.Millisecond)
	if err := env.startDaemon(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "STOPPED after restart", func() bool { return taskStatus(t, id) == "STOPPED" })
	status, code := taskState(t, id)
	if status != containerd.Stopped || code != 42 {
		t.Fatalf("after restart: %s, exit %d; want stopped, 42", status, code)
	}
	_, task, ctx := loadTask(t, id)
	waitC, err := task.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st := <-waitC; st.ExitCode() != 42 {
		t.Fatalf("Wait: exit %d, want 42", st.ExitCode())
	}
	st, err := task.Delete(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.ExitCode() != 42 {
		t.Fatalf("Delete: exit %d, want 42", st.ExitCode())
	}
	ctr(t, "container", "rm", id)
}

// A shim killed with SIGKILL: containerd runs the delete command, which
// kills the monitor and removes everything; the task is no longer running.
func TestShimKilledLeavesNothing(t *testing.T) {
	id := newID(t)
	ctr(t, "run", "-d", "--runtime", runtimeName, image, id, "/init", "sleep")
	monitor := taskPids(t, id)[0]
	shim := shimOf(id)
	if shim == 0 {
		t.Fatal("no shim process found for the container")
	}
	killed := time.Now()
	if err := syscall.Kill(shim, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "the monitor to be killed", func() bool { return !isMonitor(monitor) })
	waitFor(t, 15*time.Second, "the task to stop", func() bool { return taskStatus(t, id) != "RUNNING" })
	t.Logf("monitor gone and task stopped %.2fs after the shim was killed", time.Since(killed).Seconds())
	// containerd unmounts the rootfs and removes the bundle after the
	// delete command has ended; until then the mount is still there.
	waitFor(t, 15*time.Second, "containerd's cleanup of "+id, func() bool {
		_, err := os.Stat(env.bundle(id))
		return os.IsNotExist(err)
	})
	if left := leftovers(id); strings.Contains(left, "mounts") || strings.Contains(left, "monitor") {
		t.Fatalf("after the dead shim's cleanup: %s", left)
	}
}

// A monitor killed from outside reports 137 and deletes cleanly.
func TestMonitorKilledFromOutside(t *testing.T) {
	id := newID(t)
	ctr(t, "run", "-d", "--runtime", runtimeName, image, id, "/init", "sleep")
	monitor := taskPids(t, id)[0]
	if err := syscall.Kill(monitor, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the task to stop", func() bool { return taskStatus(t, id) == "STOPPED" })
	if _, code := taskState(t, id); code != 137 {
		t.Fatalf("exit status %d, want 137", code)
	}
	ctr(t, "task", "rm", id)
	ctr(t, "container", "rm", id)
}

// The delete command on a bundle without state (a second run, or a shim
// that died before it wrote any) succeeds, prints only a DeleteResponse
// with 137, and is fast.
func TestDeleteCommandIsIdempotent(t *testing.T) {
	parent := t.TempDir()
	bundle := filepath.Join(parent, "gone")
	if err := os.Mkdir(bundle, 0o700); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		cmd := exec.Command(env.shimPath, "-namespace", namespace, "-id", "gone", "-address", env.socket(), "-bundle", bundle, "delete")
		cmd.Dir = bundle
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		start := time.Now()
		if err := cmd.Run(); err != nil {
			t.Fatalf("delete #%d: %v\n%s", i+1, err, stderr.String())
		}
		took := time.Since(start)
		var resp taskAPI.DeleteResponse
		if err := proto.Unmarshal(stdout.Bytes(), &resp); err != nil {
			t.Fatalf("stdout is not a DeleteResponse: %v (%q)", err, stdout.String())
		}
		if resp.ExitStatus != 137 {
			t.Fatalf("exit status %d, want 137", resp.ExitStatus)
		}
		t.Logf("delete #%d took %s", i+1, took)
	}
}

// 100 rounds of run, kill and delete (a stand-in monitor keeps it fast)
// leave no shim, no monitor and no mount.
func TestHundredRoundsLeaveNothing(t *testing.T) {
	withHostConfig(t, env.standinHostConfig())
	rounds := 100
	if testing.Short() {
		rounds = 10
	}
	start := time.Now()
	for i := 0; i < rounds; i++ {
		id := fmt.Sprintf("round-%d", i)
		t.Cleanup(func() { forceRemove(id) })
		ctr(t, "run", "-d", "--runtime", runtimeName, image, id, "/init", "sleep")
		ctr(t, "task", "kill", "-s", "SIGKILL", id)
		waitFor(t, 10*time.Second, id+" to stop", func() bool { return taskStatus(t, id) == "STOPPED" })
		ctr(t, "task", "rm", id)
		ctr(t, "container", "rm", id)
	}
	took := time.Since(start)
	var shims, monitors, mounts int
	waitFor(t, 15*time.Second, "shims to exit", func() bool {
		shims, monitors, mounts = len(processesOf(env.shimPath)), len(monitorProcesses()), len(mountsUnder(env.stateDir()))
		return shims == 0 && monitors == 0 && mounts == 0
	})
	t.Logf("%d rounds in %s: %d shims, %d monitors, %d mounts left", rounds, took.Round(time.Millisecond), shims, monitors, mounts)
	for i := 0; i < rounds; i++ {
		if left := leftovers(fmt.Sprintf("round-%d", i)); left != "" {
			t.Fatalf("round-%d: %s", i, left)
		}
	}
}

// The operator's cleanup command finds a container whose shim is gone and
// containerd does not know about, and cleans it.
func TestCleanupOrphansCommand(t *testing.T) {
	id := newID(t)
	ctr(t, "run", "-d", "--runtime", runtimeName, image, id, "/init", "sleep")
	monitor := taskPids(t, id)[0]
	orphan(t, id)
	stateDir := orphansStateDir()
	out, err := exec.Command(env.shimPath, "cleanup-orphans", "-state-dir", stateDir, "-dry-run").CombinedOutput()
	if err != nil || !strings.Contains(string(out), namespace+"/"+id+": shim gone") {
		t.Fatalf("dry run: %v\n%s", err, out)
	}
	if !isMonitor(monitor) {
		t.Fatal("dry run changed something: the monitor is gone")
	}
	out, err = exec.Command(env.shimPath, "cleanup-orphans", "-state-dir", stateDir).CombinedOutput()
	if err != nil || !strings.Contains(string(out), namespace+"/"+id+": cleaned") {
		t.Fatalf("cleanup: %v\n%s", err, out)
	}
	waitFor(t, 5*time.Second, "the monitor to be killed", func() bool { return !isMonitor(monitor) })
	if m := mountsUnder(env.bundle(id)); len(m) > 0 {
		t.Fatalf("mounts left: %v", m)
	}
	out, _ = exec.Command(env.shimPath, "cleanup-orphans", "-state-dir", stateDir).CombinedOutput()
	if strings.Contains(string(out), id) {
		t.Fatalf("second run found the container again:\n%s", out)
	}
}
