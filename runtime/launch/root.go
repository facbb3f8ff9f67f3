package launch

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/urunc-dev/containerd-shim-urunc-v2/internal/confined"
	"golang.org/x/sys/unix"
)

// BuildConfinedRoot populates dir (a tmpfs mounted here) with binds. It
// must run in a private mount namespace: the caller makes the namespace a
// slave of the host first, so none of these mounts reaches the host.
// Sources inside rootfsDir are resolved inside it: see openBindSource.
func BuildConfinedRoot(dir string, binds []confined.Bind, rootfsDir string) error {
	// nodev and noexec: what the monitor runs and opens is bound in, each
	// bind keeping its own flags; nothing on the tmpfs itself needs either.
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=0755,size=16m"); err != nil {
		return fmt.Errorf("mount tmpfs at %s: %w", dir, err)
	}
	for _, b := range binds {
		if err := bindInto(dir, b, rootfsDir); err != nil {
			return err
		}
	}
	for _, d := range []string{"tmp", "dev"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	return os.Chmod(filepath.Join(dir, "tmp"), 0o1777)
}

// bindInto binds b into root, the monitor's own tmpfs; a source inside
// rootfsDir ("" for none) is resolved inside it.
func bindInto(root string, b confined.Bind, rootfsDir string) error {
	if !filepath.IsAbs(b.Target) || strings.Contains(b.Target, "..") {
		return fmt.Errorf("bind target %q must be absolute and plain", b.Target)
	}
	src, err := openBindSource(b.Source, rootfsDir)
	if err != nil {
		return fmt.Errorf("bind %s: %w", b.Source, err)
	}
	defer unix.Close(src)
	var st unix.Stat_t
	if err := unix.Fstat(src, &st); err != nil {
		return fmt.Errorf("bind %s: %w", b.Source, err)
	}
	target := filepath.Join(root, b.Target)
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		if err := os.MkdirAll(target, 0o755); err != nil {
			return err
		}
	} else {
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return err
		}
		f, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		f.Close()
	}
	fd, err := unix.Open(target, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("bind %s at %s: %w", b.Source, target, err)
	}
	defer unix.Close(fd)
	if err := bindOnto(src, fd, b.ReadOnly); err != nil {
		return fmt.Errorf("bind %s at %s: %w", b.Source, target, err)
	}
	return nil
}

// openBindSource opens source O_PATH. A source inside the container
// rootfs (the guest's kernel, initrd or disk image, found by the shim
// before any volume was bound) is resolved again inside the rootfs: by
// now the volumes are bound there, and its path walked through one could
// meet a symlink that a sibling container planted in a shared directory,
// pointing at any host file.
func openBindSource(source, rootfsDir string) (int, error) {
	if rootfsDir != "" {
		// The shim names sources by their canonical path.
		canonical, err := filepath.EvalSymlinks(rootfsDir)
		if err != nil {
			return -1, fmt.Errorf("the rootfs %s: %w", rootfsDir, err)
		}
		if rel, err := filepath.Rel(canonical, source); err == nil && rel != ".." && !strings.HasPrefix(rel, "../") {
			root, err := unix.Open(canonical, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
			if err != nil {
				return -1, fmt.Errorf("open the rootfs %s: %w", canonical, err)
			}
			defer unix.Close(root)
			fd, err := openat2(root, rel, &unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC, Resolve: inRoot})
			if err != nil {
				return -1, fmt.Errorf("/%s in the rootfs: %w", rel, err)
			}
			return fd, nil
		}
	}
	return unix.Open(source, unix.O_PATH|unix.O_CLOEXEC, 0)
}

// bindAt binds source at target (recursively), read-only if asked. target
// is a path the launcher alone controls (the monitor's own tmpfs).
func bindAt(source, target string, ro bool) error {
	fd, err := unix.Open(target, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("bind %s at %s: %w", source, target, err)
	}
	defer unix.Close(fd)
	src, err := unix.Open(source, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("bind %s: %w", source, err)
	}
	defer unix.Close(src)
	if err := bindOnto(src, fd, ro); err != nil {
		return fmt.Errorf("bind %s at %s: %w", source, target, err)
	}
	return nil
}

// bindOnto binds what is open at source (recursively) onto the file or
// directory open at targetFd: the mount lands where the descriptor is, whatever its path
// has become. A read-only bind is made read-only, with every mount of the
// bound tree, while still detached, so it is never attached writable.
// mount_setattr (Linux 5.12) with AT_RECURSIVE is the kernel's one call
// for a whole tree: a bind remount would leave submounts writable.
func bindOnto(source, targetFd int, ro bool) error {
	tree, err := unix.OpenTree(source, "", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE|unix.AT_EMPTY_PATH)
	if err != nil {
		return fmt.Errorf("clone the mounts: %w", err)
	}
	defer unix.Close(tree)
	if ro {
		err := unix.MountSetattr(tree, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY})
		if errors.Is(err, unix.ENOSYS) {
			return errors.New("make the bind read-only with its submounts: this kernel has no mount_setattr (Linux 5.12), and a bind remount would leave the submounts writable")
		}
		if err != nil {
			return fmt.Errorf("make the bind read-only: %w", err)
		}
	}
	if err := unix.MoveMount(tree, "", targetFd, "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH); err != nil {
		return fmt.Errorf("attach the bind: %w", err)
	}
	return nil
}

