// Package runtime runs unikernel containers: it prepares the rootfs, starts
// the monitor in the container's namespaces and cgroup, tracks its exit and
// undoes everything on delete. It knows nothing of containerd's task API;
// any Go program that runs containerd's reaper (pkg/sys/reaper) as its
// SIGCHLD handler can use it.
package runtime

import (
	"context"
	"fmt"
	"os"
	"sync"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/urunc-dev/containerd-shim-urunc-v2/monitors"
	"golang.org/x/sys/unix"
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
	// Console, when set, receives a copy of the guest's console and is
	// closed by the caller when it ends: a guest that reports its exit
	// there gets that status as the container's.
	Console   *ConsoleTap
	ID        string
	Namespace string
	Bundle    string
	Rootfs    []mount.Mount
	Stdio     Stdio
	Host      HostConfig
	// Launcher is the binary re-executed as the launcher; it must call
	// launch.Main when its first argument is LauncherArg. Defaults to
	// urunc-launcher beside this binary, else this binary.
	Launcher string
}

// Container is one unikernel container.
type Container struct {
	lifecycle
	monitor monitors.Monitor
	host    HostConfig
	process *os.Process
	cgroup  cgroup // nil when the spec names no cgroup
	// diskDevices are the block devices the guest boots from, which
	// every cgroup update must keep allowing.
	diskDevices []specs.LinuxDeviceCgroup

	launcher *launcherConn // nil once Create failed before the launcher

	// poststart hooks and the annotations they see, kept from Create's
	// spec so that Start does not read config.json again.
	poststart   []specs.Hook
	annotations map[string]string

	stopOnce sync.Once
	oom      <-chan struct{}
	oomDone  chan struct{}
}

// isTerminal tells whether f is a terminal.
func isTerminal(f *os.File) bool {
	if f == nil {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
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
	return c.cgroup.Update(withMonitorDevices(res, c.diskDevices))
}

// Start lets the launcher exec the monitor. It returns once the monitor
// runs, or with the launcher's error if the exec failed.
func (c *Container) Start(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != StatusCreated {
		return fmt.Errorf("container %s is %s, not created: %w", c.id, c.state, errFailedPrecondition)
	}
	if err := c.launcher.start(); err != nil {
		return fmt.Errorf("start monitor %s: %w", c.monitor.Name(), err)
	}
	crashPoint("start")
	c.state = StatusRunning
	st := hookState(c.id, c.bundle, c.persist.Pid, specs.StateRunning, c.annotations) // c.mu is held
	if err := runHooks(ctx, "poststart", c.poststart, st); err != nil {
		log.G(ctx).WithError(err).Warn("poststart hook failed")
	}
	return nil
}

// NewExec is refused: a unikernel container is one application inside a
// VM, with no host process to join.
func (c *Container) NewExec(id string, spec *specs.Process) (*Exec, error) {
	return nil, fmt.Errorf("exec into a unikernel is not supported: the container is one application inside a VM, with no host process to join: %w", errNotImplemented)
}
