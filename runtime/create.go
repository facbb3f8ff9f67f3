package runtime

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/urunc-dev/containerd-shim-urunc-v2/monitors"
	"github.com/urunc-dev/containerd-shim-urunc-v2/rootfs"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/guests"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/launch"
	"golang.org/x/sys/unix"
)

// Create prepares the container and, for a unikernel, starts its launcher,
// which waits for Start; a container whose image names no unikernel is
// created by runc instead. On error nothing is left behind: no mount,
// process, cgroup or socket.
func Create(ctx context.Context, opts CreateOptions) (_ Task, retErr error) {
	tl := newTimeline()
	defer func() {
		if retErr == nil {
			log.G(ctx).WithField("steps", tl.String()).Debug("create timeline")
		}
	}()
	spec, err := loadSpec(opts.Bundle)
	if err != nil {
		return nil, err
	}
	rootfsDir := rootfsDirOf(opts.Bundle, spec)
	st := persistedState{ID: opts.ID, Namespace: opts.Namespace}
	if len(opts.Rootfs) > 0 {
		st.Rootfs = rootfsDir
	}
	// Every step records what will undo it before it runs, so that a shim
	// dying anywhere in Create leaves the delete command what to undo.
	if err := writeState(opts.Bundle, &st); err != nil {
		return nil, err
	}
	if err := rootfs.Mount(opts.Rootfs, rootfsDir); err != nil {
		_ = os.Remove(statePath(opts.Bundle))
		return nil, err
	}
	crashPoint("create:mounted")
	tl.mark("mount")
	// Each path undoes its own part of a failed create; the rootfs mount
	// and the state file are this function's.
	defer func() {
		if retErr != nil {
			if err := rootfs.Unmount(rootfsDir); err != nil {
				log.G(ctx).WithError(err).Warn("undo failed create")
			}
			if err := os.Remove(statePath(opts.Bundle)); err != nil && !errors.Is(err, os.ErrNotExist) {
				log.G(ctx).WithError(err).Warn("undo failed create")
			}
		}
	}()
	cfg, err := ResolveUnikernelConfig(spec.Annotations, rootfsDir)
	if err != nil {
		return nil, err
	}
	if !cfg.IsUnikernel() {
		return createPlain(ctx, opts, spec, st)
	}
	return createUnikernel(ctx, tl, opts, spec, cfg, st, rootfsDir)
}

