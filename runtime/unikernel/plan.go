package unikernel

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/urunc-dev/containerd-shim-urunc-v2/internal/annotation"
	"github.com/urunc-dev/containerd-shim-urunc-v2/internal/confined"
	"github.com/urunc-dev/containerd-shim-urunc-v2/monitors"
	"github.com/urunc-dev/containerd-shim-urunc-v2/rootfs"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/cgroup"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/config"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/guestagent"
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
// rootfs mode (what the guest gets as its root), with what follows from
// them: the monitor's confinement, namespaces, device rules and confined
// root. Building it touches nothing on the host, so bad input fails here
// cleanly; Create's prepare step does the host work.
type bootPlan struct {
	monitor   monitors.Monitor
	guestType guests.Guest
	rootfs    *rootfs.Plan
	args      []string
	version   string
	hostname  string
	process   guests.Process
	guest     monitors.Guest
	binds     []confined.Bind
	files     []launch.File
	confine   launch.Confinement
	// vhost is the host config's vhost switch for this monitor.
	vhost bool
	// namespaces are those the launcher (and so the monitor) joins or
	// creates.
	namespaces nsPlan
	// diskRules let the monitor open the block devices the guest boots
	// from; every cgroup update must keep them.
	diskRules []specs.LinuxDeviceCgroup
	// controlSocket is the host path of the monitor's control socket, ""
	// for a monitor that makes its own.
	controlSocket string
	// agentSocket is the host path of the guest agent's virtio-serial
	// channel, "" for a guest without the agent or whose channel is a
	// socket in the monitor's root (hybrid vsock).
	agentSocket string
	// size is the guest's RAM and vCPUs and what the container's cgroup
	// is given for the VM.
	size vmSize
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
	var args []string
	if spec.Process != nil {
		args = spec.Process.Args
	}
	if len(args) == 0 {
		args = strings.Fields(cfg.Cmdline)
	}
	hostname := guestHostname(spec)
	agentFiles, err := guestAgentFiles(opts.Host, g, mon, spec, args, hostname)
	if err != nil {
		return nil, err
	}
	// agentDropped names why an agent the host asked for was left out, for
	// an error the guest then meets without it.
	var agentDropped string
	if agentFiles != nil {
		if driver := agentChannelDriver(monitors.AgentTransportOf(mon)); !kernelTakesAgent(ctx, opts.Host, opts.ID, rootfsDir, cfg.Binary, driver) {
			agentFiles = nil
			agentDropped = fmt.Sprintf("the guest kernel %s lacks %s=y, so the guest boots without the guest agent", cfg.Binary, driver.Option)
		}
	}
	req.InitrdFiles = agentFiles
	rp, err := rootfs.Select(req)
	if err != nil {
		return nil, err
	}
	plan := &bootPlan{monitor: mon, guestType: g, rootfs: rp, version: cfg.UnikernelVersion, hostname: hostname}
	for _, w := range rp.Warnings {
		log.G(ctx).Warn(w)
	}
	if err := plan.setDevices(cfg); err != nil {
		return nil, err
	}
	plan.args = args
	if p := spec.Process; p != nil {
		plan.process = guests.Process{Env: p.Env, UID: p.User.UID, GID: p.User.GID, Cwd: p.Cwd}
	}
	if agentFiles != nil {
		if rp.Root.Kind != rootfs.KindNone {
			plan.setAgentChannel(opts)
		} else {
			log.G(ctx).Infof("guest agent: this %s guest has no root to boot it from; it runs without", g.Name())
		}
	}
	// Validate the command line now, with a network standing in for the
	// one finish renders it with once it is known.
	check := guests.Request{Args: args, Root: rp.Root, Volumes: rp.Volumes, Process: plan.process, Hostname: plan.hostname, Version: cfg.UnikernelVersion,
		Agent: plan.agentPath(),
		Net:   &guests.Net{Address: "255.255.255.255", Mask: "255.255.255.255", Gateway: "255.255.255.255", MAC: "02:00:00:00:00:00"}}
	if _, err := g.Cmdline(check); err != nil {
		if agentDropped != "" {
			// The process the agent would have started (its env, for one)
			// does not fit on the kernel command line.
			return nil, fmt.Errorf("%s: %w", agentDropped, err)
		}
		return nil, err
	}
	agentOverheadMB := 0
	if plan.guest.Agent != nil {
		agentOverheadMB = monitors.AgentMemoryOverheadMB(mon)
	}
	if plan.size, err = sizeVM(spec, mcfg, agentOverheadMB); err != nil {
		return nil, err
	}
	plan.guest.MemoryMB, plan.guest.VCPUs = plan.size.memoryMB, plan.size.vcpus
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
	if monitorFiltered(spec, mcfg) {
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
	if mon.Control() == monitors.ControlInheritedFD {
		plan.controlSocket = controlSocketPath(opts)
		plan.guest.ControlFD = launch.ControlSocketFD
	}
	if plan.namespaces, err = planNamespaces(spec); err != nil {
		return nil, err
	}
	if plan.diskRules, err = cgroup.BlockDeviceRules(rp.Devices, rp.ReadOnlyDevice); err != nil {
		return nil, err
	}
	return plan, nil
}

// guestHostname is the hostname the guest's kernel is given: the spec's,
// else, for a container that joins its pod's UTS namespace and so has
// none of its own (CRI), the HOSTNAME CRI puts in its environment, the
// name a runc container of the pod would see.
func guestHostname(spec *specs.Spec) string {
	if spec.Hostname != "" || spec.Process == nil {
		return spec.Hostname
	}
	for _, e := range spec.Process.Env {
		if h, ok := strings.CutPrefix(e, "HOSTNAME="); ok {
			return h
		}
	}
	return ""
}

// monitorFiltered tells whether the monitor gets a seccomp filter (its
// own where it has one, else this project's). The filter guards the host
// against a guest that escapes into its monitor, not the app against its
// own calls, so it does not wait for the spec to ask: a pod without a
// seccompProfile has none in its spec. It is left out only for a spec
// whose profile is explicitly unconfined (allow by default, no rule), or,
// for a spec with no profile, where the host config says seccomp = false
// for the monitor. firecracker installs its own filters whatever this
// says: the runtime never passes it --no-seccomp.
func monitorFiltered(spec *specs.Spec, mcfg monitors.Config) bool {
	if spec.Linux == nil || spec.Linux.Seccomp == nil {
		return mcfg.SeccompByDefault()
	}
	return !unconfinedProfile(spec.Linux.Seccomp)
}

// unconfinedProfile tells whether a seccomp profile filters nothing.
func unconfinedProfile(p *specs.LinuxSeccomp) bool {
	return p.DefaultAction == specs.ActAllow && len(p.Syscalls) == 0
}

// controlSocketPath is where the monitor's control socket lives: the
// host's state dir, never the confined root, so nothing in the container
// can reach it; hashed to stay under the unix socket path limit whatever
// the container ID.
func controlSocketPath(opts lifecycle.CreateOptions) string {
	sum := sha256.Sum256([]byte(opts.Namespace + "/" + opts.ID + "/" + opts.Bundle))
	return filepath.Join(opts.Host.StateDir(), hex.EncodeToString(sum[:8])+".qmp")
}

// setAgentChannel gives the guest the agent's channel its monitor has:
// qemu's virtio-serial port on a socket the shim listens on outside the
// container, or the vsock device whose socket the monitor binds in its
// own root.
func (p *bootPlan) setAgentChannel(opts lifecycle.CreateOptions) {
	switch t := monitors.AgentTransportOf(p.monitor); t {
	case monitors.AgentVirtioSerial:
		p.agentSocket = agentSocketPath(opts)
		p.guest.Agent = &monitors.AgentChannel{Transport: t, FD: launch.AgentSocketFD, Port: guestagent.PortName}
	case monitors.AgentHybridVsock:
		p.guest.Agent = &monitors.AgentChannel{Transport: t, GuestCID: monitors.AgentGuestCID, Socket: monitors.AgentVsockSocketInRoot}
	}
}

// agentSocketPath is where the guest agent's channel lives, beside the
// control socket and hashed the same way.
func agentSocketPath(opts lifecycle.CreateOptions) string {
	sum := sha256.Sum256([]byte(opts.Namespace + "/" + opts.ID + "/" + opts.Bundle))
	return filepath.Join(opts.Host.StateDir(), hex.EncodeToString(sum[:8])+".agent")
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
	if spec.Root != nil {
		req.ReadOnlyRoot = spec.Root.Readonly
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
		binds = append(binds, confined.Bind{Source: d.Source, Target: path, ReadOnly: d.ReadOnly})
		st, err := os.Stat(d.Source)
		hostDevice := err == nil && st.Mode()&os.ModeDevice != 0 && st.Mode()&os.ModeCharDevice == 0
		p.guest.Disks = append(p.guest.Disks, monitors.Disk{ID: d.ID, Path: path, ReadOnly: d.ReadOnly, HostDevice: hostDevice})
	}
	for _, s := range rp.Shares {
		share := monitors.Share{Kind: s.Kind, Tag: s.Tag, Socket: s.Socket, ReadOnly: s.ReadOnly}
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
	req := guests.Request{Args: p.args, Root: p.rootfs.Root, Volumes: p.rootfs.Volumes, Process: p.process, Hostname: p.hostname, Version: p.version,
		Agent: p.agentPath()}
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

// planConfinement takes the monitor's confinement from the spec. With a
// user other than root, the monitor runs as that user with no capability
// at all, so a 9p server it runs acts on the host's files as the user
// would (DESIGN.md, "The spec's user on a shared root"); what belongs to
// root reaches it without any owner changed on the host: the shim opens
// the disks and the monitor inherits them (inheritDisks), and the
// launcher gives virtiofsd's socket to the user and runs virtiofsd as the
// user too. A root monitor serving 9p keeps launch.FileCaps.
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
	if root.MonitorServesFiles && c.User == nil {
		c.KeepCaps = launch.FileCaps
	}
	return c, nil
}
