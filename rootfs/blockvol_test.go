package rootfs

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// A block volume reaches a block guest as a disk only when the mount is the
// whole filesystem, read-only when the volume is; a bind of a directory of
// it (a subPath) is refused, naming the volume and the mount, and so is the
// whole mount once the device is mounted at a second place.
func TestBlockVolumeWholeFilesystemOnly(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "vol.ext4")
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", img, "8M").CombinedOutput(); err != nil {
		t.Skipf("mkfs.ext4: %v: %s", err, out)
	}
	out, err := exec.Command("losetup", "--find", "--show", img).CombinedOutput()
	if err != nil {
		t.Skipf("no loop device: %v: %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { _ = exec.Command("losetup", "-d", dev).Run() })
	whole, sub, bind := filepath.Join(dir, "whole"), filepath.Join(dir, "whole", "tenant-a"), filepath.Join(dir, "subpath")
	for _, d := range []string{whole, bind} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Mount(dev, whole, "ext4", 0, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(whole, unix.MNT_DETACH) })
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}

	guest := fakeGuest{block: true, fs: map[string]bool{"ext4": true}}
	selectWith := func(m specs.Mount) (*Plan, error) {
		return Select(Request{Kernel: "/k", Block: "/d", BlkMntPoint: "/", Volumes: []specs.Mount{m}, Guest: guest, Monitor: fakeMonitor{}})
	}
	for _, ro := range []bool{false, true} {
		opts := []string{"rbind"}
		if ro {
			opts = append(opts, "ro")
		}
		p, err := selectWith(specs.Mount{Destination: "/data", Type: "bind", Source: whole, Options: opts})
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Disks) != 2 || p.Disks[1] != (Disk{ID: "vol0", Source: dev, ReadOnly: ro}) {
			t.Errorf("ro=%v: disks %+v", ro, p.Disks)
		}
	}
	if err := unix.Mount(sub, bind, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(bind, unix.MNT_DETACH) })
	// The host now uses the device at a second place: the whole mount
	// is no longer the guest's to take.
	_, err = selectWith(specs.Mount{Destination: "/data", Type: "bind", Source: whole, Options: []string{"rbind"}})
	if want := "device " + dev + " of mount " + whole + " is also mounted at " + bind + " on the host"; err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("err = %v, want %q", err, want)
	}
	_, err = selectWith(specs.Mount{Destination: "/data", Type: "bind", Source: bind, Options: []string{"rbind"}})
	if want := "volume /data (from " + bind + "): mount " + bind + " shows only /tenant-a of the filesystem on " + dev; err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("err = %v, want %q", err, want)
	}
}

func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (mknod)")
	}
}
