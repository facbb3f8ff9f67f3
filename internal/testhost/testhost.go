// Package testhost holds the host set-up the storage tests of several
// packages share: a root check, an ext4 loop device, a mount table line.
// Only tests import it.
package testhost

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moby/sys/mountinfo"
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
