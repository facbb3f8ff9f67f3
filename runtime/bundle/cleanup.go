package bundle

import (
	"context"
	"fmt"
	"time"

	"golang.org/x/sys/unix"

	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/cgroup"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/lifecycle"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/plain"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/unikernel"
)

// Cleanup undoes a container from the state its shim persisted in the
// bundle, for containerd's delete command after the shim died: it kills a
// monitor that still runs (only if its start time proves it is the same
// process), then removes mounts, cgroup and sockets. It is idempotent: a
// bundle with no state is only checked for a leftover rootfs mount.
func Cleanup(ctx context.Context, bundle string) (lifecycle.ExitStatus, error) {
	st, err := lifecycle.ReadState(bundle)
	if err != nil {
		return lifecycle.ExitStatus{}, err
	}
	res := lifecycle.ExitStatus{Status: 128 + int(unix.SIGKILL), At: time.Now()}
	if st == nil {
		return res, release(ctx, bundle, &lifecycle.PersistedState{})
	}
	res.Pid = st.Pid
	if st.Exit != nil {
		res = *st.Exit
	} else if lifecycle.SameProcess(st.Pid, st.PidStartTime) {
		if err := unix.Kill(st.Pid, unix.SIGKILL); err != nil && err != unix.ESRCH {
			return res, fmt.Errorf("kill monitor %d: %w", st.Pid, err)
		}
		// A paused container's monitor is frozen (cgroup v1 freezer) and
		// does not die of SIGKILL until thawed.
		if st.Cgroup != "" {
			if cg, err := cgroup.Load(st.Cgroup); err == nil {
				_ = cg.Thaw()
			}
		}
		waitGone(ctx, st.Pid, st.PidStartTime)
	}
	return res, release(ctx, bundle, st)
}

// release undoes a container of either kind from its persisted state,
// which says whether runc or a monitor ran.
func release(ctx context.Context, bundle string, st *lifecycle.PersistedState) error {
	if st.Runc {
		return plain.Release(ctx, bundle, st)
	}
	return unikernel.Release(ctx, nil, bundle, st)
}

// waitGone polls until pid is no longer the process that had startTime: it
// is not our child, so there is nothing to wait4 on.
func waitGone(ctx context.Context, pid int, startTime uint64) {
	deadline := time.Now().Add(2 * time.Second)
	for lifecycle.SameProcess(pid, startTime) && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
}
