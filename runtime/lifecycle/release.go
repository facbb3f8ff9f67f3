package lifecycle

import (
	"context"
	"errors"
	"os"
	"path/filepath"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/urunc-dev/containerd-shim-urunc-v2/rootfs"
)

// Release finishes undoing what st records, once the container's own kind
// (runc, or a monitor with its taps and cgroup) has released its part with
// the errors kindErrs: poststop hooks, the rootfs mount, the monitor's
// root directory, then the state file, last, so that a failure leaves the
// record to retry from. Each step is idempotent, so it serves Delete, a
// failed Create and the delete command after a dead shim alike.
func Release(ctx context.Context, tl *Timeline, bundle string, st *PersistedState, kindErrs ...error) error {
	errs := kindErrs
	if st.PoststopHooks {
		if spec, err := LoadSpec(bundle); err == nil && spec.Hooks != nil {
			state := HookState(st.ID, bundle, st.Pid, specs.StateStopped, spec.Annotations)
			errs = append(errs, RunHooks(ctx, "poststop", spec.Hooks.Poststop, state))
		}
	}
	rootfsDir := st.Rootfs
	if rootfsDir == "" {
		rootfsDir = filepath.Join(bundle, "rootfs")
	}
	errs = append(errs, rootfs.Unmount(rootfsDir))
	tl.Mark("unmount")
	if err := os.RemoveAll(filepath.Join(bundle, MonitorRootDir)); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if err := os.Remove(StatePath(bundle)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}
