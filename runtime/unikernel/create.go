package unikernel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/urunc-dev/containerd-shim-urunc-v2/monitors"
	"github.com/urunc-dev/containerd-shim-urunc-v2/rootfs"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/cgroup"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/config"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/guests"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/launch"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/lifecycle"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/network"
)

// Create boots a unikernel container in three steps, each in its own
// function: plan makes every decision (monitor, guest type, root,
// confinement, namespaces, device rules) and touches nothing on the host,
// so a bad request fails cleanly; prepare takes the host resources, each
// recorded in the bundle's state before it is taken; launch starts the
// launcher in the container's namespaces and cgroup and has it build the
// monitor's confined root, where it waits for Start.
func Create(ctx context.Context, tl *lifecycle.Timeline, opts lifecycle.CreateOptions, spec *specs.Spec, cfg config.UnikernelConfig, st lifecycle.PersistedState, rootfsDir string) (_ *Container, retErr error) {
	plan, err := planBoot(ctx, cfg, spec, opts, rootfsDir)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errdefs.ErrInvalidArgument, err)
	}
	tl.Mark("plan")
	c := newContainer(opts, st, plan, spec)
	defer func() {
		if retErr != nil {
			if err := c.release(nil); err != nil {
				log.G(ctx).WithError(err).Warn("undo failed create")
			}
		}
	}()
	if err := c.Record(func(st *lifecycle.PersistedState) { st.GuestType, st.Monitor = cfg.UnikernelType, cfg.Hypervisor }); err != nil {
		return nil, err
	}
	inherited, err := c.prepare(tl, plan, spec)
	defer func() {
		for _, f := range inherited {
			f.Close()
		}
	}()
	if err != nil {
		return nil, err
	}
	if err := c.launch(ctx, tl, plan, spec, opts, rootfsDir, inherited); err != nil {
		return nil, err
	}
	return c, nil
}

// newContainer is the container the plan describes, before anything of it
// exists on the host.
func newContainer(opts lifecycle.CreateOptions, st lifecycle.PersistedState, plan *bootPlan, spec *specs.Spec) *Container {
	c := &Container{
		Init:        lifecycle.NewInit(opts.Bundle, st),
		host:        opts.Host,
		monitor:     plan.monitor,
		diskDevices: plan.diskRules,
		size:        plan.size,
		oomDone:     make(chan struct{}),
	}
	if a := plan.guest.Agent; a != nil {
		c.agentTransport = a.Transport
	}
	if r, ok := plan.guestType.(guests.ConsoleExitReporter); ok && r.ReportsExitOnConsole() {
		c.SetExitOf(func(e lifecycle.ExitStatus) lifecycle.ExitStatus {
			// The agent's report is the app's own; the console's
			// last line stands in only where the agent gave none.
			// Either replaces only a clean exit (the guest powered
			// off): a monitor killed (SIGKILL after the grace
			// period, the OOM killer) or failing keeps its status,
			// whatever the guest said before.
			if status, ok := c.agentExit(); ok && e.Status == 0 {
				e.Status = status
				return e
			}
			if opts.Console != nil {
				e.Status = opts.Console.ExitStatus(e.Status)
			}
			return e
		})
	}
	if d, ok := plan.guestType.(guests.MonitorExitDecoder); ok {
		c.SetExitOf(func(e lifecycle.ExitStatus) lifecycle.ExitStatus { e.Status = d.GuestExit(e.Status); return e })
	}
	if spec.Hooks != nil {
		c.poststart, c.annotations = spec.Hooks.Poststart, spec.Annotations
	}
	return c
}

