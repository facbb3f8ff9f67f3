package rootfs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/urunc-dev/containerd-shim-urunc-v2/rootfs/cpio"
	"github.com/urunc-dev/containerd-shim-urunc-v2/rootfs/inroot"
	"golang.org/x/sys/unix"
)

// An initrd guest gets the pod's files (/etc/hosts, /etc/hostname,
// /etc/resolv.conf, ConfigMap, Secret, emptyDir and projected volumes: the
// spec's binds) as a second archive after the image's initrd: the Linux
// kernel unpacks concatenated cpio archives into its rootfs in order, so
// the pod's files land over the image's without the image being written.
// qemu, firecracker and cloud-hypervisor each take one initrd file, so
// the bundle gets one: the image's initrd, zero padding to a 4-byte
// boundary (the kernel looks for the next archive's magic there), then a
// newc archive of the pod's files.
//
// Every source is read as the kubelet left it, never through a symlink
// (O_NOFOLLOW on each component below the volume's own path), without
// blocking, and only when it is a regular file, a directory or a symlink
// (copied as a symlink, resolved by the guest inside its own root); a
// device, FIFO or socket is refused, naming it, without being opened
// (inroot.OpenSourceAt).

// MaxPodArchiveBytes bounds the file data of the pod-files archive: the
// guest holds it in RAM. Kubernetes caps a ConfigMap or a Secret at 1 MiB,
// so 16 MiB carries a pod's usual files many times over; a larger volume
// (a hostPath directory, say) is refused, naming it.
const MaxPodArchiveBytes = 16 << 20

// maxPodArchiveEntries bounds the files, directories and symlinks in the
// archive; maxPodArchiveDepth bounds how deep a volume's directories go.
const (
	maxPodArchiveEntries = 4096
	maxPodArchiveDepth   = 32
)

// podInitrdDir is the bundle directory of the combined initrd.
const podInitrdDir = "podfiles"

// hasPodFiles tells whether the spec has volumes an initrd guest gets as
// pod files.
func hasPodFiles(ms []specs.Mount) bool { return len(volumes(ms)) > 0 }

// podVolumeNames lists the destinations of the spec's volumes, for a
// warning that names what a guest does not get.
func podVolumeNames(ms []specs.Mount) []string {
	var out []string
	for _, v := range volumes(ms) {
		out = append(out, v.Destination)
	}
	return out
}

// InitrdFile is a file the guest's init brings (the guest agent, its
// config), added after the pod's files in the same archive.
type InitrdFile struct {
	Name string // path in the guest, without the leading "/"
	Mode uint32 // permissions; root's
	// Data is the file's content, or, when nil, the host file Source
	// (the agent binary, which the host's operator installs).
	Data   []byte
	Source string
}

// initFilesDir is the bundle directory of the initrd that carries the
// init's files alone, for a guest booting from a disk or a share.
const initFilesDir = "initfiles"

// withInitFiles gives a guest that boots from a disk or a share an initrd
// of the init's files alone (the guest agent, which mounts the real root
// and switches to it), written in the bundle at Prepare, after the mode's
// own work; its directory is in every undo the mode records.
func withInitFiles(p *Plan, req Request) {
	dir := filepath.Join(req.Bundle, initFilesDir)
	p.Initrd = filepath.Join(dir, "initrd")
	p.Undo.Dirs = append(p.Undo.Dirs, dir)
	modePrepare := p.prepare
	p.prepare = func(record func(Undo) error) error {
		if modePrepare != nil {
			withDir := func(u Undo) error {
				if !slices.Contains(u.Dirs, dir) {
					u.Dirs = append(u.Dirs, dir)
				}
				return record(u)
			}
			if err := modePrepare(withDir); err != nil {
				return err
			}
		}
		if err := os.RemoveAll(dir); err != nil {
			return err
		}
		if err := os.Mkdir(dir, 0o700); err != nil {
			return err
		}
		out, err := os.OpenFile(p.Initrd, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o644)
		if err != nil {
			return err
		}
		if err := writePodArchive(out, nil, req.InitrdFiles); err != nil {
			out.Close()
			return fmt.Errorf("the guest init's initrd: %w", err)
		}
		return out.Close()
	}
}