// createUnikernel plans the boot, starts the launcher in the container's
// namespaces and cgroup, and has it build the monitor's confined root.
func createUnikernel(ctx context.Context, tl *timeline, opts CreateOptions, spec *specs.Spec, cfg UnikernelConfig, st persistedState, rootfsDir string) (_ *Container, retErr error) {
	c := &Container{
		lifecycle: newLifecycle(opts.ID, opts.Namespace, opts.Bundle),
		host:      opts.Host,
		oomDone:   make(chan struct{}),
	}
	c.persist = st
	defer func() {
		if retErr != nil {
			if err := c.release(nil); err != nil {
				log.G(ctx).WithError(err).Warn("undo failed create")
			}
		}
	}()
	plan, err := planBoot(ctx, cfg, spec, opts, rootfsDir)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errInvalidArgument, err)
	}
	c.monitor = plan.monitor
	tl.mark("plan")
	if err := c.record(func(st *persistedState) { st.GuestType, st.Monitor = cfg.UnikernelType, cfg.Hypervisor }); err != nil {
		return nil, err
	}
	if r, ok := plan.guestType.(guests.ConsoleExitReporter); ok && r.ReportsExitOnConsole() && opts.Console != nil {
		c.exitOf = guestExit(opts.Console)
	}
	if d, ok := plan.guestType.(guests.MonitorExitDecoder); ok {
		c.exitOf = func(e ExitStatus) ExitStatus { e.Status = d.GuestExit(e.Status); return e }
	}
	if spec.Hooks != nil {
		c.poststart, c.annotations = spec.Hooks.Poststart, spec.Annotations
	}
	nsp, err := planNamespaces(spec)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errInvalidArgument, err)
	}

	var extra []*os.File
	defer func() {
		for _, f := range extra {
			f.Close()
		}
	}()
	if plan.monitor.Control() == monitors.ControlInheritedFD {
		path := c.controlSocketPath(opts.Namespace)
		if err := c.record(func(st *persistedState) { st.ControlSocket = path }); err != nil {
			return nil, err
		}
		ln, err := listenControl(path)
		if err != nil {
			return nil, err
		}
		extra = append(extra, ln)
		plan.guest.ControlFD = launch.ControlSocketFD
		crashPoint("create:control")
	}
	if c.diskDevices, err = blockDeviceRules(plan.rootfs.Devices); err != nil {
		return nil, fmt.Errorf("%w: %w", errInvalidArgument, err)
	}
	if spec.Linux != nil && spec.Linux.CgroupsPath != "" {
		if err := c.record(func(st *persistedState) { st.Cgroup = spec.Linux.CgroupsPath }); err != nil {
			return nil, err
		}
		cg, err := newCgroup(spec.Linux.CgroupsPath, withMonitorDevices(spec.Linux.Resources, c.diskDevices))
		if err != nil {
			return nil, err
		}
		c.cgroup = cg
		crashPoint("create:cgroup")
	}
	tl.mark("cgroup")
	// The undo is on disk before the mode touches the host, so that a
	// shim dying half way leaves the delete command what to give back.
	if err := c.record(func(st *persistedState) { st.RootfsMode, st.RootfsUndo = plan.rootfs.Mode, plan.rootfs.Undo }); err != nil {
		return nil, err
	}
	if err := plan.rootfs.Prepare(); err != nil {
		return nil, fmt.Errorf("prepare %s rootfs: %w", plan.rootfs.Mode, err)
	}
	crashPoint("create:prepared")
	tl.mark("rootfs")
	if extra, err = inheritDisks(plan, extra); err != nil {
		return nil, err
	}

	rootDir := filepath.Join(opts.Bundle, monitorRootDir)
	if err := os.MkdirAll(rootDir, 0o700); err != nil {
		return nil, err
	}
	if err := c.startLauncher(ctx, opts, nsp, extra); err != nil {
		return nil, err
	}
	crashPoint("create:launcher")
	tl.mark("launcher")
	if err := c.runCreateHooks(ctx, spec); err != nil {
		return nil, err
	}
	network, err := c.planNetwork(ctx, nsp, plan.confine.TapOwner())
	if err != nil {
		return nil, err
	}
	if network != nil {
		network.Group = plan.confine.TapGroup()
	}
	tl.mark("network")
	argv, err := plan.finish(network)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errInvalidArgument, err)
	}
	log.G(ctx).WithField("argv", argv).Debug("monitor command")
	if err := c.launcher.prepare(ctx, launch.Spec{
		RootDir: rootDir,
		Binds:   plan.binds,
		Files:   plan.files,
		Argv:    argv,
		Env:     []string{"PATH=/usr/bin:/bin", "HOME=/"},
		Network: network,
		Rootfs:  rootfsDir,
		Volumes: plan.rootfs.VolumeBinds,
		Helper:  plan.rootfs.Helper,

		Proc:       plan.rootfs.Mode == "9p",
		MonitorFDs: monitorFDs(plan.guest),
		Confine:    plan.confine,
	}); err != nil {
		return nil, fmt.Errorf("prepare monitor %s: %w", c.monitor.Name(), err)
	}
	crashPoint("create:ready")
	tl.mark("confine")
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

// LauncherBinary is the launcher's own binary, looked for beside the
// shim's: it links only package launch, so its start-up is about half the
// shim binary's (issue 11).
const LauncherBinary = "urunc-launcher"

// LauncherBeside returns the path of urunc-launcher beside the shim binary
// at shim, and whether an executable file is there: the shim runs it, and
// urunc check looks for it, with this one test.
func LauncherBeside(shim string) (string, bool) {
	path := filepath.Join(filepath.Dir(shim), LauncherBinary)
	st, err := os.Stat(path)
	return path, err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0
}

// launcherBinary is what runs as the launcher: the one asked for, else
// urunc-launcher beside this binary, else this binary itself (a shim
// installed alone still works, with a slower start).
func launcherBinary(asked string) (string, error) {
	if asked != "" {
		return asked, nil
	}
	self, err := os.Executable()
	if err != nil {
		return "", err
	}
	if beside, ok := LauncherBeside(self); ok {
		return beside, nil
	}
	return self, nil
}

