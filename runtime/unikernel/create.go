package unikernel

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
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
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/cgroup"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/config"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/guests"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/launch"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/lifecycle"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/network"
)

// Create plans the boot, starts the launcher in the container's
// namespaces and cgroup, and has it build the monitor's confined root.
func Create(ctx context.Context, tl *lifecycle.Timeline, opts lifecycle.CreateOptions, spec *specs.Spec, cfg config.UnikernelConfig, st lifecycle.PersistedState, rootfsDir string) (_ *Container, retErr error) {
	c := &Container{
		Machine: lifecycle.NewMachine(opts.Bundle, st),
		host:    opts.Host,
		oomDone: make(chan struct{}),
	}
	defer func() {
		if retErr != nil {
			if err := c.release(nil); err != nil {
				log.G(ctx).WithError(err).Warn("undo failed create")
			}
		}
	}()
	plan, err := planBoot(ctx, cfg, spec, opts, rootfsDir)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errdefs.ErrInvalidArgument, err)
	}
	c.monitor = plan.monitor
	tl.Mark("plan")
	if err := c.Record(func(st *lifecycle.PersistedState) { st.GuestType, st.Monitor = cfg.UnikernelType, cfg.Hypervisor }); err != nil {
		return nil, err
	}
	if r, ok := plan.guestType.(guests.ConsoleExitReporter); ok && r.ReportsExitOnConsole() && opts.Console != nil {
		c.SetExitOf(lifecycle.ExitFromConsole(opts.Console))
	}
	if d, ok := plan.guestType.(guests.MonitorExitDecoder); ok {
		c.SetExitOf(func(e lifecycle.ExitStatus) lifecycle.ExitStatus { e.Status = d.GuestExit(e.Status); return e })
	}
	if spec.Hooks != nil {
		c.poststart, c.annotations = spec.Hooks.Poststart, spec.Annotations
	}
	nsp, err := planNamespaces(spec)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errdefs.ErrInvalidArgument, err)
	}

	var extra []*os.File
	defer func() {
		for _, f := range extra {
			f.Close()
		}
	}()
	if plan.monitor.Control() == monitors.ControlInheritedFD {
		path := c.controlSocketPath(opts.Namespace)
		if err := c.Record(func(st *lifecycle.PersistedState) { st.ControlSocket = path }); err != nil {
			return nil, err
		}
		ln, err := listenControl(path)
		if err != nil {
			return nil, err
		}
		extra = append(extra, ln)
		plan.guest.ControlFD = launch.ControlSocketFD
		lifecycle.CrashPoint("create:control")
	}
	if c.diskDevices, err = cgroup.BlockDeviceRules(plan.rootfs.Devices); err != nil {
		return nil, fmt.Errorf("%w: %w", errdefs.ErrInvalidArgument, err)
	}
	if spec.Linux != nil && spec.Linux.CgroupsPath != "" {
		if err := c.Record(func(st *lifecycle.PersistedState) { st.Cgroup = spec.Linux.CgroupsPath }); err != nil {
			return nil, err
		}
		cg, err := cgroup.New(spec.Linux.CgroupsPath, cgroup.WithMonitorDevices(spec.Linux.Resources, c.diskDevices))
		if err != nil {
			return nil, err
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
		return nil, err
	}
	if err := plan.rootfs.Prepare(); err != nil {
		return nil, fmt.Errorf("prepare %s rootfs: %w", plan.rootfs.Mode(), err)
	}
	lifecycle.CrashPoint("create:prepared")
	tl.Mark("rootfs")
	if extra, err = inheritDisks(plan, extra); err != nil {
		return nil, err
	}

	rootDir := filepath.Join(opts.Bundle, lifecycle.MonitorRootDir)
	if err := os.MkdirAll(rootDir, 0o700); err != nil {
		return nil, err
	}
	if err := c.startLauncher(ctx, opts, nsp, extra); err != nil {
		return nil, err
	}
	lifecycle.CrashPoint("create:launcher")
	tl.Mark("launcher")
	if err := c.runCreateHooks(ctx, spec); err != nil {
		return nil, err
	}
	network, err := c.planNetwork(ctx, nsp, plan.confine.TapOwner())
	if err != nil {
		return nil, err
	}
	tl.Mark("network")
	argv, err := plan.finish(network)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errdefs.ErrInvalidArgument, err)
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

		Proc:       plan.rootfs.MonitorServesFiles,
		MonitorFDs: monitorFDs(plan.guest),
		Confine:    plan.confine,
	}); err != nil {
		return nil, fmt.Errorf("prepare monitor %s: %w", c.monitor.Name(), err)
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
	return c, nil
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
		for fd, flag := range map[int]int{d.FD: os.O_RDWR, d.ReadOnlyFD: os.O_RDONLY} {
			for len(extra) <= fd-launch.ControlSocketFD {
				extra = append(extra, nil)
			}
			f, err := os.OpenFile(plan.rootfs.Disks[i].Source, flag, 0)
			if err != nil {
				return extra, fmt.Errorf("open disk %s for the monitor's user: %w", d.ID, err)
			}
			extra[fd-launch.ControlSocketFD] = f
		}
	}
	return extra, nil
}

// monitorFDs are the descriptors the monitor inherits and its helper must
// not: the control socket and the disks.
func monitorFDs(g monitors.Guest) []int {
	var fds []int
	if g.ControlFD != 0 {
		fds = append(fds, g.ControlFD)
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

// planNetwork finds the network the guest takes over. A container that
// shares the host's network namespace gets none: the host's interfaces
// are never taken over.
func (c *Container) planNetwork(ctx context.Context, nsp nsPlan, owner uint32) (*launch.Network, error) {
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
		log.G(ctx).WithError(err).Warn("guest runs without network")
		return nil, nil
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

// controlSocketPath is where the monitor's control socket lives: the
// host's state dir, never the confined root, so nothing in the container
// can reach it; hashed to stay under the unix socket path limit whatever
// the container ID.
func (c *Container) controlSocketPath(namespace string) string {
	sum := sha256.Sum256([]byte(namespace + "/" + c.ID() + "/" + c.Bundle()))
	return filepath.Join(c.host.StateDir(), hex.EncodeToString(sum[:8])+".qmp")
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
