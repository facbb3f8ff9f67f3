//go:build integration

package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"

	"github.com/urunc-dev/containerd-shim-urunc-v2/integration/testimage"
)

// virtiofsHostConfig points [extra_binaries.virtiofsd] at Debian's C
// virtiofsd; the default host config names urunc's default path, which
// this host lacks, so guests asking for their rootfs get 9p.
func (e *testEnv) virtiofsHostConfig() string {
	return e.defaultHostConfig() + virtiofsdHostConfig()
}

// virtiofsdHostConfig is the host config's section that names virtiofsd.
func virtiofsdHostConfig() string {
	return fmt.Sprintf("\n[extra_binaries.virtiofsd]\npath = %q\noptions = \"-o sandbox=chroot -o cache=none\"\n", virtiofsd)
}

// hostMountsOf lists the lines of the host's mount table (/proc/1/mountinfo)
// that name any of needles as mount point or source.
func hostMountsOf(needles ...string) []string {
	data, _ := os.ReadFile("/proc/1/mountinfo")
	var out []string
	for _, l := range strings.Split(string(data), "\n") {
		for _, n := range needles {
			if n != "" && strings.Contains(l, n) {
				out = append(out, l)
			}
		}
	}
	return out
}

// loopDevicesOf lists loop devices backed by file.
func loopDevicesOf(file string) []string {
	return loopDevices(func(b string) bool { return b == file })
}

// monitorCmdline returns the command line of the container's monitor.
func monitorCmdline(t *testing.T, id string) string {
	t.Helper()
	pids := taskPids(t, id)
	if len(pids) == 0 || !isMonitor(pids[0]) {
		t.Fatalf("task ps lists %v, want the monitor first", pids)
	}
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pids[0]))
	return strings.ReplaceAll(string(data), "\x00", " ")
}

// readFromBlockfileSnapshot mounts the container's snapshot after its task
// ended, as ctr prints the mount, and reads file from it.
func readFromBlockfileSnapshot(t *testing.T, id, file string) string {
	t.Helper()
	target := t.TempDir()
	out := ctr(t, "snapshots", "--snapshotter", "blockfile", "mounts", target, id)
	fields := strings.Fields(strings.TrimSpace(out))
	// mount -t ext4 SOURCE TARGET -o OPTIONS
	if len(fields) < 7 || fields[0] != "mount" {
		t.Fatalf("snapshot mounts: %q", out)
	}
	mustRun(t, fields[0], fields[1:]...)
	defer func() { _ = exec.Command("umount", target).Run() }()
	data, err := os.ReadFile(filepath.Join(target, file))
	if err != nil {
		t.Fatalf("read %s from the snapshot: %v", file, err)
	}
	return strings.TrimSpace(string(data))
}

// A guest whose image asks for its rootfs, on the blockfile snapshotter,
// boots from its own snapshot as a raw disk: nothing of it is mounted on
// the host while it runs, no loop device is left after, and what it wrote
// is in the snapshot.
func TestBlockRootfsFromBlockfileSnapshotter(t *testing.T) {
	id := newID(t)
	logFile := filepath.Join(t.TempDir(), "console.log")
	ctr(t, "run", "-d", "--snapshotter", "blockfile", "--log-uri", "file://"+logFile, "--runtime", runtimeName,
		testimage.RootfsImageName, id, "/init", "write", "/written.txt", "hello-from-a-block-root")
	waitForOutput(t, logFile, "URUNC_GUEST_WROTE /written.txt: hello-from-a-block-root", 60*time.Second)
	cmdline := monitorCmdline(t, id)
	// The image's environment (PATH=/bin) stands between the root and the
	// init on the kernel command line.
	if !strings.Contains(cmdline, "virtio-blk-pci,drive=rootfs") || !strings.Contains(cmdline, "root=/dev/vda rw ") ||
		!strings.Contains(cmdline, " init=/init") {
		t.Fatalf("monitor does not boot a block root: %s", cmdline)
	}
	snapshot := blockfileSnapshotOf(t, id)
	if m := hostMountsOf(snapshot, env.bundle(id)+"/rootfs"); len(m) > 0 {
		t.Fatalf("while the guest owns its disk the host mounts it:\n%s", strings.Join(m, "\n"))
	}
	if l := loopDevicesOf(snapshot); len(l) > 0 {
		t.Fatalf("while the guest owns its disk, loop devices back it: %v", l)
	}
	ctr(t, "task", "kill", "-s", "SIGKILL", id)
	waitFor(t, 10*time.Second, "task to stop", func() bool { return taskStatus(t, id) == "STOPPED" })
	ctr(t, "task", "rm", id)
	if l := loopDevicesOf(snapshot); len(l) > 0 {
		t.Fatalf("after delete, loop devices back the snapshot: %v", l)
	}
	if got := readFromBlockfileSnapshot(t, id, "written.txt"); got != "hello-from-a-block-root" {
		t.Fatalf("snapshot holds %q", got)
	}
}

