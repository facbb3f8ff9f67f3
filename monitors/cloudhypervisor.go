package monitors

import (
	"context"
	"fmt"
	"strconv"

	"github.com/urunc-dev/containerd-shim-urunc-v2/rootfs"
)

// cloudHypervisor runs a guest under cloud-hypervisor (KVM only).
type cloudHypervisor struct {
	binary string
	cfg    Config
}

func newCloudHypervisor(binary string, cfg Config) Monitor {
	return &cloudHypervisor{binary: binary, cfg: cfg}
}

func (c *cloudHypervisor) Name() string                 { return "clh" }
func (c *cloudHypervisor) Binary() string               { return c.binary }
func (c *cloudHypervisor) NeedsKVM() bool               { return true }
func (c *cloudHypervisor) Control() Control             { return ControlInheritedFD }
func (c *cloudHypervisor) SupportsInheritedDisks() bool { return false }

// AgentTransport: cloud-hypervisor's vsock device is firecracker's
// design, its host end a unix socket it binds itself (--vsock socket=).
// It takes no descriptor for it, so the socket is in its root.
func (c *cloudHypervisor) AgentTransport() AgentTransport { return AgentHybridVsock }

// FiltersItself: cloud-hypervisor's --seccomp, set from Guest.Seccomp.
func (c *cloudHypervisor) FiltersItself(context.Context, Runner) bool { return true }

// SupportsShare: cloud-hypervisor speaks vhost-user to virtiofsd; it has
// no 9p.
func (c *cloudHypervisor) SupportsShare(kind rootfs.Kind) bool { return kind == rootfs.KindVirtiofs }
func (c *cloudHypervisor) DataPaths() []string                 { return nil }

func (c *cloudHypervisor) Args(g Guest) ([]string, error) {
	if g.Kernel == "" {
		return nil, fmt.Errorf("clh: no guest kernel")
	}
	args := []string{c.binary,
		"--kernel", g.Kernel,
		"--cpus", "boot=" + strconv.Itoa(g.VCPUs),
		"--memory", "size=" + strconv.Itoa(g.MemoryMB) + "M" + sharedMemory(g),
		"--serial", "tty", "--console", "off",
		"--seccomp", strconv.FormatBool(g.Seccomp),
	}
	if g.Initrd != "" {
		args = append(args, "--initramfs", g.Initrd)
	}
	if g.Cmdline != "" {
		args = append(args, "--cmdline", g.Cmdline)
	}
	for _, d := range g.Disks {
		disk := "path=" + d.Path + ",id=" + d.ID
		if d.ReadOnly {
			disk += ",readonly=on"
		}
		args = append(args, "--disk", disk)
	}
	for _, s := range g.Shares {
		if s.Kind == rootfs.KindVirtiofs {
			args = append(args, "--fs", "tag="+s.Tag+",socket="+s.Socket)
		}
	}
	if g.Net != nil {
		args = append(args, "--net", "tap="+g.Net.Tap+",mac="+g.Net.MAC)
	}
	if a := g.Agent; a != nil {
		if a.Transport != AgentHybridVsock || a.Socket == "" {
			return nil, fmt.Errorf("clh: the guest agent's channel can only be hybrid vsock on a socket in the monitor's root, not %s", a.Transport)
		}
		args = append(args, "--vsock", "cid="+strconv.FormatUint(uint64(a.GuestCID), 10)+",socket="+a.Socket)
	}
	if g.ControlFD > 0 {
		// Like qemu's QMP: the shim's socket, outside the container,
		// inherited listening.
		args = append(args, "--api-socket", "fd="+strconv.Itoa(g.ControlFD))
	}
	return args, nil
}

// Powerdown presses the guest's ACPI power button through the API.
func (c *cloudHypervisor) Powerdown(ctx context.Context, controlSocket string) error {
	if controlSocket == "" {
		return ErrNoPowerdown
	}
	return apiPut(ctx, controlSocket, "/api/v1/vm.power-button", nil)
}

// sharedMemory maps the guest's RAM shared, which virtiofsd needs.
func sharedMemory(g Guest) string {
	if hasShare(g, rootfs.KindVirtiofs) {
		return ",shared=on"
	}
	return ""
}
