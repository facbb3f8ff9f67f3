package rootfs

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/containerd/containerd/v2/core/mount"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/urunc-dev/containerd-shim-urunc-v2/internal/annotation"
	"github.com/urunc-dev/containerd-shim-urunc-v2/internal/confined"
	"github.com/urunc-dev/containerd-shim-urunc-v2/rootfs/hostmount"
)

// A rootfs mode is one way a guest gets its root filesystem: an initrd, a
// block device, or the container's rootfs shared as a directory. Each mode
// lives in its own file, with the root Kind it gives; selectors below
// lists them in urunc's order of precedence. A mode with a new kind of
// root touches four files: its own, a row here, the root parameters of
// the guest types that boot from it (runtime/guests) and the device
// rendering of the monitors that serve it (monitors).

// GuestCaps is what mode selection asks of the guest type.
type GuestCaps interface {
	Name() string
	SupportsBlock() bool
	SupportsFS(fsType string) bool
	// UnpacksAppendedInitrd tells whether the guest's kernel unpacks a
	// cpio archive appended to its initrd over the initrd's own files
	// (Linux does): an initrd root then gets the pod's files that way.
	UnpacksAppendedInitrd() bool
}

// MonitorCaps is what mode selection asks of the monitor.
type MonitorCaps interface {
	Name() string
	// SupportsShare tells whether the monitor can share a host directory
	// with the guest over kind ("9p", "virtiofs").
	SupportsShare(kind Kind) bool
}

// Request is what mode selection looks at. Selection touches nothing on
// the host; the chosen Plan's Prepare does.
type Request struct {
	Bundle    string
	RootfsDir string        // the container rootfs, mounted on the host
	Mounts    []mount.Mount // the create request's rootfs mounts
	// Kernel and Initrd are host paths of the guest's files, already
	// resolved inside the rootfs; Initrd is empty unless the image names
	// one.
	Kernel, Initrd string
	// Block and BlkMntPoint are the image's block annotations; Block is
	// the resolved host path of the disk image.
	Block, BlkMntPoint string
	// MountRootfs is the image's mountRootfs (or useDMBlock) annotation.
	MountRootfs bool
	// ReadOnlyRoot is the spec's root.readonly: the guest's root, whatever
	// the mode, reaches it read-only.
	ReadOnlyRoot bool
	Volumes      []specs.Mount // the spec's mounts
	// InitrdFiles are files the guest's init brings (the guest agent and
	// its config), added to an initrd root in the archive of the pod's
	// files; other roots ignore them.
	InitrdFiles []InitrdFile
	Guest       GuestCaps
	Monitor     MonitorCaps
	Virtiofsd   Virtiofsd
}

// Virtiofsd is the host's virtiofsd ([extra_binaries.virtiofsd]).
type Virtiofsd struct {
	Path    string
	Options []string
}

// Available tells whether virtiofsd exists on this host.
func (v Virtiofsd) Available() bool {
	if v.Path == "" {
		return false
	}
	st, err := os.Stat(v.Path)
	return err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0
}

// Plan is what the chosen mode takes from the host and gives the boot.
type Plan struct {
	// Root is what the guest boots from; its Kind names the mode.
	Root Root
	// Kernel and Initrd are the host files the monitor boots.
	Kernel, Initrd string
	Disks          []Disk
	Shares         []Share
	// Volumes are the disks (after the root) the guest mounts itself.
	Volumes []Volume
	// VolumeBinds are bound into the container rootfs inside the
	// launcher's mount namespace only, so that a shared root shows the
	// spec's volumes at their destinations and the host sees none of it.
	VolumeBinds []confined.Bind
	// HelperProcess runs beside the monitor (virtiofsd), started by the launcher.
	HelperProcess *confined.HelperProcess
	// ReadOnlyShare: the shared root is bound read-only (its top mount
	// only: the volumes bound into it keep their own access) in the
	// launcher's mount namespace, before the monitor or the helper sees it.
	ReadOnlyShare bool
	// MonitorServesFiles is set when the monitor itself serves the
	// root's files (9p): it then needs /proc in its confined root, and
	// keeps file capabilities when it runs as root (none as a user).
	MonitorServesFiles bool
	// Devices are host block devices the monitor opens: the container's
	// device cgroup must let it.
	Devices []string
	// Warnings name what the guest does not get of the spec (volumes a
	// guest type cannot take), for the runtime to log.
	Warnings []string
	// Undo records what Prepare took from the host, persisted so that
	// the delete command can give it back after a dead shim.
	Undo Undo
	// prepare does the mode's host work; nil when there is none.
	prepare func(record func(Undo) error) error
}

// Mode names the plan's rootfs mode, for errors, logs and operators: its
// root's kind, or "none".
func (p *Plan) Mode() string {
	if p.Root.Kind == KindNone {
		return "none"
	}
	return string(p.Root.Kind)
}

// ReadOnlyDevice tells whether the monitor only reads the host device at
// path: every disk from it is read-only.
func (p *Plan) ReadOnlyDevice(path string) bool {
	found := false
	for _, d := range p.Disks {
		if d.Source == path {
			if !d.ReadOnly {
				return false
			}
			found = true
		}
	}
	return found
}

