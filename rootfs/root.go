package rootfs

// Kind is how the guest reaches its root filesystem: the one name of a
// root for rootfs modes (which give it), guest types (which tell their
// kernel where it is) and monitors (which render its device). Each mode
// declares its kinds in its own file.
type Kind string

// KindNone is no root filesystem: the kernel is the whole app.
const KindNone Kind = ""

// Root is what a rootfs mode gives the guest as its root.
type Root struct {
	Kind Kind
	// Tag is the mount tag of a shared root (9p, virtiofs).
	Tag string
	// ReadOnly is a root disk the monitor opens read-only: the guest's
	// kernel must mount it so too, or it fails the first write late. A
	// shared root keeps its writable volumes inside one mount, so only a
	// disk root sets it.
	ReadOnly bool
}

// Volume is a disk the guest mounts at MountPoint; ID is its serial.
type Volume struct {
	ID         string
	MountPoint string
}
