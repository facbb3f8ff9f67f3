package rootfs

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"

	"github.com/containerd/containerd/v2/core/mount"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/urunc-dev/containerd-shim-urunc-v2/internal/annotation"
	"github.com/urunc-dev/containerd-shim-urunc-v2/rootfs/hostmount"
	"github.com/urunc-dev/containerd-shim-urunc-v2/rootfs/inroot"
	"golang.org/x/sys/unix"
)

// KindBlock is the first virtio-blk disk.
const KindBlock Kind = "block"

// Block mode gives the guest a raw virtio-blk disk as its root: a disk
// image from the image (the block annotation), or the container's own
// snapshot when the snapshotter hands out a block device or a block file
// (devmapper, blockfile).
//
// Invariant: while the guest has a disk, no mount of it and no loop device
// mounted from it is in the host's mount table. A filesystem mounted on
// the host while the guest writes to it is corrupted, and a mount copied
// into another namespace keeps the device busy after delete. So the boot
// files are copied out and the rootfs unmounted before the launcher's
// mount namespace, which would copy the mount, exists.

// bootDir is the bundle directory the boot files of a block rootfs are
// copied to.
const bootDir = "boot"

// tryBlockAnnotation: the block annotation with blkMntPoint "/" makes that
// disk image, a file in the container rootfs, the guest's root disk.
func tryBlockAnnotation(req Request) (*Plan, bool, error) {
	if req.Block == "" || req.BlkMntPoint != "/" {
		return nil, false, nil
	}
	if !req.Guest.SupportsBlock() {
		return nil, false, fmt.Errorf("%sblock names a root disk, but guest %s cannot boot from a block device (monitor %s)",
			annotation.Prefix, req.Guest.Name(), req.Monitor.Name())
	}
	p := &Plan{
		Root:   Root{Kind: KindBlock, ReadOnly: req.ReadOnlyRoot},
		Kernel: req.Kernel,
		Disks:  []Disk{{ID: "rootfs", Source: req.Block, ReadOnly: req.ReadOnlyRoot}},
	}
	vols, err := blockVolumes(req, false)
	if err != nil {
		return nil, false, err
	}
	p.addVolumes(vols)
	if len(vols.take) > 0 {
		// The guest owns its volume disks raw: the host lets go of them.
		p.prepare = func(record func(Undo) error) error {
			return takeHostMounts(vols.take, req.Bundle, &p.Undo, record)
		}
	}
	return p, true, nil
}

// tryContainerBlock: with mountRootfs, a container rootfs that is one
// block device or block file holding a filesystem the guest boots from
// becomes the guest's root disk.
func tryContainerBlock(req Request) (*Plan, bool, error) {
	if !req.MountRootfs || !req.Guest.SupportsBlock() {
		return nil, false, nil
	}
	src, fsType, ok := blockRootfs(req.Mounts)
	if !ok || !req.Guest.SupportsFS(fsType) {
		return nil, false, nil
	}
	dir := filepath.Join(req.Bundle, bootDir)
	p := &Plan{
		Root:   Root{Kind: KindBlock, ReadOnly: req.ReadOnlyRoot},
		Kernel: filepath.Join(dir, "kernel"),
		Disks:  []Disk{{ID: "rootfs", Source: src, ReadOnly: req.ReadOnlyRoot}},
		Undo:   Undo{Dirs: []string{dir}},
	}
	if isBlockDevice(src) {
		p.Devices = append(p.Devices, src)
	}
	vols, err := blockVolumes(req, true)
	if err != nil {
		return nil, false, err
	}
	p.addVolumes(vols)
	p.prepare = func(record func(Undo) error) error {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		// Readable by a monitor that runs as the spec's user; the
		// directory keeps others out.
		if err := copyFile(req.Kernel, p.Kernel, 0o644); err != nil {
			return fmt.Errorf("copy guest kernel out of the block rootfs: %w", err)
		}
		if err := copyPodVolumes(req.RootfsDir, vols.copies); err != nil {
			return err
		}
		// The host lets go of every filesystem the guest will own: the
		// container's rootfs, the shim's own mount, which Release
		// unmounts anyway; then the volumes' mounts, which are the
		// host's and are mounted back after the guest.
		if err := Unmount(req.RootfsDir); err != nil {
			return err
		}
		return takeHostMounts(vols.take, req.Bundle, &p.Undo, record)
	}
	return p, true, nil
}

// blockRootfs tells whether the rootfs mounts are one filesystem on a
// block device (devmapper) or on a file mounted through a loop device
// (blockfile), and returns that device or file and the filesystem type.
func blockRootfs(ms []mount.Mount) (source, fsType string, ok bool) {
	if len(ms) != 1 {
		return "", "", false
	}
	m := ms[0]
	if isBlockDevice(m.Source) {
		return m.Source, m.Type, true
	}
	st, err := os.Stat(m.Source)
	if err != nil || !st.Mode().IsRegular() {
		return "", "", false
	}
	for _, o := range m.Options {
		if o == "loop" {
			return m.Source, m.Type, true
		}
	}
	return "", "", false
}

func isBlockDevice(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode()&os.ModeDevice != 0 && st.Mode()&os.ModeCharDevice == 0
}

// blockVolumeSet is what a block guest makes of the spec's volumes.
type blockVolumeSet struct {
	disks   []Disk
	mounts  []Volume
	devices []string
	take    []string      // host mount points of volume devices, let go before boot
	copies  []specs.Mount // files and small directories, copied into a mounted rootfs
}

