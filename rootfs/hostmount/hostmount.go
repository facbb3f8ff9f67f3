// Package hostmount takes a host mount of a block device from the host for
// a guest that owns the device raw, and mounts it back as it was once the
// guest is gone: the mount table rules, loop device checks, the record an
// undo persists, and e2fsck before the host kernel reads the filesystem
// again.
package hostmount

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// Mount is a host mount of a block device that a block guest takes
// over raw: recorded in the persisted state before the host lets go of
// it, so that Delete, the delete command and cleanup-orphans mount it back
// as it was once the monitor is gone.
type Mount struct {
	// Device is the block device's path and Major, Minor its number,
	// checked again before the mount back.
	Device       string `json:"device"`
	Major        uint32 `json:"major"`
	Minor        uint32 `json:"minor"`
	Target       string `json:"target"`
	FSType       string `json:"fstype"`
	Options      string `json:"options,omitempty"`      // the mount's own (ro, nosuid, relatime…)
	SuperOptions string `json:"superOptions,omitempty"` // the filesystem's (errors=remount-ro…)
	// Propagation is "shared", "private" or "unbindable"; a slave mount
	// is never taken (its master is a mount of the same device elsewhere).
	Propagation string `json:"propagation"`
	// TargetDev and TargetIno name the directory under the mount, recorded
	// once the host has let go: the mount back goes onto that directory
	// only. While the guest runs, whoever can write the target's parent (a
	// sibling's rw hostPath) could put a symlink to, say, /etc in its place.
	// Zero in a record made before the unmount finished: then only the
	// walk without symlinks guards the mount back.
	TargetDev uint64 `json:"targetDev,omitempty"`
	TargetIno uint64 `json:"targetIno,omitempty"`
	// A loop device's backing file (dev+inode), checked again before the
	// guest gets the device and before the mount back: a loop device can
	// be detached and bound to another file (another tenant's) under the
	// same number. LoopAutoclear says the device was set to detach when
	// last closed (mount -o loop): cleared before the unmount, so the
	// device stays bound to its file while the guest owns it, and set again
	// once mounted back.
	LoopBackingDev uint64 `json:"loopBackingDev,omitempty"`
	LoopBackingIno uint64 `json:"loopBackingIno,omitempty"`
	LoopAutoclear  bool   `json:"loopAutoclear,omitempty"`
}

// loopMajor is the block major number of loop devices.
const loopMajor = 7

// loopStatus reads the status of the loop device at path.
func loopStatus(path string) (*unix.LoopInfo64, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("open loop device %s: %w", path, err)
	}
	defer unix.Close(fd)
	info, err := unix.IoctlLoopGetStatus64(fd)
	if err != nil {
		return nil, fmt.Errorf("loop device %s: status: %w", path, err)
	}
	return info, nil
}

// setLoopAutoclear sets or clears the loop device's detach-on-last-close.
func setLoopAutoclear(path string, on bool) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return fmt.Errorf("open loop device %s: %w", path, err)
	}
	defer unix.Close(fd)
	info, err := unix.IoctlLoopGetStatus64(fd)
	if err != nil {
		return fmt.Errorf("loop device %s: status: %w", path, err)
	}
	if on {
		info.Flags |= unix.LO_FLAGS_AUTOCLEAR
	} else {
		info.Flags &^= unix.LO_FLAGS_AUTOCLEAR
	}
	if err := unix.IoctlLoopSetStatus64(fd, info); err != nil {
		return fmt.Errorf("loop device %s: set autoclear %v: %w", path, on, err)
	}
	return nil
}

// checkLoopBacking fails unless h's loop device is still bound to the
// file recorded when the host let go of it.
func (h Mount) checkLoopBacking() error {
	if h.Major != loopMajor || h.LoopBackingIno == 0 {
		return nil
	}
	info, err := loopStatus(h.Device)
	if err != nil {
		return err
	}
	if info.Device != h.LoopBackingDev || info.Inode != h.LoopBackingIno {
		return fmt.Errorf("loop device %s is bound to file %d:%d, not %d:%d as when the host let go of it",
			h.Device, info.Device, info.Inode, h.LoopBackingDev, h.LoopBackingIno)
	}
	return nil
}

// systemMountPoints are host directories whose mount is never handed to a
// guest, whatever else holds: the host runs from them. A volume is a
// directory of the pod's; these never are, and the rule below (the device
// mounted only there) cannot see that the host needs, say, its /boot.
var systemMountPoints = []string{"/", "/boot", "/etc", "/usr", "/var", "/var/lib", "/home", "/root", "/opt", "/srv", "/tmp", "/mnt", "/media"}