// Disk is a raw virtio-blk disk for the guest: the first is its root in
// block mode.
type Disk struct {
	ID     string // serial and drive id: "rootfs", or urunc's "vol<i>"
	Source string // host path: a regular file or a block device
	// ReadOnly: a read-only volume, which the monitor attaches read-only.
	ReadOnly bool
}

// Share is a host directory shared with the guest.
type Share struct {
	Kind   Kind // Kind9p or KindVirtiofs
	Tag    string
	Source string // host directory the monitor serves (9p)
	// ReadOnly: the monitor serves the share read-only; set only when
	// nothing in it may be written (a read-only root whose volumes are
	// all read-only too).
	ReadOnly bool
	// Socket is where the share's server listens inside the confined
	// root (virtiofsd's, from HelperProcess).
	Socket string
}

// Undo is what a mode's Prepare must give back, persisted in the bundle.
type Undo struct {
	// Dirs are directories the mode created (boot files copied out of a
	// block rootfs).
	Dirs []string `json:"dirs,omitempty"`
	// HostMounts are host mounts of block devices a guest took over,
	// each recorded before it was unmounted.
	HostMounts []hostmount.Mount `json:"hostMounts,omitempty"`
}

// Release gives back what u records: the host's mounts, last taken first,
// then the directories; idempotent. The caller makes sure no monitor
// still holds the devices.
func (u Undo) Release() error {
	var errs []error
	for i := len(u.HostMounts) - 1; i >= 0; i-- {
		errs = append(errs, u.HostMounts[i].Remount())
	}
	for _, d := range u.Dirs {
		if err := os.RemoveAll(d); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Prepare does the mode's host work: for a block rootfs, copy the boot
// files out and unmount it from the host before the guest gets it.
// Before each host change that needs undoing beyond p.Undo, it calls
// record with the whole undo so far, which the caller persists: a shim
// dying right after leaves the delete command what to give back.
func (p *Plan) Prepare(record func(Undo) error) error {
	if p.prepare == nil {
		return nil
	}
	return p.prepare(record)
}

// selector tries one mode: ok is false when the image did not ask for it
// (selection goes on), err when it asked for something impossible.
type selector struct {
	name string
	try  func(req Request) (p *Plan, ok bool, err error)
}

// selectors are the modes in urunc's order of precedence.
var selectors = []selector{
	{"initrd", tryInitrd},
	{"block annotation", tryBlockAnnotation},
	{"container rootfs as block", tryContainerBlock},
	{"virtiofs", tryVirtiofs},
	{"9p", try9p},
}

// Select picks the guest's rootfs mode: the initrd annotation; the block
// annotation with blkMntPoint "/"; with mountRootfs, the container's own
// block device, else virtiofs, else 9p; else no rootfs.
func Select(req Request) (*Plan, error) {
	for _, s := range selectors {
		p, ok, err := s.try(req)
		if err != nil {
			return nil, err
		}
		if ok {
			if len(req.InitrdFiles) > 0 && p.Initrd == "" && p.Root.Kind != KindNone {
				withInitFiles(p, req)
			}
			return p, nil
		}
	}
	if req.MountRootfs {
		return nil, fmt.Errorf("%smountRootfs is set, but guest %s cannot boot from the container rootfs (%s) and monitor %s shares no directory it can mount (9p, virtiofs)",
			annotation.Prefix, req.Guest.Name(), describeMounts(req.Mounts), req.Monitor.Name())
	}
	p := &Plan{Kernel: req.Kernel}
	if hasPodFiles(req.Volumes) {
		p.Warnings = append(p.Warnings, fmt.Sprintf("guest %s boots with no root filesystem: volumes %s do not reach it",
			req.Guest.Name(), strings.Join(podVolumeNames(req.Volumes), ", ")))
	}
	return p, nil
}

func describeMounts(ms []mount.Mount) string {
	if len(ms) == 0 {
		return "no mounts"
	}
	var kinds []string
	for _, m := range ms {
		kinds = append(kinds, m.Type)
	}
	return strings.Join(kinds, "+")
}

// volumes returns the spec mounts that are the user's volumes: binds, but
// not the runtime's own plumbing under /dev, /proc and /sys, which the
// guest has its own of.
func volumes(ms []specs.Mount) []specs.Mount {
	var out []specs.Mount
	for _, m := range ms {
		if !isBind(m) {
			continue
		}
		d := "/" + strings.Trim(m.Destination, "/")
		if d == "/dev" || d == "/proc" || d == "/sys" || strings.HasPrefix(d, "/dev/") || strings.HasPrefix(d, "/proc/") || strings.HasPrefix(d, "/sys/") {
			continue
		}
		out = append(out, m)
	}
	return out
}

func isBind(m specs.Mount) bool {
	if m.Type == "bind" {
		return true
	}
	for _, o := range m.Options {
		if o == "bind" || o == "rbind" {
			return true
		}
	}
	return false
}

// readOnly tells whether a volume is read-only: "ro", or "rro" (recursive
// read-only). Both are made read-only recursively, submounts included.
func readOnly(m specs.Mount) bool {
	for _, o := range m.Options {
		if o == "ro" || o == "rro" {
			return true
		}
	}
	return false
}
