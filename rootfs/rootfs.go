// Package rootfs handles the container's root filesystem on the host and the
// confined root a monitor runs in.
package rootfs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/urunc-dev/containerd-shim-urunc-v2/internal/confined"
	"github.com/urunc-dev/containerd-shim-urunc-v2/rootfs/inroot"
	"golang.org/x/sys/unix"
)

// ResolveInRootfs returns the host path of p, a path inside the container
// rootfs at root, refusing one that climbs out (confined.ResolveInRootfs:
// the launcher resolves volume destinations with it too).
func ResolveInRootfs(root, p string) (string, error) { return confined.ResolveInRootfs(root, p) }

// RequireFile resolves p in the rootfs and checks it is a regular file; what
// names the file's role in the error ("guest kernel", "initrd").
func RequireFile(root, p, what string) (string, error) {
	f, err := OpenInRootfs(root, p, what)
	if err != nil {
		return "", err
	}
	defer f.Close()
	// The path of the file just checked, as openat2 resolved it inside
	// the rootfs: not resolved a second time, another way.
	host, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", f.Fd()))
	if err != nil {
		return "", fmt.Errorf("%s %q: %w", what, p, err)
	}
	return host, nil
}

// OpenInRootfs opens p, a path inside the container rootfs at root, for
// reading. Every component resolves inside root, symlinks and ".."
// included (openat2 RESOLVE_IN_ROOT), so an image can never make the shim
// open a host file; the open does not block, so a FIFO in an image cannot
// hang Create; and the file must be regular, so a device cannot feed the
// shim without end. what names the file's role in errors.
func OpenInRootfs(root, p, what string) (*os.File, error) {
	if p == "" {
		return nil, fmt.Errorf("%s: empty path in rootfs", what)
	}
	if rel := filepath.Clean(strings.TrimPrefix(p, "/")); rel == ".." || strings.HasPrefix(rel, "../") {
		return nil, fmt.Errorf("%s: path %q leaves the container rootfs", what, p)
	}
	dir, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("%s: open container rootfs %s: %w", what, root, err)
	}
	defer unix.Close(dir)
	rel := strings.TrimPrefix(filepath.Clean("/"+p), "/")
	// O_PATH first: the image's device node there is refused, never
	// opened (its driver would run as the shim's root).
	pathFD, err := unix.Openat2(dir, rel, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
	if errors.Is(err, unix.ENOENT) {
		return nil, notFoundError(fmt.Sprintf("%s %q not found in the container rootfs", what, p))
	}
	if err != nil {
		return nil, fmt.Errorf("%s %q: %w", what, p, err)
	}
	defer unix.Close(pathFD)
	var st unix.Stat_t
	if err := unix.Fstat(pathFD, &st); err != nil {
		return nil, fmt.Errorf("%s %q: %w", what, p, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, fmt.Errorf("%s %q in the container rootfs is not a regular file (%s)", what, p, inroot.FileKind(fileModeOf(st.Mode)))
	}
	fd, err := inroot.ReopenForRead(pathFD, st)
	if err != nil {
		return nil, fmt.Errorf("%s %q: %w", what, p, err)
	}
	return os.NewFile(uintptr(fd), filepath.Join(root, rel)), nil
}

// Mount mounts the request's rootfs mounts at target. On failure nothing
// stays mounted.
func Mount(mounts []mount.Mount, target string) error {
	if len(mounts) == 0 {
		return nil
	}
	if err := os.MkdirAll(target, 0o711); err != nil {
		return fmt.Errorf("create rootfs dir: %w", err)
	}
	if err := mount.All(mounts, target); err != nil {
		_ = Unmount(target)
		return fmt.Errorf("mount rootfs at %s: %w", target, err)
	}
	return nil
}

// Unmount undoes every mount at or below target. It is idempotent.
func Unmount(target string) error {
	if err := mount.UnmountRecursive(target, unix.MNT_DETACH); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("unmount %s: %w", target, err)
	}
	return nil
}

// notFoundError says which file of the image is missing; it is
// os.ErrNotExist for callers to whom a missing file is fine.
type notFoundError string

func (e notFoundError) Error() string        { return string(e) }
func (e notFoundError) Is(target error) bool { return target == os.ErrNotExist }
