package unikernel

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/containerd/log"
	"golang.org/x/sys/unix"

	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/cgroup"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/lifecycle"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/network"
)

// Delete removes everything the container holds on the host and returns
// how it exited. A running container is refused; one that never started is
// stopped first.
func (c *Container) Delete(ctx context.Context) (lifecycle.ExitStatus, error) {
	return c.DeleteOnce(func(from lifecycle.Status) error {
		if !from.Started() {
			_ = c.killNow(true)
			select {
			case <-c.Exited():
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		lifecycle.CrashPoint("delete")
		tl := lifecycle.NewTimeline()
		if err := c.release(tl); err != nil {
			return err
		}
		log.G(ctx).WithField("steps", tl.String()).Debug("delete timeline")
		return nil
	})
}

// release undoes what Create did, from the in-memory record. A launcher
// still alive (a Create that failed half way) is killed and reaped first.
// tl, when not nil, records the time of each step.
func (c *Container) release(tl *lifecycle.Timeline) error {
	if c.process != nil {
		select {
		case <-c.Exited():
		default:
			_ = c.process.Signal(unix.SIGKILL)
			<-c.Exited()
		}
	}
	if c.launcher != nil {
		c.launcher.close()
	}
	select {
	case <-c.oomDone:
	default:
		close(c.oomDone)
	}
	st := c.Persisted()
	return Release(context.Background(), tl, c.Bundle(), &st)
}

// Release undoes a unikernel container from its persisted state alone:
// its own part, then what every container holds (lifecycle.Release). tl, when
// not nil, records the time of each step.
func Release(ctx context.Context, tl *lifecycle.Timeline, bundle string, st *lifecycle.PersistedState) error {
	return lifecycle.Release(ctx, tl, bundle, st, releaseUnikernel(tl, st)...)
}

// releaseUnikernel undoes what only a unikernel container holds on the
// host: its taps, the monitor's control socket, its cgroup and what its
// rootfs mode took.
func releaseUnikernel(tl *lifecycle.Timeline, st *lifecycle.PersistedState) []error {
	var errs []error
	for _, t := range st.Taps {
		errs = append(errs, network.Remove(t, st.Pid, st.PidStartTime))
	}
	for _, sock := range []string{st.ControlSocket, st.AgentSocket} {
		if sock == "" {
			continue
		}
		if err := os.Remove(sock); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	tl.Mark("network")
	if st.Cgroup != "" {
		errs = append(errs, cgroup.Delete(st.Cgroup))
	}
	tl.Mark("cgroup")
	// A device goes back to the host only once the guest lets go of it:
	// mounted under a monitor still writing it raw, it would be corrupted.
	if st.Exit == nil && lifecycle.SameProcess(st.Pid, st.PidStartTime) && len(st.RootfsUndo.HostMounts) > 0 {
		errs = append(errs, fmt.Errorf("monitor %d still runs: its disks are not mounted back on the host", st.Pid))
	} else {
		errs = append(errs, st.RootfsUndo.Release())
	}
	tl.Mark("rootfs")
	return errs
}
