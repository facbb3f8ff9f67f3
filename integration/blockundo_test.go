//go:build integration

package integration

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/urunc-dev/containerd-shim-urunc-v2/integration/testimage"
)

// mountShape is what the host's mount table says of the mount at target,
// without the ids that change with every mount: device number, root,
// options, propagation kind, filesystem, source and its options; "" when
// nothing is mounted there; mounts stacked there are all shown.
// mountedBack is the shape (mountShape) of a mount made back after a
// guest owned its device: as before, but always nosuid and nodev, since
// the guest wrote the filesystem raw.
func mountedBack(before string) string {
	f := strings.Split(before, " ")
	if len(f) < 4 {
		return before
	}
	opts := strings.Split(f[3], ",")
	out := []string{opts[0], "nosuid", "nodev"}
	for _, o := range opts[1:] {
		if o != "nosuid" && o != "nodev" {
			out = append(out, o)
		}
	}
	f[3] = strings.Join(out, ",")
	return strings.Join(f, " ")
}

func mountShape(target string) string {
	data, _ := os.ReadFile("/proc/1/mountinfo")
	shape := ""
	for _, l := range strings.Split(string(data), "\n") {
		f := strings.Fields(l)
		if len(f) < 10 || f[4] != target {
			continue
		}
		if shape != "" {
			// Stacked mounts: show them all, so that a mount made
			// twice differs from the one before.
			shape += " | "
		}
		sep := 6
		for sep < len(f) && f[sep] != "-" {
			sep++
		}
		prop := "private"
		for _, o := range f[6:sep] {
			if strings.HasPrefix(o, "shared:") {
				prop = "shared"
			}
		}
		shape += strings.Join(append([]string{f[2], f[3], f[4], f[5], prop}, f[sep+1:]...), " ")
	}
	return shape
}

// sharedBlockVolume is blockVolumeMount's volume made a shared mount, as a
// kubelet's volumes are (its tree is rshared), and its mount table shape.
func sharedBlockVolume(t *testing.T) (mnt, dev, shape string) {
	t.Helper()
	mnt, dev = blockVolumeMount(t)
	mustRun(t, "mount", "--make-shared", mnt)
	shape = mountShape(mnt)
	if !strings.Contains(shape, " shared ") || !strings.Contains(shape, dev) {
		t.Fatalf("test volume: %q", shape)
	}
	return mnt, dev, shape
}

// runBlockVolumeGuest starts an idle guest with the block volume at mnt
// (image: a block guest of the blockfile snapshotter or the block
// annotation's) and checks that the host lets go of the volume while the
// guest owns its device.
func runBlockVolumeGuest(t *testing.T, id, image, mnt string) {
	t.Helper()
	logFile := filepath.Join(t.TempDir(), "console.log")
	args := []string{"run", "-d", "--log-uri", "file://" + logFile, "--runtime", runtimeName,
		"--mount", "type=bind,src=" + mnt + ",dst=/data,options=rbind"}
	if image == testimage.RootfsImageName {
		args = append(args, "--snapshotter", "blockfile")
	}
	ctr(t, append(args, image, id, "/init", "sleep")...)
	waitForOutput(t, logFile, "URUNC_GUEST_READY", 60*time.Second)
	if !strings.Contains(monitorCmdline(t, id), ",id=vol") {
		t.Fatalf("the volume is no disk of the guest: %s", monitorCmdline(t, id))
	}
	if m := hostMountsOf(" " + mnt + " "); len(m) > 0 {
		t.Fatalf("the host still mounts the volume the guest owns raw:\n%s", strings.Join(m, "\n"))
	}
}

// assertMountedBack checks that the host mounts the volume again as it
// did before the guest (but nosuid, nodev: mountedBack), and its file is
// there.
func assertMountedBack(t *testing.T, mnt, before string) {
	t.Helper()
	assertMountShape(t, mnt, before, mountedBack(before))
}

// assertMountShape checks that the host mounts the volume as want, and
// its file is there.
func assertMountShape(t *testing.T, mnt, before, want string) {
	t.Helper()
	if after := mountShape(mnt); after != want {
		t.Fatalf("host mount of the volume after the guest:\n  %q\nbefore:\n  %q", after, before)
	}
	if data, err := os.ReadFile(filepath.Join(mnt, "greeting")); err != nil || string(data) != "another tenant's file" {
		t.Fatalf("the volume's file after the guest: %q %v", data, err)
	}
}

// A block volume taken by a block guest is mounted back on the host, with
// its options and propagation, after Delete: for a container rootfs on
// the blockfile snapshotter and for the block annotation's disk image.
func TestBlockVolumeMountedBackAfterDelete(t *testing.T) {
	for name, image := range map[string]string{"blockfile": testimage.RootfsImageName, "annotation": testimage.BlockImageName} {
		t.Run(name, func(t *testing.T) {
			mnt, _, before := sharedBlockVolume(t)
			id := newID(t)
			runBlockVolumeGuest(t, id, image, mnt)
			killAndRemove(t, id)
			assertMountedBack(t, mnt, before)
		})
	}
}

