// Package bundle creates a bundle's container, a unikernel or, when
// its image names none, a plain one run by runc, and cleans a bundle up
// after its shim died. It is the runtime's entry point: the shim and the
// commands call it, and it calls the unikernel and plain packages.
package bundle

import (
	"context"
	"errors"
	"os"

	"github.com/containerd/log"

	"github.com/urunc-dev/containerd-shim-urunc-v2/rootfs"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/config"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/lifecycle"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/plain"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/unikernel"
)

// Create prepares the container and, for a unikernel, starts its launcher,
// which waits for Start; a container whose image names no unikernel is
// created by runc instead. On error nothing is left behind: no mount,
// process, cgroup or socket.
func Create(ctx context.Context, opts lifecycle.CreateOptions) (_ lifecycle.Task, retErr error) {
	tl := lifecycle.NewTimeline()
	defer func() {
		if retErr == nil {
			log.G(ctx).WithField("steps", tl.String()).Debug("create timeline")
		}
	}()
	spec, err := lifecycle.LoadSpec(opts.Bundle)
	if err != nil {
		return nil, err
	}
	rootfsDir := lifecycle.RootfsDir(opts.Bundle, spec)
	st := lifecycle.PersistedState{ID: opts.ID, Namespace: opts.Namespace}
	if len(opts.Rootfs) > 0 {
		st.Rootfs = rootfsDir
	}
	// Every step records what will undo it before it runs, so that a shim
	// dying anywhere in Create leaves the delete command what to undo.
	if err := lifecycle.WriteState(opts.Bundle, &st); err != nil {
		return nil, err
	}
	if err := rootfs.Mount(opts.Rootfs, rootfsDir); err != nil {
		_ = os.Remove(lifecycle.StatePath(opts.Bundle))
		return nil, err
	}
	lifecycle.CrashPoint("create:mounted")
	tl.Mark("mount")
	// Each path undoes its own part of a failed create; the rootfs mount
	// and the state file are this function's.
	defer func() {
		if retErr != nil {
			if err := rootfs.Unmount(rootfsDir); err != nil {
				log.G(ctx).WithError(err).Warn("undo failed create")
			}
			if err := os.Remove(lifecycle.StatePath(opts.Bundle)); err != nil && !errors.Is(err, os.ErrNotExist) {
				log.G(ctx).WithError(err).Warn("undo failed create")
			}
		}
	}()
	cfg, err := config.ResolveUnikernelConfig(spec.Annotations, rootfsDir)
	if err != nil {
		return nil, err
	}
	if !cfg.IsUnikernel() {
		return plain.Create(ctx, opts, spec, st)
	}
	return unikernel.Create(ctx, tl, opts, spec, cfg, st, rootfsDir)
}
