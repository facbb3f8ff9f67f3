// Package shim is the containerd-facing side: the shim manager (start,
// delete, -info) and the task service over ttrpc. It translates requests
// into calls on the runtime library, errors into gRPC codes and state
// changes into events, and owns stdio.
package shim

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/protobuf"
	ptypes "github.com/containerd/containerd/v2/pkg/protobuf/types"
	"github.com/containerd/containerd/v2/pkg/shutdown"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/urunc-dev/containerd-shim-urunc-v2/inventory"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/lifecycle"
	"github.com/urunc-dev/containerd-shim-urunc-v2/shim/eventqueue"
	"github.com/urunc-dev/containerd-shim-urunc-v2/shim/stdio"
)

var empty = &ptypes.Empty{}

// eventPublisher takes the task service's events (eventstypes values) in
// the order they happen; eventqueue.Queue is the real one.
type eventPublisher interface {
	Send(event any)
}

// taskService implements containerd's task API (v2) for unikernel
// containers.
type taskService struct {
	runtime   runtimeLibrary
	events    eventPublisher
	shutdown  shutdown.Service
	namespace string
	// idleExitAfter is how long the shim lives on with no container
	// and no Shutdown from containerd.
	idleExitAfter time.Duration

	mu         sync.Mutex
	containers map[string]*container
	idle       *time.Timer

	// unusedKeysWarned keeps the host config's unused keys to one
	// warning per shim, not one per container.
	unusedKeysWarned sync.Once
}

// defaultIdleExitAfter bounds how long a shim with no container waits for
// containerd's Shutdown. containerd calls Shutdown right after the last
// Delete; if it dies in between, the shim would otherwise live forever.
const defaultIdleExitAfter = 30 * time.Second

// armIdleExit starts the idle timer; s.mu must be held.
func (s *taskService) armIdleExit() {
	if s.idle != nil {
		s.idle.Stop()
	}
	s.idle = time.AfterFunc(s.idleExitAfter, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if len(s.containers) == 0 {
			log.L.Info("no container left and no shutdown from containerd; exiting")
			s.shutdown.Shutdown()
		}
	})
}

// container is one task: the runtime's container plus what only the shim
// knows of it (stdio, event ordering).
type container struct {
	rt   lifecycle.Task
	io   *stdio.Streams
	spec stdio.Config
	// startDone closes once TaskStart is out (or the task is deleted
	// without a start): TaskExit waits for it, so events never arrive in
	// the wrong order even if the monitor dies during Start.
	startDone chan struct{}
	startOnce sync.Once
	// exitSent closes once TaskExit is out.
	exitSent chan struct{}
	// oomSent makes TaskOOM go out once, whichever of the cgroup's
	// notification and the exit sees the OOM kill first.
	oomSent atomic.Bool
	execs   execs
}

func (s *taskService) sendOOM(c *container) {
	if c.oomSent.CompareAndSwap(false, true) {
		s.events.Send(&eventstypes.TaskOOM{ContainerID: c.rt.ID()})
	}
}

func (c *container) releaseStart() { c.startOnce.Do(func() { close(c.startDone) }) }

// NewTaskService returns the task service; sd ends the shim process.
func NewTaskService(ctx context.Context, sd shutdown.Service) (taskAPI.TTRPCTaskService, error) {
	events := eventqueue.New(ctx, os.Getenv("TTRPC_ADDRESS"))
	sd.RegisterCallback(func(context.Context) error {
		events.Close()
		return nil
	})
	return newTaskService(ctx, sd, bundleLibrary{}, events), nil
}

// newTaskService wires the task service to a runtime library and an event
// publisher: the real ones in the shim, fakes in its unit tests.
func newTaskService(ctx context.Context, sd shutdown.Service, rt runtimeLibrary, events eventPublisher) *taskService {
	ns, _ := namespaces.Namespace(ctx)
	return &taskService{
		runtime:       rt,
		events:        events,
		shutdown:      sd,
		namespace:     ns,
		idleExitAfter: defaultIdleExitAfter,
		containers:    map[string]*container{},
	}
}

// getInit returns the container for a call on its init process; a unikernel
// has no other process, so any exec ID is NotFound.
func (s *taskService) getInit(id, execID string) (*container, error) {
	if execID != "" {
		return nil, errgrpc.ToGRPCf(errdefs.ErrNotFound, "exec %s not found", execID)
	}
	return s.get(id)
}

func (s *taskService) get(id string) (*container, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.containers[id]
	if !ok || c == nil {
		return nil, errgrpc.ToGRPCf(errdefs.ErrNotFound, "container %s not found", id)
	}
	return c, nil
}