// prepare takes what the plan needs from the host: the monitor's control
// socket, the cgroup, the rootfs mode's work and the disks a monitor
// running as a user inherits. It returns the files the launcher inherits
// (the caller closes them, also on error).
func (c *Container) prepare(tl *lifecycle.Timeline, plan *bootPlan, spec *specs.Spec) (inherited []*os.File, err error) {
	if path := plan.controlSocket; path != "" {
		if err := c.Record(func(st *lifecycle.PersistedState) { st.ControlSocket = path }); err != nil {
			return nil, err
		}
		ln, err := listenControl(path)
		if err != nil {
			return nil, err
		}
		inherited = append(inherited, ln)
		lifecycle.CrashPoint("create:control")
	}
	if path := plan.agentSocket; path != "" {
		if err := c.Record(func(st *lifecycle.PersistedState) { st.AgentSocket = path }); err != nil {
			return inherited, err
		}
		ln, err := listenControl(path)
		if err != nil {
			return inherited, fmt.Errorf("guest agent: %w", err)
		}
		inherited = placeFD(inherited, launch.AgentSocketFD, ln)
	}
	if spec.Linux != nil && spec.Linux.CgroupsPath != "" {
		if err := c.Record(func(st *lifecycle.PersistedState) { st.Cgroup = spec.Linux.CgroupsPath }); err != nil {
			return inherited, err
		}
		cg, err := cgroup.New(spec.Linux.CgroupsPath, cgroup.WithMonitorDevices(plan.size.cgroupResources(spec.Linux.Resources), c.diskDevices))
		if err != nil {
			return inherited, err
		}
		c.cgroup = cg
		lifecycle.CrashPoint("create:cgroup")
	}
	tl.Mark("cgroup")
	// The undo is on disk before the mode touches the host, so that a
	// shim dying half way leaves the delete command what to give back.
	if err := c.Record(func(st *lifecycle.PersistedState) {
		st.RootfsMode, st.RootfsUndo = plan.rootfs.Mode(), plan.rootfs.Undo
	}); err != nil {
		return inherited, err
	}
	record := func(u rootfs.Undo) error {
		if err := c.Record(func(st *lifecycle.PersistedState) { st.RootfsUndo = u }); err != nil {
			return err
		}
		lifecycle.CrashPoint("create:hostmount")
		return nil
	}
	if err := plan.rootfs.Prepare(record); err != nil {
		return inherited, fmt.Errorf("prepare %s rootfs: %w", plan.rootfs.Mode(), err)
	}
	lifecycle.CrashPoint("create:prepared")
	tl.Mark("rootfs")
	return inheritDisks(plan, inherited)
}

// launch starts the launcher, runs the create hooks, takes over the
// container's network for the guest, renders the monitor's command line
// and has the launcher build the confined root the monitor will run in.
func (c *Container) launch(ctx context.Context, tl *lifecycle.Timeline, plan *bootPlan, spec *specs.Spec, opts lifecycle.CreateOptions, rootfsDir string, inherited []*os.File) error {
	rootDir := filepath.Join(opts.Bundle, lifecycle.MonitorRootDir)
	if err := os.MkdirAll(rootDir, 0o700); err != nil {
		return err
	}
	if err := c.startLauncher(ctx, opts, plan.namespaces, inherited); err != nil {
		return err
	}
	lifecycle.CrashPoint("create:launcher")
	tl.Mark("launcher")
	if err := c.runCreateHooks(ctx, spec); err != nil {
		return err
	}
	localPorts, err := network.LocalPorts(spec.Annotations)
	if err != nil {
		return fmt.Errorf("%w: %w", errdefs.ErrInvalidArgument, err)
	}
	network, err := c.guestNetwork(ctx, plan.namespaces, plan.confine.TapOwner())
	if err != nil {
		return err
	}
	if network != nil {
		network.Group = plan.confine.TapGroup()
		network.LocalPorts = localPorts
	}
	tl.Mark("network")
	argv, err := plan.finish(network)
	if err != nil {
		return fmt.Errorf("%w: %w", errdefs.ErrInvalidArgument, err)
	}
	log.G(ctx).WithField("argv", argv).Debug("monitor command")
	if err := c.launcher.prepare(ctx, launch.Spec{
		RootDir:       rootDir,
		Binds:         plan.binds,
		Files:         plan.files,
		Argv:          argv,
		Env:           []string{"PATH=/usr/bin:/bin", "HOME=/"},
		Network:       network,
		Rootfs:        rootfsDir,
		Volumes:       plan.rootfs.VolumeBinds,
		HelperProcess: plan.rootfs.HelperProcess,
		RootReadOnly:  plan.rootfs.ReadOnlyShare,

		Proc:       plan.rootfs.MonitorServesFiles,
		MonitorFDs: monitorFDs(plan.guest),
		Confine:    plan.confine,
	}); err != nil {
		return fmt.Errorf("prepare monitor %s: %w", c.monitor.Name(), err)
	}
	lifecycle.CrashPoint("create:ready")
	tl.Mark("confine")
	if c.cgroup != nil {
		if oom, err := c.cgroup.OOMEvents(c.oomDone); err == nil {
			c.oom = oom
		} else {
			log.G(ctx).WithError(err).Warn("no OOM events for this cgroup")
		}
	}
	return nil
}

