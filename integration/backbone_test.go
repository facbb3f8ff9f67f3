//go:build integration

package integration

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/urunc-dev/containerd-shim-urunc-v2/integration/testimage"
)

var image = testimage.ImageName

// A one-shot guest prints its arguments (the one with a space quoted the
// way urunc's inits expect) and ctr exits with the container's status.
func TestRunOneShotPrintsGuestOutput(t *testing.T) {
	id := newID(t)
	out, err := ctrRaw("run", "--rm", "--runtime", runtimeName, image, id, "/init", "echo", "hello", "from a guest")
	if err != nil {
		t.Fatalf("ctr run: %v\n%s", err, out)
	}
	if want := "URUNC_GUEST_ARGS: hello 'from a guest'"; !strings.Contains(out, want) {
		t.Fatalf("guest output lacks %q:\n%s", want, out)
	}
}

// The image's own entrypoint and cmd run when ctr gives no args.
func TestRunImageDefaultArgs(t *testing.T) {
	id := newID(t)
	out, err := ctrRaw("run", "--rm", "--runtime", runtimeName, image, id)
	if err != nil {
		t.Fatalf("ctr run: %v\n%s", err, out)
	}
	if want := "URUNC_GUEST_ARGS: hello from urunc"; !strings.Contains(out, want) {
		t.Fatalf("guest output lacks %q:\n%s", want, out)
	}
}

// A detached long-running guest is RUNNING, its pid is the qemu monitor,
// and SIGKILL then rm end it.
func TestRunDetachedKillAndRemove(t *testing.T) {
	id := newID(t)
	logFile := filepath.Join(t.TempDir(), "console.log")
	ctr(t, "run", "-d", "--log-uri", "file://"+logFile, "--runtime", runtimeName, image, id, "/init", "sleep")
	if st := taskStatus(t, id); st != "RUNNING" {
		t.Fatalf("task status = %q, want RUNNING", st)
	}
	waitForOutput(t, logFile, "URUNC_GUEST_READY", 60*time.Second)
	pids := taskPids(t, id)
	if len(pids) == 0 || !isMonitor(pids[0]) {
		t.Fatalf("ctr task ps lists %v, want the qemu monitor first", pids)
	}
	ctr(t, "task", "kill", "-s", "SIGKILL", id)
	waitFor(t, 10*time.Second, "task to stop", func() bool { return taskStatus(t, id) == "STOPPED" })
	ctr(t, "task", "rm", id)
	ctr(t, "container", "rm", id)
	if _, err := os.Stat(filepath.Join("/proc", strconv.Itoa(pids[0]))); err == nil {
		t.Fatalf("monitor %d still alive after kill and rm", pids[0])
	}
}

// Bad input fails Create with an error that names the problem, through
// ctr, and leaves nothing behind (checked by newID's cleanup).
func TestBadInputIsRefusedWithClearError(t *testing.T) {
	cases := []struct {
		name       string
		annotation string
		hostConfig string
		want       string
		image      string
	}{
		{"unknown unikernel type", "com.urunc.unikernel.unikernelType=bogus", "", `unknown unikernelType "bogus"`, ""},
		{"unknown hypervisor", "com.urunc.unikernel.hypervisor=bogus", "", `unknown hypervisor "bogus"`, ""},
		{"kernel missing", "com.urunc.unikernel.binary=/boot/nokernel", "", `guest kernel (com.urunc.unikernel.binary) "/boot/nokernel" not found in the container rootfs`, ""},
		{"initrd missing", "com.urunc.unikernel.initrd=/noinitrd", "", `initrd (com.urunc.unikernel.initrd) "/noinitrd" not found in the container rootfs`, ""},
		{"path leaves rootfs", "com.urunc.unikernel.binary=../../../../../../etc/passwd", "", `path "../../../../../../etc/passwd" leaves the container rootfs`, ""},
		{"monitor binary missing", "", "[monitors.qemu]\npath = \"/opt/nowhere/qemu-system-x86_64\"\naccel = \"tcg\"\n", `monitor binary "/opt/nowhere/qemu-system-x86_64" not found on this host`, ""},
		{"guest and monitor that do not fit", "com.urunc.unikernel.unikernelType=rumprun", "", `guest rumprun (annotation com.urunc.unikernel.unikernelType) cannot run under monitor qemu (annotation com.urunc.unikernel.hypervisor); it runs under: hvt, spt`, ""},
		{"bad mountRootfs", "com.urunc.unikernel.mountRootfs=maybe", "", `com.urunc.unikernel.mountRootfs = "maybe": want true or false`, ""},
		{"bad solo5NetDev", "com.urunc.unikernel.solo5NetDev=net0,x", "", `com.urunc.unikernel.solo5NetDev = "net0,x": want 1 to 67 letters or digits`, ""},
		{"bad useDMBlock", "com.urunc.unikernel.useDMBlock=sometimes", "", `com.urunc.unikernel.useDMBlock = "sometimes": want true or false`, ""},
		{"bad host config value", "", "[monitors.qemu]\ndefault_memory_mb = \"lots\"\n", `urunc.toml: monitors.qemu.default_memory_mb (line 2)`, ""},
		{"block image missing", "com.urunc.unikernel.block=/nodisk", "", `block image (com.urunc.unikernel.block) "/nodisk" not found in the container rootfs`, ""},
		{"block root without kernel", "com.urunc.unikernel.binary=/nokernel", "", `guest kernel (com.urunc.unikernel.binary) "/nokernel" not found`, testimage.BlockImageName},
		{"shared root without kernel", "com.urunc.unikernel.binary=/nokernel", "", `guest kernel (com.urunc.unikernel.binary) "/nokernel" not found`, testimage.RootfsImageName},
		{"urunc.json is a FIFO", "", "", `image config "/urunc.json" in the container rootfs is not a regular file (a FIFO)`, testimage.HostileImageName("fifo-config")},
		{"urunc.json is a device", "", "", `image config "/urunc.json" in the container rootfs is not a regular file (a character device)`, testimage.HostileImageName("device-config")},
		{"urunc.json is huge", "", "", `/urunc.json in the container rootfs is larger than 1048576 bytes`, testimage.HostileImageName("huge-config")},
		{"kernel symlinks out of the rootfs", "", "", `guest kernel (com.urunc.unikernel.binary) "/kernel" not found in the container rootfs`, testimage.HostileImageName("symlink-kernel")},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			id := newID(t)
			if tc.hostConfig != "" {
				withHostConfig(t, tc.hostConfig)
			}
			args := []string{"run", "--rm", "--runtime", runtimeName}
			if tc.annotation != "" {
				args = append(args, "--annotation", tc.annotation)
			}
			img := image
			if tc.image != "" {
				img = tc.image
			}
			args = append(args, img, id, "/init", "echo", "should not run")
			start := time.Now()
			out, err := ctrRaw(args...)
			// Prompt: a FIFO or a device must not stall Create (not a
			// timing assertion, a hang detector far above any real run).
			if d := time.Since(start); d > 30*time.Second {
				t.Errorf("the refusal took %s", d)
			}
			if err == nil {
				t.Fatalf("ctr run succeeded, want an error containing %q\n%s", tc.want, out)
			}
			if !strings.Contains(out, tc.want) {
				t.Fatalf("error lacks %q (%v):\n%s", tc.want, err, out)
			}
			if strings.Contains(out, "URUNC_GUEST_ARGS") {
				t.Fatalf("guest ran despite bad input:\n%s", out)
			}
		})
	}
}

