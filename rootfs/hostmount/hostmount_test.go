package hostmount

import (
	"errors"
	"github.com/urunc-dev/containerd-shim-urunc-v2/internal/testhost"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// A fake host mount table: the host's root on sda1, a volume on loop3 at
// /pods/a/vol, whatever each case adds.
const hostMountinfo = `21 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro
22 21 0:5 / /dev rw,nosuid shared:2 - devtmpfs udev rw
`

func TestVolumeMount(t *testing.T) {
	devices := map[string][2]uint32{"/dev/sda1": {8, 1}, "/dev/loop3": {7, 3}, "/dev/sdb": {8, 16}}
	devOf := func(p string) (uint32, uint32, bool) { d, ok := devices[p]; return d[0], d[1], ok }
	vol := "30 21 7:3 / /pods/a/vol rw,nosuid,relatime shared:7 - ext4 /dev/loop3 rw\n"
	tests := []struct {
		name, table, target, bundle string
		want                        Mount
		wantErr                     string
	}{
		{name: "the volume's own mount, shared", table: vol, target: "/pods/a/vol",
			want: Mount{Device: "/dev/loop3", Major: 7, Minor: 3, Target: "/pods/a/vol", FSType: "ext4", Options: "rw,nosuid,relatime", SuperOptions: "rw", Propagation: "shared"}},
		{name: "private", table: strings.Replace(vol, "shared:7 ", "", 1), target: "/pods/a/vol",
			want: Mount{Device: "/dev/loop3", Major: 7, Minor: 3, Target: "/pods/a/vol", FSType: "ext4", Options: "rw,nosuid,relatime", SuperOptions: "rw", Propagation: "private"}},
		{name: "read-only and unbindable", table: "30 21 7:3 / /pods/a/vol ro unbindable - ext4 /dev/loop3 ro,errors=continue\n", target: "/pods/a/vol",
			want: Mount{Device: "/dev/loop3", Major: 7, Minor: 3, Target: "/pods/a/vol", FSType: "ext4", Options: "ro", SuperOptions: "ro,errors=continue", Propagation: "unbindable"}},
		{name: "no mount there", table: vol, target: "/pods/a/other", wantErr: ErrNotBlockMount.Error()},
		{name: "not a block device", table: "30 21 0:40 / /pods/a/vol rw - tmpfs tmpfs rw\n", target: "/pods/a/vol", wantErr: ErrNotBlockMount.Error()},
		{name: "source names another device", table: "30 21 7:4 / /pods/a/vol rw - ext4 /dev/loop3 rw\n", target: "/pods/a/vol", wantErr: ErrNotBlockMount.Error()},
		{name: "the host's root", table: "", target: "/",
			wantErr: "mount / of /dev/sda1 is one the host runs from"},
		{name: "the host's /usr", table: "30 21 8:16 / /usr ro - ext4 /dev/sdb ro\n", target: "/usr",
			wantErr: "mount /usr of /dev/sdb is one the host runs from"},
		{name: "under /var/lib/containerd", table: "30 21 8:16 / /var/lib/containerd/x ro - ext4 /dev/sdb ro\n", target: "/var/lib/containerd/x",
			wantErr: "mount /var/lib/containerd/x of /dev/sdb is one the host runs from"},
		{name: "a subPath bind", table: "30 21 7:3 /tenant-a /pods/a/vol rw - ext4 /dev/loop3 rw\n", target: "/pods/a/vol",
			wantErr: "mount /pods/a/vol shows only /tenant-a of the filesystem on /dev/loop3"},
		{name: "the host's root device at a second place", table: "30 21 8:1 / /pods/a/vol rw - ext4 /dev/sda1 rw\n", target: "/pods/a/vol",
			wantErr: "device /dev/sda1 of mount /pods/a/vol is also mounted at / on the host"},
		{name: "a CSI staging mount of the same device", table: "29 21 7:3 / /stage/globalmount rw shared:6 - ext4 /dev/loop3 rw\n" + vol, target: "/pods/a/vol",
			wantErr: "device /dev/loop3 of mount /pods/a/vol is also mounted at /stage/globalmount on the host"},
		{name: "mounted twice at the same place", table: vol + vol, target: "/pods/a/vol",
			wantErr: "device /dev/loop3 of mount /pods/a/vol is also mounted at /pods/a/vol on the host"},
		{name: "a submount", table: vol + "31 30 0:41 / /pods/a/vol/cache rw - tmpfs tmpfs rw\n", target: "/pods/a/vol",
			wantErr: "mount /pods/a/vol has /pods/a/vol/cache mounted below it"},
		{name: "a slave of a mount elsewhere", table: "30 21 7:3 / /pods/a/vol rw master:4 - ext4 /dev/loop3 rw\n", target: "/pods/a/vol",
			wantErr: "mount /pods/a/vol of /dev/loop3 is a slave of peer group 4"},
		{name: "the bundle on it", table: vol, target: "/pods/a/vol", bundle: "/pods/a/vol/bundles/c1",
			wantErr: "mount /pods/a/vol of /dev/loop3 holds the container's bundle /pods/a/vol/bundles/c1"},
		{name: "a sibling path is no submount", table: vol + "31 21 0:41 / /pods/a/volume rw - tmpfs tmpfs rw\n", target: "/pods/a/vol", bundle: "/pods/a/volume/b",
			want: Mount{Device: "/dev/loop3", Major: 7, Minor: 3, Target: "/pods/a/vol", FSType: "ext4", Options: "rw,nosuid,relatime", SuperOptions: "rw", Propagation: "shared"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ms, err := mountinfo.GetMountsFromReader(strings.NewReader(hostMountinfo+tc.table), nil)
			if err != nil {
				t.Fatal(err)
			}
			got, err := volumeMount(tc.target, tc.bundle, ms, devOf)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestMountFlags(t *testing.T) {
	flags, data := mountFlags("ro,nosuid,nodev,noexec,relatime", "ro,errors=remount-ro,lazytime")
	want := uintptr(unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC | unix.MS_RELATIME | unix.MS_LAZYTIME)
	if flags != want || data != "errors=remount-ro" {
		t.Fatalf("flags %#x data %q, want %#x %q", flags, data, want, "errors=remount-ro")
	}
}

// A host mount of the volume's device that the mount table of this
// namespace cannot show (a copy in another mount namespace) keeps the
// device busy: the host lets go of nothing it cannot, and the mount back
// of what was taken restores the volume.
func TestTakeHostMountRefusesDeviceStillInUse(t *testing.T) {
	testhost.NeedRoot(t, "mount, losetup")
	dir := t.TempDir()
	dev, _ := testhost.LoopExt4(t, dir)
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(dev, mnt, "ext4", 0, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(mnt, unix.MNT_DETACH) })
	// Another namespace's copy of the mount, held by a process there.
	holder := exec.Command("unshare", "--mount", "--propagation", "private", "sleep", "600")
	if err := holder.Start(); err != nil {
		t.Skipf("unshare: %v", err)
	}
	t.Cleanup(func() { _ = holder.Process.Kill(); _ = holder.Wait() })
	waitNamespace(t, holder.Process.Pid)

	var taken []Mount
	err := Take(mnt, "", &taken, func() error { return nil })
	if err == nil || !strings.Contains(err.Error(), "device "+dev+" still in use on the host after unmounting "+mnt) {
		t.Fatalf("err = %v", err)
	}
	if err := remountAll(taken); err != nil {
		t.Fatal(err)
	}
	if m := testhost.MountOf(t, mnt); m == nil || m.Source != dev {
		t.Fatalf("not mounted back: %+v", m)
	}
}

// waitNamespace waits until pid runs in a mount namespace of its own.
func waitNamespace(t *testing.T, pid int) {
	t.Helper()
	self, _ := os.Readlink("/proc/self/ns/mnt")
	for i := 0; i < 500; i++ {
		ns, err := os.Readlink(filepath.Join("/proc", strconv.Itoa(pid), "ns/mnt"))
		exe, _ := os.Readlink(filepath.Join("/proc", strconv.Itoa(pid), "exe"))
		if err == nil && ns != self && strings.HasSuffix(exe, "/sleep") {
			return
		}
		unix.Nanosleep(&unix.Timespec{Nsec: 10_000_000}, nil)
	}
	t.Fatalf("process %d has no mount namespace of its own", pid)
}

// takenVolume mounts a fresh ext4 loop device at dir/mnt with flags and
// lets the host go of it as a block guest's volume, returning what was taken.
func takenVolume(t *testing.T, dir string, flags uintptr) (dev, mnt string, taken []Mount) {
	return takenLoopVolume(t, dir, flags, false)
}

// takenLoopVolume is takenVolume with the loop device set to detach when
// last closed (as mount -o loop sets it) if autoclear.
func takenLoopVolume(t *testing.T, dir string, flags uintptr, autoclear bool) (dev, mnt string, taken []Mount) {
	t.Helper()
	dev, _ = testhost.LoopExt4(t, dir)
	mnt = filepath.Join(dir, "pod", "mnt")
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(dev, mnt, "ext4", flags, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(mnt, unix.MNT_DETACH) })
	if autoclear {
		// Once mounted: set on a device nothing holds, the last close
		// detaches it.
		if err := setLoopAutoclear(dev, true); err != nil {
			t.Fatal(err)
		}
	}
	if err := Take(mnt, "", &taken, func() error { return nil }); err != nil {
		t.Fatal(err)
	}
	return dev, mnt, taken
}

// While the guest owns the volume, whoever writes the target's parent
// may put a symlink (to the host's /etc, say) or another directory in the
// target's place: the mount back refuses, naming why, and mounts nothing
// anywhere.
func TestRemountRefusesReplacedTarget(t *testing.T) {
	testhost.NeedRoot(t, "mount, losetup")
	for _, replace := range []string{"symlink", "directory"} {
		t.Run(replace, func(t *testing.T) {
			dir := t.TempDir()
			etc := filepath.Join(dir, "etc")
			if err := os.Mkdir(etc, 0o755); err != nil {
				t.Fatal(err)
			}
			_, mnt, taken := takenVolume(t, dir, 0)
			if err := os.Rename(mnt, mnt+".old"); err != nil {
				t.Fatal(err)
			}
			var err error
			if replace == "symlink" {
				err = os.Symlink(etc, mnt)
			} else {
				err = os.Mkdir(mnt, 0o755)
			}
			if err != nil {
				t.Fatal(err)
			}
			err = remountAll(taken)
			want := "left unmounted"
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("release: %v, want an error with %q", err, want)
			}
			for _, p := range []string{etc, mnt, mnt + ".old"} {
				if m := testhost.MountOf(t, p); m != nil {
					t.Fatalf("mounted at %s: %+v", p, m)
				}
			}
		})
	}
}

// The guest wrote the filesystem raw: the mount back is nosuid and nodev
// even when the host's mount was not.
func TestRemountIsNosuidNodev(t *testing.T) {
	testhost.NeedRoot(t, "mount, losetup")
	dev, mnt, taken := takenVolume(t, t.TempDir(), 0)
	if err := remountAll(taken); err != nil {
		t.Fatal(err)
	}
	m := testhost.MountOf(t, mnt)
	if m == nil || m.Source != dev {
		t.Fatalf("not mounted back: %+v", m)
	}
	opts := "," + m.Options + ","
	if !strings.Contains(opts, ",nosuid,") || !strings.Contains(opts, ",nodev,") {
		t.Fatalf("mounted back with %s, want nosuid and nodev", m.Options)
	}
}

// loopAutoclear reports whether the loop device at dev is bound, and set
// to detach when last closed.
func loopAutoclear(t *testing.T, dev string) (bound, autoclear bool) {
	t.Helper()
	info, err := loopStatus(dev)
	if errors.Is(err, unix.ENXIO) {
		return false, false
	}
	if err != nil {
		t.Fatal(err)
	}
	return true, info.Flags&unix.LO_FLAGS_AUTOCLEAR != 0
}

// A loop device set to detach when last closed (mount -o loop) stays
// bound to its file while the guest owns it (else its number is free for
// another tenant's file before the monitor opens it), and detaches on
// last close again once mounted back.
func TestLoopVolumeStaysBoundWhileTaken(t *testing.T) {
	testhost.NeedRoot(t, "mount, losetup")
	dev, mnt, taken := takenLoopVolume(t, t.TempDir(), 0, true)
	if bound, autoclear := loopAutoclear(t, dev); !bound || autoclear {
		t.Fatalf("after the take: %s bound %v, autoclear %v; want bound, no autoclear", dev, bound, autoclear)
	}
	if err := remountAll(taken); err != nil {
		t.Fatal(err)
	}
	if m := testhost.MountOf(t, mnt); m == nil || m.Source != dev {
		t.Fatalf("not mounted back: %+v", m)
	}
	if bound, autoclear := loopAutoclear(t, dev); !bound || !autoclear {
		t.Fatalf("after the release: %s bound %v, autoclear %v; want both", dev, bound, autoclear)
	}
}

// A loop device bound to another file (another tenant's) under the same
// number while the guest ran is not mounted back.
func TestRemountRefusesRebound(t *testing.T) {
	testhost.NeedRoot(t, "mount, losetup")
	dir := t.TempDir()
	dev, mnt, taken := takenVolume(t, dir, 0)
	other := filepath.Join(dir, "other.ext4")
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", other, "8M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
		t.Fatalf("losetup -d: %v: %s", err, out)
	}
	if out, err := exec.Command("losetup", dev, other).CombinedOutput(); err != nil {
		t.Skipf("rebind %s: %v: %s", dev, err, out)
	}
	err := remountAll(taken)
	if err == nil || !strings.Contains(err.Error(), "not ") || !strings.Contains(err.Error(), "left unmounted") {
		t.Fatalf("release: %v, want a refusal", err)
	}
	if m := testhost.MountOf(t, mnt); m != nil {
		t.Fatalf("mounted: %+v", m)
	}
}

// A filesystem the guest left inconsistent (here: its root directory's
// inode cleared) is not mounted by the host kernel: e2fsck -n -f finds
// errors, and the volume stays unmounted, with an error naming them.
func TestRemountRefusesInconsistentFilesystem(t *testing.T) {
	testhost.NeedRoot(t, "mount, losetup")
	if _, err := exec.LookPath("debugfs"); err != nil {
		t.Skip("no debugfs")
	}
	dev, mnt, taken := takenVolume(t, t.TempDir(), 0)
	if out, err := exec.Command("debugfs", "-w", "-R", "clri <2>", dev).CombinedOutput(); err != nil {
		t.Fatalf("debugfs: %v: %s", err, out)
	}
	err := remountAll(taken)
	if err == nil || !strings.Contains(err.Error(), "e2fsck -n -f "+dev+" found errors") || !strings.Contains(err.Error(), "left unmounted") {
		t.Fatalf("release: %v", err)
	}
	if m := testhost.MountOf(t, mnt); m != nil {
		t.Fatalf("mounted: %+v", m)
	}
}

// remountAll mounts back what Take took, last taken first, as the
// rootfs undo does.
func remountAll(taken []Mount) error {
	var errs []error
	for i := len(taken) - 1; i >= 0; i-- {
		errs = append(errs, taken[i].Remount())
	}
	return errors.Join(errs...)
}
