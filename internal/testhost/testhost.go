// Package testhost holds the host set-up the storage tests of several
// packages share: a root check, an ext4 loop device, a mount table line,
// special nodes that tell whether anything opened them.
// Only tests import it.
package testhost

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// NeedRoot skips a test that needs root for what says why.
func NeedRoot(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (" + why + ")")
	}
}

// LoopExt4 makes an 8 MB ext4 image vol.ext4 in dir and a loop device over
// it, detached when the test ends; it skips where mkfs.ext4 or a loop
// device cannot be had.
func LoopExt4(t testing.TB, dir string) (dev, img string) {
	t.Helper()
	img = filepath.Join(dir, "vol.ext4")
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", img, "8M").CombinedOutput(); err != nil {
		t.Skipf("mkfs.ext4: %v: %s", err, out)
	}
	out, err := exec.Command("losetup", "--find", "--show", img).CombinedOutput()
	if err != nil {
		t.Skipf("no loop device: %v: %s", err, out)
	}
	dev = strings.TrimSpace(string(out))
	t.Cleanup(func() { _ = exec.Command("losetup", "-d", dev).Run() })
	return dev, img
}

// MountOf returns the mount table's last line for target, or nil.
func MountOf(t testing.TB, target string) *mountinfo.Info {
	t.Helper()
	ms, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(target))
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) == 0 {
		return nil
	}
	return ms[len(ms)-1]
}

// SpecialNodes makes a FIFO and a character device node (the null
// device's numbers) in dir, and returns their paths and a function that
// fails the test if anything opened either one for I/O since: an O_PATH
// descriptor or a stat opens nothing, an open(2) does, and a device
// node's open runs its driver (arming a watchdog, rewinding a tape) as the
// shim's root. inotify reports each open synchronously, so the check
// needs no wait.
func SpecialNodes(t testing.TB, dir string) (fifo, dev string, checkNotOpened func(t testing.TB)) {
	t.Helper()
	NeedRoot(t, "a device node needs mknod")
	fifo, dev = filepath.Join(dir, "fifo"), filepath.Join(dir, "dev")
	if err := unix.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mknod(dev, unix.S_IFCHR|0o644, int(unix.Mkdev(1, 3))); err != nil {
		t.Fatal(err)
	}
	ifd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(ifd) })
	for _, p := range []string{fifo, dev} {
		if _, err := unix.InotifyAddWatch(ifd, p, unix.IN_OPEN); err != nil {
			t.Fatal(err)
		}
	}
	return fifo, dev, func(t testing.TB) {
		t.Helper()
		buf := make([]byte, 4096)
		n, err := unix.Read(ifd, buf)
		if err == nil && n > 0 {
			t.Fatalf("the FIFO or the device node in %s was opened (%d bytes of inotify IN_OPEN events)", dir, n)
		}
		if err != nil && !errors.Is(err, unix.EAGAIN) {
			t.Fatal(err)
		}
	}
}
