//go:build integration

package integration

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/urunc-dev/containerd-shim-urunc-v2/integration/testimage"
)

// A plain container's shim killed outright: containerd's delete command
// runs runc to clean it, which needs a reaper the one-shot command did not
// have (it hung). The task ends and no runc state is left.
func TestDeleteCommandForPlainContainer(t *testing.T) {
	id := newID(t)
	ctr(t, "run", "-d", "--runtime", runtimeName, testimage.PlainImageName, id, "/bin/busybox", "sleep", "1000")
	shim := shimOf(id)
	if shim == 0 {
		t.Fatal("no shim")
	}
	if err := syscall.Kill(shim, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the task to stop", func() bool { return taskStatus(t, id) != "RUNNING" })
	waitFor(t, 20*time.Second, "runc's state to go", func() bool {
		st, _ := filepath.Glob(filepath.Join(env.qmpDir, "runc", "*", id))
		return len(st) == 0
	})
}

// The operator's cleanup-orphans on a plain container whose shim and
// containerd are gone: it finishes (it hung) and cleans runc's state.
func TestCleanupOrphansPlainContainer(t *testing.T) {
	id := newID(t)
	ctr(t, "run", "-d", "--runtime", runtimeName, testimage.PlainImageName, id, "/bin/busybox", "sleep", "1000")
	orphan(t, id)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, env.shimPath, "cleanup-orphans", "-state-dir", orphansStateDir()).CombinedOutput()
	if err != nil || !strings.Contains(string(out), namespace+"/"+id+": cleaned") {
		t.Fatalf("cleanup-orphans: %v\n%s", err, out)
	}
	if st, _ := filepath.Glob(filepath.Join(env.qmpDir, "runc", "*", id)); len(st) > 0 {
		t.Fatalf("runc state left: %v", st)
	}
}

// Two Deletes of one stopped task at once: one wins, the other is refused;
// the shim does not panic (a double close did) and nothing is left.
func TestConcurrentDeletes(t *testing.T) {
	withHostConfig(t, env.standinHostConfig())
	id := newID(t)
	ctr(t, "run", "-d", "--runtime", runtimeName, image, id, "/init", "exit", "3")
	waitFor(t, 15*time.Second, "the task to stop", func() bool { return taskStatus(t, id) == "STOPPED" })
	cont, task, ctx := loadTask(t, id)
	var wg sync.WaitGroup
	errs := make([]error, 2)
	codes := make([]uint32, 2)
	for i := range errs {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			st, err := task.Delete(ctx)
			errs[i] = err
			if err == nil {
				codes[i] = st.ExitCode()
			}
		}(i)
	}
	wg.Wait()
	ok := 0
	for i, err := range errs {
		if err == nil {
			ok++
			if codes[i] != 3 {
				t.Errorf("delete reported exit %d, want 3", codes[i])
			}
		}
	}
	if ok != 1 {
		t.Fatalf("deletes: %v; want exactly one to succeed", errs)
	}
	if err := cont.Delete(ctx); err != nil {
		t.Fatal(err)
	}
}

// A paused guest whose shim dies: the delete command thaws the frozen
// monitor (cgroup v1 freezer) so that its SIGKILL lands; it did not.
func TestDeleteCommandThawsPausedMonitor(t *testing.T) {
	withHostConfig(t, env.standinHostConfig())
	id := newID(t)
	ctr(t, "run", "-d", "--runtime", runtimeName, image, id, "/init", "sleep")
	monitor := taskPids(t, id)[0]
	ctr(t, "task", "pause", id)
	if err := syscall.Kill(shimOf(id), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the frozen monitor to die", func() bool { return !isMonitor(monitor) })
}