// systemTrees are host trees no volume mount below them is handed over
// from: the kernel's and the runtime's own.
var systemTrees = []string{"/proc", "/sys", "/dev", "/run", "/boot", "/usr", "/etc", "/var/lib/containerd", "/var/lib/kubelet/plugins"}

func isSystemMount(target string) bool {
	for _, p := range systemMountPoints {
		if target == p {
			return true
		}
	}
	for _, p := range systemTrees {
		if target == p || strings.HasPrefix(target, p+"/") {
			return true
		}
	}
	return false
}

// blockDeviceNumber returns the device number of the block device at path.
func blockDeviceNumber(path string) (major, minor uint32, ok bool) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return 0, 0, false
	}
	return unix.Major(st.Rdev), unix.Minor(st.Rdev), true
}

// ErrNotBlockMount: the directory is not the mount point of a block device.
var ErrNotBlockMount = errors.New("not the mount point of a block device")

// volumeMount decides whether the mount at target, a volume's source,
// may be taken from the host and its device given to a guest raw, from
// the host's mount table ms (the shim's mount namespace: the host's).
// bundle is the container's bundle, which must not lie on it.
//
// The rule: the device is the guest's only if the host uses it nowhere
// else. A filesystem mounted on the host while the guest writes its
// device raw is corrupted, and the host would lose what else it reads
// there. So the mount must be the whole filesystem (not a subPath bind of
// a directory of it), the device mounted only there in this namespace (a
// second mount point, a CSI staging mount or the host's own root, is
// named and refused), not a slave of a mount elsewhere, with nothing
// mounted below it (an unmount would take those from the host too), not
// holding the bundle, and not one of the host's system directories.
// What the mount table cannot show (a copy in another mount namespace, an
// open file) is caught when the host lets go (Take).
func volumeMount(target, bundle string, ms []*mountinfo.Info, devOf func(string) (uint32, uint32, bool)) (Mount, error) {
	var top *mountinfo.Info
	for _, m := range ms {
		if m.Mountpoint == target {
			top = m
		}
	}
	if top == nil {
		return Mount{}, ErrNotBlockMount
	}
	major, minor, ok := devOf(top.Source)
	if !ok || major != uint32(top.Major) || minor != uint32(top.Minor) {
		return Mount{}, ErrNotBlockMount
	}
	if top.Root != "/" {
		return Mount{}, fmt.Errorf("mount %s shows only %s of the filesystem on %s, and a disk would give the guest all of it", target, top.Root, top.Source)
	}
	if isSystemMount(target) {
		return Mount{}, fmt.Errorf("mount %s of %s is one the host runs from; it is never handed to a guest", target, top.Source)
	}
	for _, m := range ms {
		if m == top {
			continue
		}
		if m.Major == top.Major && m.Minor == top.Minor {
			return Mount{}, fmt.Errorf("device %s of mount %s is also mounted at %s on the host, which a guest owning it raw would corrupt", top.Source, target, m.Mountpoint)
		}
		if strings.HasPrefix(m.Mountpoint, strings.TrimSuffix(target, "/")+"/") {
			return Mount{}, fmt.Errorf("mount %s has %s mounted below it, which handing %s to the guest would take from the host", target, m.Mountpoint, top.Source)
		}
	}
	if bundle != "" && (bundle == target || strings.HasPrefix(bundle, target+"/")) {
		return Mount{}, fmt.Errorf("mount %s of %s holds the container's bundle %s", target, top.Source, bundle)
	}
	hm := Mount{Device: top.Source, Major: major, Minor: minor, Target: target, FSType: top.FSType,
		Options: top.Options, SuperOptions: top.VFSOptions, Propagation: "private"}
	for _, f := range strings.Fields(top.Optional) {
		tag, _, _ := strings.Cut(f, ":")
		switch tag {
		case "shared":
			hm.Propagation = "shared"
		case "unbindable":
			hm.Propagation = "unbindable"
		case "master":
			return Mount{}, fmt.Errorf("mount %s of %s is a slave of peer group %s: the device is mounted elsewhere too", target, top.Source, strings.TrimPrefix(f, "master:"))
		}
	}
	return hm, nil
}

