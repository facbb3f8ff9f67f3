// Command shimfloor is the least a shim daemon written in Go can be, for
// make bench's memory goals: containerd's task API served over ttrpc on a
// unix socket, containerd's reaper on SIGCHLD as child subreaper, the same
// GC settings as this project's daemon, and nothing else. It answers State
// and Connect; every other call is NotImplemented. The bench reads its RSS
// and PSS beside the shim's, so that how far a goal is below this floor is
// a figure of the run and not a claim.
//
//	shimfloor -serve SOCKET   serve until SIGTERM
//	shimfloor -call SOCKET    call Connect and State once, as containerd does after start
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	goruntime "runtime"
	"runtime/debug"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/v2/pkg/sys/reaper"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/ttrpc"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/emptypb"
)

func main() {
	serve := flag.String("serve", "", "serve the task API on this socket")
	call := flag.String("call", "", "call Connect and State on this socket")
	flag.Parse()
	var err error
	switch {
	case *serve != "":
		err = serveFloor(context.Background(), *serve)
	case *call != "":
		err = callFloor(context.Background(), *call)
	default:
		err = errors.New("one of -serve or -call")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "shimfloor:", err)
		os.Exit(1)
	}
}

func serveFloor(ctx context.Context, socket string) error {
	// The daemon's own settings (shim/main.go's gcPercent and
	// GOMAXPROCS), so that only the work differs. Copied, not imported:
	// the shim package would link in the runtime library this floor
	// leaves out.
	debug.SetGCPercent(40)
	goruntime.GOMAXPROCS(2)
	signals := make(chan os.Signal, 32)
	signal.Notify(signals, unix.SIGCHLD, unix.SIGTERM, unix.SIGINT)
	if err := reaper.SetSubreaper(1); err != nil {
		return fmt.Errorf("become child subreaper: %w", err)
	}
	server, err := ttrpc.NewServer(ttrpc.WithServerHandshaker(ttrpc.UnixSocketRequireSameUser()))
	if err != nil {
		return fmt.Errorf("create ttrpc server: %w", err)
	}
	taskAPI.RegisterTTRPCTaskService(server, floorService{pid: uint32(os.Getpid())})
	l, err := net.Listen("unix", socket)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", socket, err)
	}
	defer os.Remove(socket)
	go func() { _ = server.Serve(ctx, l) }()
	for s := range signals {
		if s == unix.SIGCHLD {
			_ = reaper.Reap()
			continue
		}
		break
	}
	return server.Close()
}

func callFloor(ctx context.Context, socket string) error {
	conn, err := net.Dial("unix", socket)
	if err != nil {
		return fmt.Errorf("dial %s: %w", socket, err)
	}
	client := ttrpc.NewClient(conn)
	defer client.Close()
	task := taskAPI.NewTTRPCTaskClient(client)
	if _, err := task.Connect(ctx, &taskAPI.ConnectRequest{ID: "floor"}); err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	if _, err := task.State(ctx, &taskAPI.StateRequest{ID: "floor"}); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	return nil
}

// floorService serves the two calls containerd makes of an idle shim.
type floorService struct{ pid uint32 }

var errFloor = errgrpc.ToGRPC(errdefs.ErrNotImplemented)

func (f floorService) State(context.Context, *taskAPI.StateRequest) (*taskAPI.StateResponse, error) {
	return &taskAPI.StateResponse{ID: "floor", Pid: f.pid}, nil
}

func (f floorService) Connect(context.Context, *taskAPI.ConnectRequest) (*taskAPI.ConnectResponse, error) {
	return &taskAPI.ConnectResponse{ShimPid: f.pid, TaskPid: f.pid}, nil
}

func (floorService) Create(context.Context, *taskAPI.CreateTaskRequest) (*taskAPI.CreateTaskResponse, error) {
	return nil, errFloor
}

func (floorService) Start(context.Context, *taskAPI.StartRequest) (*taskAPI.StartResponse, error) {
	return nil, errFloor
}

func (floorService) Delete(context.Context, *taskAPI.DeleteRequest) (*taskAPI.DeleteResponse, error) {
	return nil, errFloor
}

func (floorService) Pids(context.Context, *taskAPI.PidsRequest) (*taskAPI.PidsResponse, error) {
	return nil, errFloor
}

func (floorService) Pause(context.Context, *taskAPI.PauseRequest) (*emptypb.Empty, error) {
	return nil, errFloor
}

func (floorService) Resume(context.Context, *taskAPI.ResumeRequest) (*emptypb.Empty, error) {
	return nil, errFloor
}

func (floorService) Checkpoint(context.Context, *taskAPI.CheckpointTaskRequest) (*emptypb.Empty, error) {
	return nil, errFloor
}

func (floorService) Kill(context.Context, *taskAPI.KillRequest) (*emptypb.Empty, error) {
	return nil, errFloor
}

func (floorService) Exec(context.Context, *taskAPI.ExecProcessRequest) (*emptypb.Empty, error) {
	return nil, errFloor
}

func (floorService) ResizePty(context.Context, *taskAPI.ResizePtyRequest) (*emptypb.Empty, error) {
	return nil, errFloor
}

func (floorService) CloseIO(context.Context, *taskAPI.CloseIORequest) (*emptypb.Empty, error) {
	return nil, errFloor
}

func (floorService) Update(context.Context, *taskAPI.UpdateTaskRequest) (*emptypb.Empty, error) {
	return nil, errFloor
}

func (floorService) Wait(context.Context, *taskAPI.WaitRequest) (*taskAPI.WaitResponse, error) {
	return nil, errFloor
}

func (floorService) Stats(context.Context, *taskAPI.StatsRequest) (*taskAPI.StatsResponse, error) {
	return nil, errFloor
}

func (floorService) Shutdown(context.Context, *taskAPI.ShutdownRequest) (*emptypb.Empty, error) {
	return nil, errFloor
}
