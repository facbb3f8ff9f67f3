package unikernel

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/go-runc"
	"github.com/containerd/ttrpc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/urunc-dev/containerd-shim-urunc-v2/monitors"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/config"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/guestagent"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/guestagent/agentapi"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/guests"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/lifecycle"
)

// The agent's archive is made only where the host turns it on, for a
// Linux guest under a monitor with the channel and an app other than
// urunit; it carries the spec's process and hostname, and a missing
// agent binary is named.
func TestGuestAgentFiles(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "urunc-agent")
	if err := os.WriteFile(bin, []byte("agent"), 0o755); err != nil {
		t.Fatal(err)
	}
	on := config.HostConfig{Guests: config.GuestsConfig{Linux: config.LinuxGuestConfig{Agent: true, AgentPath: bin}}}
	linux, _ := guests.For("linux")
	unikraft, _ := guests.For("unikraft")
	qemu, _ := monitors.New("qemu", monitors.Config{Path: "/bin/true"})
	hvt, _ := monitors.New("hvt", monitors.Config{Path: "/bin/true"})
	spec := &specs.Spec{Process: &specs.Process{Env: []string{"lower_case=has spaces"}, Cwd: "/srv",
		User: specs.User{UID: 1000, GID: 1001, AdditionalGids: []uint32{5}}}}
	files, err := guestAgentFiles(on, linux, qemu, spec, []string{"/app", "x"}, "h1")
	if err != nil || len(files) != 2 {
		t.Fatalf("agent on: %v, %v", files, err)
	}
	if files[0].Name != ".urunc/agent" || files[0].Source != bin || files[0].Mode != 0o755 || files[1].Name != ".urunc/app.binpb" || files[1].Mode != 0o600 {
		t.Fatalf("files: %+v", files)
	}
	for _, name := range []string{"firecracker", "clh"} {
		mon, _ := monitors.New(name, monitors.Config{Path: "/bin/true"})
		if files, err := guestAgentFiles(on, linux, mon, spec, []string{"/app"}, ""); err != nil || len(files) != 2 {
			t.Errorf("agent under %s (hybrid vsock): %v, %v", name, files, err)
		}
	}
	cfg, err := guestagent.ParseConfig(files[1].Data)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(cfg.Args, " ") != "/app x" || cfg.Env[0] != "lower_case=has spaces" || cfg.Cwd != "/srv" || cfg.UID != 1000 || cfg.GID != 1001 || cfg.AdditionalGids[0] != 5 || cfg.Hostname != "h1" {
		t.Fatalf("config: %+v", cfg)
	}
	for name, tc := range map[string]struct {
		host config.HostConfig
		g    guests.Guest
		mon  monitors.Monitor
		args []string
	}{
		"off by default":       {config.HostConfig{}, linux, qemu, []string{"/app"}},
		"not a linux guest":    {on, unikraft, qemu, []string{"/app"}},
		"no channel":           {on, linux, hvt, []string{"/app"}},
		"urunit stays as init": {on, linux, qemu, []string{"/urunit"}},
	} {
		if files, err := guestAgentFiles(tc.host, tc.g, tc.mon, spec, tc.args, ""); err != nil || files != nil {
			t.Errorf("%s: %v, %v; want no agent", name, files, err)
		}
	}
	missing := on
	missing.Guests.Linux.AgentPath = filepath.Join(t.TempDir(), "nothing")
	if _, err := guestAgentFiles(missing, linux, qemu, spec, []string{"/app"}, ""); err == nil || !strings.Contains(err.Error(), missing.Guests.Linux.AgentPath) {
		t.Fatalf("missing agent: %v", err)
	}
}

// testAgent is a guest agent's app; execs are testExecAgent's.
type testAgent struct {
	agentapi.AgentService
	exited chan struct{}
	killed chan uint32
	shut   chan struct{}
}

