package unikernel

import (
	"context"
	"fmt"
	"os"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/urunc-dev/containerd-shim-urunc-v2/internal/annotation"
	"github.com/urunc-dev/containerd-shim-urunc-v2/internal/confined"
	"github.com/urunc-dev/containerd-shim-urunc-v2/monitors"
	"github.com/urunc-dev/containerd-shim-urunc-v2/rootfs"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/config"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/guests"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/launch"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/lifecycle"
)

// vhostNetDevice is the host's vhost-net device (its cgroup rule is among
// monitorDevices).
const vhostNetDevice = "/dev/vhost-net"

// Paths of the guest's files inside the monitor's confined root.
const (
	guestKernelPath = "/guest/kernel"
	guestInitrdPath = "/guest/initrd"
	guestDisksDir   = "/guest/disks"
	guestSharesDir  = "/guest/shares"
	// guestInitConfigPath is the guest init's config (urunit's), which
	// the monitor loads as the initrd.
	guestInitConfigPath = "/guest/urunit.conf"
)

// bootPlan combines the three independent choices of a boot: the monitor
// (how to start it), the guest type (what its kernel is told) and the
// rootfs mode (what the guest gets as its root). Building it touches
// nothing on the host, so bad input fails here cleanly; the rootfs mode's
// host work is done later by rootfs.Prepare.
type bootPlan struct {
	monitor   monitors.Monitor
	guestType guests.Guest
	rootfs    *rootfs.Plan
	args      []string
	version   string
	process   guests.Process
	guest     monitors.Guest
	binds     []confined.Bind
	files     []launch.File
	confine   launch.Confinement
	// vhost is the host config's vhost switch for this monitor.
	vhost bool
}

