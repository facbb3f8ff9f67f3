//go:build integration

package integration

import (
	"bytes"
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
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/urunc-dev/containerd-shim-urunc-v2/integration/testimage"
)

// A block-root image whose /etc/hosts is a device node or a FIFO, given a
// hosts file as a bind mount (as the kubelet does): Create returns
// promptly, the device the node names keeps its bytes, and the guest reads
// the pod's hosts file, which replaced the node.
func TestFileVolumeOverHostileNode(t *testing.T) {
	dir := t.TempDir()
	// The host's disk an image's device node names.
	victimFile := filepath.Join(dir, "victim.img")
	victimData := bytes.Repeat([]byte("a host disk no pod file may write\n"), 4096)
	if err := os.WriteFile(victimFile, victimData, 0o600); err != nil {
		t.Fatal(err)
	}
	victim := strings.TrimSpace(mustRun(t, "losetup", "--find", "--show", victimFile))
	t.Cleanup(func() { _ = exec.Command("losetup", "-d", victim).Run() })
	var st unix.Stat_t
	if err := unix.Stat(victim, &st); err != nil {
		t.Fatal(err)
	}
	hosts := filepath.Join(dir, "hosts")
	hostsData := "127.0.0.1 localhost\n198.18.0.7 pod-alias\n"
	if err := os.WriteFile(hosts, []byte(hostsData), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, node string }{
		{"block-device", fmt.Sprintf("b %d %d", unix.Major(st.Rdev), unix.Minor(st.Rdev))},
		{"fifo", "p"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			victimIntact := func(t *testing.T) {
				t.Helper()
				got, err := os.ReadFile(victim)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, victimData) {
					t.Errorf("the host's disk %s was written: it begins %q", victim, got[:64])
				}
			}
			runOverHostileHosts(t, tc.node, hosts, victimIntact)
			victimIntact(t)
		})
	}
}

