package unikernel

import (
	"fmt"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/urunc-dev/containerd-shim-urunc-v2/monitors"
	"github.com/urunc-dev/containerd-shim-urunc-v2/rootfs"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/launch"
)

// planConfinement takes the monitor's confinement from the spec; a
// monitor serving a 9p share keeps launch.FileCaps. With a user other than root,
// what belongs to root reaches the monitor without any owner changed on
// the host: the shim opens the disks and the monitor inherits them
// (inheritDisks), a 9p server keeps launch.FileCaps as ambient capabilities, and
// the launcher gives virtiofsd's socket to the user.
func planConfinement(spec *specs.Spec, mon monitors.Monitor, root *rootfs.Plan, disks []monitors.Disk) (launch.Confinement, error) {
	var c launch.Confinement
	if p := spec.Process; p != nil && (p.User.UID != 0 || p.User.GID != 0) {
		if len(disks) > 0 && !mon.SupportsInheritedDisks() {
			return c, fmt.Errorf("process.user %d:%d: monitor %s cannot run as a user other than root with a disk (%s root): only a monitor that takes its disks open (qemu) can",
				p.User.UID, p.User.GID, mon.Name(), root.Mode())
		}
		u := p.User
		if mon.NeedsKVM() {
			var st unix.Stat_t
			if err := unix.Stat("/dev/kvm", &st); err == nil {
				u.AdditionalGids = append(u.AdditionalGids, st.Gid)
			}
		}
		c.User = &u
	}
	if p := spec.Process; p != nil {
		if p.OOMScoreAdj != nil {
			c.OOMScoreAdj = *p.OOMScoreAdj
		}
		for _, r := range p.Rlimits {
			if _, ok := launch.RlimitResources[r.Type]; !ok {
				return c, fmt.Errorf("process.rlimits: unknown type %q", r.Type)
			}
		}
		c.Rlimits = p.Rlimits
	}
	if root.MonitorServesFiles {
		c.KeepCaps = launch.FileCaps
	}
	return c, nil
}
