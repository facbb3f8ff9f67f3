package rootfs

import (
	"github.com/urunc-dev/containerd-shim-urunc-v2/internal/testhost"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moby/sys/mountinfo"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/urunc-dev/containerd-shim-urunc-v2/rootfs/hostmount"
	"golang.org/x/sys/unix"
)

// A block volume reaches a block guest as a disk only when the mount is the
// whole filesystem, read-only when the volume is; a bind of a directory of
// it (a subPath) is refused, naming the volume and the mount, and so is the
// whole mount once the device is mounted at a second place.
func TestBlockVolumeWholeFilesystemOnly(t *testing.T) {
	testhost.NeedRoot(t, "mknod")
	dir := t.TempDir()
	dev, _ := testhost.LoopExt4(t, dir)
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
	_, err := selectWith(specs.Mount{Destination: "/data", Type: "bind", Source: whole, Options: []string{"rbind"}})
	if want := "device " + dev + " of mount " + whole + " is also mounted at " + bind + " on the host"; err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("err = %v, want %q", err, want)
	}
	_, err = selectWith(specs.Mount{Destination: "/data", Type: "bind", Source: bind, Options: []string{"rbind"}})
	if want := "volume /data (from " + bind + "): mount " + bind + " shows only /tenant-a of the filesystem on " + dev; err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("err = %v, want %q", err, want)
	}
}

// A block volume of a block guest (block annotation): Prepare records the
// host mount, as it is, before it unmounts it, and leaves no mount of the
// device; the undo mounts it back with its options and propagation, and
// again changes nothing.
func TestBlockVolumeHostMountUndo(t *testing.T) {
	testhost.NeedRoot(t, "mknod")
	dir := t.TempDir()
	dev, img := testhost.LoopExt4(t, dir)
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(dev, mnt, "ext4", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(mnt, unix.MNT_DETACH) })
	if err := unix.Mount("", mnt, "", unix.MS_SHARED, ""); err != nil {
		t.Fatal(err)
	}
	before := testhost.MountOf(t, mnt)

	guest := fakeGuest{block: true, fs: map[string]bool{"ext4": true}}
	p, err := Select(Request{Bundle: filepath.Join(dir, "bundle"), Kernel: "/k", Block: "/d", BlkMntPoint: "/", Guest: guest, Monitor: fakeMonitor{},
		Volumes: []specs.Mount{{Destination: "/data", Type: "bind", Source: mnt, Options: []string{"rbind", "ro"}}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Undo.HostMounts) != 0 || testhost.MountOf(t, mnt) == nil {
		t.Fatalf("selection changed the host: undo %+v", p.Undo)
	}
	if !p.ReadOnlyDevice(dev) || p.ReadOnlyDevice("/d") {
		t.Fatalf("read-only devices: %s %v, /d %v", dev, p.ReadOnlyDevice(dev), p.ReadOnlyDevice("/d"))
	}
	var recorded []Undo
	err = p.Prepare(func(u Undo) error {
		// Recorded first while the host still mounts it.
		if m := testhost.MountOf(t, mnt); len(recorded) == 0 && (m == nil || m.Source != dev) {
			t.Errorf("undo recorded after the unmount: %+v", m)
		}
		u.HostMounts = append([]hostmount.Mount(nil), u.HostMounts...)
		recorded = append(recorded, u)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var under unix.Stat_t
	if err := unix.Lstat(mnt, &under); err != nil {
		t.Fatal(err)
	}
	var backing unix.Stat_t
	if err := unix.Stat(img, &backing); err != nil {
		t.Fatal(err)
	}
	want := hostmount.Mount{Device: dev, Major: uint32(before.Major), Minor: uint32(before.Minor), Target: mnt, FSType: "ext4",
		Options: before.Options, SuperOptions: before.VFSOptions, Propagation: "shared",
		LoopBackingDev: backing.Dev, LoopBackingIno: backing.Ino}
	// First as the mount is, then with the directory under it.
	if len(recorded) != 2 || len(recorded[0].HostMounts) != 1 || recorded[0].HostMounts[0] != want {
		t.Fatalf("recorded %+v, want two undos, the first with %+v", recorded, want)
	}
	want.TargetDev, want.TargetIno = under.Dev, under.Ino
	if len(recorded[1].HostMounts) != 1 || recorded[1].HostMounts[0] != want {
		t.Fatalf("recorded %+v, want %+v", recorded[1], want)
	}
	recorded = recorded[1:]
	if m := testhost.MountOf(t, mnt); m != nil {
		t.Fatalf("the host still mounts the guest's volume: %+v", m)
	}
	for i := 0; i < 2; i++ {
		if err := recorded[0].Release(); err != nil {
			t.Fatalf("release %d: %v", i, err)
		}
		after := testhost.MountOf(t, mnt)
		if after == nil || after.Source != dev || after.Options != before.Options || !strings.HasPrefix(after.Optional, "shared:") {
			t.Fatalf("release %d: mount back %+v, was %+v", i, after, before)
		}
		ms, _ := mountinfo.GetMounts(mountinfo.SingleEntryFilter(mnt))
		if len(ms) != 1 {
			t.Fatalf("release %d: %d mounts at %s", i, len(ms), mnt)
		}
	}
}
