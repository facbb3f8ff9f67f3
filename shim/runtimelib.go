package shim

import (
	"context"

	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/bundle"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/config"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/lifecycle"
)

// runtimeLibrary is what the task service asks of the runtime library:
// the host's configuration and a new task. It is the shim's own narrow
// view, so that the task service's unit tests drive it with a fake runtime
// instead of monitors and VMs.
type runtimeLibrary interface {
	// LoadHostConfig reads the host's configuration for a Create.
	LoadHostConfig() (config.HostConfig, error)
	// Create creates a task (a unikernel container or a plain one, as
	// the bundle says) and returns it created, not started.
	Create(ctx context.Context, opts lifecycle.CreateOptions) (lifecycle.Task, error)
}

// bundleLibrary is the real runtime library: the host config file and
// runtime/bundle, which picks the container kind from the bundle.
type bundleLibrary struct{}

func (bundleLibrary) LoadHostConfig() (config.HostConfig, error) { return config.LoadHostConfig() }

func (bundleLibrary) Create(ctx context.Context, opts lifecycle.CreateOptions) (lifecycle.Task, error) {
	return bundle.Create(ctx, opts)
}
