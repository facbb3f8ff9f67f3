// Package runtime runs unikernel containers: it prepares the rootfs, starts
// the monitor in the container's namespaces and cgroup, tracks its exit and
// undoes everything on delete. It knows nothing of containerd's task API;
// any Go program that runs containerd's reaper (pkg/sys/reaper) as its
// SIGCHLD handler can use it.
package runtime

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/urunc-dev/containerd-shim-urunc-v2/monitors"
	"github.com/urunc-dev/containerd-shim-urunc-v2/rootfs"
)

// Status of a container.
type Status string

const (
	StatusCreated Status = "created"
	StatusRunning Status = "running"
	StatusPaused  Status = "paused"
	StatusStopped Status = "stopped"
)

// monitorRootDir is the bundle directory the launcher mounts the monitor's
// confined root on, inside its own mount namespace.
const monitorRootDir = "monitor-root"

// Stdio are the files the monitor gets as fd 0, 1 and 2. Create hands
// duplicates to the monitor; the caller keeps and closes its own.
type Stdio struct {
	Stdin, Stdout, Stderr *os.File
}

// CreateOptions describe a container to create.
type CreateOptions struct {
	ID        string
	Namespace string
	Bundle    string
	Rootfs    []mount.Mount
	Stdio     Stdio
	Host      HostConfig
	// Launcher is the binary re-executed as the launcher; it must call
	// LauncherMain when its first argument is LauncherArg. Defaults to
	// this process's own executable.
	Launcher string
}

// Container is one unikernel container.
type Container struct {
	lifecycle
	monitor monitors.Monitor
	host    HostConfig
	process *os.Process
	cgroup  cgroup // nil when the spec names no cgroup

	control         *os.File      // write end of the launcher's control pipe
	launcherStatus  *bufio.Reader // read end of the launcher's status pipe
	launcherStatusF *os.File

	// poststart hooks and the annotations they see, kept from Create's
	// spec so that Start does not read config.json again.
	poststart   []specs.Hook
	annotations map[string]string

	stopOnce sync.Once
	oom      <-chan struct{}
	oomDone  chan struct{}
}

// Create prepares the container and, for a unikernel, starts its launcher,
// which waits for Start; a container whose image names no unikernel is
// created by runc instead. On error nothing is left behind: no mount,
// process, cgroup or socket.
func Create(ctx context.Context, opts CreateOptions) (_ Task, retErr error) {
	spec, err := loadSpec(opts.Bundle)
	if err != nil {
		return nil, err
	}
	rootfsDir := rootfsDirOf(opts.Bundle, spec)
	c := &Container{
		lifecycle: newLifecycle(opts.ID, opts.Namespace, opts.Bundle),
		host:      opts.Host,
		oomDone:   make(chan struct{}),
	}
	defer func() {
		if retErr != nil {
			if err := c.release(); err != nil {
				log.G(ctx).WithError(err).Warn("undo failed create")
			}
		}
	}()
	if err := rootfs.Mount(opts.Rootfs, rootfsDir); err != nil {
		return nil, err
	}
	if len(opts.Rootfs) > 0 {
		c.persist.Rootfs = rootfsDir
	}

	cfg, err := ResolveUnikernelConfig(spec.Annotations, rootfsDir)
	if err != nil {
		return nil, err
	}
	if !cfg.IsUnikernel() {
		return createPlain(ctx, opts, spec, c.persist)
	}
	plan, err := planBoot(cfg, spec, rootfsDir, opts.Host)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errInvalidArgument, err)
	}
	c.monitor = plan.monitor
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
	if plan.monitor.SupportsControl() {
		ln, path, err := c.listenControl(opts.Namespace)
		if err != nil {
			return nil, err
		}
		extra = append(extra, ln)
		plan.guest.ControlFD = LauncherControlSocketFD
		c.persist.ControlSocket = path
	}
	if spec.Linux != nil && spec.Linux.CgroupsPath != "" {
		cg, err := newCgroup(spec.Linux.CgroupsPath, spec.Linux.Resources)
		if err != nil {
			return nil, err
		}
		c.cgroup = cg
		c.persist.Cgroup = spec.Linux.CgroupsPath
	}

	rootDir := filepath.Join(opts.Bundle, monitorRootDir)
	if err := os.MkdirAll(rootDir, 0o700); err != nil {
		return nil, err
	}
	if err := c.startLauncher(ctx, opts, nsp, extra); err != nil {
		return nil, err
	}
	if err := c.runCreateHooks(ctx, spec); err != nil {
		return nil, err
	}
	network, err := c.planNetwork(ctx, nsp)
	if err != nil {
		return nil, err
	}
	argv, err := plan.finish(network)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errInvalidArgument, err)
	}
	log.G(ctx).WithField("argv", argv).Debug("monitor command")
	if err := c.launch(ctx, launchSpec{
		RootDir: rootDir,
		Binds:   plan.binds,
		Files:   plan.files,
		Argv:    argv,
		Env:     []string{"PATH=/usr/bin:/bin", "HOME=/"},
		Network: network,
	}); err != nil {
		return nil, err
	}
	if c.cgroup != nil {
		if oom, err := c.cgroup.OOMEvents(c.oomDone); err == nil {
			c.oom = oom
		} else {
			log.G(ctx).WithError(err).Warn("no OOM events for this cgroup")
		}
	}
	return c, nil
}