// blockfileSnapshotOf returns the file behind the container's blockfile
// snapshot, from the mount ctr reports.
func blockfileSnapshotOf(t *testing.T, id string) string {
	t.Helper()
	out := ctr(t, "snapshots", "--snapshotter", "blockfile", "mounts", "/x", id)
	f := strings.Fields(out)
	if len(f) < 4 {
		t.Fatalf("snapshot mounts: %q", out)
	}
	return f[3]
}

// A devmapper-shaped rootfs (a block device as the mount source, here a
// loop device given through the Go client's WithRootFS) is the guest's
// root disk; the host never keeps it mounted while the guest runs.
func TestBlockRootfsFromBlockDevice(t *testing.T) {
	id := newID(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "rootfs.ext4")
	files, err := testimage.RootfsFiles(builtinKernel, "/bin/busybox", map[string]string{
		"unikernelType": "linux", "hypervisor": "qemu", "binary": "/kernel", "useDMBlock": "true",
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := testimage.WriteExt4Image(img, files, 32); err != nil {
		t.Fatal(err)
	}
	dev := strings.TrimSpace(mustRun(t, "losetup", "--find", "--show", img))
	t.Cleanup(func() { _ = exec.Command("losetup", "-d", dev).Run() })

	c, ctx := newClient(t)
	cont, err := c.NewContainer(ctx, id, containerd.WithRuntime(runtimeName, nil),
		containerd.WithNewSpec(oci.WithProcessArgs("/init", "write", "/written.txt", "hello-from-a-block-device")))
	if err != nil {
		t.Fatal(err)
	}
	logFile := filepath.Join(dir, "console.log")
	task, err := cont.NewTask(ctx, cio.LogFile(logFile), containerd.WithRootFS([]mount.Mount{{Type: "ext4", Source: dev}}))
	if err != nil {
		console, _ := os.ReadFile(logFile)
		t.Fatalf("create task: %v\nconsole:\n%s", err, console)
	}
	exitC, err := task.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Start(ctx); err != nil {
		t.Fatalf("start: %v", err)
	}
	waitForOutput(t, logFile, "URUNC_GUEST_WROTE /written.txt: hello-from-a-block-device", 60*time.Second)
	if m := hostMountsOf(dev+" ", env.bundle(id)+"/rootfs"); len(m) > 0 {
		t.Fatalf("while the guest owns %s the host mounts it:\n%s", dev, strings.Join(m, "\n"))
	}
	if err := task.Kill(ctx, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-exitC
	if _, err := task.Delete(ctx); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if err := cont.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(dir, "mnt")
	if err := os.MkdirAll(target, 0o755); err != nil {
		t.Fatal(err)
	}
	mustRun(t, "mount", "-t", "ext4", dev, target)
	data, err := os.ReadFile(filepath.Join(target, "written.txt"))
	_ = exec.Command("umount", target).Run()
	if err != nil || strings.TrimSpace(string(data)) != "hello-from-a-block-device" {
		t.Fatalf("the device holds %q (%v)", data, err)
	}
}

// The block annotation: the guest boots from a disk image in the image
// (the image's top level has no init or busybox, only the disk does).
func TestBlockAnnotationRootDisk(t *testing.T) {
	id := newID(t)
	logFile := filepath.Join(t.TempDir(), "console.log")
	ctr(t, "run", "-d", "--log-uri", "file://"+logFile, "--runtime", runtimeName,
		testimage.BlockImageName, id, "/init", "write", "/written.txt", "hello-from-a-disk-image")
	waitForOutput(t, logFile, "URUNC_GUEST_WROTE /written.txt: hello-from-a-disk-image", 60*time.Second)
	if cmdline := monitorCmdline(t, id); !strings.Contains(cmdline, "/guest/disks/rootfs") {
		t.Fatalf("monitor has no root disk: %s", cmdline)
	}
	killAndRemove(t, id)
}

// The container's rootfs shared as a directory, over virtiofs when the
// host has virtiofsd and over 9p otherwise: the guest writes into the
// container's rootfs, and sees a volume at its destination.
func TestSharedRootfs(t *testing.T) {
	for _, tc := range []struct {
		name, hostConfig, device string
		helper                   bool
	}{
		{"virtiofs", env.virtiofsHostConfig(), "vhost-user-fs-pci", true},
		{"9p", env.defaultHostConfig(), "virtio-9p-pci", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			withHostConfig(t, tc.hostConfig)
			id := newID(t)
			vol := t.TempDir()
			if err := os.WriteFile(filepath.Join(vol, "greeting"), []byte("hello from a volume"), 0o644); err != nil {
				t.Fatal(err)
			}
			logFile := filepath.Join(t.TempDir(), "console.log")
			ctr(t, "run", "-d", "--log-uri", "file://"+logFile, "--runtime", runtimeName,
				"--mount", "type=bind,src="+vol+",dst=/data,options=rbind:ro",
				testimage.RootfsImageName, id, "/init", "sleepcat", "/data/greeting")
			waitForOutput(t, logFile, "URUNC_GUEST_CAT /data/greeting: hello from a volume", 60*time.Second)
			if cmdline := monitorCmdline(t, id); !strings.Contains(cmdline, tc.device) {
				t.Fatalf("monitor lacks %s: %s", tc.device, cmdline)
			}
			pids := taskPids(t, id)
			if got := len(processesOf(virtiofsd)) > 0 && containsAny(pids, processesOf(virtiofsd)); got != tc.helper {
				t.Fatalf("task ps lists %v; virtiofsd among them: %v, want %v", pids, got, tc.helper)
			}
			killAndRemove(t, id)
		})
	}
}

func containsAny(list, any []int) bool {
	for _, a := range list {
		for _, b := range any {
			if a == b {
				return true
			}
		}
	}
	return false
}

// A guest's writes land in the container's rootfs, over virtiofs and over
// 9p. Over 9p the file is new to the host, so qemu's 9p server sets its
// mode through /proc/self/fd: without a proc in its confined root the
// create was undone and the guest saw "nonexistent directory".
func TestSharedRootfsWrites(t *testing.T) {
	for _, tc := range []struct{ name, hostConfig string }{
		{"virtiofs", env.virtiofsHostConfig()},
		{"9p", env.defaultHostConfig()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			withHostConfig(t, tc.hostConfig)
			id := newID(t)
			logFile := filepath.Join(t.TempDir(), "console.log")
			text := "hello-through-" + tc.name
			ctr(t, "run", "-d", "--log-uri", "file://"+logFile, "--runtime", runtimeName,
				testimage.RootfsImageName, id, "/init", "write", "/new/dir/written.txt", text)
			waitForOutput(t, logFile, "URUNC_GUEST_WROTE /new/dir/written.txt: "+text, 60*time.Second)
			data, err := os.ReadFile(filepath.Join(env.bundle(id), "rootfs", "new", "dir", "written.txt"))
			if err != nil || strings.TrimSpace(string(data)) != text {
				t.Fatalf("container rootfs holds %q (%v)", data, err)
			}
			forceRemove(id)
		})
	}
}

// Volumes of a block guest: a single file and a directory that is no
// block device reach it copied into its root; a directory holding what a
// copy cannot take (a FIFO) is refused, naming it, and leaves nothing.
func TestBlockRootfsVolumes(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "greeting")
	if err := os.WriteFile(file, []byte("hello from a file volume"), 0o644); err != nil {
		t.Fatal(err)
	}
	id := newID(t)
	out, err := ctrRaw("run", "--rm", "--snapshotter", "blockfile", "--runtime", runtimeName,
		"--mount", "type=bind,src="+file+",dst=/etc/greeting,options=rbind:ro",
		"--mount", "type=bind,src="+dir+",dst=/data,options=rbind",
		testimage.RootfsImageName, id, "/init", "cat", "/etc/greeting", "/data/greeting")
	for _, want := range []string{"URUNC_GUEST_CAT /etc/greeting: hello from a file volume", "URUNC_GUEST_CAT /data/greeting: hello from a file volume"} {
		if err != nil || !strings.Contains(out, want) {
			t.Fatalf("ctr run: %v\n%s\nwant %q", err, out, want)
		}
	}
	withFIFO := filepath.Join(t.TempDir(), "withfifo")
	if err := os.Mkdir(withFIFO, 0o755); err != nil || syscall.Mkfifo(filepath.Join(withFIFO, "pipe"), 0o644) != nil {
		t.Fatal(err)
	}
	bad := newID(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err = ctrContext(ctx, "run", "--rm", "--snapshotter", "blockfile", "--runtime", runtimeName,
		"--mount", "type=bind,src="+withFIFO+",dst=/data,options=rbind",
		testimage.RootfsImageName, bad, "/init", "cat", "/data/pipe")
	if want := "volume /data (from " + withFIFO + "): " + withFIFO + "/pipe is a FIFO"; err == nil || !strings.Contains(out, want) {
		t.Fatalf("ctr run with a FIFO in a directory volume on a block root: %v\n%s\nwant %q", err, out, want)
	}
	assertNoLeftovers(t, bad)
}

// runStorageGuests starts a virtiofs guest and a block guest (blockfile),
// both idle, and returns their IDs, with each one's virtiofsd pid (0 for
// the block guest).
func runStorageGuests(t *testing.T) (ids []string, helpers map[string]int) {
	t.Helper()
	withHostConfig(t, env.virtiofsHostConfig())
	helpers = map[string]int{}
	for _, snapshotter := range []string{"overlayfs", "blockfile"} {
		id := newID(t)
		logFile := filepath.Join(t.TempDir(), "console.log")
		ctr(t, "run", "-d", "--snapshotter", snapshotter, "--log-uri", "file://"+logFile, "--runtime", runtimeName,
			testimage.RootfsImageName, id, "/init", "sleep")
		waitForOutput(t, logFile, "URUNC_GUEST_READY", 60*time.Second)
		ids = append(ids, id)
		for _, p := range taskPids(t, id) {
			if containsAny([]int{p}, processesOf(virtiofsd)) && helpers[id] == 0 {
				helpers[id] = p
			}
		}
	}
	if helpers[ids[0]] == 0 || helpers[ids[1]] != 0 {
		t.Fatalf("virtiofsd per guest %v: want one for the virtiofs guest only", helpers)
	}
	return ids, helpers
}

// A virtiofs guest and a block guest across a containerd crash: after the
// restart Pids still lists the monitor and virtiofsd, and delete is clean.
func TestStorageGuestsAcrossContainerdRestart(t *testing.T) {
	ids, helpers := runStorageGuests(t)
	before := map[string][]int{}
	for _, id := range ids {
		before[id] = taskPids(t, id)
	}
	env.killDaemon()
	if err := env.startDaemon(); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if st := taskStatus(t, id); st != "RUNNING" {
			t.Errorf("%s after restart: %q, want RUNNING", id, st)
		}
		after := taskPids(t, id)
		if fmt.Sprint(after) != fmt.Sprint(before[id]) {
			t.Errorf("%s: task ps lists %v after the restart, %v before", id, after, before[id])
		}
		if h := helpers[id]; h != 0 && !containsAny(after, []int{h}) {
			t.Errorf("%s: virtiofsd %d missing from task ps after the restart: %v", id, h, after)
		}
	}
	for _, id := range ids {
		killAndRemove(t, id)
	}
}