func (s *taskService) Create(ctx context.Context, r *taskAPI.CreateTaskRequest) (_ *taskAPI.CreateTaskResponse, retErr error) {
	s.mu.Lock()
	if _, ok := s.containers[r.ID]; ok {
		s.mu.Unlock()
		return nil, errgrpc.ToGRPCf(errdefs.ErrAlreadyExists, "container %s already exists", r.ID)
	}
	// Hold a place so a concurrent Create of the same ID fails.
	s.containers[r.ID] = nil
	if s.idle != nil {
		s.idle.Stop()
	}
	s.mu.Unlock()
	defer func() {
		if retErr != nil {
			s.mu.Lock()
			delete(s.containers, r.ID)
			if len(s.containers) == 0 {
				s.armIdleExit()
			}
			s.mu.Unlock()
		}
	}()
	if r.Checkpoint != "" || r.ParentCheckpoint != "" {
		return nil, errgrpc.ToGRPCf(errdefs.ErrNotImplemented, "restoring a unikernel from a checkpoint is not supported")
	}
	host, err := s.runtime.LoadHostConfig()
	if err != nil {
		return nil, errgrpc.ToGRPC(fmt.Errorf("%w: %w", errdefs.ErrFailedPrecondition, err))
	}
	if len(host.UnusedKeys) > 0 {
		s.unusedKeysWarned.Do(func() {
			log.G(ctx).Warnf("host config: keys this runtime does not use: %s", strings.Join(host.UnusedKeys, ", "))
		})
	}
	// cleanup-orphans tells a hung shim that still runs (not cleaned) from
	// one stopped or dead by this pid.
	if err := inventory.WriteShimPid(r.Bundle); err != nil {
		log.G(ctx).WithError(err).Warn("record the shim's pid in the bundle")
	}
	cfg := stdio.Config{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Terminal: r.Terminal}
	io, err := stdio.Open(ctx, r.ID, s.namespace, cfg)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	rt, err := s.runtime.Create(ctx, lifecycle.CreateOptions{
		ID:        r.ID,
		Namespace: s.namespace,
		Bundle:    r.Bundle,
		Rootfs:    toMounts(r.Rootfs),
		Stdio:     io.Monitor(),
		Console:   io.GuestConsole(),
		Host:      host,
	})
	io.CloseMonitorEnds()
	if err != nil {
		io.Close()
		return nil, errgrpc.ToGRPC(err)
	}
	c := &container{rt: rt, io: io, spec: cfg, startDone: make(chan struct{}), exitSent: make(chan struct{})}
	s.mu.Lock()
	s.containers[r.ID] = c
	s.mu.Unlock()

	s.events.Send(&eventstypes.TaskCreate{
		ContainerID: r.ID,
		Bundle:      r.Bundle,
		Rootfs:      r.Rootfs,
		IO:          &eventstypes.TaskIO{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Terminal: r.Terminal},
		Pid:         uint32(rt.Pid()),
	})
	go s.forwardExit(c)
	go s.forwardOOM(c)
	return &taskAPI.CreateTaskResponse{Pid: uint32(rt.Pid())}, nil
}

// forwardExit publishes TaskExit once the monitor is gone, after TaskStart
// and after its output has been copied out.
func (s *taskService) forwardExit(c *container) {
	exit, _ := c.rt.Wait(context.Background())
	// An OOM kill of the monitor races its own notification; the cgroup's
	// counter settles it, so TaskOOM always precedes the TaskExit it
	// explains.
	if c.rt.OOMKilled() {
		s.sendOOM(c)
	}
	c.io.WaitOutput(2 * time.Second)
	<-c.startDone
	s.events.Send(&eventstypes.TaskExit{
		ContainerID: c.rt.ID(),
		ID:          c.rt.ID(),
		Pid:         uint32(exit.Pid),
		ExitStatus:  uint32(exit.Status),
		ExitedAt:    protobuf.ToTimestamp(exit.At),
	})
	close(c.exitSent)
}

func (s *taskService) forwardOOM(c *container) {
	oom := c.rt.OOM()
	if oom == nil {
		return
	}
	for {
		select {
		case <-c.rt.Exited():
			return
		case <-oom:
			s.sendOOM(c)
		}
	}
}

func toMounts(ms []*types.Mount) []mount.Mount {
	out := make([]mount.Mount, 0, len(ms))
	for _, m := range ms {
		out = append(out, mount.Mount{Type: m.Type, Source: m.Source, Target: m.Target, Options: m.Options})
	}
	return out
}