// startLauncher forks the launcher into the container's namespaces and
// cgroup; it then waits for its launch spec.
func (c *Container) startLauncher(ctx context.Context, opts CreateOptions, nsp nsPlan, extra []*os.File) error {
	launcher := opts.Launcher
	if launcher == "" {
		self, err := os.Executable()
		if err != nil {
			return err
		}
		launcher = self
	}
	controlR, controlW, err := os.Pipe()
	if err != nil {
		return err
	}
	statusR, statusW, err := os.Pipe()
	if err != nil {
		controlR.Close()
		controlW.Close()
		return err
	}
	c.control, c.launcherStatusF, c.launcherStatus = controlW, statusR, bufio.NewReader(statusR)
	cmd := exec.Command(launcher, LauncherArg)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = opts.Stdio.Stdin, opts.Stdio.Stdout, opts.Stdio.Stderr
	cmd.ExtraFiles = append([]*os.File{controlR, statusW}, extra...)
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
	controlR.Close()
	statusW.Close()
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
func (c *Container) planNetwork(ctx context.Context, nsp nsPlan) (*netPlan, error) {
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
	// The monitor runs as the shim's user; the tap is that user's.
	n.Owner = uint32(os.Geteuid())
	tap := Tap{Name: n.Tap, Netns: path, Link: n.Link, ViaPid: viaPid}
	if err := c.record(func(st *persistedState) { st.Taps = append(st.Taps, tap) }); err != nil {
		return nil, err
	}
	return n, nil
}

// launch hands the launcher its spec and waits until it reports ready.
func (c *Container) launch(ctx context.Context, spec launchSpec) error {
	if err := writeLaunchSpec(c.control, spec); err != nil {
		return fmt.Errorf("send launch spec: %w", err)
	}
	ready := make(chan error, 1)
	go func() { ready <- readStatusLine(c.launcherStatus) }()
	select {
	case err := <-ready:
		if err != nil {
			return fmt.Errorf("prepare monitor %s: %w", c.monitor.Name(), err)
		}
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

// isTerminal tells whether f is a terminal.
func isTerminal(f *os.File) bool {
	if f == nil {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// listenControl creates the monitor's control socket. It lives in the
// host's run directory, never in the confined root, so nothing in the
// container can reach it; the path is hashed to stay under the unix socket
// path limit whatever the container ID.
func (c *Container) listenControl(namespace string) (*os.File, string, error) {
	dir := c.host.StateDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, "", err
	}
	sum := sha256.Sum256([]byte(namespace + "/" + c.id + "/" + c.bundle))
	path := filepath.Join(dir, hex.EncodeToString(sum[:8])+".qmp")
	_ = os.Remove(path)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, "", fmt.Errorf("control socket: %w", err)
	}
	// The file is what the monitor inherits; the path stays for us.
	ln.SetUnlinkOnClose(false)
	f, err := ln.File()
	ln.Close()
	if err != nil {
		os.Remove(path)
		return nil, "", err
	}
	return f, path, nil
}

// Start lets the launcher exec the monitor. It returns once the monitor
// runs, or with the launcher's error if the exec failed.
func (c *Container) Start(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != StatusCreated {
		return fmt.Errorf("container %s is %s, not created: %w", c.id, c.state, errFailedPrecondition)
	}
	if _, err := c.control.Write([]byte{1}); err != nil {
		return fmt.Errorf("start monitor: launcher is gone: %w", err)
	}
	c.control.Close()
	// A successful exec closes the status pipe (close-on-exec); anything
	// written on it is the launcher's reason for failing.
	msg, _ := io.ReadAll(c.launcherStatus)
	c.launcherStatusF.Close()
	if len(msg) > 0 {
		return fmt.Errorf("start monitor %s: %w", c.monitor.Name(), readStatusLine(bufio.NewReader(bytes.NewReader(msg))))
	}
	c.state = StatusRunning
	st := hookState(c.id, c.bundle, c.persist.Pid, specs.StateRunning, c.annotations) // c.mu is held
	if err := runHooks(ctx, "poststart", c.poststart, st); err != nil {
		log.G(ctx).WithError(err).Warn("poststart hook failed")
	}
	return nil
}

// harmlessSignals never stop a VM: the guest cannot receive them, and a
// monitor dying of one (qemu dies of SIGHUP) would be a surprise.
var harmlessSignals = map[syscall.Signal]bool{
	unix.SIGWINCH: true, unix.SIGHUP: true, unix.SIGUSR1: true, unix.SIGUSR2: true,
	unix.SIGCONT: true, unix.SIGCHLD: true, unix.SIGURG: true, unix.SIGPIPE: true,
	unix.SIGALRM: true, unix.SIGSTOP: true, unix.SIGTSTP: true, unix.SIGTTIN: true,
	unix.SIGTTOU: true, unix.SIGPROF: true, unix.SIGVTALRM: true, unix.SIGIO: true,
}

// Kill delivers sig the way a VM understands it. SIGKILL ends the monitor
// at once; SIGTERM, SIGINT and other terminating signals ask the guest to
// power down and kill the monitor after the host's grace period; harmless
// signals are ignored. all also kills helpers the monitor started.
func (c *Container) Kill(ctx context.Context, sig syscall.Signal, all bool) error {
	state, err := c.checkAlive()
	if err != nil {
		return err
	}
	if harmlessSignals[sig] && state != StatusCreated {
		log.G(ctx).WithField("signal", sig).Debug("ignoring harmless signal for a VM")
		return nil
	}
	// A launcher that has not exec'd has no guest to power down.
	if sig == unix.SIGKILL || state == StatusCreated {
		return c.killNow(all)
	}
	c.stopOnce.Do(func() { go c.gracefulStop(sig) })
	return nil
}

func (c *Container) killNow(all bool) error {
	pid := c.Pid()
	pids := []int{pid}
	if all {
		pids = descendants(pid)
	}
	if err := c.process.Signal(unix.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill monitor %d: %w", pid, err)
	}
	for _, p := range pids[1:] {
		_ = unix.Kill(p, unix.SIGKILL)
	}
	if c.status() == StatusPaused && c.cgroup != nil {
		// A frozen task does not die until thawed.
		_ = c.cgroup.Thaw()
	}
	return nil
}

// gracefulStop asks the guest to power down, then kills the monitor if it
// is still there after the grace period.
func (c *Container) gracefulStop(sig syscall.Signal) {
	grace := c.host.StopGrace()
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	err := c.monitor.Powerdown(ctx, c.persist.ControlSocket)
	if err != nil {
		log.L.WithError(err).WithField("id", c.id).Info("no guest power-down; passing the signal to the monitor")
		_ = c.process.Signal(sig)
	}
	select {
	case <-c.exited:
	case <-ctx.Done():
		log.L.WithField("id", c.id).Warnf("guest did not stop within %s; killing the monitor", grace)
		_ = c.killNow(true)
	}
}

// OOM reports OOM kills in the container's cgroup; nil without a cgroup.
func (c *Container) OOM() <-chan struct{} { return c.oom }

// OOMKilled tells whether the kernel's OOM killer ended a process of the
// container; read at exit, it settles the race between the exit and the
// asynchronous OOM notification.
func (c *Container) OOMKilled() bool { return c.cgroup != nil && c.cgroup.OOMKills() > 0 }

// State is a snapshot of the container.
type State struct {
	ID     string
	Bundle string
	Pid    int
	Status Status
	Exit   ExitStatus // valid when Status is StatusStopped
}

// Pids lists the monitor and every helper process it started. Once the
// monitor has exited it still lists the monitor's pid until Delete: the
// task exists, and containerd, reconnecting after a restart, takes an
// empty list for a leaked shim and deletes the task, losing the exit
// status it has not read yet.
func (c *Container) Pids(ctx context.Context) ([]int, error) {
	if c.status() == StatusStopped {
		return []int{c.Pid()}, nil
	}
	return descendants(c.Pid()), nil
}

// Pause freezes the monitor's cgroup.
func (c *Container) Pause(ctx context.Context) error {
	return c.freeze(StatusRunning, StatusPaused, func(cg cgroup) error { return cg.Freeze() })
}

// Resume thaws the monitor's cgroup.
func (c *Container) Resume(ctx context.Context) error {
	return c.freeze(StatusPaused, StatusRunning, func(cg cgroup) error { return cg.Thaw() })
}

func (c *Container) freeze(from, to Status, op func(cgroup) error) error {
	if c.cgroup == nil {
		return fmt.Errorf("container %s has no cgroup to freeze: %w", c.id, errFailedPrecondition)
	}
	return c.transition(from, to, func() error { return op(c.cgroup) })
}

// Metrics returns the cgroup's metrics (*v1.Metrics or *v2.Metrics).
func (c *Container) Metrics(ctx context.Context) (any, error) {
	if c.cgroup == nil {
		return nil, fmt.Errorf("container %s has no cgroup: %w", c.id, errNotFound)
	}
	return c.cgroup.Metrics()
}

// Update applies new resource limits to the cgroup.
func (c *Container) Update(ctx context.Context, res *specs.LinuxResources) error {
	if c.cgroup == nil {
		return fmt.Errorf("container %s has no cgroup: %w", c.id, errFailedPrecondition)
	}
	return c.cgroup.Update(withMonitorDevices(res))
}

// Delete removes everything the container holds on the host and returns
// how it exited. A running container is refused; one that never started is
// stopped first.
func (c *Container) Delete(ctx context.Context) (ExitStatus, error) {
	state, err := c.checkDeletable()
	if err != nil {
		return ExitStatus{}, err
	}
	if state == StatusCreated {
		_ = c.killNow(true)
		select {
		case <-c.exited:
		case <-ctx.Done():
			return ExitStatus{}, ctx.Err()
		}
	}
	if err := c.release(); err != nil {
		return ExitStatus{}, err
	}
	return c.markDeleted(), nil
}

// release undoes what Create did, from the in-memory record. A launcher
// still alive (a Create that failed half way) is killed and reaped first.
func (c *Container) release() error {
	if c.process != nil {
		select {
		case <-c.exited:
		default:
			_ = c.process.Signal(unix.SIGKILL)
			<-c.exited
		}
	}
	if c.control != nil {
		c.control.Close()
	}
	if c.launcherStatusF != nil {
		c.launcherStatusF.Close()
	}
	select {
	case <-c.oomDone:
	default:
		close(c.oomDone)
	}
	st := c.persisted()
	return releaseResources(context.Background(), c.bundle, &st)
}

// releaseResources undoes everything st records, in reverse order of
// creation. Each step is idempotent, so it serves Delete, a failed Create
// and the delete command after a dead shim alike.
func releaseResources(ctx context.Context, bundle string, st *persistedState) error {
	var errs []error
	if st.Runc {
		if err := deletePlain(ctx, st); err != nil {
			errs = append(errs, err)
		}
	}
	for _, t := range st.Taps {
		if err := removeNetwork(t, st.Pid, st.PidStartTime); err != nil {
			errs = append(errs, err)
		}
	}
	if st.PoststopHooks {
		if spec, err := loadSpec(bundle); err == nil && spec.Hooks != nil {
			state := hookState(st.ID, bundle, st.Pid, specs.StateStopped, spec.Annotations)
			if err := runHooks(ctx, "poststop", spec.Hooks.Poststop, state); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if st.ControlSocket != "" {
		if err := os.Remove(st.ControlSocket); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if st.Cgroup != "" {
		if err := deleteCgroup(st.Cgroup); err != nil {
			errs = append(errs, err)
		}
	}
	rootfsDir := st.Rootfs
	if rootfsDir == "" {
		rootfsDir = filepath.Join(bundle, "rootfs")
	}
	if err := rootfs.Unmount(rootfsDir); err != nil {
		errs = append(errs, err)
	}
	if err := os.RemoveAll(filepath.Join(bundle, monitorRootDir)); err != nil {
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		if err := os.Remove(statePath(bundle)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// deleteCgroup removes the cgroup, retrying briefly while the kernel is
// still tearing down the processes of the dead pid namespace.
func deleteCgroup(path string) error {
	var err error
	for i := 0; i < 50; i++ {
		var cg cgroup
		cg, err = loadCgroup(path)
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err == nil {
			if err = cg.Delete(); err == nil {
				return nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("delete cgroup %s: %w", path, err)
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