// makeReadOnly makes the mount at target read-only, with every mount
// under it when recursive. A bind remount (MS_REMOUNT|MS_BIND|MS_RDONLY)
// acts on one mount whatever MS_REC says, so a read-only volume's
// submounts would stay writable: mount_setattr (Linux 5.12) with
// AT_RECURSIVE is the kernel's one call for a whole tree. Without it, a
// recursive request fails rather than leave anything writable.
func makeReadOnly(target string, recursive bool) error {
	flags := unix.AT_SYMLINK_NOFOLLOW
	if recursive {
		flags |= unix.AT_RECURSIVE
	}
	err := unix.MountSetattr(-1, target, uint(flags), &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY})
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.ENOSYS) && recursive:
		return fmt.Errorf("make %s read-only with its submounts: this kernel has no mount_setattr (Linux 5.12), and a bind remount would leave the submounts writable", target)
	case errors.Is(err, unix.ENOSYS):
		// One mount: a bind remount keeping its other flags does it.
		var st unix.Statfs_t
		if err := unix.Statfs(target, &st); err != nil {
			return fmt.Errorf("make %s read-only: %w", target, err)
		}
		keep := uintptr(st.Flags) & (unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC | unix.MS_NOATIME | unix.MS_NODIRATIME | unix.MS_RELATIME)
		if err := unix.Mount("", target, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|keep, ""); err != nil {
			return fmt.Errorf("make %s read-only: %w", target, err)
		}
		return nil
	}
	return fmt.Errorf("make %s read-only: %w", target, err)
}

// MakeMountsPrivate turns every mount of this (new) mount namespace into a
// slave, so mounts made here never propagate to the host, while unmounts
// on the host (of a rootfs block device, say) still reach this namespace.
func MakeMountsPrivate() error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SLAVE, ""); err != nil {
		return fmt.Errorf("make mounts slave: %w", err)
	}
	return nil
}

// PivotInto makes dir the root of this mount namespace and drops the old
// root entirely, so no path leads back to the host's filesystem.
func PivotInto(dir string) error {
	if err := unix.Chdir(dir); err != nil {
		return fmt.Errorf("chdir %s: %w", dir, err)
	}
	// pivot_root(".", ".") stacks the old root on top of the new one; the
	// detach below then removes it without needing a directory for it.
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root %s: %w", dir, err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach old root: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return errors.New("chdir / in confined root")
	}
	return nil
}

// MountPidsProc mounts at dir/proc a proc of the calling process's pid
// namespace that holds only its processes' directories (subset=pid): no
// /proc/sys, no kernel files. qemu's 9p server needs /proc/self/fd to
// change a new file's mode (it chmods the file through its O_PATH
// descriptor); without it every file or directory a guest creates over
// 9p is undone. The launcher is PID 1 of the container's pid namespace,
// so the monitor sees itself and its helpers only.
func MountPidsProc(dir string) error {
	target := filepath.Join(dir, "proc")
	if err := os.MkdirAll(target, 0o555); err != nil {
		return err
	}
	if err := unix.Mount("proc", target, "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "subset=pid,hidepid=invisible"); err != nil {
		return fmt.Errorf("mount a pids-only proc at %s: %w", target, err)
	}
	return nil
}

// ShareRootfs readies the container rootfs to be shared with the guest:
// the volumes bound into it and, for a read-only root, its top mount made
// read-only, as runc does: the volumes keep their own access, and their
// mount points are made while the rootfs is still writable. The rootfs is
// bound onto itself first so that the read-only flag lands on a mount of
// this namespace's own, whatever the snapshotter mounted there.
func ShareRootfs(rootfsDir string, vols []confined.Bind, readOnly bool) error {
	if readOnly {
		if err := unix.Mount(rootfsDir, rootfsDir, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind the rootfs %s onto itself: %w", rootfsDir, err)
		}
	}
	if err := BindVolumes(rootfsDir, vols); err != nil {
		return err
	}
	if readOnly {
		if err := makeReadOnly(rootfsDir, false); err != nil {
			return fmt.Errorf("read-only root: %w", err)
		}
	}
	return nil
}

// BindVolumes binds each volume into the rootfs at its destination,
// creating the mount point as runc would. It runs in the launcher's own
// mount namespace: the host's mount table never shows these.
// Destinations are resolved inside the rootfs, never through a symlink
// out of it, and the bind lands on the descriptor so resolved: see
// openMountPoint.
func BindVolumes(rootfsDir string, vols []confined.Bind) error {
	rootFd, err := unix.Open(rootfsDir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open the rootfs %s: %w", rootfsDir, err)
	}
	defer unix.Close(rootFd)
	for _, v := range vols {
		if err := bindVolume(rootFd, v); err != nil {
			return fmt.Errorf("volume %s: %w", v.Target, err)
		}
	}
	return nil
}

func bindVolume(rootFd int, v confined.Bind) error {
	src, err := unix.Open(v.Source, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("source %w", err)
	}
	defer unix.Close(src)
	var st unix.Stat_t
	if err := unix.Fstat(src, &st); err != nil {
		return fmt.Errorf("source %s: %w", v.Source, err)
	}
	target, err := openMountPoint(rootFd, v.Target, st.Mode&unix.S_IFMT == unix.S_IFDIR)
	if err != nil {
		return fmt.Errorf("mount point: %w", err)
	}
	defer unix.Close(target)
	if err := bindOnto(src, target, v.ReadOnly); err != nil {
		return fmt.Errorf("bind %s: %w", v.Source, err)
	}
	return nil
}