// The shim killed while a guest owns a block volume: containerd's delete
// command, run from the persisted state alone, mounts the volume back.
func TestBlockVolumeMountedBackAfterShimKilled(t *testing.T) {
	mnt, _, before := sharedBlockVolume(t)
	id := newID(t)
	runBlockVolumeGuest(t, id, testimage.RootfsImageName, mnt)
	shim := shimOf(id)
	if shim == 0 {
		t.Fatalf("%s: no shim", id)
	}
	killProcess(t, shim)
	waitFor(t, 15*time.Second, id+" to stop", func() bool { return taskStatus(t, id) != "RUNNING" })
	waitFor(t, 15*time.Second, "containerd's cleanup of "+id, func() bool {
		_, err := os.Stat(env.bundle(id))
		return os.IsNotExist(err)
	})
	assertMountedBack(t, mnt, before)
}

// The operator's cleanup-orphans, for a guest whose shim is gone and whose
// containerd state is lost, mounts its block volume back.
func TestBlockVolumeMountedBackByCleanupOrphans(t *testing.T) {
	mnt, _, before := sharedBlockVolume(t)
	id := newID(t)
	runBlockVolumeGuest(t, id, testimage.RootfsImageName, mnt)
	orphan(t, id)
	out, err := exec.Command(env.shimPath, "cleanup-orphans", "-state-dir", orphansStateDir()).CombinedOutput()
	if err != nil || !strings.Contains(string(out), id+": cleaned") {
		t.Fatalf("cleanup-orphans: %v\n%s", err, out)
	}
	assertMountedBack(t, mnt, before)
}

// A volume whose device the host also mounts elsewhere is refused, naming
// the other mount point, and the host's mounts stay as they were.
func TestBlockVolumeMountedElsewhereRefused(t *testing.T) {
	mnt, dev, _ := sharedBlockVolume(t)
	other := filepath.Join(t.TempDir(), "other")
	if err := os.Mkdir(other, 0o755); err != nil {
		t.Fatal(err)
	}
	mustRun(t, "mount", dev, other)
	t.Cleanup(func() { _ = exec.Command("umount", other).Run() })
	before := mountShape(mnt) + "\n" + mountShape(other)
	id := newID(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := ctrContext(ctx, "run", "--rm", "--snapshotter", "blockfile", "--runtime", runtimeName,
		"--mount", "type=bind,src="+mnt+",dst=/data,options=rbind",
		testimage.RootfsImageName, id, "/init", "catvol", "greeting")
	want := "volume /data (from " + mnt + "): device " + dev + " of mount " + mnt + " is also mounted at " + other + " on the host"
	if err == nil || !strings.Contains(out, want) {
		t.Fatalf("ctr run with a volume whose device is mounted twice: %v\n%s\nwant %q", err, out, want)
	}
	if after := mountShape(mnt) + "\n" + mountShape(other); after != before {
		t.Fatalf("host mounts before:\n%s\nafter:\n%s", before, after)
	}
}

// A shim killed at each step of a block guest's life that holds a block
// volume: after the undo is recorded and before the unmount, after the
// unmount, with the launcher up, and in Delete. containerd's delete command
// mounts the volume back once, as it was (the stand-in monitor keeps it
// fast).
func TestCrashInjectionBlockVolume(t *testing.T) {
	for _, step := range []string{"create:hostmount", "create:prepared", "create:launcher", "delete"} {
		t.Run(strings.ReplaceAll(step, ":", " "), func(t *testing.T) {
			withHostConfig(t, env.standinHostConfig())
			mnt, _, before := sharedBlockVolume(t)
			id := newID(t)
			t.Cleanup(func() { os.Remove(env.crashFile()) })
			if step != "delete" {
				if err := os.WriteFile(env.crashFile(), []byte(step), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			out, err := ctrRaw("run", "-d", "--snapshotter", "blockfile", "--runtime", runtimeName,
				"--mount", "type=bind,src="+mnt+",dst=/data,options=rbind", testimage.RootfsImageName, id, "/init", "sleep")
			if step == "delete" {
				if err != nil {
					t.Fatalf("ctr run: %v\n%s", err, out)
				}
				ctr(t, "task", "kill", "-s", "SIGKILL", id)
				waitFor(t, 10*time.Second, "task to stop", func() bool { return taskStatus(t, id) == "STOPPED" })
				if err := os.WriteFile(env.crashFile(), []byte(step), 0o644); err != nil {
					t.Fatal(err)
				}
				out, err = ctrRaw("task", "rm", id)
			}
			if err == nil {
				t.Fatalf("the shim did not crash at %s:\n%s", step, out)
			}
			if _, err := os.Stat(env.crashFile()); err == nil {
				t.Fatalf("no shim reached %s:\n%s", step, out)
			}
			waitFor(t, 20*time.Second, "the bundle to go", func() bool {
				_, err := os.Stat(env.bundle(id))
				return os.IsNotExist(err)
			})
			if step == "create:hostmount" {
				// Killed before the unmount: the host's mount was never
				// touched.
				assertMountShape(t, mnt, before, before)
				return
			}
			assertMountedBack(t, mnt, before)
		})
	}
}