// At reads the host's mount table and decides on the mount at
// target (volumeMount).
func At(target, bundle string) (Mount, error) {
	ms, err := mountinfo.GetMounts(nil)
	if err != nil {
		return Mount{}, fmt.Errorf("read the mount table: %w", err)
	}
	return volumeMount(target, bundle, ms, blockDeviceNumber)
}

// Take lets go of the host's mount at target so that the guest can own
// its device: the mount as it is now, checked again, is appended to taken
// and recorded (record persists taken) before it is unmounted, and
// recorded again with the directory under it. The unmount is not
// detached: a filesystem a process still uses fails here rather than
// living on, detached, while the guest writes its device. The device is
// then opened exclusively, which fails while anything still mounts it (a
// copy in another mount namespace): the caller's failure mounts it back.
func Take(target, bundle string, taken *[]Mount, record func() error) error {
	hm, err := At(target, bundle)
	if err != nil {
		return err
	}
	if hm.Major == loopMajor {
		info, err := loopStatus(hm.Device)
		if err != nil {
			return err
		}
		hm.LoopBackingDev, hm.LoopBackingIno = info.Device, info.Inode
		hm.LoopAutoclear = info.Flags&unix.LO_FLAGS_AUTOCLEAR != 0
	}
	*taken = append(*taken, hm)
	if err := record(); err != nil {
		return err
	}
	if hm.LoopAutoclear {
		// Else the unmount detaches the device, and its number is free
		// for anyone's file before the guest's monitor opens it.
		if err := setLoopAutoclear(hm.Device, false); err != nil {
			return err
		}
	}
	if err := unix.Unmount(hm.Target, 0); err != nil {
		return fmt.Errorf("unmount %s from the host: %w", hm.Target, err)
	}
	dir, err := openNoSymlinks(hm.Target)
	if err != nil {
		return fmt.Errorf("open %s after unmounting it: %w", hm.Target, err)
	}
	var st unix.Stat_t
	err = unix.Fstat(dir, &st)
	unix.Close(dir)
	if err != nil {
		return fmt.Errorf("stat %s after unmounting it: %w", hm.Target, err)
	}
	(*taken)[len(*taken)-1].TargetDev = st.Dev
	(*taken)[len(*taken)-1].TargetIno = st.Ino
	if err := record(); err != nil {
		return err
	}
	fd, err := unix.Open(hm.Device, unix.O_RDONLY|unix.O_EXCL|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return fmt.Errorf("device %s still in use on the host after unmounting %s (mounted in another mount namespace?): %w", hm.Device, hm.Target, err)
	}
	unix.Close(fd)
	return (*taken)[len(*taken)-1].checkLoopBacking()
}