// runOverHostileHosts boots a guest from an ext4 disk whose /etc/hosts is
// the node debugfs makes of node ("p", "b MAJOR MINOR"), with hosts bound
// at /etc/hosts, and checks the guest prints the hosts file; afterCreate
// runs once Create has returned.
func runOverHostileHosts(t *testing.T, node, hosts string, afterCreate func(*testing.T)) {
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
	// debugfs links a new node in its working directory only.
	script := filepath.Join(dir, "debugfs.cmd")
	if err := os.WriteFile(script, []byte("cd /etc\nmknod hosts "+node+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	mustRun(t, "debugfs", "-w", "-f", script, img)
	if out := mustRun(t, "debugfs", "-R", "stat /etc/hosts", img); !strings.Contains(out, "Type: ") || strings.Contains(out, "Type: regular") {
		t.Fatalf("the image's /etc/hosts is no special node:\n%s", out)
	}
	dev := strings.TrimSpace(mustRun(t, "losetup", "--find", "--show", img))
	t.Cleanup(func() { _ = exec.Command("losetup", "-d", dev).Run() })
	id := newID(t)

	c, ctx := newClient(t)
	cont, err := c.NewContainer(ctx, id, containerd.WithRuntime(runtimeName, nil),
		containerd.WithNewSpec(oci.WithProcessArgs("/init", "cat", "/etc/hosts"),
			oci.WithMounts([]specs.Mount{{Type: "bind", Source: hosts, Destination: "/etc/hosts", Options: []string{"rbind", "ro"}}})))
	if err != nil {
		t.Fatal(err)
	}
	defer cont.Delete(ctx)
	logFile := filepath.Join(dir, "console.log")
	createCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	// A shim blocked in open(2) on the FIFO is let through once the test
	// has seen it block, so that the failure cleans up.
	released := make(chan struct{})
	go func() {
		select {
		case <-createCtx.Done():
			if fd, err := unix.Open(filepath.Join(env.bundle(id), "rootfs/etc/hosts"), unix.O_RDONLY|unix.O_NONBLOCK, 0); err == nil {
				unix.Close(fd)
			}
		case <-released:
		}
	}()
	start := time.Now()
	task, err := cont.NewTask(createCtx, cio.LogFile(logFile), containerd.WithRootFS([]mount.Mount{{Type: "ext4", Source: dev}}))
	close(released)
	took := time.Since(start)
	afterCreate(t)
	if err != nil {
		t.Fatalf("create task (after %s): %v", took.Round(time.Millisecond), err)
	}
	t.Logf("Create took %s", took.Round(time.Millisecond))
	exitC, err := task.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Start(ctx); err != nil {
		t.Fatalf("start: %v", err)
	}
	waitForOutput(t, logFile, "URUNC_GUEST_CAT /etc/hosts: 127.0.0.1 localhost", 60*time.Second)
	waitForOutput(t, logFile, "198.18.0.7 pod-alias", 10*time.Second)
	select {
	case <-exitC:
	case <-time.After(30 * time.Second):
		_ = task.Kill(ctx, syscall.SIGKILL)
		<-exitC
	}
	if _, err := task.Delete(ctx); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if m := hostMountsOf(dev+" ", env.bundle(id)+"/rootfs"); len(m) > 0 {
		t.Fatalf("after delete the host mounts %s:\n%s", dev, strings.Join(m, "\n"))
	}
	// The image now holds the pod's file where the node was.
	if out := mustRun(t, "debugfs", "-R", "stat /etc/hosts", img); !strings.Contains(out, "Type: regular") {
		t.Fatalf("the image's /etc/hosts is not the pod's regular file:\n%s", out)
	}
}

// blockVolumeMount makes an ext4 filesystem on a loop device, with a file
// greeting at its root, mounts it and returns the mount point and device.
func blockVolumeMount(t *testing.T) (mnt, dev string) {
	t.Helper()
	dir := t.TempDir()
	img := filepath.Join(dir, "vol.ext4")
	mustRun(t, "mkfs.ext4", "-q", "-F", img, "8M")
	dev = strings.TrimSpace(mustRun(t, "losetup", "--find", "--show", img))
	t.Cleanup(func() { _ = exec.Command("losetup", "-d", dev).Run() })
	mnt = filepath.Join(dir, "mnt")
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	mustRun(t, "mount", dev, mnt)
	t.Cleanup(func() { _ = exec.Command("umount", mnt).Run() })
	if err := os.WriteFile(filepath.Join(mnt, "greeting"), []byte("another tenant's file"), 0o644); err != nil {
		t.Fatal(err)
	}
	return mnt, dev
}

// A read-only block volume is a read-only disk to the monitor, whether it
// runs as root or as the spec's user.
func TestBlockVolumeReadOnly(t *testing.T) {
	mnt, dev := blockVolumeMount(t)
	before := mountShape(mnt)
	id := newID(t)
	logFile := filepath.Join(t.TempDir(), "console.log")
	ctr(t, "run", "-d", "--snapshotter", "blockfile", "--log-uri", "file://"+logFile, "--runtime", runtimeName,
		"--mount", "type=bind,src="+mnt+",dst=/data,options=rbind:ro",
		testimage.RootfsImageName, id, "/init", "sleep")
	waitForOutput(t, logFile, "URUNC_GUEST_READY", 60*time.Second)
	cmdline := monitorCmdline(t, id)
	if !regexp.MustCompile(`-drive file=\S+,format=raw,if=none,id=vol\d+,readonly=on `).MatchString(cmdline) {
		t.Fatalf("the read-only volume is no read-only disk: %s", cmdline)
	}
	if !regexp.MustCompile(`-drive file=\S+,format=raw,if=none,id=rootfs -device`).MatchString(cmdline) {
		t.Fatalf("the root disk is not writable: %s", cmdline)
	}
	// The container's device cgroup lets the monitor only read it.
	var st unix.Stat_t
	if err := unix.Stat(dev, &st); err != nil {
		t.Fatal(err)
	}
	rule := fmt.Sprintf("b %d:%d ", unix.Major(st.Rdev), unix.Minor(st.Rdev))
	list, err := os.ReadFile(filepath.Join("/sys/fs/cgroup/devices", namespace, id, "devices.list"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(list), rule+"r\n") {
		t.Fatalf("device cgroup of a read-only volume %s, want %q:\n%s", dev, rule+"r", list)
	}
	ctr(t, "task", "kill", "-s", "SIGKILL", id)
	waitFor(t, 10*time.Second, "task to stop", func() bool { return taskStatus(t, id) == "STOPPED" })
	ctr(t, "task", "rm", id)
	if after := mountShape(mnt); after != mountedBack(before) {
		t.Fatalf("host mount of the read-only volume after delete:\n  %q\nbefore:\n  %q", after, before)
	}

	// A monitor running as a user gets the device as descriptors, both
	// read-only; qemu takes them and the guest reads the volume.
	mnt, _ = blockVolumeMount(t)
	user := newID(t)
	out, err := ctrRaw("run", "--rm", "--snapshotter", "blockfile", "--runtime", runtimeName, "--user", "1000:1000",
		"--mount", "type=bind,src="+mnt+",dst=/data,options=rbind:ro",
		testimage.RootfsImageName, user, "/init", "catvol", "greeting")
	if err != nil || !regexp.MustCompile(`URUNC_GUEST_VOL vol\d+ greeting: another tenant's file`).MatchString(out) {
		t.Fatalf("ctr run --user with a read-only block volume: %v\n%s", err, out)
	}
}

// A subPath-style bind (a directory of a block device's filesystem) is not
// handed to a block guest as the whole device: Create refuses it, naming
// the mount, and the host's mounts stay as they were.
func TestBlockVolumeSubdirectoryRefused(t *testing.T) {
	mnt, dev := blockVolumeMount(t)
	sub := filepath.Join(mnt, "tenant-a")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	bind := filepath.Join(t.TempDir(), "subpath")
	if err := os.Mkdir(bind, 0o755); err != nil {
		t.Fatal(err)
	}
	mustRun(t, "mount", "--bind", sub, bind)
	t.Cleanup(func() { _ = exec.Command("umount", bind).Run() })
	before := hostMountsOf(" "+mnt+" ", " "+bind+" ")
	id := newID(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := ctrContext(ctx, "run", "--rm", "--snapshotter", "blockfile", "--runtime", runtimeName,
		"--mount", "type=bind,src="+bind+",dst=/data,options=rbind",
		testimage.RootfsImageName, id, "/init", "catvol", "greeting")
	want := "volume /data (from " + bind + "): mount " + bind + " shows only /tenant-a of the filesystem on " + dev
	if err == nil || !strings.Contains(out, want) {
		t.Fatalf("ctr run with a subdirectory bind of a block device: %v\n%s\nwant %q", err, out, want)
	}
	if after := hostMountsOf(" "+mnt+" ", " "+bind+" "); strings.Join(after, "\n") != strings.Join(before, "\n") || len(after) != 2 {
		t.Fatalf("host mounts before:\n%s\nafter:\n%s", strings.Join(before, "\n"), strings.Join(after, "\n"))
	}
}