func (s *taskService) Start(ctx context.Context, r *taskAPI.StartRequest) (*taskAPI.StartResponse, error) {
	if r.ExecID != "" {
		c, err := s.get(r.ID)
		if err != nil {
			return nil, err
		}
		return s.startExec(ctx, c, r)
	}
	c, err := s.getInit(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	if err := c.rt.Start(ctx); err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	pid := c.rt.Pid()
	s.events.Send(&eventstypes.TaskStart{ContainerID: r.ID, Pid: uint32(pid)})
	c.releaseStart()
	return &taskAPI.StartResponse{Pid: uint32(pid)}, nil
}

func (s *taskService) Delete(ctx context.Context, r *taskAPI.DeleteRequest) (*taskAPI.DeleteResponse, error) {
	if r.ExecID != "" {
		c, err := s.get(r.ID)
		if err != nil {
			return nil, err
		}
		return s.deleteExec(ctx, c, r)
	}
	c, err := s.getInit(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	exit, err := c.rt.Delete(ctx)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	c.io.Close()
	// By now Start either happened or never will: a task killed or deleted
	// before Start still reports its exit, before its delete.
	c.releaseStart()
	<-c.exitSent
	s.mu.Lock()
	delete(s.containers, r.ID)
	if len(s.containers) == 0 {
		s.armIdleExit()
	}
	s.mu.Unlock()
	s.events.Send(&eventstypes.TaskDelete{
		ContainerID: r.ID,
		ID:          r.ID,
		Pid:         uint32(exit.Pid),
		ExitStatus:  uint32(exit.Status),
		ExitedAt:    protobuf.ToTimestamp(exit.At),
	})
	return &taskAPI.DeleteResponse{
		Pid:        uint32(exit.Pid),
		ExitStatus: uint32(exit.Status),
		ExitedAt:   protobuf.ToTimestamp(exit.At),
	}, nil
}

func (s *taskService) State(ctx context.Context, r *taskAPI.StateRequest) (*taskAPI.StateResponse, error) {
	if r.ExecID != "" {
		c, err := s.get(r.ID)
		if err != nil {
			return nil, err
		}
		return s.execState(c, r)
	}
	c, err := s.getInit(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	st := c.rt.State()
	resp := &taskAPI.StateResponse{
		ID:       st.ID,
		Bundle:   st.Bundle,
		Pid:      uint32(st.Pid),
		Status:   taskStatus(st.Status),
		Stdin:    c.spec.Stdin,
		Stdout:   c.spec.Stdout,
		Stderr:   c.spec.Stderr,
		Terminal: c.spec.Terminal,
	}
	if st.Status == lifecycle.StatusStopped {
		resp.ExitStatus = uint32(st.Exit.Status)
		resp.ExitedAt = protobuf.ToTimestamp(st.Exit.At)
	}
	return resp, nil
}

func taskStatus(s lifecycle.Status) task.Status {
	switch s {
	case lifecycle.StatusCreated:
		return task.Status_CREATED
	case lifecycle.StatusRunning:
		return task.Status_RUNNING
	case lifecycle.StatusPaused:
		return task.Status_PAUSED
	case lifecycle.StatusStopped:
		return task.Status_STOPPED
	}
	return task.Status_UNKNOWN
}

func (s *taskService) Pids(ctx context.Context, r *taskAPI.PidsRequest) (*taskAPI.PidsResponse, error) {
	c, err := s.get(r.ID)
	if err != nil {
		return nil, err
	}
	pids, err := c.rt.Pids(ctx)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	resp := &taskAPI.PidsResponse{}
	for _, p := range pids {
		resp.Processes = append(resp.Processes, &task.ProcessInfo{Pid: uint32(p)})
	}
	// Each running exec that is a host process is marked with its ID, as
	// containerd's runc shim does. The list is of host pids: an exec in a
	// guest is not one, and its pid in the guest, which the guest chose,
	// could name any host process.
	for _, e := range c.execs.running() {
		if g, ok := e.rt.(interface{ PidInGuest() bool }); ok && g.PidInGuest() {
			continue
		}
		pid := uint32(e.rt.Pid())
		i := slices.IndexFunc(resp.Processes, func(p *task.ProcessInfo) bool { return p.Pid == pid })
		if i < 0 {
			continue
		}
		info, err := typeurl.MarshalAnyToProto(&options.ProcessDetails{ExecID: e.rt.ID()})
		if err != nil {
			return nil, errgrpc.ToGRPC(err)
		}
		resp.Processes[i].Info = info
	}
	return resp, nil
}

func (s *taskService) Pause(ctx context.Context, r *taskAPI.PauseRequest) (*ptypes.Empty, error) {
	c, err := s.get(r.ID)
	if err != nil {
		return nil, err
	}
	if err := c.rt.Pause(ctx); err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	s.events.Send(&eventstypes.TaskPaused{ContainerID: r.ID})
	return empty, nil
}

func (s *taskService) Resume(ctx context.Context, r *taskAPI.ResumeRequest) (*ptypes.Empty, error) {
	c, err := s.get(r.ID)
	if err != nil {
		return nil, err
	}
	if err := c.rt.Resume(ctx); err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	s.events.Send(&eventstypes.TaskResumed{ContainerID: r.ID})
	return empty, nil
}

func (s *taskService) Checkpoint(ctx context.Context, r *taskAPI.CheckpointTaskRequest) (*ptypes.Empty, error) {
	return nil, errgrpc.ToGRPCf(errdefs.ErrNotImplemented,
		"checkpoint of a unikernel is not supported: the guest's state lives in the VM's memory, which this shim does not snapshot")
}

func (s *taskService) Kill(ctx context.Context, r *taskAPI.KillRequest) (*ptypes.Empty, error) {
	if r.ExecID != "" {
		c, err := s.get(r.ID)
		if err != nil {
			return nil, err
		}
		return s.killExec(ctx, c, r)
	}
	c, err := s.getInit(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	created := c.rt.State().Status == lifecycle.StatusCreated
	if err := c.rt.Kill(ctx, syscall.Signal(r.Signal), r.All); err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	if created {
		// Kill of a created task ends its launcher; no TaskStart will
		// come to hold its TaskExit back.
		c.releaseStart()
	}
	return empty, nil
}

// stdioOf is the stdio of container id, or of its exec execID when set.
func (s *taskService) stdioOf(id, execID string) (*stdio.Streams, error) {
	c, err := s.get(id)
	if err != nil {
		return nil, err
	}
	if execID == "" {
		return c.io, nil
	}
	e, err := c.execs.get(id, execID)
	if err != nil {
		return nil, err
	}
	return e.io, nil
}

func (s *taskService) ResizePty(ctx context.Context, r *taskAPI.ResizePtyRequest) (*ptypes.Empty, error) {
	io, err := s.stdioOf(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	if err := io.Resize(r.Width, r.Height); err != nil {
		return nil, errgrpc.ToGRPC(fmt.Errorf("%w: %w", errdefs.ErrFailedPrecondition, err))
	}
	return empty, nil
}

func (s *taskService) CloseIO(ctx context.Context, r *taskAPI.CloseIORequest) (*ptypes.Empty, error) {
	io, err := s.stdioOf(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	if r.Stdin {
		io.CloseStdin()
	}
	return empty, nil
}

func (s *taskService) Update(ctx context.Context, r *taskAPI.UpdateTaskRequest) (*ptypes.Empty, error) {
	c, err := s.get(r.ID)
	if err != nil {
		return nil, err
	}
	var res specs.LinuxResources
	if err := json.Unmarshal(r.Resources.GetValue(), &res); err != nil {
		return nil, errgrpc.ToGRPC(fmt.Errorf("%w: resources: %w", errdefs.ErrInvalidArgument, err))
	}
	if err := c.rt.Update(ctx, &res); err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	return empty, nil
}

func (s *taskService) Wait(ctx context.Context, r *taskAPI.WaitRequest) (*taskAPI.WaitResponse, error) {
	if r.ExecID != "" {
		c, err := s.get(r.ID)
		if err != nil {
			return nil, err
		}
		return s.waitExec(ctx, c, r)
	}
	c, err := s.getInit(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	exit, err := c.rt.Wait(ctx)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	return &taskAPI.WaitResponse{ExitStatus: uint32(exit.Status), ExitedAt: protobuf.ToTimestamp(exit.At)}, nil
}

func (s *taskService) Stats(ctx context.Context, r *taskAPI.StatsRequest) (*taskAPI.StatsResponse, error) {
	c, err := s.get(r.ID)
	if err != nil {
		return nil, err
	}
	m, err := c.rt.Metrics(ctx)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	data, err := typeurl.MarshalAnyToProto(m)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	return &taskAPI.StatsResponse{Stats: data}, nil
}

func (s *taskService) Connect(ctx context.Context, r *taskAPI.ConnectRequest) (*taskAPI.ConnectResponse, error) {
	resp := &taskAPI.ConnectResponse{ShimPid: uint32(os.Getpid())}
	if c, err := s.get(r.ID); err == nil {
		resp.TaskPid = uint32(c.rt.Pid())
	}
	return resp, nil
}

// Shutdown ends the shim once it holds no container, and not before:
// containerd calls it after every delete, and a grouped shim serves more.
func (s *taskService) Shutdown(ctx context.Context, r *taskAPI.ShutdownRequest) (*ptypes.Empty, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.containers) > 0 {
		return empty, nil
	}
	log.G(ctx).Debug("no container left; shutting down")
	s.shutdown.Shutdown()
	return empty, nil
}