// writeInitrdWithPodFiles writes dst: the image's initrd at src, then the
// archive of the pod's volumes and the init's files. dst is a new file in
// a directory of the bundle, never in the image.
func writeInitrdWithPodFiles(dst, src string, vols []specs.Mount, files []InitrdFile) error {
	in, _, err := inroot.OpenRegularSource(src, 0)
	if err != nil {
		return fmt.Errorf("initrd: %w", err)
	}
	defer in.Close()
	// Readable by a monitor that runs as the spec's user; its directory
	// keeps others out.
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o644)
	if err != nil {
		return err
	}
	done := false
	defer func() {
		if !done {
			out.Close()
			os.Remove(dst)
		}
	}()
	n, err := copyBootFile(out, in, src)
	if err != nil {
		return fmt.Errorf("the image's initrd: %w", err)
	}
	if r := n % 4; r != 0 {
		if _, err := out.Write(make([]byte, 4-r)); err != nil {
			return err
		}
	}
	if err := writePodArchive(out, vols, files); err != nil {
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	done = true
	return nil
}

// WritePodArchive writes the spec's volumes (binds, but not those under
// /dev, /proc and /sys) to w as a newc cpio archive, each at its
// destination, with the directories above it.
func WritePodArchive(w io.Writer, ms []specs.Mount) error {
	return writePodArchive(w, ms, nil)
}

func writePodArchive(w io.Writer, ms []specs.Mount, files []InitrdFile) error {
	cw := cpio.NewWriter(w)
	if err := walkPodVolumes(volumes(ms), cpioSink{cw}, "an initrd guest"); err != nil {
		return err
	}
	for _, f := range files {
		if err := addInitrdFile(cpioSink{cw}, f); err != nil {
			return fmt.Errorf("guest init's file /%s: %w", f.Name, err)
		}
	}
	return cw.Close()
}

