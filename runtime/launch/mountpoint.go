package launch

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// A volume's mount point is found and made through descriptors, never by
// a path string walked a second time: a sibling container sharing a
// directory with the rootfs (an emptyDir) can swap a component for a
// symlink to a host directory at any instant, and a later walk of the
// same string would follow it out. Each lookup is one openat2 call the
// kernel resolves inside the rootfs, symlinks included (images have
// /var/run -> /run and /etc/resolv.conf -> ../run/...); what is created
// is created relative to a directory descriptor and opened again from
// it refusing symlinks; the mount lands on the final descriptor.

// inRoot resolves every symlink and ".." inside the rootfs descriptor.
// Magic links (/proc/self/fd/N in an image's /proc) are refused.
const inRoot = unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS

// justMade opens, below a directory descriptor, the entry just created
// there: were it swapped for a symlink since, it is refused.
const justMade = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS

// maxSymlinks bounds the dangling symlinks followed for one mount point,
// as the kernel bounds a path's symlinks.
const maxSymlinks = 40

// openat2 retries EAGAIN: a scoped lookup through ".." gives up when a
// rename or mount happens meanwhile anywhere on the system.
func openat2(dirfd int, path string, how *unix.OpenHow) (int, error) {
	for try := 0; ; try++ {
		fd, err := unix.Openat2(dirfd, path, how)
		if (errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR)) && try < 128 {
			continue
		}
		return fd, err
	}
}

// openMountPoint opens, as an O_PATH descriptor, the mount point for a
// volume at target inside the rootfs open at rootFd, making what is
// missing as runc would: directories all the way for a directory volume;
// the parents and an empty file for a file volume. What the image has at
// a file volume's place already, a FIFO or a device node included, is
// mounted over and never opened (O_PATH): an open could block or act on a
// host device. A symlink whose target is missing is followed inside the
// rootfs and its target made.
func openMountPoint(rootFd int, target string, dir bool) (int, error) {
	if rel := filepath.Clean(strings.TrimPrefix(target, "/")); rel == ".." || strings.HasPrefix(rel, "../") {
		return -1, fmt.Errorf("path %q leaves the container rootfs", target)
	}
	path := filepath.Clean("/" + target)
	for range maxSymlinks {
		fd, redirect, err := walkMountPoint(rootFd, path, dir)
		if err != nil || redirect == "" {
			return fd, err
		}
		path = redirect
	}
	return -1, fmt.Errorf("%s: more than %d symlinks to missing targets", target, maxSymlinks)
}

// walkMountPoint opens path's components one prefix at a time from the
// root descriptor, making each missing one in the directory opened just
// before. Meeting a symlink to a missing target, it returns the path to
// walk instead (the link's target, then the rest).
func walkMountPoint(rootFd int, path string, dir bool) (fd int, redirect string, err error) {
	var comps []string
	for _, c := range strings.Split(path, "/") {
		if c != "" && c != "." {
			comps = append(comps, c)
		}
	}
	if len(comps) == 0 && !dir {
		return -1, "", errors.New("a file volume over the whole rootfs")
	}
	cur, err := unix.Openat(rootFd, ".", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, "", fmt.Errorf("open the rootfs: %w", err)
	}
	for i, name := range comps {
		wantDir := dir || i < len(comps)-1
		flags := uint64(unix.O_PATH | unix.O_CLOEXEC)
		if wantDir {
			flags |= unix.O_DIRECTORY
		}
		prefix := strings.Join(comps[:i+1], "/")
		next, err := openat2(rootFd, prefix, &unix.OpenHow{Flags: flags, Resolve: inRoot})
		if errors.Is(err, unix.ENOENT) {
			next, err = makeEntry(cur, name, wantDir)
			if errors.Is(err, unix.ELOOP) {
				buf := make([]byte, unix.PathMax)
				if n, lerr := unix.Readlinkat(cur, name, buf); lerr == nil {
					unix.Close(cur)
					link := string(buf[:n])
					if !strings.HasPrefix(link, "/") {
						link = strings.Join(comps[:i], "/") + "/" + link
					}
					return -1, "/" + strings.Join(append([]string{link}, comps[i+1:]...), "/"), nil
				}
			}
		}
		unix.Close(cur)
		if err != nil {
			return -1, "", fmt.Errorf("/%s in the rootfs: %w", prefix, err)
		}
		cur = next
	}
	if !dir {
		var st unix.Stat_t
		if err := unix.Fstat(cur, &st); err != nil {
			unix.Close(cur)
			return -1, "", fmt.Errorf("%s in the rootfs: %w", path, err)
		}
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			unix.Close(cur)
			return -1, "", fmt.Errorf("%s in the rootfs is a directory, the volume a file", path)
		}
	}
	return cur, "", nil
}

// makeEntry makes name, a directory or an empty file, in the directory
// open at parent unless something is there already, and opens it O_PATH
// without following a symlink: ELOOP tells the caller name is one.
func makeEntry(parent int, name string, dir bool) (int, error) {
	flags := uint64(unix.O_PATH | unix.O_CLOEXEC)
	if dir {
		flags |= unix.O_DIRECTORY
		if err := unix.Mkdirat(parent, name, 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
			return -1, fmt.Errorf("mkdir: %w", err)
		}
	} else {
		// O_EXCL|O_NOFOLLOW: nothing already there is ever opened.
		fd, err := unix.Openat(parent, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0o644)
		if err == nil {
			unix.Close(fd)
		} else if !errors.Is(err, unix.EEXIST) {
			return -1, fmt.Errorf("create: %w", err)
		}
	}
	return openat2(parent, name, &unix.OpenHow{Flags: flags, Resolve: justMade})
}