// Shims killed with SIGKILL: containerd's delete command ends the monitor
// and virtiofsd and gives back every mount and loop device (checked by the
// leftover check of each ID, and here before the forced removal).
func TestStorageGuestsShimKilled(t *testing.T) {
	ids, helpers := runStorageGuests(t)
	for _, id := range ids {
		shim := shimOf(id)
		if shim == 0 {
			t.Fatalf("%s: no shim", id)
		}
		killProcess(t, shim)
	}
	// A task of a dead shim reads as not running at once, before
	// containerd's delete command has cleaned up after it; the bundle
	// goes last (containerd removes it once the command has ended and
	// the rootfs is unmounted), so wait for that.
	for _, id := range ids {
		waitFor(t, 15*time.Second, id+" to stop", func() bool { return taskStatus(t, id) != "RUNNING" })
		waitFor(t, 15*time.Second, "containerd's cleanup of "+id, func() bool {
			_, err := os.Stat(env.bundle(id))
			return os.IsNotExist(err)
		})
	}
	waitFor(t, 15*time.Second, "monitors and virtiofsd to end", func() bool {
		return len(monitorProcesses()) == 0 && !containsAny(processesOf(virtiofsd), []int{helpers[ids[0]]})
	})
	if left := leftovers(ids[1]); strings.Contains(left, "mounts") || strings.Contains(left, "loop") || strings.Contains(left, "virtiofsd") {
		t.Fatalf("after the dead shims' cleanup: %s", left)
	}
}

