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
	securejoin "github.com/cyphar/filepath-securejoin"
	"golang.org/x/sys/unix"
)

// ResolveInRootfs returns the host path of p, a path inside the container
// rootfs at root. A path that climbs out of the rootfs ("../x") is refused
// with an error naming it; symlinks inside the rootfs are resolved as the
// container would see them, never to host paths.
func ResolveInRootfs(root, p string) (string, error) {
	if p == "" {
		return "", fmt.Errorf("empty path in rootfs")
	}
	clean := filepath.Clean("/" + p)
	// Clean of "/"+p removes leading "..", so compare against the plain
	// cleaned form to see whether p meant to climb.
	if rel := filepath.Clean(strings.TrimPrefix(p, "/")); rel == ".." || strings.HasPrefix(rel, "../") {
		return "", fmt.Errorf("path %q leaves the container rootfs", p)
	}
	resolved, err := securejoin.SecureJoin(root, clean)
	if err != nil {
		return "", fmt.Errorf("resolve %q in rootfs: %w", p, err)
	}
	return resolved, nil
}

// RequireFile resolves p in the rootfs and checks it is a regular file; what
// names the file's role in the error ("guest kernel", "initrd").
func RequireFile(root, p, what string) (string, error) {
	host, err := ResolveInRootfs(root, p)
	if err != nil {
		return "", fmt.Errorf("%s: %w", what, err)
	}
	st, err := os.Stat(host)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("%s %q not found in the container rootfs", what, p)
		}
		return "", fmt.Errorf("%s %q: %w", what, p, err)
	}
	if !st.Mode().IsRegular() {
		return "", fmt.Errorf("%s %q in the container rootfs is not a regular file", what, p)
	}
	return host, nil
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

// IsMounted tells whether path is a mount point.
func IsMounted(path string) bool {
	var st, parent unix.Stat_t
	if unix.Lstat(path, &st) != nil || unix.Lstat(filepath.Dir(path), &parent) != nil {
		return false
	}
	if st.Dev != parent.Dev {
		return true
	}
	// A bind mount of a directory of the same filesystem keeps the device:
	// ask the mount table.
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && f[4] == path {
			return true
		}
	}
	return false
}
