//go:build integration

package integration

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/urunc-dev/containerd-shim-urunc-v2/integration/testimage"
)

// A container whose image names no unikernel is run by runc through
// go-runc, under this shim: output, exit status, kill and delete work, and
// nothing (runc state included) is left.
func TestPlainContainerRunsUnderRunc(t *testing.T) {
	t.Run("one-shot", func(t *testing.T) {
		id := newID(t)
		out, err := ctrRaw("run", "--rm", "--runtime", runtimeName, testimage.PlainImageName, id, "/bin/busybox", "echo", "hello-plain")
		if err != nil || !strings.Contains(out, "hello-plain") {
			t.Fatalf("ctr run: %v\n%s", err, out)
		}
	})
	t.Run("exit status", func(t *testing.T) {
		id := newID(t)
		out, err := ctrRaw("run", "--rm", "--runtime", runtimeName, testimage.PlainImageName, id, "/bin/sh", "-c", "exit 7")
		if exitCode(err) != 7 {
			t.Fatalf("ctr run: %v, want exit 7\n%s", err, out)
		}
	})
	t.Run("detached, kill, delete", func(t *testing.T) {
		id := newID(t)
		log := filepath.Join(t.TempDir(), "out.log")
		ctr(t, "run", "-d", "--log-uri", "file://"+log, "--runtime", runtimeName, testimage.PlainImageName, id,
			"/bin/sh", "-c", "echo plain-ready; exec /bin/busybox sleep 1000")
		waitForOutput(t, log, "plain-ready", 20*time.Second)
		if st := taskStatus(t, id); st != "RUNNING" {
			t.Fatalf("status %s", st)
		}
		if pids := taskPids(t, id); len(pids) == 0 {
			t.Fatal("no pids")
		}
		ctr(t, "task", "pause", id)
		ctr(t, "task", "resume", id)
		ctr(t, "task", "kill", "-s", "SIGKILL", id)
		waitFor(t, 10*time.Second, "stop", func() bool { return taskStatus(t, id) == "STOPPED" })
		if _, code := taskState(t, id); code != 137 {
			t.Fatalf("exit %d, want 137", code)
		}
		ctr(t, "task", "rm", id)
		ctr(t, "container", "rm", id)
	})
}

// Exec into a plain container (a sidecar's probe, kubectl exec), as
// containerd's runc shim does it: execContract.
func TestExecInPlainContainer(t *testing.T) {
	id := newID(t)
	ctr(t, "run", "-d", "--runtime", runtimeName, testimage.PlainImageName, id, "/bin/busybox", "sleep", "1000")
	execContract(t, id, false)
	killAndRemove(t, id)
}
