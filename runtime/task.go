package runtime

import (
	"context"
	"syscall"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Task is what a caller drives: a unikernel container (*Container) or a
// plain OCI container run by runc (a pod's pause container, a sidecar).
type Task interface {
	ID() string
	Pid() int
	Bundle() string
	Start(ctx context.Context) error
	Kill(ctx context.Context, sig syscall.Signal, all bool) error
	Delete(ctx context.Context) (ExitStatus, error)
	State() State
	Pids(ctx context.Context) ([]int, error)
	Wait(ctx context.Context) (ExitStatus, error)
	Exited() <-chan struct{}
	OOM() <-chan struct{}
	OOMKilled() bool
	Pause(ctx context.Context) error
	Resume(ctx context.Context) error
	Metrics(ctx context.Context) (any, error)
	Update(ctx context.Context, res *specs.LinuxResources) error
	// NewExec prepares an extra process in the running container.
	NewExec(id string, spec *specs.Process) (*Exec, error)
}

var (
	_ Task = (*Container)(nil)
	_ Task = (*PlainContainer)(nil)
)