func (a *testAgent) State(context.Context, *emptypb.Empty) (*agentapi.StateResponse, error) {
	return &agentapi.StateResponse{Pid: 1}, nil
}
func (a *testAgent) Wait(ctx context.Context, _ *agentapi.ProcessRef) (*agentapi.WaitResponse, error) {
	select {
	case <-a.exited:
		return &agentapi.WaitResponse{Status: 7}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
func (a *testAgent) Kill(_ context.Context, r *agentapi.KillRequest) (*emptypb.Empty, error) {
	a.killed <- r.GetSignal()
	return &emptypb.Empty{}, nil
}
func (a *testAgent) Shutdown(context.Context, *emptypb.Empty) (*emptypb.Empty, error) {
	close(a.shut)
	return &emptypb.Empty{}, nil
}

// serveTestAgent serves svc on a unix socket, as the monitor's channel
// would be, for the rest of the test, and returns the socket's path.
func serveTestAgent(t *testing.T, svc agentapi.AgentService) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ttrpc.NewServer()
	if err != nil {
		t.Fatal(err)
	}
	agentapi.RegisterAgentService(srv, svc)
	go func() { _ = srv.Serve(context.Background(), ln) }()
	t.Cleanup(func() { srv.Close() })
	return sock
}

// The shim's end of the channel: once the agent answers, signals go to
// it; the app's status is taken before the guest is let power off.
func TestAgentLink(t *testing.T) {
	a := &testAgent{exited: make(chan struct{}), killed: make(chan uint32, 1), shut: make(chan struct{})}
	sock := serveTestAgent(t, a)

	vmExited := make(chan struct{})
	l := startAgentLink("c1", serialChannel(sock), vmExited)
	deadline := time.Now().Add(10 * time.Second)
	for l.kill(context.Background(), unix.SIGTERM) != nil {
		if time.Now().After(deadline) {
			t.Fatal("the link never reached the agent")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if sig := <-a.killed; sig != uint32(unix.SIGTERM) {
		t.Fatalf("agent got signal %d", sig)
	}
	if _, ok := l.exitStatus(); ok {
		t.Fatal("an exit status before the app ended")
	}
	close(a.exited)
	<-a.shut
	if status, ok := l.exitStatus(); !ok || status != 7 {
		t.Fatalf("exit status %d, %v; want 7", status, ok)
	}
	close(vmExited)
}

// An agent that never answers (a kernel without the virtio console) holds
// nothing: signals are refused at once for the VM to take, and the link
// lets go when the monitor ends.
func TestAgentLinkSilentAgent(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	vmExited := make(chan struct{})
	l := startAgentLink("c1", serialChannel(sock), vmExited)
	start := time.Now()
	if err := l.kill(context.Background(), unix.SIGTERM); err != errNoAgent {
		t.Fatalf("kill through a silent agent: %v", err)
	}
	if d := time.Since(start); d > agentKillWait+time.Second {
		t.Fatalf("kill waited %s for a silent agent", d)
	}
	close(vmExited)
	<-l.settled
	if _, ok := l.exitStatus(); ok {
		t.Fatal("an exit status from a silent agent")
	}
}

// The agent's report replaces only a clean exit of the monitor (the guest
// powered off), as the console's line does: a monitor killed (SIGKILL
// after the grace period, the OOM killer) or failing keeps its status,
// whatever the guest said before; and a status no process can have is
// not taken from a guest that makes one up.
func TestAgentExitOnlyForACleanMonitorExit(t *testing.T) {
	linux, _ := guests.For("linux")
	for name, tc := range map[string]struct {
		monitor, reported, want int
	}{
		"clean exit takes the app's":       {0, 7, 7},
		"killed monitor keeps 137":         {137, 0, 137},
		"failing monitor keeps its status": {1, 0, 1},
		"status above 255 not taken":       {0, 1 << 20, 0},
	} {
		t.Run(name, func(t *testing.T) {
			opts := lifecycle.CreateOptions{ID: "c1", Bundle: t.TempDir()}
			c := newContainer(opts, lifecycle.PersistedState{ID: "c1"}, &bootPlan{guestType: linux}, &specs.Spec{})
			status := uint32(tc.reported)
			c.setAgent(&agentLink{settled: make(chan struct{}), status: &status})
			ec := make(chan runc.Exit, 1)
			ec <- runc.Exit{Pid: 42, Status: tc.monitor}
			c.WatchExit(ec, 42)
			if _, exit := c.Current(); exit.Status != tc.want {
				t.Fatalf("monitor %d, agent %d: status %d, want %d", tc.monitor, tc.reported, exit.Status, tc.want)
			}
		})
	}
}

// An agent path that is not a regular file is refused by name, with the
// reason, and no "<nil>" where there is no error to give.
func TestAgentBinaryNotRegular(t *testing.T) {
	dir := t.TempDir()
	_, err := agentBinary(dir)
	if err == nil || !strings.Contains(err.Error(), dir) || strings.Contains(err.Error(), "<nil>") || !strings.Contains(err.Error(), "directory") {
		t.Fatalf("a directory as the agent: %v", err)
	}
	missing := filepath.Join(dir, "nothing")
	if _, err := agentBinary(missing); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a missing agent: %v, want one that wraps ErrNotExist", err)
	}
}
