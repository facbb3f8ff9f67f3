package rootfs

import (
	"github.com/urunc-dev/containerd-shim-urunc-v2/internal/confined"
)

// Kinds of a root shared as a directory.
const (
	Kind9p       Kind = "9p"       // a virtio-9p share, served by the monitor
	KindVirtiofs Kind = "virtiofs" // a virtiofs share, served by virtiofsd
)

// Shared mode gives the guest the container's rootfs as a directory: over
// virtiofs when the host has virtiofsd, else over 9p. The spec's volumes
// are bound into the rootfs at their destinations in the launcher's mount
// namespace, so the guest sees them where a runc container would.

// RootTag is the mount tag of a shared root, urunc's.
const RootTag = "fs0"

// VirtiofsSocket is where virtiofsd listens, inside the confined root.
const VirtiofsSocket = "/run/virtiofsd.sock"

// tryVirtiofs: with mountRootfs, share the rootfs through virtiofsd when
// the host has it and both guest and monitor speak virtiofs.
func tryVirtiofs(req Request) (*Plan, bool, error) {
	if !req.MountRootfs || !req.Virtiofsd.Available() ||
		!req.Guest.SupportsFS("virtiofs") || !req.Monitor.SupportsShare(KindVirtiofs) {
		return nil, false, nil
	}
	p := sharedPlan(req, KindVirtiofs)
	// virtiofsd is confined to the rootfs by its own sandbox; the monitor
	// only sees its socket. The launcher names the directory it serves
	// ("-o source=", understood by the C virtiofsd and, for
	// compatibility, by the Rust one): the rootfs, or the rootfs bound
	// where a helper running as the spec's user can reach it.
	argv := append([]string{req.Virtiofsd.Path}, req.Virtiofsd.Options...)
	p.HelperProcess = &confined.HelperProcess{Name: "virtiofsd", Argv: argv,
		Socket: VirtiofsSocket, SocketFlag: "--socket-path=",
		Share: req.RootfsDir, ShareFlag: []string{"-o", "source="}}
	p.Shares[0].Socket = VirtiofsSocket
	return p, true, nil
}

// try9p: with mountRootfs, share the rootfs through the monitor's own 9p
// server.
func try9p(req Request) (*Plan, bool, error) {
	if !req.MountRootfs || !req.Guest.SupportsFS("9p") || !req.Monitor.SupportsShare(Kind9p) {
		return nil, false, nil
	}
	p := sharedPlan(req, Kind9p)
	p.Shares[0].Source = req.RootfsDir
	// The monitor serves the files itself: it needs /proc in its
	// confined root, and file capabilities when it runs as a user.
	p.MonitorServesFiles = true
	return p, true, nil
}

// sharedPlan gives the guest the rootfs with the spec's volumes bound
// into it. A read-only root is its top mount bound read-only in the
// launcher's namespace (ReadOnlyShare), which holds for the monitor's 9p
// server and virtiofsd alike, whatever their capabilities; the monitor
// serves the share read-only too when no volume in it is writable.
func sharedPlan(req Request, kind Kind) *Plan {
	p := &Plan{
		Root:          Root{Kind: kind, Tag: RootTag},
		Kernel:        req.Kernel,
		Shares:        []Share{{Kind: kind, Tag: RootTag, ReadOnly: req.ReadOnlyRoot}},
		ReadOnlyShare: req.ReadOnlyRoot,
	}
	for _, v := range volumes(req.Volumes) {
		ro := readOnly(v)
		p.VolumeBinds = append(p.VolumeBinds, confined.Bind{Source: v.Source, Target: v.Destination, ReadOnly: ro})
		if !ro {
			p.Shares[0].ReadOnly = false
		}
	}
	return p
}
