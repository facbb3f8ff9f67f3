package shim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"time"

	bootapi "github.com/containerd/containerd/api/runtime/bootstrap/v1"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/v2/defaults"
	"github.com/containerd/containerd/v2/pkg/namespaces"

	"github.com/urunc-dev/containerd-shim-urunc-v2/inventory"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/bundle"
)

// RuntimeName is the name containerd knows this shim by.
const RuntimeName = "io.containerd.urunc.v2"

// Version is set at build time.
var Version = "dev"

// groupAnnotations put containers into one shim process; the first present
// wins. The CRI sandbox ID makes one shim serve a whole pod.
var groupAnnotations = []string{
	"io.containerd.urunc.v2.group",
	"io.kubernetes.cri.sandbox-id",
}

// Manager is what the binary's start, delete and -info actions do.
type Manager struct{}

// StopStatus is what the delete action reports of a container whose shim
// is gone.
type StopStatus struct {
	Pid        int
	ExitStatus int
	ExitedAt   time.Time
}

// Start launches the shim daemon for the container (or joins the daemon
// already serving its group) and returns the address to dial. Nothing but
// the bootstrap result may reach stdout.
func (Manager) Start(ctx context.Context, params *bootapi.BootstrapParams) (_ *bootapi.BootstrapResult, retErr error) {
	id := params.GetInstanceID()
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	group, err := groupOf(id)
	if err != nil {
		return nil, err
	}
	socketDir := params.GetSocketDir()
	if socketDir == "" {
		socketDir = filepath.Join(defaults.DefaultStateDir, "s")
	}
	address := socketAddress(socketDir, params.GetContainerdGrpcAddress(), ns, group)
	// The bootstrap version says which task API this shim serves: v2,
	// which containerd 1.7 and 2.x both speak.
	result := &bootapi.BootstrapResult{Version: 2, Protocol: "ttrpc", Address: address}
	socket, err := newSocket(address)
	if err != nil {
		if !errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("create shim socket: %w", err)
		}
		if inventory.Answers(address) {
			// A shim for this group already serves: reuse it.
			return result, nil
		}
		// A stale socket of a dead shim.
		if err := removeSocket(address); err != nil {
			return nil, fmt.Errorf("remove stale socket: %w", err)
		}
		if socket, err = newSocket(address); err != nil {
			return nil, fmt.Errorf("create shim socket: %w", err)
		}
	}
	defer func() {
		if retErr != nil {
			socket.Close()
			_ = removeSocket(address)
		}
	}()
	f, err := socket.File()
	if err != nil {
		return nil, err
	}
	defer f.Close()

	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cwd, err := os.Getwd()
	if err != nil {
		return nil, err
	}
	args := []string{"-namespace", ns, "-id", id, "-address", params.GetContainerdGrpcAddress()}
	if params.GetLogLevel() <= bootapi.LogLevel_LOG_LEVEL_DEBUG {
		args = append(args, "-debug")
	}
	cmd := exec.Command(self, args...)
	cmd.Dir = cwd
	cmd.Env = append(os.Environ(), spawnedAtEnv+"="+strconv.FormatInt(time.Now().UnixNano(), 10))
	cmd.ExtraFiles = []*os.File{f}
	// Its own process group, so a signal to containerd's group does not
	// reach the shim (and through it the VMs).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	runtime.LockOSThread()
	err = cmd.Start()
	runtime.UnlockOSThread()
	if err != nil {
		return nil, fmt.Errorf("start shim daemon: %w", err)
	}
	// The daemon outlives this process; reap it if it dies early.
	go cmd.Wait()
	if err := adjustOOMScore(cmd.Process.Pid); err != nil {
		_ = cmd.Process.Kill()
		return nil, fmt.Errorf("adjust shim OOM score: %w", err)
	}
	return result, nil
}

// groupOf returns the shim group of the container in the current bundle.
func groupOf(id string) (string, error) {
	data, err := os.ReadFile("config.json")
	if err != nil {
		return "", fmt.Errorf("read OCI spec: %w", err)
	}
	var spec struct {
		Annotations map[string]string `json:"annotations"`
	}
	if err := json.Unmarshal(data, &spec); err != nil {
		return "", fmt.Errorf("parse OCI spec: %w", err)
	}
	for _, a := range groupAnnotations {
		if g := spec.Annotations[a]; g != "" {
			return g, nil
		}
	}
	return id, nil
}

// Stop is the delete command containerd runs after a shim went away (crashed
// or killed): it cleans up from the state persisted in the bundle, kills a
// monitor still running, and reports 137 unless a real exit was recorded.
func (Manager) Stop(ctx context.Context, id string) (StopStatus, error) {
	cwd, err := os.Getwd()
	if err != nil {
		return StopStatus{}, err
	}
	dir := filepath.Join(filepath.Dir(cwd), id)
	exit, err := bundle.Cleanup(ctx, dir)
	// A shim killed outright leaves its socket file behind; remove it
	// unless a live shim (of the same group) still answers on it.
	if addr := inventory.ShimAddress(dir); addr != "" && !inventory.Answers(addr) {
		_ = removeSocket(addr)
	}
	if err != nil {
		// Reported, not swallowed: containerd must not drop a bundle
		// whose state still says what is left to undo.
		return StopStatus{}, fmt.Errorf("cleanup after dead shim: %w", err)
	}
	return StopStatus{Pid: exit.Pid, ExitStatus: exit.Status, ExitedAt: exit.At}, nil
}

// Info reports the runtime's name and version (the -info action; the
// runtime options containerd sends on stdin change nothing).
func (Manager) Info() *types.RuntimeInfo {
	return &types.RuntimeInfo{
		Name:    RuntimeName,
		Version: &types.RuntimeVersion{Version: Version},
	}
}
