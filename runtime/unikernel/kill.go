package unikernel

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/log"
	"golang.org/x/sys/unix"

	"github.com/urunc-dev/containerd-shim-urunc-v2/monitors"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/lifecycle"
)

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
	return c.Do(lifecycle.EventKill, func(from lifecycle.Status) error {
		// With the guest agent, every signal but SIGKILL goes to the
		// app itself; the power button stays for when it is not there.
		if sig != unix.SIGKILL && from.Started() {
			if a := c.agentOf(); a != nil {
				err := a.kill(ctx, sig)
				if err == nil {
					return nil
				}
				log.G(ctx).WithError(err).WithField("signal", sig).Info("signal not passed to the guest agent; the VM takes it")
			}
		}
		// Harmless in every state: a created task's launcher has no guest
		// either, and dying of SIGWINCH would surprise its owner just as
		// much.
		if harmlessSignals[sig] {
			log.G(ctx).WithField("signal", sig).Debug("ignoring harmless signal for a VM")
			return nil
		}
		// A launcher that has not exec'd has no guest to power down.
		if sig == unix.SIGKILL || !from.Started() {
			return c.killNow(all)
		}
		c.stopOnce.Do(func() { go c.gracefulStop(sig) })
		return nil
	})
}

func (c *Container) killNow(all bool) error {
	pid := c.Pid()
	pids := []int{pid}
	if all {
		pids = lifecycle.Descendants(pid)
	}
	if err := c.process.Signal(unix.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill monitor %d: %w", pid, err)
	}
	for _, p := range pids[1:] {
		_ = unix.Kill(p, unix.SIGKILL)
	}
	if c.Status().Frozen() && c.cgroup != nil {
		// A frozen task does not die until thawed.
		_ = c.cgroup.Thaw()
	}
	return nil
}

// powerdownTimeout bounds the power-down request to the monitor.
const powerdownTimeout = 5 * time.Second

// gracefulStop asks the guest to power down; with the host's opt-in
// stop_grace_s it also kills the monitor if it is still there after that
// long.
func (c *Container) gracefulStop(sig syscall.Signal) {
	// The power-down request itself is bounded; the guest's shutdown is
	// not, unless the host enforces a grace period.
	ctx, cancel := context.WithTimeout(context.Background(), powerdownTimeout)
	err := c.powerdown(ctx)
	cancel()
	if err != nil {
		log.L.WithError(err).WithField("id", c.ID()).Info("no guest power-down; passing the signal to the monitor")
		_ = c.process.Signal(sig)
	}
	grace := c.host.StopGrace()
	if grace <= 0 {
		// The caller owns the grace period (CRI's StopContainer timeout,
		// nerdctl stop -t, ctr task kill): it sends SIGKILL itself.
		return
	}
	select {
	case <-c.Exited():
	case <-time.After(grace):
		log.L.WithField("id", c.ID()).Warnf("guest did not stop within %s (stop_grace_s); killing the monitor", grace)
		_ = c.killNow(true)
	}
}

// powerdown asks the monitor, over its control API, to power the guest
// down.
func (c *Container) powerdown(ctx context.Context) error {
	switch c.monitor.Control() {
	case monitors.ControlInheritedFD:
		return c.monitor.Powerdown(ctx, c.Persisted().ControlSocket)
	case monitors.ControlInRoot:
		pid := c.Pid()
		if pid <= 0 {
			return monitors.ErrNoPowerdown
		}
		return powerdownInRoot(ctx, c.monitor, fmt.Sprintf("/proc/%d/root", pid))
	}
	return c.monitor.Powerdown(ctx, "")
}

// powerdownInRoot asks mon for a power-down over the control socket it
// bound in its root, reached only inside that root.
func powerdownInRoot(ctx context.Context, mon monitors.Monitor, root string) error {
	sock, err := openSocketInRoot(root, monitors.ControlSocketInRoot)
	if err != nil {
		return err
	}
	defer sock.Close()
	return mon.Powerdown(ctx, procSelfFD(sock))
}

// openSocketInRoot opens the unix socket at path inside root (O_PATH)
// without following any symlink and without leaving root: the monitor
// owns its root's /tmp, and a symlink it left at path would otherwise
// lead the shim's connect to any socket of the host.
func openSocketInRoot(root, path string) (*os.File, error) {
	dir, err := os.OpenFile(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open the monitor's root %s: %w", root, err)
	}
	defer dir.Close()
	return openSocketAt(dir, path)
}

// openSocketAt is openSocketInRoot in the root open as dir.
func openSocketAt(dir *os.File, path string) (*os.File, error) {
	fd, err := unix.Openat2(int(dir.Fd()), strings.TrimPrefix(path, "/"), &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_CLOEXEC | unix.O_NOFOLLOW,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	})
	if err != nil {
		return nil, fmt.Errorf("socket %s in %s: %w", path, dir.Name(), err)
	}
	f := os.NewFile(uintptr(fd), path)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		f.Close()
		return nil, fmt.Errorf("socket %s in %s: not a socket", path, dir.Name())
	}
	return f, nil
}

// procSelfFD names an O_PATH descriptor of a socket so that connect(2)
// reaches the very socket it holds: the kernel resolves the name to the
// descriptor's inode, without walking any path again.
func procSelfFD(f *os.File) string { return fmt.Sprintf("/proc/self/fd/%d", f.Fd()) }