// inheritDisks opens the disks of a monitor that runs as a user other than
// root, so that the launcher inherits them at their Disk.FD and
// Disk.ReadOnlyFD: from launch.FirstDiskFD on, after the control
// socket's place, which stays empty when there is none. Opening them
// here, before the launcher's Go runtime starts, keeps those numbers
// clear of the descriptors it opens itself.
func inheritDisks(plan *bootPlan, extra []*os.File) ([]*os.File, error) {
	for i, d := range plan.guest.Disks {
		if d.FD == 0 {
			continue
		}
		// A read-only disk is never open for writing in the monitor, in
		// either slot of its fd set.
		rw := os.O_RDWR
		if d.ReadOnly {
			rw = os.O_RDONLY
		}
		for fd, flag := range map[int]int{d.FD: rw, d.ReadOnlyFD: os.O_RDONLY} {
			f, err := os.OpenFile(plan.rootfs.Disks[i].Source, flag, 0)
			if err != nil {
				return extra, fmt.Errorf("open disk %s for the monitor's user: %w", d.ID, err)
			}
			extra = placeFD(extra, fd, f)
		}
	}
	return extra, nil
}

// placeFD puts f where the launcher inherits it as fd: extra starts at
// launch.ControlSocketFD, and a place left empty stays nil.
func placeFD(extra []*os.File, fd int, f *os.File) []*os.File {
	for len(extra) <= fd-launch.ControlSocketFD {
		extra = append(extra, nil)
	}
	extra[fd-launch.ControlSocketFD] = f
	return extra
}

// monitorFDs are the descriptors the monitor inherits and its helper must
// not: the control socket and the disks.
func monitorFDs(g monitors.Guest) []int {
	var fds []int
	if g.ControlFD != 0 {
		fds = append(fds, g.ControlFD)
	}
	if g.Agent != nil {
		fds = append(fds, g.Agent.FD)
	}
	for _, d := range g.Disks {
		if d.FD != 0 {
			fds = append(fds, d.FD, d.ReadOnlyFD)
		}
	}
	return fds
}

// runCreateHooks runs the spec's prestart and createRuntime hooks, with
// the launcher's pid: its namespaces are the container's.
func (c *Container) runCreateHooks(ctx context.Context, spec *specs.Spec) error {
	//lint:ignore SA1019 Prestart is deprecated in the spec, but engines still set it.
	if spec.Hooks == nil || len(spec.Hooks.Prestart)+len(spec.Hooks.CreateRuntime) == 0 {
		return nil
	}
	// From here a poststop hook owes the host a teardown.
	if err := c.Record(func(st *lifecycle.PersistedState) { st.PoststopHooks = true }); err != nil {
		return err
	}
	st := lifecycle.HookState(c.ID(), c.Bundle(), c.Pid(), specs.StateCreating, spec.Annotations)
	//lint:ignore SA1019 Prestart is deprecated in the spec, but engines still set it.
	if err := lifecycle.RunHooks(ctx, "prestart", spec.Hooks.Prestart, st); err != nil {
		return err
	}
	return lifecycle.RunHooks(ctx, "createRuntime", spec.Hooks.CreateRuntime, st)
}

// guestNetwork finds the network the guest takes over. A container that
// shares the host's network namespace gets none: the host's interfaces
// are never taken over.
func (c *Container) guestNetwork(ctx context.Context, nsp nsPlan, owner uint32) (*launch.Network, error) {
	path, viaPid := "", false
	for _, j := range nsp.join {
		if j.kind == unix.CLONE_NEWNET {
			path = j.path
		}
	}
	if path == "" {
		if nsp.cloneFlags&unix.CLONE_NEWNET == 0 {
			return nil, nil
		}
		path, viaPid = fmt.Sprintf("/proc/%d/ns/net", c.Pid()), true
	}
	n, err := network.Discover(path, c.ID())
	if errors.Is(err, network.ErrLinkTaken) {
		// A guest silently without the network its pod was given would
		// look healthy and answer nothing: refuse it at Create instead.
		return nil, fmt.Errorf("%w: %w", errdefs.ErrFailedPrecondition, err)
	}
	if err != nil || n == nil {
		return nil, err
	}
	// The tap is the monitor's user's, so that it opens it without
	// CAP_NET_ADMIN.
	n.Owner = owner
	tap := lifecycle.Tap{Name: n.Tap, Netns: path, Link: n.Link, ViaPid: viaPid, Address: n.Address}
	if err := c.Record(func(st *lifecycle.PersistedState) { st.Taps = append(st.Taps, tap) }); err != nil {
		return nil, err
	}
	return n, nil
}

// listenControl creates the monitor's control socket at path and returns
// the listening descriptor the monitor inherits.
func listenControl(path string) (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	_ = os.Remove(path)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	// The file is what the monitor inherits; the path stays for us.
	ln.SetUnlinkOnClose(false)
	f, err := ln.File()
	ln.Close()
	if err != nil {
		os.Remove(path)
		return nil, err
	}
	return f, nil
}
