package runtime

import (
	"fmt"
	"path/filepath"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/urunc-dev/containerd-shim-urunc-v2/monitors"
	"github.com/urunc-dev/containerd-shim-urunc-v2/rootfs"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/guests"
)

// Paths of the guest's files inside the monitor's confined root.
const (
	guestKernelPath = "/guest/kernel"
	guestInitrdPath = "/guest/initrd"
)

// bootPlan is everything decided before anything is started: which monitor
// runs which guest with which command line, and what its confined root
// holds. Building it touches nothing, so bad input fails here cleanly.
type bootPlan struct {
	monitor   monitors.Monitor
	guestType guests.Guest
	args      []string
	guest     monitors.Guest
	binds     []rootfs.Bind
	files     []launchedFile
}

// planBoot validates the unikernel config against the rootfs and the host.
func planBoot(cfg UnikernelConfig, spec *specs.Spec, rootfsDir string, host HostConfig) (*bootPlan, error) {
	g, err := guests.For(cfg.UnikernelType)
	if err != nil {
		return nil, err
	}
	if cfg.Hypervisor == "" {
		return nil, fmt.Errorf("no hypervisor: annotation %shypervisor is not set", AnnotationPrefix)
	}
	mcfg := host.Monitor(cfg.Hypervisor)
	mon, err := monitors.New(cfg.Hypervisor, mcfg)
	if err != nil {
		return nil, err
	}
	if cfg.Binary == "" {
		return nil, fmt.Errorf("no guest kernel: annotation %sbinary is not set", AnnotationPrefix)
	}
	kernel, err := rootfs.RequireFile(rootfsDir, cfg.Binary, "guest kernel ("+AnnotationPrefix+"binary)")
	if err != nil {
		return nil, err
	}
	plan := &bootPlan{monitor: mon}
	guestBinds := []rootfs.Bind{{Source: kernel, Target: guestKernelPath, ReadOnly: true}}
	plan.guest.Kernel = guestKernelPath
	if cfg.Initrd != "" {
		initrd, err := rootfs.RequireFile(rootfsDir, cfg.Initrd, "initrd ("+AnnotationPrefix+"initrd)")
		if err != nil {
			return nil, err
		}
		guestBinds = append(guestBinds, rootfs.Bind{Source: initrd, Target: guestInitrdPath, ReadOnly: true})
		plan.guest.Initrd = guestInitrdPath
	}
	var args []string
	if spec.Process != nil {
		args = spec.Process.Args
	}
	if len(args) == 0 {
		args = strings.Fields(cfg.Cmdline)
	}
	plan.guestType, plan.args = g, args
	// Validate the command line now; finish renders it once the network
	// is known.
	if _, err := g.Cmdline(guests.Request{Args: args, Root: rootOf(plan.guest)}); err != nil {
		return nil, err
	}
	plan.guest.MemoryMB, plan.guest.VCPUs = guestSize(spec, mcfg)
	if spec.Process != nil {
		plan.guest.Terminal = spec.Process.Terminal
	}

	var devices []string
	devices = append(devices, "/dev/null", "/dev/urandom")
	if mon.NeedsKVM() {
		devices = append(devices, "/dev/kvm")
	}
	plan.binds, err = rootfs.MonitorRootPlan{
		Binary:    mon.Binary(),
		DataPaths: mon.DataPaths(),
		Guest:     guestBinds,
		Devices:   devices,
	}.Binds()
	if err != nil {
		return nil, fmt.Errorf("hypervisor %q: %w", cfg.Hypervisor, err)
	}
	return plan, nil
}

// finish renders the guest command line and the monitor's, and the config
// file of monitors that take one, once the runtime details (control
// socket, network) are known.
func (p *bootPlan) finish(n *netPlan) ([]string, error) {
	req := guests.Request{Args: p.args, Root: rootOf(p.guest)}
	if n != nil {
		req.Net = &guests.Net{Address: n.Address, Mask: n.Mask, Gateway: n.Gateway, MAC: n.MAC}
		p.guest.Net = &monitors.NIC{Tap: n.Tap, MAC: n.MAC}
		p.binds = append(p.binds, rootfs.Bind{Source: "/dev/net/tun", Target: "/dev/net/tun"})
	}
	cmdline, err := p.guestType.Cmdline(req)
	if err != nil {
		return nil, err
	}
	p.guest.Cmdline = cmdline
	args, err := p.monitor.Args(p.guest)
	if err != nil {
		return nil, err
	}
	if fw, ok := p.monitor.(monitors.ConfigFileWriter); ok {
		data, err := fw.ConfigFile(p.guest)
		if err != nil {
			return nil, err
		}
		p.files = append(p.files[:0], launchedFile{Path: fw.ConfigFilePath(), Data: data})
	}
	return args, nil
}

// guestSize takes the guest's memory from the spec's memory limit and its
// vCPUs from the CPU quota, falling back to the monitor's host defaults.
func guestSize(spec *specs.Spec, mcfg monitors.Config) (memMB, vcpus int) {
	memMB, vcpus = mcfg.DefaultMemoryMB, mcfg.DefaultVCPUs
	if spec.Linux == nil || spec.Linux.Resources == nil {
		return memMB, vcpus
	}
	res := spec.Linux.Resources
	if res.Memory != nil && res.Memory.Limit != nil && *res.Memory.Limit > 0 {
		if mb := int(*res.Memory.Limit / (1 << 20)); mb > 0 {
			memMB = mb
		}
	}
	if res.CPU != nil && res.CPU.Quota != nil && *res.CPU.Quota > 0 && res.CPU.Period != nil && *res.CPU.Period > 0 {
		q, p := *res.CPU.Quota, int64(*res.CPU.Period)
		vcpus = int((q + p - 1) / p)
	}
	return memMB, vcpus
}

// rootfsDirOf returns the host path of the spec's root.
func rootfsDirOf(bundle string, spec *specs.Spec) string {
	if spec.Root == nil || spec.Root.Path == "" {
		return filepath.Join(bundle, "rootfs")
	}
	if filepath.IsAbs(spec.Root.Path) {
		return spec.Root.Path
	}
	return filepath.Join(bundle, spec.Root.Path)
}

// rootOf is the guest's root: its initrd when it has one, else its first
// disk.
func rootOf(g monitors.Guest) guests.Root {
	if g.Initrd != "" {
		return guests.Root{Kind: guests.RootInitrd}
	}
	return guests.Root{Kind: guests.RootBlock}
}
