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
// Anything else at src is refused without being opened (OpenSourceAt).
func OpenRegularSource(src string, limit int64) (*os.File, int64, error) {
	f, st, err := OpenSourceAt(unix.AT_FDCWD, src)
	switch {
	case errors.Is(err, ErrNotFileOrDir) && st.Mode&unix.S_IFMT == unix.S_IFLNK:
		return nil, 0, fmt.Errorf("source %s is a symlink: name the file itself", src)
	case errors.Is(err, ErrNotFileOrDir):
		return nil, 0, fmt.Errorf("source %s is not a regular file (%s)", src, kindOfStat(st.Mode))
	case err != nil:
		return nil, 0, fmt.Errorf("open source %s: %w", src, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		f.Close()
		return nil, 0, fmt.Errorf("source %s is not a regular file (%s)", src, kindOfStat(st.Mode))
	}
	if limit > 0 && st.Size > limit {
		f.Close()
		return nil, 0, fmt.Errorf("source %s is %d bytes, more than the %d a pod file may have", src, st.Size, limit)
	}
	return f, st.Size, nil
}

// ErrNotFileOrDir: what is at a source's name is neither a regular file
// nor a directory (a symlink, a device node, a FIFO, a socket), and was
// not opened.
var ErrNotFileOrDir = errors.New("neither a regular file nor a directory")

// OpenSourceAt opens name, in the directory at dirFD (unix.AT_FDCWD for a
// path), for reading: not through a symlink at its last name, without
// blocking, and only when it is a regular file or a directory. It returns
// the stat of what is at name, also when that is refused with
// ErrNotFileOrDir.
//
// The entry is first held by an O_PATH descriptor, which opens nothing;
// only once its type is known is that same inode opened (ReopenForRead).
// So a device node, FIFO or socket, even one a sidecar swaps in after a
// check, never sees an open(2): a device's open runs its driver (arming a
// watchdog, rewinding a tape) as the shim's root, outside any device
// cgroup.
func OpenSourceAt(dirFD int, name string) (*os.File, unix.Stat_t, error) {
	var st unix.Stat_t
	pathFD, err := unix.Openat(dirFD, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, st, err
	}
	defer unix.Close(pathFD)
	if err := unix.Fstat(pathFD, &st); err != nil {
		return nil, st, err
	}
	fd, err := ReopenForRead(pathFD, st)
	if err != nil {
		return nil, st, err
	}
	return os.NewFile(uintptr(fd), name), st, nil
}

// ReopenForRead opens for reading, without blocking, the inode that the
// O_PATH descriptor pathFD holds and st describes, when it is a regular
// file or a directory; anything else is ErrNotFileOrDir, never opened.
// The open goes through /proc/self/fd, so it reaches that inode and no
// other, whatever has been renamed since.
func ReopenForRead(pathFD int, st unix.Stat_t) (int, error) {
	flags := unix.O_RDONLY | unix.O_NONBLOCK | unix.O_NOCTTY | unix.O_CLOEXEC
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
	case unix.S_IFDIR:
		flags |= unix.O_DIRECTORY
	default:
		return -1, fmt.Errorf("%s: %w", kindOfStat(st.Mode), ErrNotFileOrDir)
	}
	fd, err := unix.Open(fmt.Sprintf("/proc/self/fd/%d", pathFD), flags, 0)
	if err != nil {
		return -1, fmt.Errorf("reopen for reading: %w", err)
	}
	return fd, nil
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
	t, err := OpenTree(root)
	if err != nil {
		return err
	}
	defer t.Close()
	return t.file(rel, r, size, uint32(perm.Perm()), -1, -1, true)
}

// Tree writes a tree of files (a pod's volumes) into an image's root: each
// entry through the descriptor of its directory, resolved inside the root
// (openat2 RESOLVE_IN_ROOT, so that the image's symlinks above an entry
// stay inside it), and none by opening what the image has at its name: a
// file or a symlink is made beside it and renamed over it, a directory
// replaces whatever non-directory is there by unlinking it first. Above
// an entry (Parent, and the directories of each path) a non-directory is
// refused, not replaced: only the entries themselves are the pod's.
type Tree struct {
	rootFD int
}

// OpenTree opens root, a directory the shim mounted (never a symlink), for
// writes inside it.
func OpenTree(root string) (*Tree, error) {
	fd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open container rootfs %s: %w", root, err)
	}
	return &Tree{rootFD: fd}, nil
}

