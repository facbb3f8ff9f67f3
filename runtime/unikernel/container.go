// Package unikernel runs unikernel containers: it plans the boot (monitor,
// guest type, rootfs mode, confinement), prepares the rootfs, starts the
// monitor in the container's namespaces and cgroup through the launcher,
// tracks its exit and undoes everything on delete. It knows nothing of
// containerd's task API; any Go program that runs containerd's reaper
// (pkg/sys/reaper) as its SIGCHLD handler can use it.
package unikernel

import (
	"context"
	"fmt"
	"os"
	"sync"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/urunc-dev/containerd-shim-urunc-v2/monitors"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/cgroup"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/config"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/lifecycle"
)

// Container is one unikernel container.
type Container struct {
	lifecycle.Init
	monitor monitors.Monitor
	host    config.HostConfig
	process *os.Process
	cgroup  cgroup.Cgroup // nil when the spec names no cgroup
	// diskDevices are the block devices the guest boots from, which
	// every cgroup update must keep allowing.
	diskDevices []specs.LinuxDeviceCgroup
	// size is the VM's as booted: the guest's RAM cannot change, and
	// every cgroup update keeps the monitor's overhead on top of it.
	size vmSize

	launcher *launcherConn // nil once Create failed before the launcher
	// agent is the guest agent's channel, nil for a guest without it;
	// agentTransport is the kind of that channel.
	agent          *agentLink
	agentTransport monitors.AgentTransport
	agentMu        sync.Mutex

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

// Pids lists the monitor and every helper process it started. Once the
// monitor has exited it still lists the monitor's pid until Delete: the
// task exists, and containerd, reconnecting after a restart, takes an
// empty list for a leaked shim and deletes the task, losing the exit
// status it has not read yet.
func (c *Container) Pids(ctx context.Context) ([]int, error) {
	if c.HasExited() {
		return []int{c.Pid()}, nil
	}
	return lifecycle.Descendants(c.Pid()), nil
}

// Pause freezes the monitor's cgroup.
func (c *Container) Pause(ctx context.Context) error {
	return c.freeze(lifecycle.EventPause, func(cg cgroup.Cgroup) error { return cg.Freeze() })
}

// Resume thaws the monitor's cgroup.
func (c *Container) Resume(ctx context.Context) error {
	return c.freeze(lifecycle.EventResume, func(cg cgroup.Cgroup) error { return cg.Thaw() })
}

func (c *Container) freeze(ev lifecycle.Event, op func(cgroup.Cgroup) error) error {
	if c.cgroup == nil {
		return fmt.Errorf("container %s has no cgroup to freeze: %w", c.ID(), errdefs.ErrFailedPrecondition)
	}
	return c.Do(ev, func(lifecycle.Status) error { return op(c.cgroup) })
}

// Metrics returns the cgroup's metrics (*v1.Metrics or *v2.Metrics).
func (c *Container) Metrics(ctx context.Context) (any, error) {
	if c.cgroup == nil {
		return nil, fmt.Errorf("container %s has no cgroup: %w", c.ID(), errdefs.ErrNotFound)
	}
	return c.cgroup.Metrics()
}

// Update applies new resource limits to the cgroup, the monitor's memory
// overhead kept on top of the memory limit. A new memory limit is refused
// (vmSize.updateResources): the guest's RAM was fixed at boot.
func (c *Container) Update(ctx context.Context, res *specs.LinuxResources) error {
	if c.cgroup == nil {
		return fmt.Errorf("container %s has no cgroup: %w", c.ID(), errdefs.ErrFailedPrecondition)
	}
	res, err := c.size.updateResources(res)
	if err != nil {
		return fmt.Errorf("update container %s: %w", c.ID(), err)
	}
	return c.cgroup.Update(cgroup.WithMonitorDevices(res, c.diskDevices))
}

// Start lets the launcher exec the monitor. It returns once the monitor
// runs, or with the launcher's error if the exec failed.
func (c *Container) Start(ctx context.Context) error {
	err := c.Do(lifecycle.EventStart, func(lifecycle.Status) error {
		if err := c.launcher.start(); err != nil {
			return fmt.Errorf("start monitor %s: %w", c.monitor.Name(), err)
		}
		if ch, err := c.agentChannel(); err != nil {
			log.G(ctx).WithError(err).Warn("guest agent: no channel; the exit status comes from the console and SIGTERM presses the power button")
		} else if ch != nil {
			c.setAgent(startAgentLink(c.ID(), ch, c.Exited()))
		}
		lifecycle.CrashPoint("start")
		return nil
	})
	if err != nil {
		return err
	}
	st := lifecycle.HookState(c.ID(), c.Bundle(), c.Pid(), specs.StateRunning, c.annotations)
	if err := lifecycle.RunHooks(ctx, "poststart", c.poststart, st); err != nil {
		log.G(ctx).WithError(err).Warn("poststart hook failed")
	}
	return nil
}