// A block-backed volume of a block guest: the host's mount of it is let go
// and the device becomes disk vol<i> (its serial), which the guest mounts;
// the host mounts it back after.
// (urunc's urunit learns the mount point from its config, a retained
// initrd the 6.1 test kernel does not expose; the unit tests check that
// config.)
func TestBlockRootfsBlockVolume(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "vol.ext4")
	mustRun(t, "mkfs.ext4", "-q", "-F", img, "8M")
	dev := strings.TrimSpace(mustRun(t, "losetup", "--find", "--show", img))
	t.Cleanup(func() { _ = exec.Command("losetup", "-d", dev).Run() })
	mnt := filepath.Join(dir, "mnt")
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	mustRun(t, "mount", dev, mnt)
	t.Cleanup(func() { _ = exec.Command("umount", mnt).Run() })
	if err := os.WriteFile(filepath.Join(mnt, "greeting"), []byte("hello from a block volume"), 0o644); err != nil {
		t.Fatal(err)
	}
	before := mountShape(mnt)
	id := newID(t)
	out, err := ctrRaw("run", "--rm", "--snapshotter", "blockfile", "--runtime", runtimeName,
		"--mount", "type=bind,src="+mnt+",dst=/data,options=rbind",
		testimage.RootfsImageName, id, "/init", "catvol", "greeting")
	if err != nil || !regexp.MustCompile(`URUNC_GUEST_VOL vol\d+ greeting: hello from a block volume`).MatchString(out) {
		t.Fatalf("ctr run: %v\n%s", err, out)
	}
	// Once the guest is gone the host has its mount back.
	if after := mountShape(mnt); after != mountedBack(before) {
		t.Fatalf("host mount of the volume after the guest:\n  %q\nbefore:\n  %q", after, before)
	}
}

