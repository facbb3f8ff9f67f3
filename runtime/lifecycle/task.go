// Package lifecycle is what the unikernel container and the plain runc
// container share: the Task interface callers drive, the state machine every
// process's life goes through (a container's init and an exec alike: its
// transition table, the exit recorded once, Wait, delete once), the state
// persisted in the bundle that cleanup after a dead shim works from, and
// the host chores both do (OCI hooks, commands run through the reaper,
// process identity). It knows nothing of containerd's task API.
package lifecycle

import (
	"context"
	"os"
	"syscall"

	"github.com/containerd/console"
	"github.com/containerd/containerd/v2/core/mount"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/config"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/guestconsole"
)

// Task is what a caller drives: a unikernel container or a plain OCI
// container run by runc (a pod's pause container, a sidecar).
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
	NewExec(id string, spec *specs.Process) (Process, error)
}

// Process is an extra process run in a container (an exec).
type Process interface {
	ID() string
	Pid() int
	Start(ctx context.Context, stdio Stdio) error
	// Console is the pty master of a terminal process; nil otherwise.
	Console() console.Console
	Exited() <-chan struct{}
	State() State
	Wait(ctx context.Context) (ExitStatus, error)
	Kill(ctx context.Context, sig syscall.Signal) error
	Delete(ctx context.Context) (ExitStatus, error)
}

// Status of a container.
type Status string

const (
	StatusCreated Status = "created"
	StatusRunning Status = "running"
	StatusPaused  Status = "paused"
	StatusStopped Status = "stopped"
)

// State is a snapshot of the container.
type State struct {
	ID     string
	Bundle string
	Pid    int
	Status Status
	Exit   ExitStatus // valid when Status is StatusStopped
}

// Stdio are the files the container's init gets as fd 0, 1 and 2. Create
// hands duplicates to it; the caller keeps and closes its own.
type Stdio struct {
	Stdin, Stdout, Stderr *os.File
}

// CreateOptions describe a container to create.
type CreateOptions struct {
	// Console, when set, receives a copy of the guest's console and is
	// closed by the caller when it ends: a guest that reports its exit
	// there gets that status as the container's.
	Console   *guestconsole.Tap
	ID        string
	Namespace string
	Bundle    string
	Rootfs    []mount.Mount
	Stdio     Stdio
	Host      config.HostConfig
	// Launcher is the binary re-executed as the launcher; it must call
	// launch.Main when its first argument is the launcher's argument.
	// Defaults to urunc-launcher beside this binary, else this binary.
	Launcher string
}