// startLauncher forks the launcher into the container's namespaces and
// cgroup; it then waits for its launch spec.
func (c *Container) startLauncher(ctx context.Context, opts CreateOptions, nsp nsPlan, extra []*os.File) error {
	launcher, err := launcherBinary(opts.Launcher)
	if err != nil {
		return err
	}
	conn, childFiles, err := newLauncherConn()
	if err != nil {
		return err
	}
	c.launcher = conn
	cmd := exec.Command(launcher, LauncherArg)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = opts.Stdio.Stdin, opts.Stdio.Stdout, opts.Stdio.Stderr
	cmd.ExtraFiles = append(childFiles, extra...)
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{}
	if isTerminal(opts.Stdio.Stdin) {
		// The monitor's console is the pty: it needs a session of its
		// own with the pty as controlling terminal.
		cmd.SysProcAttr.Setsid = true
		cmd.SysProcAttr.Setctty = true
		cmd.SysProcAttr.Ctty = 0
	}
	ec, err := startInNamespaces(cmd, nsp)
	for _, f := range childFiles {
		f.Close()
	}
	if err != nil {
		return fmt.Errorf("start launcher: %w", err)
	}
	c.process = cmd.Process
	pid := cmd.Process.Pid
	start, _ := processStartTime(pid)
	// Persist before anything else needs undoing, so a shim that dies
	// from here on leaves a state the delete command reads.
	if err := c.record(func(st *persistedState) { st.Pid, st.PidStartTime = pid, start }); err != nil {
		go c.watchExit(ec, pid)
		return err
	}
	go c.watchExit(ec, pid)
	if c.cgroup != nil {
		if err := c.cgroup.AddProc(pid); err != nil {
			return fmt.Errorf("add monitor to cgroup %s: %w", c.persisted().Cgroup, err)
		}
	}
	return nil
}

// runCreateHooks runs the spec's prestart and createRuntime hooks, with
// the launcher's pid: its namespaces are the container's.
func (c *Container) runCreateHooks(ctx context.Context, spec *specs.Spec) error {
	//lint:ignore SA1019 Prestart is deprecated in the spec, but engines still set it.
	if spec.Hooks == nil || len(spec.Hooks.Prestart)+len(spec.Hooks.CreateRuntime) == 0 {
		return nil
	}
	// From here a poststop hook owes the host a teardown.
	if err := c.record(func(st *persistedState) { st.PoststopHooks = true }); err != nil {
		return err
	}
	st := hookState(c.id, c.bundle, c.Pid(), specs.StateCreating, spec.Annotations)
	//lint:ignore SA1019 Prestart is deprecated in the spec, but engines still set it.
	if err := runHooks(ctx, "prestart", spec.Hooks.Prestart, st); err != nil {
		return err
	}
	return runHooks(ctx, "createRuntime", spec.Hooks.CreateRuntime, st)
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
	n, err := discoverNetwork(path, c.id)
	if errors.Is(err, errLinkTaken) {
		log.G(ctx).WithError(err).Warn("guest runs without network")
		return nil, nil
	}
	if err != nil || n == nil {
		return nil, err
	}
	// The tap is the monitor's user's, so that it opens it without
	// CAP_NET_ADMIN.
	n.Owner = owner
	tap := Tap{Name: n.Tap, Netns: path, Link: n.Link, ViaPid: viaPid, Address: n.Address}
	if err := c.record(func(st *persistedState) { st.Taps = append(st.Taps, tap) }); err != nil {
		return nil, err
	}
	return n, nil
}

// controlSocketPath is where the monitor's control socket lives: the
// host's state dir, never the confined root, so nothing in the container
// can reach it; hashed to stay under the unix socket path limit whatever
// the container ID.
func (c *Container) controlSocketPath(namespace string) string {
	sum := sha256.Sum256([]byte(namespace + "/" + c.id + "/" + c.bundle))
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

func loadSpec(bundle string) (*specs.Spec, error) {
	data, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		return nil, fmt.Errorf("read OCI spec: %w", err)
	}
	var spec specs.Spec
	if err := json.Unmarshal(data, &spec); err != nil {
		return nil, fmt.Errorf("parse OCI spec: %w", err)
	}
	return &spec, nil
}

// guestExitWait bounds the wait for the end of the console at exit: the
// kernel's line is written before the monitor exits, but the copy may
// still be reading it.
const guestExitWait = 2 * time.Second

// guestExit makes a monitor's clean exit (0) the guest's own status when
// the guest reported one on its console; a monitor killed or failing
// keeps its status.
func guestExit(tap *ConsoleTap) func(ExitStatus) ExitStatus {
	return func(e ExitStatus) ExitStatus {
		if e.Status != 0 {
			return e
		}
		if code, ok := tap.GuestExit(guestExitWait); ok {
			e.Status = code
		}
		return e
	}
}