func (p *Plan) addVolumes(v blockVolumeSet) {
	p.Disks = append(p.Disks, v.disks...)
	p.Volumes = append(p.Volumes, v.mounts...)
	p.Devices = append(p.Devices, v.devices...)
}

// blockVolumes maps the spec's volumes for a guest whose root is a disk, as
// urunc does: a volume whose source is the mount point of a block device
// with a filesystem the guest mounts becomes disk "vol<i>" (i its index in
// the spec's mounts). When the rootfs is mounted here (the container's own
// snapshot), a single file, and a directory that is no block device's
// mount (a ConfigMap, a Secret, a projected token, an emptyDir), are
// copied into it at Create, within the bounds of a copy of the pod's files
// (copyPodVolumes). Anything else cannot reach the guest and is refused,
// naming the mount.
func blockVolumes(req Request, rootfsMounted bool) (blockVolumeSet, error) {
	var set blockVolumeSet
	isVolume := map[string]bool{}
	for _, v := range volumes(req.Volumes) {
		isVolume[v.Destination] = true
	}
	for i, m := range req.Volumes {
		if !isVolume[m.Destination] {
			continue
		}
		st, err := os.Stat(m.Source)
		if err != nil {
			return set, fmt.Errorf("volume %s: source %s: %w", m.Destination, m.Source, err)
		}
		if st.Mode().IsRegular() && rootfsMounted {
			set.copies = append(set.copies, m)
			continue
		}
		hm, err := hostmount.At(m.Source, req.Bundle)
		if err != nil && !errors.Is(err, hostmount.ErrNotBlockMount) {
			return set, fmt.Errorf("volume %s (from %s): %w", m.Destination, m.Source, err)
		}
		if err != nil && st.IsDir() && rootfsMounted {
			set.copies = append(set.copies, m)
			continue
		}
		if err != nil || !req.Guest.SupportsFS(hm.FSType) {
			return set, fmt.Errorf("volume %s (from %s): guest %s boots from a disk and can only take volumes that are block devices it mounts (ext4, ext2); this one is not",
				m.Destination, m.Source, req.Guest.Name())
		}
		dev := hm.Device
		id := "vol" + strconv.Itoa(i)
		set.disks = append(set.disks, Disk{ID: id, Source: dev, ReadOnly: readOnly(m)})
		set.mounts = append(set.mounts, Volume{ID: id, MountPoint: m.Destination})
		set.devices = append(set.devices, dev)
		set.take = append(set.take, hm.Target)
	}
	return set, nil
}

// takeHostMounts lets go of the host's mounts at targets, each recorded
// before it is unmounted (hostmount.Take).
func takeHostMounts(targets []string, bundle string, undo *Undo, record func(Undo) error) error {
	for _, t := range targets {
		if err := hostmount.Take(t, bundle, &undo.HostMounts, func() error { return record(*undo) }); err != nil {
			return err
		}
	}
	return nil
}

// copyPodVolumes copies volumes (files, and directories with what they
// hold) into the rootfs at their destinations, as a snapshot taken at
// Create: the guest owns its root disk raw, so a later change on the host
// (a ConfigMap updated by the kubelet) does not reach it. The walk is the
// initrd archive's (walkPodVolumes, with its bounds); inroot.Tree keeps the
// image's own symlinks, device nodes and FIFOs from turning a write against
// the host.
func copyPodVolumes(rootfsDir string, vols []specs.Mount) error {
	if len(vols) == 0 {
		return nil
	}
	t, err := inroot.OpenTree(rootfsDir)
	if err != nil {
		return err
	}
	defer t.Close()
	if err := walkPodVolumes(vols, t, "a copy into a block guest's root"); err != nil {
		return err
	}
	return t.Sync()
}

// MaxBootFileBytes bounds a kernel or initrd the shim copies out of an
// image into the bundle (on the host's /run, a tmpfs): the image is the
// tenant's, and an unbounded file would fill the host's memory. Kernels
// and initrds of single-app guests are a few MiB; 256 MiB leaves a large
// distribution initrd room.
const MaxBootFileBytes = 256 << 20

// copyBootFile copies at most MaxBootFileBytes from in, the image's
// file name, to out: its size is checked when opened and the copy stops
// one byte past the bound, should the file grow.
func copyBootFile(out io.Writer, in *os.File, name string) (int64, error) {
	st, err := in.Stat()
	if err != nil {
		return 0, fmt.Errorf("%s: %w", name, err)
	}
	if st.Size() > MaxBootFileBytes {
		return 0, fmt.Errorf("%s is %d bytes, more than the %d a kernel or initrd may have", name, st.Size(), MaxBootFileBytes)
	}
	n, err := io.Copy(out, io.LimitReader(in, MaxBootFileBytes+1))
	if err != nil {
		return n, fmt.Errorf("copy %s: %w", name, err)
	}
	if n > MaxBootFileBytes {
		return n, fmt.Errorf("%s grew past the %d bytes a kernel or initrd may have while copied", name, MaxBootFileBytes)
	}
	return n, nil
}

// copyFile copies src, a kernel or initrd (at most MaxBootFileBytes), to
// dst, a new file outside any image's rootfs.
func copyFile(src, dst string, mode os.FileMode) error {
	in, _, err := inroot.OpenRegularSource(src, 0)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|unix.O_NOFOLLOW, mode)
	if err != nil {
		return err
	}
	if _, err := copyBootFile(out, in, src); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
