//go:build integration

package integration

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/urunc-dev/containerd-shim-urunc-v2/integration/testimage"
)

// A shim killed at each step of Create, Start and Delete: containerd's
// delete command, then cleanup-orphans, leave nothing (no mount, loop
// device, cgroup, socket, runc state or process; checked by newID's
// leftover check). The guest boots from its blockfile snapshot, so the
// block mode's host work is among the steps; the stand-in monitor keeps it
// fast.
func TestCrashInjection(t *testing.T) {
	steps := []struct {
		step  string
		plain bool
	}{
		{step: "create:mounted"}, {step: "create:control"}, {step: "create:cgroup"},
		{step: "create:prepared"}, {step: "create:launcher"}, {step: "create:ready"},
		{step: "start"}, {step: "delete"},
		{step: "create:mounted", plain: true}, {step: "plain:created", plain: true},
	}
	for _, tc := range steps {
		name := strings.ReplaceAll(tc.step, ":", " ")
		if tc.plain {
			name = "plain " + name
		}
		t.Run(name, func(t *testing.T) {
			withHostConfig(t, env.standinHostConfig())
			id := newID(t)
			t.Cleanup(func() { os.Remove(env.crashFile()) })
			args := []string{"run", "-d", "--snapshotter", "blockfile", "--runtime", runtimeName, testimage.RootfsImageName, id, "/init", "sleep"}
			if tc.plain {
				args = []string{"run", "-d", "--runtime", runtimeName, testimage.PlainImageName, id, "/bin/busybox", "sleep", "1000"}
			}
			if tc.step != "delete" {
				if err := os.WriteFile(env.crashFile(), []byte(tc.step), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			out, err := ctrRaw(args...)
			if tc.step == "delete" {
				if err != nil {
					t.Fatalf("ctr run: %v\n%s", err, out)
				}
				ctr(t, "task", "kill", "-s", "SIGKILL", id)
				waitFor(t, 10*time.Second, "task to stop", func() bool { return taskStatus(t, id) == "STOPPED" })
				if err := os.WriteFile(env.crashFile(), []byte(tc.step), 0o644); err != nil {
					t.Fatal(err)
				}
				out, err = ctrRaw("task", "rm", id)
			}
			if err == nil {
				t.Fatalf("the shim did not crash at %s:\n%s", tc.step, out)
			}
			if _, err := os.Stat(env.crashFile()); err == nil {
				t.Fatalf("no shim reached %s:\n%s", tc.step, out)
			}
			// containerd runs the delete command itself; then the
			// operator's sweep must find nothing left to clean.
			waitFor(t, 20*time.Second, "the bundle to go", func() bool {
				_, err := os.Stat(env.bundle(id))
				return os.IsNotExist(err)
			})
			sweep, err := exec.Command(env.shimPath, "cleanup-orphans", "-state-dir", orphansStateDir(), "-dry-run").CombinedOutput()
			if err != nil || strings.Contains(string(sweep), id) {
				t.Fatalf("cleanup-orphans after the crash: %v\n%s", err, sweep)
			}
		})
	}
}