// Close releases the root; it does not sync (Sync does).
func (t *Tree) Close() error { return unix.Close(t.rootFD) }

// Sync makes everything written durable: the guest reads it from a disk
// the host no longer has mounted.
func (t *Tree) Sync() error {
	fd, err := unix.Openat(t.rootFD, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open the root to sync: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Syncfs(fd); err != nil {
		return fmt.Errorf("sync the root's filesystem: %w", err)
	}
	return nil
}

// Parent makes dir (clean, relative) and the directories above it where
// they are missing, 0755 and root's; those the image has are left as they
// are, symlinks in them followed inside the root.
func (t *Tree) Parent(dir string) error {
	fd, err := dirInRoot(t.rootFD, dir)
	if err != nil {
		return fmt.Errorf("directory /%s in the container rootfs: %w", dir, err)
	}
	return unix.Close(fd)
}

// Dir makes rel a directory with perm (no setuid, setgid or sticky bit),
// owned by uid and gid. A directory the image has there is kept, with what
// it holds, and given perm and owner; anything else there (a file, a
// symlink, a device node, a FIFO, a socket) is unlinked, never opened.
func (t *Tree) Dir(rel string, perm, uid, gid uint32) error {
	parent, name, err := t.parent(rel)
	if err != nil {
		return err
	}
	defer unix.Close(parent)
	var st unix.Stat_t
	switch err := unix.Fstatat(parent, name, &st, unix.AT_SYMLINK_NOFOLLOW); {
	case err == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR:
	case err == nil:
		if err := unix.Unlinkat(parent, name, 0); err != nil {
			return fmt.Errorf("/%s in the container rootfs is %s: remove it: %w", rel, kindOfStat(st.Mode), err)
		}
		fallthrough
	case errors.Is(err, unix.ENOENT):
		if err := unix.Mkdirat(parent, name, 0o700); err != nil {
			return fmt.Errorf("create /%s in the container rootfs: %w", rel, err)
		}
	default:
		return fmt.Errorf("/%s in the container rootfs: %w", rel, err)
	}
	// Opened beneath its parent, following no symlink: the directory just
	// checked or made, nothing else.
	fd, err := unix.Openat2(parent, name, &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return fmt.Errorf("open /%s in the container rootfs: %w", rel, err)
	}
	defer unix.Close(fd)
	if err := unix.Fchown(fd, int(uid), int(gid)); err != nil {
		return fmt.Errorf("/%s: chown: %w", rel, err)
	}
	if err := unix.Fchmod(fd, perm&0o777); err != nil {
		return fmt.Errorf("/%s: chmod: %w", rel, err)
	}
	return nil
}

// File writes size bytes from r at rel with perm (no setuid, setgid or
// sticky bit), owned by uid and gid, replacing whatever non-directory is
// there without opening it. r giving more or fewer bytes fails.
func (t *Tree) File(rel string, r io.Reader, size int64, perm, uid, gid uint32) error {
	return t.file(rel, io.LimitReader(r, size+1), size, perm&0o777, int(uid), int(gid), false)
}

func (t *Tree) file(rel string, r io.Reader, size int64, perm uint32, uid, gid int, syncNow bool) error {
	p := "/" + rel
	parent, name, err := t.replaceableParent(rel, "a file")
	if err != nil {
		return err
	}
	defer unix.Close(parent)
	tmp, f, err := createTemp(parent, os.FileMode(perm))
	if err != nil {
		return fmt.Errorf("%s: create a file beside it: %w", p, err)
	}
	done := false
	defer func() {
		f.Close()
		if !done {
			_ = unix.Unlinkat(parent, tmp, 0)
		}
	}()
	n, err := io.Copy(f, r)
	if err != nil {
		return fmt.Errorf("%s: write: %w", p, err)
	}
	if n != size {
		return fmt.Errorf("%s: the source gave %d bytes, not the %d it had when opened", p, n, size)
	}
	if uid >= 0 {
		if err := f.Chown(uid, gid); err != nil {
			return fmt.Errorf("%s: chown: %w", p, err)
		}
		// chown clears setuid and setgid, never the permission bits;
		// chmod again all the same, so that the mode is what was asked.
		if err := f.Chmod(os.FileMode(perm)); err != nil {
			return fmt.Errorf("%s: chmod: %w", p, err)
		}
	}
	if syncNow {
		if err := f.Sync(); err != nil {
			return fmt.Errorf("%s: sync: %w", p, err)
		}
	}
	// rename replaces the entry itself, whatever it is, and never opens
	// it; it refuses to replace a directory.
	if err := unix.Renameat(parent, tmp, parent, name); err != nil {
		return fmt.Errorf("%s in the container rootfs: replace: %w", p, err)
	}
	done = true
	if syncNow {
		return syncDir(parent)
	}
	return nil
}

// replaceableParent opens rel's parent inside the root and checks that
// what is at rel, if anything, is no directory: File and Symlink replace
// a non-directory by rename, which never opens it, and refuse to put
// what (a file, a symlink) over a directory.
func (t *Tree) replaceableParent(rel, what string) (parent int, name string, err error) {
	p := "/" + rel
	if parent, name, err = t.parent(rel); err != nil {
		return -1, "", err
	}
	var st unix.Stat_t
	switch err := unix.Fstatat(parent, name, &st, unix.AT_SYMLINK_NOFOLLOW); {
	case err == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR:
		unix.Close(parent)
		return -1, "", fmt.Errorf("%s in the container rootfs is a directory, not %s", p, what)
	case err != nil && !errors.Is(err, unix.ENOENT):
		unix.Close(parent)
		return -1, "", fmt.Errorf("%s in the container rootfs: %w", p, err)
	}
	return parent, name, nil
}

// Symlink makes rel a symlink to target, owned by uid and gid, replacing
// whatever non-directory is there without opening it. The target is never
// followed here; the guest resolves it inside its own root.
func (t *Tree) Symlink(rel, target string, uid, gid uint32) error {
	p := "/" + rel
	parent, name, err := t.replaceableParent(rel, "a symlink")
	if err != nil {
		return err
	}
	defer unix.Close(parent)
	for range 16 {
		tmp, err := tempName()
		if err != nil {
			return err
		}
		err = unix.Symlinkat(target, parent, tmp)
		if errors.Is(err, unix.EEXIST) {
			continue
		}
		if err != nil {
			return fmt.Errorf("%s: create a symlink beside it: %w", p, err)
		}
		if err := unix.Fchownat(parent, tmp, int(uid), int(gid), unix.AT_SYMLINK_NOFOLLOW); err != nil {
			_ = unix.Unlinkat(parent, tmp, 0)
			return fmt.Errorf("%s: chown: %w", p, err)
		}
		if err := unix.Renameat(parent, tmp, parent, name); err != nil {
			_ = unix.Unlinkat(parent, tmp, 0)
			return fmt.Errorf("%s in the container rootfs: replace: %w", p, err)
		}
		return nil
	}
	return errors.New("no free name for a new symlink")
}

// parent opens the directory above rel (clean, relative, not the root),
// resolved inside the root and made where missing, and returns it with
// rel's last name.
func (t *Tree) parent(rel string) (int, string, error) {
	if rel == "." || rel == "" || rel == ".." || strings.HasPrefix(rel, "../") || path.Clean(rel) != rel || path.IsAbs(rel) {
		return -1, "", fmt.Errorf("path %q is not a clean path in the container rootfs", rel)
	}
	fd, err := dirInRoot(t.rootFD, path.Dir(rel))
	if err != nil {
		return -1, "", fmt.Errorf("/%s: directory %s in the container rootfs: %w", rel, "/"+path.Dir(rel), err)
	}
	return fd, path.Base(rel), nil
}

// kindOfStat names a stat(2) file type for an error message.
func kindOfStat(m uint32) string {
	switch m & unix.S_IFMT {
	case unix.S_IFCHR:
		return "a character device"
	case unix.S_IFBLK:
		return "a block device"
	case unix.S_IFIFO:
		return "a FIFO"
	case unix.S_IFSOCK:
		return "a socket"
	case unix.S_IFLNK:
		return "a symlink"
	case unix.S_IFDIR:
		return "a directory"
	}
	return "a regular file"
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
		name, err := tempName()
		if err != nil {
			return "", nil, err
		}
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

// tempName is a new random name for an entry made beside a destination.
func tempName() (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return tempPrefix + hex.EncodeToString(b[:]), nil
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
