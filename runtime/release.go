package runtime

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/urunc-dev/containerd-shim-urunc-v2/rootfs"
	"golang.org/x/sys/unix"
)

// Delete removes everything the container holds on the host and returns
// how it exited. A running container is refused; one that never started is
// stopped first.
func (c *Container) Delete(ctx context.Context) (ExitStatus, error) {
	state, err := c.beginDelete()
	if err != nil {
		return ExitStatus{}, err
	}
	if state == StatusCreated {
		_ = c.killNow(true)
		select {
		case <-c.exited:
		case <-ctx.Done():
			c.endDelete(false)
			return ExitStatus{}, ctx.Err()
		}
	}
	crashPoint("delete")
	tl := newTimeline()
	if err := c.release(tl); err != nil {
		c.endDelete(false)
		return ExitStatus{}, err
	}
	log.G(ctx).WithField("steps", tl.String()).Debug("delete timeline")
	return c.endDelete(true), nil
}

// release undoes what Create did, from the in-memory record. A launcher
// still alive (a Create that failed half way) is killed and reaped first.
// tl, when not nil, records the time of each step.
func (c *Container) release(tl *timeline) error {
	if c.process != nil {
		select {
		case <-c.exited:
		default:
			_ = c.process.Signal(unix.SIGKILL)
			<-c.exited
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
	st := c.persisted()
	return releaseResources(context.Background(), tl, c.bundle, &st)
}

// releaseResources undoes everything st records, in reverse order of
// creation. Each step is idempotent, so it serves Delete, a failed Create
// and the delete command after a dead shim alike; it works from the
// persisted state alone, which says whether runc or a monitor ran.
func releaseResources(ctx context.Context, tl *timeline, bundle string, st *persistedState) error {
	var errs []error
	if st.Runc {
		errs = append(errs, deletePlain(ctx, st))
	} else {
		errs = append(errs, releaseUnikernel(tl, st)...)
	}
	if st.PoststopHooks {
		if spec, err := loadSpec(bundle); err == nil && spec.Hooks != nil {
			state := hookState(st.ID, bundle, st.Pid, specs.StateStopped, spec.Annotations)
			errs = append(errs, runHooks(ctx, "poststop", spec.Hooks.Poststop, state))
		}
	}
	rootfsDir := st.Rootfs
	if rootfsDir == "" {
		rootfsDir = filepath.Join(bundle, "rootfs")
	}
	errs = append(errs, rootfs.Unmount(rootfsDir))
	tl.mark("unmount")
	if err := os.RemoveAll(filepath.Join(bundle, monitorRootDir)); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if err := os.Remove(statePath(bundle)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// releaseUnikernel undoes what only a unikernel container holds on the
// host: its taps, the monitor's control socket, its cgroup and what its
// rootfs mode took.
func releaseUnikernel(tl *timeline, st *persistedState) []error {
	var errs []error
	for _, t := range st.Taps {
		errs = append(errs, removeNetwork(t, st.Pid, st.PidStartTime))
	}
	if st.ControlSocket != "" {
		if err := os.Remove(st.ControlSocket); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	tl.mark("network")
	if st.Cgroup != "" {
		errs = append(errs, deleteCgroup(st.Cgroup))
	}
	tl.mark("cgroup")
	errs = append(errs, st.RootfsUndo.Release())
	tl.mark("rootfs")
	return errs
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