// planBoot validates the unikernel config against the rootfs and the host.
func planBoot(ctx context.Context, cfg config.UnikernelConfig, spec *specs.Spec, opts lifecycle.CreateOptions, rootfsDir string) (*bootPlan, error) {
	g, err := guests.For(cfg.UnikernelType)
	if err != nil {
		return nil, err
	}
	if cfg.Hypervisor == "" {
		return nil, fmt.Errorf("no hypervisor: annotation %shypervisor is not set", annotation.Prefix)
	}
	mcfg := opts.Host.Monitor(cfg.Hypervisor)
	mon, err := monitors.New(cfg.Hypervisor, mcfg)
	if err != nil {
		return nil, err
	}
	if err := guests.CheckMonitor(g, cfg.Hypervisor); err != nil {
		return nil, err
	}
	req, err := rootfsRequest(cfg, spec, opts, rootfsDir)
	if err != nil {
		return nil, err
	}
	req.Guest, req.Monitor = g, mon
	rp, err := rootfs.Select(req)
	if err != nil {
		return nil, err
	}
	plan := &bootPlan{monitor: mon, guestType: g, rootfs: rp, version: cfg.UnikernelVersion}
	if err := plan.setDevices(cfg); err != nil {
		return nil, err
	}
	var args []string
	if spec.Process != nil {
		args = spec.Process.Args
	}
	if len(args) == 0 {
		args = strings.Fields(cfg.Cmdline)
	}
	plan.args = args
	if p := spec.Process; p != nil {
		plan.process = guests.Process{Env: p.Env, UID: p.User.UID, GID: p.User.GID, Cwd: p.Cwd}
	}
	// Validate the command line now; finish renders it once the network
	// is known.
	if _, err := g.Cmdline(guests.Request{Args: args, Root: rp.Root, Version: cfg.UnikernelVersion}); err != nil {
		return nil, err
	}
	plan.guest.MemoryMB, plan.guest.VCPUs = guestSize(spec, mcfg)
	plan.vhost = mcfg.Vhost
	if spec.Process != nil {
		plan.guest.Terminal = spec.Process.Terminal
	}
	guestBinds := plan.placeGuestFiles()
	if plan.confine, err = planConfinement(spec, mon, rp, plan.guest.Disks); err != nil {
		return nil, err
	}
	if plan.confine.User != nil {
		for i := range plan.guest.Disks {
			plan.guest.Disks[i].FD = launch.FirstDiskFD + 2*i
			plan.guest.Disks[i].ReadOnlyFD = launch.FirstDiskFD + 2*i + 1
		}
	}
	// Seccomp unless the spec runs unconfined (no seccomp), as urunc does:
	// the monitor's own filter where it has one, else this project's.
	if spec.Linux != nil && spec.Linux.Seccomp != nil {
		plan.guest.Seccomp = mon.FiltersItself(ctx, lifecycle.RunMonitorProbe)
		plan.confine.Seccomp = !plan.guest.Seccomp
	}
	devices := []string{"/dev/null", "/dev/urandom"}
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

// rootfsRequest gathers what rootfs mode selection needs from the image:
// the guest's files, resolved inside the rootfs, and its rootfs asks.
func rootfsRequest(cfg config.UnikernelConfig, spec *specs.Spec, opts lifecycle.CreateOptions, rootfsDir string) (rootfs.Request, error) {
	req := rootfs.Request{
		Bundle:      opts.Bundle,
		RootfsDir:   rootfsDir,
		Mounts:      opts.Rootfs,
		BlkMntPoint: cfg.BlkMntPoint,
		Volumes:     spec.Mounts,
		Virtiofsd:   opts.Host.Virtiofsd(),
	}
	if cfg.Binary == "" {
		return req, fmt.Errorf("no guest kernel: annotation %sbinary is not set", annotation.Prefix)
	}
	var err error
	if req.Kernel, err = rootfs.RequireFile(rootfsDir, cfg.Binary, "guest kernel ("+annotation.Prefix+"binary)"); err != nil {
		return req, err
	}
	if cfg.Initrd != "" {
		if req.Initrd, err = rootfs.RequireFile(rootfsDir, cfg.Initrd, "initrd ("+annotation.Prefix+"initrd)"); err != nil {
			return req, err
		}
	}
	if cfg.Block != "" {
		if req.Block, err = rootfs.RequireFile(rootfsDir, cfg.Block, "block image ("+annotation.Prefix+"block)"); err != nil {
			return req, err
		}
	}
	req.MountRootfs, err = cfg.WantsRootfs()
	return req, err
}

// setDevices gives the monitor what the guest type expects of its devices,
// with the image's solo5 device names over the type's.
func (p *bootPlan) setDevices(cfg config.UnikernelConfig) error {
	d := p.guestType.Devices()
	p.guest.NICOptions, p.guest.ExtraArgs = d.NICOptions, d.QemuArgs
	p.guest.Solo5Net, p.guest.Solo5Block = d.Solo5Net, d.Solo5Block
	netDev, blkDev, err := cfg.Solo5Devices()
	if err != nil {
		return err
	}
	if netDev != "" {
		p.guest.Solo5Net = netDev
	}
	if blkDev != "" {
		p.guest.Solo5Block = blkDev
	}
	return nil
}

// placeGuestFiles maps what the rootfs mode gives the monitor into the
// confined root: the kernel and initrd, each disk and each 9p directory,
// and virtiofsd's socket. It returns the binds that put them there.
func (p *bootPlan) placeGuestFiles() []confined.Bind {
	rp := p.rootfs
	binds := []confined.Bind{{Source: rp.Kernel, Target: guestKernelPath, ReadOnly: true}}
	p.guest.Kernel = guestKernelPath
	if rp.Initrd != "" {
		binds = append(binds, confined.Bind{Source: rp.Initrd, Target: guestInitrdPath, ReadOnly: true})
		p.guest.Initrd = guestInitrdPath
	}
	for _, d := range rp.Disks {
		path := guestDisksDir + "/" + d.ID
		binds = append(binds, confined.Bind{Source: d.Source, Target: path})
		p.guest.Disks = append(p.guest.Disks, monitors.Disk{ID: d.ID, Path: path})
	}
	for _, s := range rp.Shares {
		share := monitors.Share{Kind: s.Kind, Tag: s.Tag, Socket: s.Socket}
		if s.Socket == "" {
			share.Path = guestSharesDir + "/" + s.Tag
			binds = append(binds, confined.Bind{Source: s.Source, Target: share.Path})
		}
		p.guest.Shares = append(p.guest.Shares, share)
	}
	return binds
}

// finish renders the guest command line and the monitor's, and the config
// file of monitors that take one, once the runtime details (control
// socket, network) are known.
func (p *bootPlan) finish(n *launch.Network) ([]string, error) {
	req := guests.Request{Args: p.args, Root: p.rootfs.Root, Volumes: p.rootfs.Volumes, Process: p.process, Version: p.version}
	if n != nil {
		req.Net = &guests.Net{Address: n.Address, Mask: n.Mask, Gateway: n.Gateway, MAC: n.MAC}
		p.guest.Net = &monitors.NIC{Tap: n.Tap, MAC: n.MAC}
		p.binds = append(p.binds, confined.Bind{Source: "/dev/net/tun", Target: "/dev/net/tun"})
		// vhost-net moves the guest's frames in the host kernel, where
		// the host offers it (urunc's vhost key). Its device is root's:
		// a monitor running as another user goes without.
		if _, err := os.Stat(vhostNetDevice); err == nil && p.vhost && p.confine.User == nil {
			p.binds = append(p.binds, confined.Bind{Source: vhostNetDevice, Target: vhostNetDevice})
			p.guest.Net.Vhost = true
		}
	}
	cmdline, err := p.guestType.Cmdline(req)
	if err != nil {
		return nil, err
	}
	p.guest.Cmdline = cmdline
	p.files = p.files[:0]
	if ic, ok := p.guestType.(guests.InitConfigurer); ok {
		if data := ic.InitConfig(req); data != nil {
			// Passed as the initrd: only roots other than an initrd get
			// one (guests.InitConfigurer).
			p.files = append(p.files, launch.File{Path: guestInitConfigPath, Data: data})
			p.guest.Initrd = guestInitConfigPath
		}
	}
	args, err := p.monitor.Args(p.guest)
	if err != nil {
		return nil, err
	}
	if fw, ok := p.monitor.(monitors.ConfigFileWriter); ok {
		data, err := fw.ConfigFile(p.guest)
		if err != nil {
			return nil, err
		}
		p.files = append(p.files, launch.File{Path: fw.ConfigFilePath(), Data: data})
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