// waitForOutput waits until file holds want, failing with what it holds.
func waitForOutput(t *testing.T, file, want string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		data, _ := os.ReadFile(file)
		if strings.Contains(string(data), want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q in %s after %s; it holds:\n%s", want, file, timeout, data)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// A Linux guest's own exit status is the container's: its kernel reports
// init's status on the console, which the shim reads on its way to the
// client, while qemu itself exits 0. ctr (Wait) and the Go client's
// Status and Delete all see it.
func TestGuestExitCodeIsTheContainers(t *testing.T) {
	id := newID(t)
	out, err := ctrRaw("run", "--rm", "--runtime", runtimeName, image, id, "/init", "exit", "3")
	if code := exitCode(err); code != 3 {
		t.Fatalf("ctr run: exit %d, want the guest's 3\n%s", code, out)
	}
	id2 := newID(t)
	c, ctx := newClient(t)
	img, err := c.GetImage(ctx, image)
	if err != nil {
		t.Fatal(err)
	}
	cont, err := c.NewContainer(ctx, id2, containerd.WithRuntime(runtimeName, nil), containerd.WithNewSnapshot(id2, img),
		containerd.WithNewSpec(oci.WithImageConfig(img), oci.WithProcessArgs("/init", "exit", "7")))
	if err != nil {
		t.Fatal(err)
	}
	var console bytes.Buffer
	task, err := cont.NewTask(ctx, cio.NewCreator(cio.WithStreams(nil, &console, nil)))
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
	if st := <-exitC; st.ExitCode() != 7 {
		t.Fatalf("Wait: exit %d, want 7", st.ExitCode())
	}
	if st, err := task.Status(ctx); err != nil || st.ExitStatus != 7 {
		t.Fatalf("State: %+v %v, want exit 7", st, err)
	}
	st, err := task.Delete(ctx)
	if err != nil || st.ExitCode() != 7 {
		t.Fatalf("Delete: %v %v, want exit 7", st, err)
	}
	if err := cont.Delete(ctx, containerd.WithSnapshotCleanup); err != nil {
		t.Fatal(err)
	}
}

// A host config key this runtime does not use (a newer urunc's, say) is
// accepted: the container runs, and the shim's log names the key and its
// line.
func TestHostConfigUnusedKeyWarns(t *testing.T) {
	withHostConfig(t, env.standinHostConfig()+"\n[future_feature]\nknob = 1\n")
	id := newID(t)
	if out, err := ctrRaw("run", "--rm", "--runtime", runtimeName, image, id, "/init", "echo", "hi"); err != nil || !strings.Contains(out, "STANDIN_ARGS: hi") {
		t.Fatalf("ctr run: %v\n%s", err, out)
	}
	log, _ := os.ReadFile(filepath.Join(env.dir, "containerd.log"))
	if !strings.Contains(string(log), "host config: keys this runtime does not use: future_feature (line ") {
		t.Fatal("the shim's log has no warning naming the unused key future_feature")
	}
}
