package shim

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"syscall"

	bootapi "github.com/containerd/containerd/api/runtime/bootstrap/v1"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/v2/defaults"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/shim"

	"github.com/urunc-dev/containerd-shim-urunc-v2/inventory"
	urunc "github.com/urunc-dev/containerd-shim-urunc-v2/runtime"
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

// Manager implements containerd's shim manager: the start, delete and
// -info entry points of the binary.
type Manager struct{}

// NewManager returns the shim manager.
func NewManager() shim.Shim { return Manager{} }

// Name is the runtime name.
func (Manager) Name() string { return RuntimeName }

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
	address, err := shim.CreateSocketAddress(ctx, socketDir, params.GetContainerdGrpcAddress(), group, false)
	if err != nil {
		return nil, err
	}
	// The bootstrap version says which task API this shim serves: v2,
	// which containerd 1.7 and 2.x both speak.
	result := &bootapi.BootstrapResult{Version: 2, Protocol: "ttrpc", Address: address}
	socket, err := shim.NewSocket(address)
	if err != nil {
		if !shim.SocketEaddrinuse(err) {
			return nil, fmt.Errorf("create shim socket: %w", err)
		}
		if shim.CanConnect(address) {
			// A shim for this group already serves: reuse it.
			return result, nil
		}
		// A stale socket of a dead shim.
		if err := shim.RemoveSocket(address); err != nil {
			return nil, fmt.Errorf("remove stale socket: %w", err)
		}
		if socket, err = shim.NewSocket(address); err != nil {
			return nil, fmt.Errorf("create shim socket: %w", err)
		}
	}
	defer func() {
		if retErr != nil {
			socket.Close()
			_ = shim.RemoveSocket(address)
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
	cmd.Env = append(os.Environ(), "GOMAXPROCS=2")
	cmd.ExtraFiles = []*os.File{f}
	// Its own process group, so a signal to containerd's group does not
	// reach the shim (and through it the VMs).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	goruntime.LockOSThread()
	err = cmd.Start()
	goruntime.UnlockOSThread()
	if err != nil {
		return nil, fmt.Errorf("start shim daemon: %w", err)
	}
	// The daemon outlives this process; reap it if it dies early.
	go cmd.Wait()
	if err := shim.AdjustOOMScore(cmd.Process.Pid); err != nil {
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
func (Manager) Stop(ctx context.Context, id string) (shim.StopStatus, error) {
	cwd, err := os.Getwd()
	if err != nil {
		return shim.StopStatus{}, err
	}
	bundle := filepath.Join(filepath.Dir(cwd), id)
	exit, err := urunc.Cleanup(ctx, bundle)
	// A shim killed outright leaves its socket file behind; remove it
	// unless a live shim (of the same group) still answers on it.
	if addr := inventory.ShimAddress(bundle); addr != "" && !shim.CanConnect(addr) {
		_ = shim.RemoveSocket(addr)
	}
	if err != nil {
		// Reported, not swallowed: containerd must not drop a bundle
		// whose state still says what is left to undo.
		return shim.StopStatus{}, fmt.Errorf("cleanup after dead shim: %w", err)
	}
	return shim.StopStatus{Pid: exit.Pid, ExitStatus: exit.Status, ExitedAt: exit.At}, nil
}

// Info reports the runtime's name and version.
func (m Manager) Info(ctx context.Context, optionsR io.Reader) (*types.RuntimeInfo, error) {
	return &types.RuntimeInfo{
		Name:    m.Name(),
		Version: &types.RuntimeVersion{Version: Version},
	}, nil
}