// addInitrdFile adds one of the init's files, root's, with the
// directories above it, after the pod's: the last entry of a path wins,
// so a volume cannot stand in for it.
func addInitrdFile(sink cpioSink, f InitrdFile) error {
	rel, err := inroot.Rel("/" + f.Name)
	if err != nil {
		return err
	}
	var chain []string
	for d := path.Dir(rel); d != "."; d = path.Dir(d) {
		chain = append(chain, d)
	}
	for i := len(chain) - 1; i >= 0; i-- {
		if err := sink.Parent(chain[i]); err != nil {
			return err
		}
	}
	perm := f.Mode & 0o7777
	if f.Data != nil {
		return sink.File(rel, bytes.NewReader(f.Data), int64(len(f.Data)), perm, 0, 0)
	}
	in, err := os.Open(f.Source)
	if err != nil {
		return err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() || st.Size() > MaxBootFileBytes {
		return fmt.Errorf("%s is not a regular file of at most %d bytes", f.Source, int64(MaxBootFileBytes))
	}
	if err := sink.File(rel, in, st.Size(), perm, 0, 0); err != nil {
		return fmt.Errorf("%s: %w", f.Source, err)
	}
	return nil
}

// podFileSink takes the pod's files as walkPodVolumes reads them, each
// directory before what it holds, at paths relative to the guest's root:
// an initrd guest's archive (cpioSink) or a block guest's mounted root
// (inroot.Tree). Permissions come without setuid, setgid or sticky bit.
type podFileSink interface {
	// Parent makes sure dir, above a volume, is a directory, keeping one
	// that is already there as it is.
	Parent(dir string) error
	Dir(rel string, perm, uid, gid uint32) error
	// File takes size bytes from r.
	File(rel string, r io.Reader, size int64, perm, uid, gid uint32) error
	Symlink(rel, target string, uid, gid uint32) error
}

// podWalker reads the pod's volumes from the host for a sink, within the
// bounds of a copy of them (MaxPodArchiveBytes, maxPodArchiveEntries,
// maxPodArchiveDepth); takes names what takes the copy, for errors.
type podWalker struct {
	sink    podFileSink
	takes   string
	dirs    map[string]bool // directories already given to the sink
	bytes   int64
	entries int
	// readOnly: the volume being walked is read-only, and so is its copy
	// as far as modes go: no write bit.
	readOnly bool
}

// walkPodVolumes gives sink the volumes vols, each at its destination
// with the directories above it.
func walkPodVolumes(vols []specs.Mount, sink podFileSink, takes string) error {
	a := &podWalker{sink: sink, takes: takes, dirs: map[string]bool{}}
	for _, m := range vols {
		if err := a.addVolume(m); err != nil {
			return fmt.Errorf("volume %s (from %s): %w", m.Destination, m.Source, err)
		}
	}
	return nil
}

func (a *podWalker) addVolume(m specs.Mount) error {
	rel, err := inroot.Rel(m.Destination)
	if err != nil {
		return err
	}
	if err := a.parents(rel); err != nil {
		return err
	}
	f, st, err := inroot.OpenSourceAt(unix.AT_FDCWD, m.Source)
	switch {
	case errors.Is(err, inroot.ErrNotFileOrDir) && st.Mode&unix.S_IFMT == unix.S_IFLNK:
		return fmt.Errorf("source %s is a symlink: name the file itself", m.Source)
	case errors.Is(err, inroot.ErrNotFileOrDir):
		return a.refuse(m.Source, st.Mode)
	case err != nil:
		return fmt.Errorf("open source: %w", err)
	}
	defer f.Close()
	a.readOnly = readOnly(m)
	return a.add(f, rel, m.Source, 0)
}

// parents gives the sink the directories above rel it has not had yet:
// an initrd's kernel creates no missing directory itself.
func (a *podWalker) parents(rel string) error {
	var chain []string
	for d := path.Dir(rel); d != "."; d = path.Dir(d) {
		chain = append(chain, d)
	}
	for i := len(chain) - 1; i >= 0; i-- {
		if a.dirs[chain[i]] {
			continue
		}
		if err := a.entry(); err != nil {
			return err
		}
		if err := a.sink.Parent(chain[i]); err != nil {
			return err
		}
		a.dirs[chain[i]] = true
	}
	return nil
}

func (a *podWalker) entry() error {
	a.entries++
	if a.entries > maxPodArchiveEntries {
		return fmt.Errorf("more than %d files in the pod's volumes, the most %s takes", maxPodArchiveEntries, a.takes)
	}
	return nil
}

// perm is a volume file's permissions for its copy: no setuid, setgid or
// sticky bit, and no write bit when the volume is read-only.
func (a *podWalker) perm(mode uint32) uint32 {
	perm := mode & 0o777
	if a.readOnly {
		perm &^= 0o222
	}
	return perm
}

// add gives the sink f, open without following a symlink, at rel: a
// regular file's bytes, or a directory and what it holds.
func (a *podWalker) add(f *os.File, rel, hostPath string, depth int) error {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return fmt.Errorf("%s: %w", hostPath, err)
	}
	perm := a.perm(st.Mode)
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		if err := a.entry(); err != nil {
			return err
		}
		if st.Size > MaxPodArchiveBytes-a.bytes {
			return fmt.Errorf("%s: %d bytes would take the pod's files over the %d %s takes", hostPath, st.Size, MaxPodArchiveBytes, a.takes)
		}
		a.bytes += st.Size
		if err := a.sink.File(rel, io.LimitReader(f, st.Size), st.Size, perm, st.Uid, st.Gid); err != nil {
			return fmt.Errorf("%s: %w", hostPath, err)
		}
		return nil
	case unix.S_IFDIR:
		if depth >= maxPodArchiveDepth {
			return fmt.Errorf("%s: directories nested deeper than %d", hostPath, maxPodArchiveDepth)
		}
		if err := a.entry(); err != nil {
			return err
		}
		if err := a.sink.Dir(rel, perm, st.Uid, st.Gid); err != nil {
			return err
		}
		a.dirs[rel] = true
		return a.addDir(f, rel, hostPath, depth)
	}
	return a.refuse(hostPath, st.Mode)
}

// refuse names what the copy does not take: a device node, a FIFO, a socket.
func (a *podWalker) refuse(hostPath string, mode uint32) error {
	return fmt.Errorf("%s is %s: %s takes regular files, directories and symlinks", hostPath, inroot.FileKind(fileModeOf(mode)), a.takes)
}

// nameReader reads a directory's names, n at most at a time (an *os.File).
type nameReader interface {
	Readdirnames(n int) ([]string, error)
}

// errTooManyNames: a directory holds more names than readNamesUpTo's limit.
var errTooManyNames = errors.New("more names than the limit")

