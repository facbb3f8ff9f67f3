//go:build integration

package integration

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
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
