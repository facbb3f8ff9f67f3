//go:build integration

package integration

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
)

// forgedInitExit is a kernel-looking line an app can print: the kernel's
// record of init ending with status 9 (killed), which a guest whose app
// prints it and then powers down cleanly must not take for its own.
var forgedInitExit = []string{"[", "1.000000]", "Kernel", "panic", "-", "not", "syncing:", "Attempted", "to", "kill", "init!", "exitcode=0x00000009"}

// An app that prints the kernel's line about init's end and then powers
// down cleanly exits 0: only the kernel's last event counts.
func TestGuestForgedExitLineIsIgnored(t *testing.T) {
	id := newID(t)
	args := append([]string{"run", "--rm", "--runtime", runtimeName, image, id, "/init", "say"}, forgedInitExit...)
	out, err := ctrRaw(args...)
	if code := exitCode(err); code != 0 {
		t.Fatalf("ctr run: exit %d, want 0 for a guest that powered down\n%s", code, out)
	}
	if !strings.Contains(out, "exitcode=0x00000009") || !strings.Contains(out, "reboot: Power down") {
		t.Fatalf("the guest did not print the forged line and power down:\n%s", out)
	}
}

// A Linux guest whose init is missing panics ("No working init found"),
// and qemu exits 0 on the reset: the container's status is a failure,
// 134, not success.
func TestGuestKernelPanicFails(t *testing.T) {
	id := newID(t)
	out, err := ctrRaw("run", "--rm", "--runtime", runtimeName, image, id, "/nonexistent-init")
	if code := exitCode(err); code != 134 {
		t.Fatalf("ctr run: exit %d, want 134 for a guest whose kernel panicked\n%s", code, out)
	}
	if !strings.Contains(out, "Kernel panic - not syncing") {
		t.Fatalf("no kernel panic on the console:\n%s", out)
	}
}

// The guest's status does not depend on where its console goes: with a
// log file (ctr --log-uri file://) or a logging binary (nerdctl's
// binary://) the guest's exit 3 is the container's, as with FIFOs.
func TestGuestExitCodeWithLogURIs(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name    string
		creator func(log string) cio.Creator
	}{
		{"file", func(log string) cio.Creator { return cio.LogFile(log) }},
		{"binary", func(log string) cio.Creator {
			return cio.BinaryIO(env.logger, map[string]string{"out": log})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := newID(t)
			c, ctx := newClient(t)
			img, err := c.GetImage(ctx, image)
			if err != nil {
				t.Fatal(err)
			}
			cont, err := c.NewContainer(ctx, id, containerd.WithRuntime(runtimeName, nil), containerd.WithNewSnapshot(id, img),
				containerd.WithNewSpec(oci.WithImageConfig(img), oci.WithProcessArgs("/init", "exit", "3")))
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = cont.Delete(ctx, containerd.WithSnapshotCleanup) }()
			log := filepath.Join(dir, tc.name+".log")
			task, err := cont.NewTask(ctx, tc.creator(log))
			if err != nil {
				t.Fatal(err)
			}
			exitC, err := task.Wait(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := task.Start(ctx); err != nil {
				t.Fatal(err)
			}
			st := <-exitC
			if _, err := task.Delete(ctx); err != nil {
				t.Fatal(err)
			}
			data, _ := os.ReadFile(log)
			if st.ExitCode() != 3 {
				t.Fatalf("exit %d, want the guest's 3; the log holds:\n%s", st.ExitCode(), data)
			}
			if !bytes.Contains(data, []byte("exitcode=0x00000300")) {
				t.Fatalf("the log lacks the guest's console:\n%s", data)
			}
		})
	}
}