// readNamesUpTo reads a directory's names, failing as soon as it has read
// more than limit: a huge directory is never read whole into memory.
func readNamesUpTo(d nameReader, limit int) ([]string, error) {
	const batch = 256
	var names []string
	for {
		n := min(limit+1-len(names), batch)
		if n <= 0 {
			return nil, errTooManyNames
		}
		got, err := d.Readdirnames(n)
		names = append(names, got...)
		if errors.Is(err, io.EOF) {
			if len(names) > limit {
				return nil, errTooManyNames
			}
			return names, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// addDir adds what the directory f holds, in name order.
func (a *podWalker) addDir(f *os.File, rel, hostPath string, depth int) error {
	names, err := readNamesUpTo(f, maxPodArchiveEntries-a.entries)
	if errors.Is(err, errTooManyNames) {
		return fmt.Errorf("%s: more than %d files in the pod's volumes, the most %s takes", hostPath, maxPodArchiveEntries, a.takes)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", hostPath, err)
	}
	sort.Strings(names)
	dirFD := int(f.Fd())
	for _, name := range names {
		childRel, childHost := rel+"/"+name, filepath.Join(hostPath, name)
		var st unix.Stat_t
		if err := unix.Fstatat(dirFD, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("%s: %w", childHost, err)
		}
		if st.Mode&unix.S_IFMT == unix.S_IFLNK {
			if err := a.symlink(dirFD, name, childRel, childHost, st); err != nil {
				return err
			}
			continue
		}
		// Not opened unless a regular file or a directory: a device
		// node's open would run its driver on the host.
		child, cst, err := inroot.OpenSourceAt(dirFD, name)
		if errors.Is(err, inroot.ErrNotFileOrDir) {
			return a.refuse(childHost, cst.Mode)
		}
		if err != nil {
			return fmt.Errorf("%s (%s): %w", childHost, inroot.FileKind(fileModeOf(st.Mode)), err)
		}
		err = a.add(child, childRel, childHost, depth+1)
		child.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// symlink copies a symlink as a symlink (a ConfigMap's keys are symlinks
// into its ..data directory): the guest resolves it in its own root.
func (a *podWalker) symlink(dirFD int, name, rel, hostPath string, st unix.Stat_t) error {
	if err := a.entry(); err != nil {
		return err
	}
	buf := make([]byte, unix.PathMax)
	n, err := unix.Readlinkat(dirFD, name, buf)
	if err != nil {
		return fmt.Errorf("%s: %w", hostPath, err)
	}
	if err := a.sink.Symlink(rel, string(buf[:n]), st.Uid, st.Gid); err != nil {
		return fmt.Errorf("%s: %w", hostPath, err)
	}
	return nil
}

// cpioSink puts the pod's files into an initrd's newc archive.
type cpioSink struct{ cw *cpio.Writer }

// Parent writes dir as root's and 0755: the kernel makes no missing
// directory itself.
func (c cpioSink) Parent(dir string) error {
	return c.cw.WriteHeader(dir, unix.S_IFDIR|0o755, 0, 0, 0)
}

func (c cpioSink) Dir(rel string, perm, uid, gid uint32) error {
	return c.cw.WriteHeader(rel, unix.S_IFDIR|perm, uid, gid, 0)
}

func (c cpioSink) File(rel string, r io.Reader, size int64, perm, uid, gid uint32) error {
	if err := c.cw.WriteHeader(rel, unix.S_IFREG|perm, uid, gid, size); err != nil {
		return err
	}
	n, err := io.Copy(c.cw, io.LimitReader(r, size))
	if err != nil {
		return fmt.Errorf("read: %w", err)
	}
	if n != size {
		return fmt.Errorf("gave %d bytes, not the %d it had when opened", n, size)
	}
	return c.cw.Pad()
}

func (c cpioSink) Symlink(rel, target string, uid, gid uint32) error {
	if err := c.cw.WriteHeader(rel, unix.S_IFLNK|0o777, uid, gid, int64(len(target))); err != nil {
		return err
	}
	if _, err := io.WriteString(c.cw, target); err != nil {
		return err
	}
	return c.cw.Pad()
}

// fileModeOf turns a stat(2) type into an os.FileMode type for inroot.FileKind.
func fileModeOf(m uint32) os.FileMode {
	switch m & unix.S_IFMT {
	case unix.S_IFCHR:
		return os.ModeDevice | os.ModeCharDevice
	case unix.S_IFBLK:
		return os.ModeDevice
	case unix.S_IFIFO:
		return os.ModeNamedPipe
	case unix.S_IFSOCK:
		return os.ModeSocket
	case unix.S_IFLNK:
		return os.ModeSymlink
	case unix.S_IFDIR:
		return os.ModeDir
	}
	return 0
}
