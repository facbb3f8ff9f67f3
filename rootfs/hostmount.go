package rootfs

import (
	"errors"
	"fmt"
	"strings"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// HostMount is a host mount of a block device that a block guest takes
// over raw: recorded in the persisted state before the host lets go of
// it, so that Delete, the delete command and cleanup-orphans mount it back
// as it was once the monitor is gone.
type HostMount struct {
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

// errNotBlockMount: the directory is not the mount point of a block device.
var errNotBlockMount = errors.New("not the mount point of a block device")

// volumeHostMount decides whether the mount at target, a volume's source,
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
// open file) is caught when the host lets go (takeHostMount).
func volumeHostMount(target, bundle string, ms []*mountinfo.Info, devOf func(string) (uint32, uint32, bool)) (HostMount, error) {
	var top *mountinfo.Info
	for _, m := range ms {
		if m.Mountpoint == target {
			top = m
		}
	}
	if top == nil {
		return HostMount{}, errNotBlockMount
	}
	major, minor, ok := devOf(top.Source)
	if !ok || major != uint32(top.Major) || minor != uint32(top.Minor) {
		return HostMount{}, errNotBlockMount
	}
	if top.Root != "/" {
		return HostMount{}, fmt.Errorf("mount %s shows only %s of the filesystem on %s, and a disk would give the guest all of it", target, top.Root, top.Source)
	}
	if isSystemMount(target) {
		return HostMount{}, fmt.Errorf("mount %s of %s is one the host runs from; it is never handed to a guest", target, top.Source)
	}
	for _, m := range ms {
		if m == top {
			continue
		}
		if m.Major == top.Major && m.Minor == top.Minor {
			return HostMount{}, fmt.Errorf("device %s of mount %s is also mounted at %s on the host, which a guest owning it raw would corrupt", top.Source, target, m.Mountpoint)
		}
		if strings.HasPrefix(m.Mountpoint, strings.TrimSuffix(target, "/")+"/") {
			return HostMount{}, fmt.Errorf("mount %s has %s mounted below it, which handing %s to the guest would take from the host", target, m.Mountpoint, top.Source)
		}
	}
	if bundle != "" && (bundle == target || strings.HasPrefix(bundle, target+"/")) {
		return HostMount{}, fmt.Errorf("mount %s of %s holds the container's bundle %s", target, top.Source, bundle)
	}
	hm := HostMount{Device: top.Source, Major: major, Minor: minor, Target: target, FSType: top.FSType,
		Options: top.Options, SuperOptions: top.VFSOptions, Propagation: "private"}
	for _, f := range strings.Fields(top.Optional) {
		tag, _, _ := strings.Cut(f, ":")
		switch tag {
		case "shared":
			hm.Propagation = "shared"
		case "unbindable":
			hm.Propagation = "unbindable"
		case "master":
			return HostMount{}, fmt.Errorf("mount %s of %s is a slave of peer group %s: the device is mounted elsewhere too", target, top.Source, strings.TrimPrefix(f, "master:"))
		}
	}
	return hm, nil
}

// hostMountAt reads the host's mount table and decides on the mount at
// target (volumeHostMount).
func hostMountAt(target, bundle string) (HostMount, error) {
	ms, err := mountinfo.GetMounts(nil)
	if err != nil {
		return HostMount{}, fmt.Errorf("read the mount table: %w", err)
	}
	return volumeHostMount(target, bundle, ms, blockDeviceNumber)
}

// takeHostMount lets go of the host's mount at target so that the guest
// can own its device: the mount as it is now, checked again, is recorded
// (record persists the undo) before it is unmounted. The unmount is not
// detached: a filesystem a process still uses fails here rather than
// living on, detached, while the guest writes its device. The device is
// then opened exclusively, which fails while anything still mounts it (a
// copy in another mount namespace): the caller's failure mounts it back.
func takeHostMount(target, bundle string, undo *Undo, record func(Undo) error) error {
	hm, err := hostMountAt(target, bundle)
	if err != nil {
		return err
	}
	undo.HostMounts = append(undo.HostMounts, hm)
	if err := record(*undo); err != nil {
		return err
	}
	if err := unix.Unmount(hm.Target, 0); err != nil {
		return fmt.Errorf("unmount %s from the host: %w", hm.Target, err)
	}
	fd, err := unix.Open(hm.Device, unix.O_RDONLY|unix.O_EXCL|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return fmt.Errorf("device %s still in use on the host after unmounting %s (mounted in another mount namespace?): %w", hm.Device, hm.Target, err)
	}
	unix.Close(fd)
	return nil
}

// Remount mounts h back as it was; idempotent: a mount of the same device
// already at the target is left alone. A device path that now names
// another device is not mounted.
func (h HostMount) Remount() error {
	ms, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(h.Target))
	if err != nil {
		return fmt.Errorf("read the mount table: %w", err)
	}
	if n := len(ms); n > 0 && uint32(ms[n-1].Major) == h.Major && uint32(ms[n-1].Minor) == h.Minor {
		return nil
	}
	if major, minor, ok := blockDeviceNumber(h.Device); !ok || major != h.Major || minor != h.Minor {
		return fmt.Errorf("mount %s back at %s: the device is no longer %d:%d", h.Device, h.Target, h.Major, h.Minor)
	}
	flags, data := mountFlags(h.Options, h.SuperOptions)
	err = unix.Mount(h.Device, h.Target, h.FSType, flags, data)
	if errors.Is(err, unix.EINVAL) && data != "" {
		// An option the table shows but mount(2) does not take back.
		err = unix.Mount(h.Device, h.Target, h.FSType, flags, "")
	}
	if err != nil {
		return fmt.Errorf("mount %s back at %s: %w", h.Device, h.Target, err)
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
	if err := unix.Mount("", h.Target, "", prop, ""); err != nil {
		return fmt.Errorf("make %s %s again: %w", h.Target, h.Propagation, err)
	}
	return nil
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
