// Package inroot writes files into an image's root filesystem from the
// host without following anything the image planted there.
package inroot

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	"golang.org/x/sys/unix"
)

// Every write the shim makes into an image's rootfs goes through
// CopyFile. The image, and a guest that owned its disk raw before
// this start, control every path in it: a symlink out of the root, a
// device node, a FIFO or a socket where a pod file goes. So the write
// resolves every directory inside the root (openat2 RESOLVE_IN_ROOT), never
// opens what is at the destination (a new file is written beside it and
// renamed over it), never blocks, and is bounded in size.

// MaxFileSize bounds each file the shim copies into an image's rootfs:
// Kubernetes caps a ConfigMap or a Secret at 1 MiB, and /etc/hosts,
// /etc/hostname and /etc/resolv.conf are far smaller. A larger source is
// refused, naming it, rather than letting a pod fill the guest's disk.
const MaxFileSize = 1 << 20

// tempPrefix names the file written beside the destination before it is
// renamed over it.
const tempPrefix = ".urunc-tmp-"

// CopyFile copies src, a host file given by the kubelet or the CRI
// client, into the rootfs at root as p, a path inside it, with mode perm.
//
// Missing directories on the way are created inside the root. Whatever is
// at p (a regular file, a symlink, a device node, a FIFO, a socket) is
// replaced without ever being opened; a directory at p is refused. src must
// be a regular file, not a symlink, of at most MaxFileSize bytes.
func CopyFile(root, p, src string, perm os.FileMode) error {
	in, size, err := OpenRegularSource(src, MaxFileSize)
	if err != nil {
		return err
	}
	defer in.Close()
	return writeInRoot(root, p, io.LimitReader(in, size+1), size, perm)
}

// OpenRegularSource opens the host file src for reading: not through a
// symlink, without blocking, and only when it is a regular file of at most
// limit bytes; it returns the file and its size. limit <= 0 is no limit.
func OpenRegularSource(src string, limit int64) (*os.File, int64, error) {
	fd, err := unix.Open(src, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ELOOP) {
		return nil, 0, fmt.Errorf("source %s is a symlink: name the file itself", src)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("open source %s: %w", src, err)
	}
	f := os.NewFile(uintptr(fd), src)
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("source %s: %w", src, err)
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, 0, fmt.Errorf("source %s is not a regular file (%s)", src, FileKind(st.Mode()))
	}
	if limit > 0 && st.Size() > limit {
		f.Close()
		return nil, 0, fmt.Errorf("source %s is %d bytes, more than the %d a pod file may have", src, st.Size(), limit)
	}
	return f, st.Size(), nil
}

// writeInRoot writes what r gives, which must be size bytes and at most
// MaxFileSize, at p inside root.
func writeInRoot(root, p string, r io.Reader, size int64, perm os.FileMode) error {
	rel, err := Rel(p)
	if err != nil {
		return err
	}
	if size > MaxFileSize {
		return fmt.Errorf("%s: %d bytes, more than the %d a pod file may have", p, size, MaxFileSize)
	}
	rootFD, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open container rootfs %s: %w", root, err)
	}
	defer unix.Close(rootFD)
	dirFD, err := dirInRoot(rootFD, path.Dir(rel))
	if err != nil {
		return fmt.Errorf("%s: directory %s in the container rootfs: %w", p, "/"+path.Dir(rel), err)
	}
	defer unix.Close(dirFD)
	name := path.Base(rel)
	var st unix.Stat_t
	switch err := unix.Fstatat(dirFD, name, &st, unix.AT_SYMLINK_NOFOLLOW); {
	case err == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR:
		return fmt.Errorf("%s in the container rootfs is a directory, not a file", p)
	case err != nil && !errors.Is(err, unix.ENOENT):
		return fmt.Errorf("%s in the container rootfs: %w", p, err)
	}
	tmp, f, err := createTemp(dirFD, perm)
	if err != nil {
		return fmt.Errorf("%s: create a file beside it: %w", p, err)
	}
	done := false
	defer func() {
		f.Close()
		if !done {
			_ = unix.Unlinkat(dirFD, tmp, 0)
		}
	}()
	n, err := io.Copy(f, r)
	if err != nil {
		return fmt.Errorf("%s: write: %w", p, err)
	}
	if n != size {
		return fmt.Errorf("%s: the source gave %d bytes, not the %d it had when opened", p, n, size)
	}
	// The guest reads it from a disk the host no longer has mounted.
	if err := f.Sync(); err != nil {
		return fmt.Errorf("%s: sync: %w", p, err)
	}
	// rename replaces the entry itself, whatever it is, and never opens
	// it; it refuses to replace a directory.
	if err := unix.Renameat(dirFD, tmp, dirFD, name); err != nil {
		return fmt.Errorf("%s in the container rootfs: replace: %w", p, err)
	}
	done = true
	return syncDir(dirFD)
}