// The operator's cleanup-orphans ends a virtiofs guest's virtiofsd with
// its monitor when containerd's state is lost and the shim is gone.
func TestCleanupOrphansEndsVirtiofsd(t *testing.T) {
	withHostConfig(t, env.virtiofsHostConfig())
	id := newID(t)
	logFile := filepath.Join(t.TempDir(), "console.log")
	ctr(t, "run", "-d", "--log-uri", "file://"+logFile, "--runtime", runtimeName, testimage.RootfsImageName, id, "/init", "sleep")
	waitForOutput(t, logFile, "URUNC_GUEST_READY", 60*time.Second)
	pids := taskPids(t, id)
	helpers := processesOf(virtiofsd)
	if !containsAny(pids, helpers) {
		t.Fatalf("task ps %v lists no virtiofsd (%v)", pids, helpers)
	}
	orphan(t, id)
	out, err := exec.Command(env.shimPath, "cleanup-orphans", "-state-dir", orphansStateDir()).CombinedOutput()
	if err != nil || !strings.Contains(string(out), id+": cleaned") {
		t.Fatalf("cleanup-orphans: %v\n%s", err, out)
	}
	waitFor(t, 10*time.Second, "the monitor and virtiofsd to end", func() bool {
		return !isMonitor(pids[0]) && !containsAny(processesOf(virtiofsd), helpers)
	})
}
