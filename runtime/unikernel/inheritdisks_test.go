package unikernel

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/urunc-dev/containerd-shim-urunc-v2/monitors"
	"github.com/urunc-dev/containerd-shim-urunc-v2/rootfs"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/launch"
)

// The descriptors a monitor running as a user inherits: a writable disk
// once read-write and once read-only; a read-only disk read-only in both.
func TestInheritDisksReadOnly(t *testing.T) {
	dir := t.TempDir()
	var rdisks []rootfs.Disk
	var gdisks []monitors.Disk
	for i, ro := range []bool{false, true} {
		src := filepath.Join(dir, "disk"+string(rune('0'+i)))
		if err := os.WriteFile(src, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		rdisks = append(rdisks, rootfs.Disk{ID: "d", Source: src, ReadOnly: ro})
		gdisks = append(gdisks, monitors.Disk{ID: "d", ReadOnly: ro, FD: launch.FirstDiskFD + 2*i, ReadOnlyFD: launch.FirstDiskFD + 2*i + 1})
	}
	plan := &bootPlan{rootfs: &rootfs.Plan{Disks: rdisks}}
	plan.guest.Disks = gdisks
	extra, err := inheritDisks(plan, nil)
	for _, f := range extra {
		if f != nil {
			defer f.Close()
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	want := map[int]int{
		launch.FirstDiskFD: unix.O_RDWR, launch.FirstDiskFD + 1: unix.O_RDONLY,
		launch.FirstDiskFD + 2: unix.O_RDONLY, launch.FirstDiskFD + 3: unix.O_RDONLY,
	}
	for fd, mode := range want {
		f := extra[fd-launch.ControlSocketFD]
		if f == nil {
			t.Fatalf("no descriptor at %d", fd)
		}
		fl, err := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0)
		if err != nil {
			t.Fatal(err)
		}
		if fl&unix.O_ACCMODE != mode {
			t.Errorf("descriptor %d opened with access mode %d, want %d", fd, fl&unix.O_ACCMODE, mode)
		}
	}
}