// openNoSymlinks opens the directory at the absolute path p as O_PATH,
// refusing a symlink in any of its components (p is a mount point as the
// mount table shows it, which has none).
func openNoSymlinks(p string) (int, error) {
	fd, err := unix.Openat2(unix.AT_FDCWD, p, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err == nil {
		return fd, nil
	}
	if !errors.Is(err, unix.ENOSYS) {
		return -1, err
	}
	// A kernel without openat2: the same walk, one component at a time.
	fd, err = unix.Open("/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	for _, c := range strings.Split(p, "/") {
		if c == "" || c == "." {
			continue
		}
		if c == ".." {
			unix.Close(fd)
			return -1, fmt.Errorf("%s: a \"..\" component: %w", p, unix.EXDEV)
		}
		next, err := unix.Openat(fd, c, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		unix.Close(fd)
		if err != nil {
			return -1, err
		}
		fd = next
	}
	return fd, nil
}

// remountFlags are added to the mount back whatever the mount was: the
// guest wrote the filesystem raw, and its setuid files and device nodes
// must not come alive on the host.
const remountFlags = unix.MS_NOSUID | unix.MS_NODEV

// Remount mounts h back as it was (but nosuid, nodev); idempotent: a
// mount of the same device already at the target is left alone. A device
// path that now names another device is not mounted, nor is a target
// that is no longer the directory the host let go of (a symlink, another
// directory): the mount goes onto the directory opened without following
// symlinks, through its descriptor.
func (h Mount) Remount() error {
	ms, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(h.Target))
	if err != nil {
		return fmt.Errorf("read the mount table: %w", err)
	}
	if n := len(ms); n > 0 && uint32(ms[n-1].Major) == h.Major && uint32(ms[n-1].Minor) == h.Minor {
		return h.restoreLoopAutoclear()
	}
	if major, minor, ok := blockDeviceNumber(h.Device); !ok || major != h.Major || minor != h.Minor {
		return fmt.Errorf("mount %s back at %s: the device is no longer %d:%d", h.Device, h.Target, h.Major, h.Minor)
	}
	if err := h.checkLoopBacking(); err != nil {
		return fmt.Errorf("mount %s back at %s: %w; left unmounted", h.Device, h.Target, err)
	}
	if err := checkBeforeMountBack(h); err != nil {
		return fmt.Errorf("mount %s back at %s: %w; left unmounted", h.Device, h.Target, err)
	}
	dir, err := openNoSymlinks(h.Target)
	if err != nil {
		return fmt.Errorf("mount %s back at %s: open the target without following symlinks: %w; left unmounted", h.Device, h.Target, err)
	}
	defer unix.Close(dir)
	var st unix.Stat_t
	if err := unix.Fstat(dir, &st); err != nil {
		return fmt.Errorf("mount %s back at %s: %w", h.Device, h.Target, err)
	}
	if h.TargetIno != 0 && (st.Dev != h.TargetDev || st.Ino != h.TargetIno) {
		return fmt.Errorf("mount %s back at %s: the target is no longer the directory the host let go of (inode %d:%d, was %d:%d); left unmounted",
			h.Device, h.Target, st.Dev, st.Ino, h.TargetDev, h.TargetIno)
	}
	onto := "/proc/self/fd/" + strconv.Itoa(dir)
	flags, data := mountFlags(h.Options, h.SuperOptions)
	flags |= remountFlags
	err = unix.Mount(h.Device, onto, h.FSType, flags, data)
	if errors.Is(err, unix.EINVAL) && data != "" {
		// An option the table shows but mount(2) does not take back.
		err = unix.Mount(h.Device, onto, h.FSType, flags, "")
	}
	if err != nil {
		return fmt.Errorf("mount %s back at %s: %w", h.Device, h.Target, err)
	}
	// The propagation is set on the new mount, reached the same way.
	top, err := openNoSymlinks(h.Target)
	if err != nil {
		return fmt.Errorf("open %s after mounting it back: %w", h.Target, err)
	}
	defer unix.Close(top)
	if err := unix.Fstat(top, &st); err != nil || unix.Major(st.Dev) != h.Major || unix.Minor(st.Dev) != h.Minor {
		return fmt.Errorf("mount %s back at %s: the target does not show the device after the mount (%v)", h.Device, h.Target, err)
	}
	var prop uintptr
	switch h.Propagation {
	case "shared":
		prop = unix.MS_SHARED
	case "unbindable":
		prop = unix.MS_UNBINDABLE
	default:
		prop = unix.MS_PRIVATE
	}
	if err := unix.Mount("", "/proc/self/fd/"+strconv.Itoa(top), "", prop, ""); err != nil {
		return fmt.Errorf("make %s %s again: %w", h.Target, h.Propagation, err)
	}
	return h.restoreLoopAutoclear()
}

// restoreLoopAutoclear sets detach-on-last-close again on a loop device
// that had it, once mounted back (not before: unmounted, it would detach).
func (h Mount) restoreLoopAutoclear() error {
	if !h.LoopAutoclear {
		return nil
	}
	if err := h.checkLoopBacking(); err != nil {
		return err
	}
	return setLoopAutoclear(h.Device, true)
}

// mountFlags turns a mount's options, as the mount table shows them, into
// mount(2)'s flags and data.
func mountFlags(options, superOptions string) (uintptr, string) {
	var flags uintptr
	for _, o := range strings.Split(options, ",") {
		switch o {
		case "ro":
			flags |= unix.MS_RDONLY
		case "nosuid":
			flags |= unix.MS_NOSUID
		case "nodev":
			flags |= unix.MS_NODEV
		case "noexec":
			flags |= unix.MS_NOEXEC
		case "noatime":
			flags |= unix.MS_NOATIME
		case "nodiratime":
			flags |= unix.MS_NODIRATIME
		case "relatime":
			flags |= unix.MS_RELATIME
		case "strictatime":
			flags |= unix.MS_STRICTATIME
		}
	}
	var data []string
	for _, o := range strings.Split(superOptions, ",") {
		switch o {
		case "", "rw":
		case "ro":
			flags |= unix.MS_RDONLY
		case "sync":
			flags |= unix.MS_SYNCHRONOUS
		case "dirsync":
			flags |= unix.MS_DIRSYNC
		case "lazytime":
			flags |= unix.MS_LAZYTIME
		default:
			data = append(data, o)
		}
	}
	return flags, strings.Join(data, ",")
}