// Rel returns p relative to the root, refusing a path that is empty,
// the root itself, or that climbs out of it.
func Rel(p string) (string, error) {
	if p == "" {
		return "", errors.New("empty path in the container rootfs")
	}
	if strings.IndexByte(p, 0) >= 0 {
		return "", fmt.Errorf("path %q in the container rootfs holds a NUL byte", p)
	}
	rel := path.Clean(strings.TrimLeft(p, "/"))
	if rel == ".." || strings.HasPrefix(rel, "../") {
		return "", fmt.Errorf("path %q leaves the container rootfs", p)
	}
	if rel == "." {
		return "", fmt.Errorf("path %q is not a file in the container rootfs", p)
	}
	return rel, nil
}

// dirInRoot opens the directory rel (clean, relative) inside the root at
// rootFD, resolving it inside the root and creating what is missing.
func dirInRoot(rootFD int, rel string) (int, error) {
	if rel == "." {
		return unix.Dup(rootFD)
	}
	how := &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	}
	fd, err := unix.Openat2(rootFD, rel, how)
	if !errors.Is(err, unix.ENOENT) {
		return fd, err
	}
	parent, err := dirInRoot(rootFD, path.Dir(rel))
	if err != nil {
		return -1, err
	}
	defer unix.Close(parent)
	name := path.Base(rel)
	if err := unix.Mkdirat(parent, name, 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
		return -1, fmt.Errorf("create %s: %w", rel, err)
	}
	// The directory just made, under the parent already resolved: a
	// symlink there now (a dangling one made mkdirat fail with EEXIST) is
	// refused rather than followed.
	fd, err = unix.Openat2(parent, name, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return -1, fmt.Errorf("open %s: %w", rel, err)
	}
	return fd, nil
}

// createTemp creates a new regular file in the directory at dirFD, never
// opening an existing one, and returns its name and the file.
func createTemp(dirFD int, perm os.FileMode) (string, *os.File, error) {
	for range 16 {
		var b [8]byte
		if _, err := rand.Read(b[:]); err != nil {
			return "", nil, err
		}
		name := tempPrefix + hex.EncodeToString(b[:])
		fd, err := unix.Openat(dirFD, name,
			unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, uint32(perm.Perm()))
		if errors.Is(err, unix.EEXIST) {
			continue
		}
		if err != nil {
			return "", nil, err
		}
		f := os.NewFile(uintptr(fd), name)
		st, err := f.Stat()
		if err == nil && !st.Mode().IsRegular() {
			err = fmt.Errorf("the new file is %s", FileKind(st.Mode()))
		}
		if err == nil {
			// The umask must not narrow what the guest may read.
			err = f.Chmod(perm.Perm())
		}
		if err != nil {
			f.Close()
			_ = unix.Unlinkat(dirFD, name, 0)
			return "", nil, err
		}
		return name, f, nil
	}
	return "", nil, errors.New("no free name for a new file")
}

// syncDir makes the rename in the directory at dirFD (an O_PATH
// descriptor) durable.
func syncDir(dirFD int) error {
	fd, err := unix.Openat(dirFD, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open directory to sync: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Fsync(fd); err != nil {
		return fmt.Errorf("sync directory: %w", err)
	}
	return nil
}

// FileKind names the type of a file with mode m for an error message.
func FileKind(m os.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&os.ModeNamedPipe != 0:
		return "a FIFO"
	case m&os.ModeCharDevice != 0:
		return "a character device"
	case m&os.ModeDevice != 0:
		return "a block device"
	case m&os.ModeSocket != 0:
		return "a socket"
	}
	return m.Type().String()
}
