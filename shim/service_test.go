package shim

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/cgroups/v3/cgroup1/stats"
	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/api/types/task"
	ctrdruntime "github.com/containerd/containerd/v2/core/runtime"
	ptypes "github.com/containerd/containerd/v2/pkg/protobuf/types"
	"github.com/containerd/errdefs"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/config"
	"github.com/urunc-dev/containerd-shim-urunc-v2/shim/eventqueue"
)

const (
	topicCreate = ctrdruntime.TaskCreateEventTopic
	topicStart  = ctrdruntime.TaskStartEventTopic
	topicExit   = ctrdruntime.TaskExitEventTopic
	topicDelete = ctrdruntime.TaskDeleteEventTopic
)

// create creates task id with no stdio and returns the runtime's task.
func (h *harness) create(t *testing.T, id string) *fakeTask {
	t.Helper()
	return h.createWith(t, &taskAPI.CreateTaskRequest{ID: id, Bundle: t.TempDir()})
}

func (h *harness) createWith(t *testing.T, r *taskAPI.CreateTaskRequest) *fakeTask {
	t.Helper()
	resp, err := h.svc.Create(h.ctx, r)
	if err != nil {
		t.Fatalf("Create %s: %v", r.ID, err)
	}
	ft := h.rt.task(r.ID)
	if int(resp.Pid) != ft.pid {
		t.Fatalf("Create %s returned pid %d, the task's is %d", r.ID, resp.Pid, ft.pid)
	}
	return ft
}

func (h *harness) start(t *testing.T, id string) {
	t.Helper()
	if _, err := h.svc.Start(h.ctx, &taskAPI.StartRequest{ID: id}); err != nil {
		t.Fatalf("Start %s: %v", id, err)
	}
}

func (h *harness) kill(t *testing.T, id string, sig syscall.Signal) {
	t.Helper()
	if _, err := h.svc.Kill(h.ctx, &taskAPI.KillRequest{ID: id, Signal: uint32(sig)}); err != nil {
		t.Fatalf("Kill %s: %v", id, err)
	}
}

func mkfifo(t *testing.T, dir, name string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := unix.Mkfifo(p, 0o600); err != nil {
		t.Fatalf("mkfifo: %v", err)
	}
	return p
}

// containerdReads opens a FIFO for reading as containerd does before it
// asks for a task, so that the shim's open for writing finds a reader.
func containerdReads(t *testing.T, path string) *os.File {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatalf("open %s for reading: %v", path, err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// descriptorsOn counts this process's descriptors open on path.
func descriptorsOn(t *testing.T, path string) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		if target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); err == nil && target == path {
			n++
		}
	}
	return n
}

func sameTime(a, b *timestamppb.Timestamp) bool { return a.AsTime().Equal(b.AsTime()) }

// The life of a task as containerd sees it, in every order containerd may
// drive it: its events come in Create, Start, Exit, Delete order (Start
// only when it started), TaskExit names the init process by the container's
// ID with the monitor's real pid and status, and Delete, Wait and State
// agree on the status and time.
func TestTaskLifecycle(t *testing.T) {
	tests := []struct {
		name string
		// setup adjusts the task before the test drives it.
		setup func(h *harness, ft *fakeTask)
		// drive takes the task from created to stopped.
		drive      func(t *testing.T, h *harness, id string, ft *fakeTask)
		wantTopics []string
		wantStatus int
		wantCalls  []string
	}{
		{
			name: "runs and exits by itself",
			drive: func(t *testing.T, h *harness, id string, ft *fakeTask) {
				h.start(t, id)
				ft.exitWith(3)
			},
			wantTopics: []string{topicCreate, topicStart, topicExit, topicDelete},
			wantStatus: 3,
			wantCalls:  []string{"start", "delete"},
		},
		{
			name: "killed while running",
			drive: func(t *testing.T, h *harness, id string, ft *fakeTask) {
				h.start(t, id)
				h.kill(t, id, syscall.SIGTERM)
			},
			wantTopics: []string{topicCreate, topicStart, topicExit, topicDelete},
			wantStatus: 128 + int(syscall.SIGTERM),
			wantCalls:  []string{"start", "kill 15 all=false", "delete"},
		},
		{
			// The monitor dies inside Start, before the service has
			// published TaskStart: containerd must still see the exit
			// after the start.
			name: "monitor dies during start",
			setup: func(h *harness, ft *fakeTask) {
				ft.onStart = func(ft *fakeTask) {
					ft.mu.Lock()
					ft.exitLocked(1)
					ft.mu.Unlock()
					// Let the service's exit forwarder take the exit, and
					// give a TaskExit sent out of order the time to show.
					<-ft.exitTaken
					h.events.waitUntil(200*time.Millisecond, func(es []any) bool {
						for _, e := range es {
							if eventqueue.Topic(e) == topicExit {
								return true
							}
						}
						return false
					})
				}
			},
			drive: func(t *testing.T, h *harness, id string, ft *fakeTask) {
				h.start(t, id)
			},
			wantTopics: []string{topicCreate, topicStart, topicExit, topicDelete},
			wantStatus: 1,
			wantCalls:  []string{"start", "delete"},
		},
		{
			// containerd waits for the exit of a killed task before it
			// deletes it: the exit must come without a Delete.
			name: "killed before start",
			drive: func(t *testing.T, h *harness, id string, ft *fakeTask) {
				h.kill(t, id, syscall.SIGKILL)
				h.events.waitForTopic(t, topicExit)
			},
			wantTopics: []string{topicCreate, topicExit, topicDelete},
			wantStatus: 128 + int(syscall.SIGKILL),
			wantCalls:  []string{"kill 9 all=false", "delete"},
		},
		{
			name:       "deleted before start",
			drive:      func(t *testing.T, h *harness, id string, ft *fakeTask) {},
			wantTopics: []string{topicCreate, topicExit, topicDelete},
			wantStatus: 128 + int(syscall.SIGKILL),
			wantCalls:  []string{"delete"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			const id = "task-1"
			bundle := t.TempDir()
			if tc.setup != nil {
				h.rt.configure = func(ft *fakeTask) { tc.setup(h, ft) }
			}
			ft := h.createWith(t, &taskAPI.CreateTaskRequest{ID: id, Bundle: bundle})
			// containerd waits as soon as the task exists; this Wait must
			// get the same answer as every later look.
			type waitResult struct {
				resp *taskAPI.WaitResponse
				err  error
			}
			waited := make(chan waitResult, 1)
			go func() {
				resp, err := h.svc.Wait(h.ctx, &taskAPI.WaitRequest{ID: id})
				waited <- waitResult{resp, err}
			}()
			// The service's own exit forwarder and this caller.
			ft.awaitWaiters(t, 2)

			tc.drive(t, h, id, ft)

			var state *taskAPI.StateResponse
			if ft.State().Status == "stopped" {
				var err error
				if state, err = h.svc.State(h.ctx, &taskAPI.StateRequest{ID: id}); err != nil {
					t.Fatalf("State: %v", err)
				}
				if state.Status != task.Status_STOPPED || state.Pid != uint32(ft.pid) || state.Bundle != bundle {
					t.Errorf("State = %v pid %d bundle %s, want STOPPED pid %d bundle %s", state.Status, state.Pid, state.Bundle, ft.pid, bundle)
				}
			}
			del, err := h.svc.Delete(h.ctx, &taskAPI.DeleteRequest{ID: id})
			if err != nil {
				t.Fatalf("Delete: %v", err)
			}
			if del.Pid != uint32(ft.pid) || del.ExitStatus != uint32(tc.wantStatus) {
				t.Errorf("Delete = pid %d status %d, want pid %d status %d", del.Pid, del.ExitStatus, ft.pid, tc.wantStatus)
			}
			var w waitResult
			select {
			case w = <-waited:
			case <-time.After(eventually):
				t.Fatal("Wait did not return after the task was deleted")
			}
			if w.err != nil {
				t.Fatalf("Wait: %v", w.err)
			}
			if w.resp.ExitStatus != del.ExitStatus || !sameTime(w.resp.ExitedAt, del.ExitedAt) {
				t.Errorf("Wait = %d at %v, Delete = %d at %v: they must agree", w.resp.ExitStatus, w.resp.ExitedAt.AsTime(), del.ExitStatus, del.ExitedAt.AsTime())
			}
			if state != nil && (state.ExitStatus != del.ExitStatus || !sameTime(state.ExitedAt, del.ExitedAt)) {
				t.Errorf("State = %d at %v, Delete = %d at %v: they must agree", state.ExitStatus, state.ExitedAt.AsTime(), del.ExitStatus, del.ExitedAt.AsTime())
			}

			if got := h.events.topics(); !reflect.DeepEqual(got, tc.wantTopics) {
				t.Fatalf("events %v, want %v", got, tc.wantTopics)
			}
			for _, e := range h.events.all() {
				switch e := e.(type) {
				case *eventstypes.TaskCreate:
					if e.ContainerID != id || e.Bundle != bundle || e.Pid != uint32(ft.pid) {
						t.Errorf("TaskCreate %+v, want container %s bundle %s pid %d", e, id, bundle, ft.pid)
					}
				case *eventstypes.TaskStart:
					if e.ContainerID != id || e.Pid != uint32(ft.pid) {
						t.Errorf("TaskStart %+v, want container %s pid %d", e, id, ft.pid)
					}
				case *eventstypes.TaskExit:
					if e.ContainerID != id || e.ID != id || e.Pid != uint32(ft.pid) || e.ExitStatus != uint32(tc.wantStatus) || !sameTime(e.ExitedAt, del.ExitedAt) {
						t.Errorf("TaskExit %+v, want ID and container %s, pid %d, status %d at %v", e, id, ft.pid, tc.wantStatus, del.ExitedAt.AsTime())
					}
				case *eventstypes.TaskDelete:
					if e.ContainerID != id || e.ID != id || e.Pid != uint32(ft.pid) || e.ExitStatus != uint32(tc.wantStatus) || !sameTime(e.ExitedAt, del.ExitedAt) {
						t.Errorf("TaskDelete %+v, want ID and container %s, pid %d, status %d", e, id, ft.pid, tc.wantStatus)
					}
				}
			}
			if got := ft.callLog(); !reflect.DeepEqual(got, tc.wantCalls) {
				t.Errorf("runtime calls %q, want %q", got, tc.wantCalls)
			}

			// Gone for good: every call on it is NotFound, and the
			// runtime is not asked again.
			if _, err := h.svc.Delete(h.ctx, &taskAPI.DeleteRequest{ID: id}); errKind(err) != "NotFound" {
				t.Errorf("second Delete: %v (%s), want NotFound", err, errKind(err))
			}
			if _, err := h.svc.State(h.ctx, &taskAPI.StateRequest{ID: id}); errKind(err) != "NotFound" {
				t.Errorf("State after Delete: %v, want NotFound", err)
			}
			if _, err := h.svc.Wait(h.ctx, &taskAPI.WaitRequest{ID: id}); errKind(err) != "NotFound" {
				t.Errorf("Wait after Delete: %v, want NotFound", err)
			}
			if got := ft.callLog(); len(got) != len(tc.wantCalls) {
				t.Errorf("the runtime was called after the task was deleted: %q", got)
			}
		})
	}
}

// Every refusal reaches containerd as the gRPC code of its errdefs kind,
// so that containerd (which maps codes back) reacts as it does to runc's
// shim: retry, give up, or report "not implemented".
func TestTaskErrorsMapToGRPCCodes(t *testing.T) {
	badSpec := &ptypes.Any{TypeUrl: "types.containerd.io/opencontainers/runtime-spec/1/Process", Value: []byte("{not json")}
	tests := []struct {
		name  string
		setup func(t *testing.T, h *harness)
		call  func(h *harness) error
		want  string
		// after checks what the refusal left as it was.
		after func(t *testing.T, h *harness)
	}{
		{
			name:  "create of an ID that exists",
			setup: func(t *testing.T, h *harness) { h.create(t, "a") },
			call: func(h *harness) error {
				_, err := h.svc.Create(h.ctx, &taskAPI.CreateTaskRequest{ID: "a", Bundle: "/nonexistent"})
				return err
			},
			want: "AlreadyExists",
			after: func(t *testing.T, h *harness) {
				if n := h.rt.createCount(); n != 1 {
					t.Errorf("the runtime was asked to create %d times, want 1", n)
				}
				st, err := h.svc.State(h.ctx, &taskAPI.StateRequest{ID: "a"})
				if err != nil || st.Status != task.Status_CREATED || st.Pid != uint32(h.rt.task("a").pid) {
					t.Errorf("the first task after a duplicate Create: %v, %v", st, err)
				}
			},
		},
		{
			name: "create from a checkpoint",
			call: func(h *harness) error {
				_, err := h.svc.Create(h.ctx, &taskAPI.CreateTaskRequest{ID: "a", Bundle: "/b", Checkpoint: "/cp"})
				return err
			},
			want: "NotImplemented",
		},
		{
			name:  "create with an unreadable host config",
			setup: func(t *testing.T, h *harness) { h.rt.hostErr = errTest },
			call: func(h *harness) error {
				_, err := h.svc.Create(h.ctx, &taskAPI.CreateTaskRequest{ID: "a", Bundle: "/b"})
				return err
			},
			want: "FailedPrecondition",
		},
		{
			name: "create the runtime refuses",
			setup: func(t *testing.T, h *harness) {
				h.rt.createErr = fmt.Errorf("unknown guest type: %w", errdefs.ErrInvalidArgument)
			},
			call: func(h *harness) error {
				_, err := h.svc.Create(h.ctx, &taskAPI.CreateTaskRequest{ID: "a", Bundle: "/b"})
				return err
			},
			want: "InvalidArgument",
		},
		{
			name: "start of an unknown task",
			call: func(h *harness) error {
				_, err := h.svc.Start(h.ctx, &taskAPI.StartRequest{ID: "nope"})
				return err
			},
			want: "NotFound",
		},
		{
			name:  "start of an exec the task lacks",
			setup: func(t *testing.T, h *harness) { h.create(t, "a") },
			call: func(h *harness) error {
				_, err := h.svc.Start(h.ctx, &taskAPI.StartRequest{ID: "a", ExecID: "e"})
				return err
			},
			want: "NotFound",
		},
		{
			name:  "second start",
			setup: func(t *testing.T, h *harness) { h.create(t, "a"); h.start(t, "a") },
			call: func(h *harness) error {
				_, err := h.svc.Start(h.ctx, &taskAPI.StartRequest{ID: "a"})
				return err
			},
			want: "FailedPrecondition",
			after: func(t *testing.T, h *harness) {
				if got := h.events.topics(); !reflect.DeepEqual(got, []string{topicCreate, topicStart}) {
					t.Errorf("events %v: a refused Start must not publish TaskStart", got)
				}
			},
		},
		{
			name: "start the runtime fails",
			setup: func(t *testing.T, h *harness) {
				h.rt.configure = func(ft *fakeTask) { ft.startErr = fmt.Errorf("monitor: %w", errdefs.ErrUnavailable) }
				h.create(t, "a")
			},
			call: func(h *harness) error {
				_, err := h.svc.Start(h.ctx, &taskAPI.StartRequest{ID: "a"})
				return err
			},
			want: "other: monitor: unavailable",
			after: func(t *testing.T, h *harness) {
				if got := h.events.topics(); !reflect.DeepEqual(got, []string{topicCreate}) {
					t.Errorf("events %v: a failed Start must not publish TaskStart", got)
				}
			},
		},
		{
			name:  "delete while running",
			setup: func(t *testing.T, h *harness) { h.create(t, "a"); h.start(t, "a") },
			call: func(h *harness) error {
				_, err := h.svc.Delete(h.ctx, &taskAPI.DeleteRequest{ID: "a"})
				return err
			},
			want: "FailedPrecondition",
			after: func(t *testing.T, h *harness) {
				st, err := h.svc.State(h.ctx, &taskAPI.StateRequest{ID: "a"})
				if err != nil || st.Status != task.Status_RUNNING {
					t.Errorf("after a refused Delete the task is %v, %v; want it running", st, err)
				}
				if got := h.events.topics(); !reflect.DeepEqual(got, []string{topicCreate, topicStart}) {
					t.Errorf("events %v: a refused Delete publishes nothing", got)
				}
			},
		},
		{
			name: "kill after exit",
			setup: func(t *testing.T, h *harness) {
				ft := h.create(t, "a")
				h.start(t, "a")
				ft.exitWith(0)
			},
			call: func(h *harness) error {
				_, err := h.svc.Kill(h.ctx, &taskAPI.KillRequest{ID: "a", Signal: uint32(syscall.SIGTERM)})
				return err
			},
			want: "NotFound",
		},
		{
			name: "kill of an unknown task",
			call: func(h *harness) error {
				_, err := h.svc.Kill(h.ctx, &taskAPI.KillRequest{ID: "nope", Signal: 9})
				return err
			},
			want: "NotFound",
		},
		{
			name: "checkpoint",
			call: func(h *harness) error {
				_, err := h.svc.Checkpoint(h.ctx, &taskAPI.CheckpointTaskRequest{ID: "a"})
				return err
			},
			want: "NotImplemented",
		},
		{
			name: "exec into a unikernel",
			setup: func(t *testing.T, h *harness) {
				h.rt.configure = func(ft *fakeTask) { ft.noExec = true }
				h.create(t, "a")
				h.start(t, "a")
			},
			call: func(h *harness) error {
				_, err := h.svc.Exec(h.ctx, &taskAPI.ExecProcessRequest{ID: "a", ExecID: "e", Spec: processSpec(&specs.Process{Args: []string{"sh"}})})
				return err
			},
			want: "NotImplemented",
			after: func(t *testing.T, h *harness) {
				if _, err := h.svc.State(h.ctx, &taskAPI.StateRequest{ID: "a", ExecID: "e"}); errKind(err) != "NotFound" {
					t.Errorf("a refused exec is registered: %v", err)
				}
			},
		},
		{
			name:  "exec with a malformed spec",
			setup: func(t *testing.T, h *harness) { h.create(t, "a") },
			call: func(h *harness) error {
				_, err := h.svc.Exec(h.ctx, &taskAPI.ExecProcessRequest{ID: "a", ExecID: "e", Spec: badSpec})
				return err
			},
			want: "InvalidArgument",
		},
		{
			name: "exec in an unknown task",
			call: func(h *harness) error {
				_, err := h.svc.Exec(h.ctx, &taskAPI.ExecProcessRequest{ID: "nope", ExecID: "e", Spec: processSpec(&specs.Process{Args: []string{"sh"}})})
				return err
			},
			want: "NotFound",
		},
		{
			name:  "update with malformed resources",
			setup: func(t *testing.T, h *harness) { h.create(t, "a") },
			call: func(h *harness) error {
				_, err := h.svc.Update(h.ctx, &taskAPI.UpdateTaskRequest{ID: "a", Resources: badSpec})
				return err
			},
			want: "InvalidArgument",
		},
		{
			name: "update without a cgroup",
			setup: func(t *testing.T, h *harness) {
				h.rt.configure = func(ft *fakeTask) { ft.noCgroup = true }
				h.create(t, "a")
			},
			call: func(h *harness) error {
				_, err := h.svc.Update(h.ctx, &taskAPI.UpdateTaskRequest{ID: "a", Resources: resources(&specs.LinuxResources{})})
				return err
			},
			want: "FailedPrecondition",
		},
		{
			name: "pause without a cgroup",
			setup: func(t *testing.T, h *harness) {
				h.rt.configure = func(ft *fakeTask) { ft.noCgroup = true }
				h.create(t, "a")
				h.start(t, "a")
			},
			call: func(h *harness) error {
				_, err := h.svc.Pause(h.ctx, &taskAPI.PauseRequest{ID: "a"})
				return err
			},
			want: "FailedPrecondition",
			after: func(t *testing.T, h *harness) {
				if got := h.events.topics(); !reflect.DeepEqual(got, []string{topicCreate, topicStart}) {
					t.Errorf("events %v: a refused Pause publishes nothing", got)
				}
			},
		},
		{
			name:  "resume of a running task",
			setup: func(t *testing.T, h *harness) { h.create(t, "a"); h.start(t, "a") },
			call: func(h *harness) error {
				_, err := h.svc.Resume(h.ctx, &taskAPI.ResumeRequest{ID: "a"})
				return err
			},
			want: "FailedPrecondition",
		},
		{
			name: "stats without a cgroup",
			setup: func(t *testing.T, h *harness) {
				h.rt.configure = func(ft *fakeTask) { ft.noCgroup = true }
				h.create(t, "a")
			},
			call: func(h *harness) error {
				_, err := h.svc.Stats(h.ctx, &taskAPI.StatsRequest{ID: "a"})
				return err
			},
			want: "NotFound",
		},
		{
			name:  "resize without a terminal",
			setup: func(t *testing.T, h *harness) { h.create(t, "a") },
			call: func(h *harness) error {
				_, err := h.svc.ResizePty(h.ctx, &taskAPI.ResizePtyRequest{ID: "a", Width: 80, Height: 24})
				return err
			},
			want: "FailedPrecondition",
		},
		{
			name: "pids of an unknown task",
			call: func(h *harness) error {
				_, err := h.svc.Pids(h.ctx, &taskAPI.PidsRequest{ID: "nope"})
				return err
			},
			want: "NotFound",
		},
		{
			name: "close io of an unknown task",
			call: func(h *harness) error {
				_, err := h.svc.CloseIO(h.ctx, &taskAPI.CloseIORequest{ID: "nope", Stdin: true})
				return err
			},
			want: "NotFound",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			if tc.setup != nil {
				tc.setup(t, h)
			}
			err := tc.call(h)
			if got := errKind(err); got != tc.want {
				t.Fatalf("error %v is %s, want %s", err, got, tc.want)
			}
			if tc.after != nil {
				tc.after(t, h)
			}
		})
	}
}

func processSpec(p *specs.Process) *ptypes.Any {
	data, err := json.Marshal(p)
	if err != nil {
		panic(err)
	}
	return &ptypes.Any{TypeUrl: "types.containerd.io/opencontainers/runtime-spec/1/Process", Value: data}
}

func resources(r *specs.LinuxResources) *ptypes.Any {
	data, err := json.Marshal(r)
	if err != nil {
		panic(err)
	}
	return &ptypes.Any{TypeUrl: "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources", Value: data}
}

// A Create that fails registers nothing: the ID is free again at once,
// no event went out, the stdio it opened is closed, and a shim left with no
// container ends on Shutdown.
func TestFailedCreateRegistersNothing(t *testing.T) {
	tests := []struct {
		name string
		// breakCreate makes the next Create fail and returns its request;
		// mend undoes it.
		breakCreate func(t *testing.T, h *harness, r *taskAPI.CreateTaskRequest)
		mend        func(h *harness, r *taskAPI.CreateTaskRequest)
		// runtimeAsked: whether the runtime saw the failed Create.
		runtimeAsked bool
	}{
		{
			name:        "host config unreadable",
			breakCreate: func(t *testing.T, h *harness, r *taskAPI.CreateTaskRequest) { h.rt.hostErr = errTest },
			mend:        func(h *harness, r *taskAPI.CreateTaskRequest) { h.rt.hostErr = nil },
		},
		{
			name: "stdout FIFO missing",
			breakCreate: func(t *testing.T, h *harness, r *taskAPI.CreateTaskRequest) {
				r.Stdout = filepath.Join(t.TempDir(), "no-such-dir", "stdout")
			},
			mend: func(h *harness, r *taskAPI.CreateTaskRequest) { r.Stdout = "" },
		},
		{
			name:         "runtime refuses",
			breakCreate:  func(t *testing.T, h *harness, r *taskAPI.CreateTaskRequest) { h.rt.createErr = errTest },
			mend:         func(h *harness, r *taskAPI.CreateTaskRequest) { h.rt.createErr = nil },
			runtimeAsked: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			dir := t.TempDir()
			stdout := mkfifo(t, dir, "stdout")
			containerdReads(t, stdout)
			stdin := mkfifo(t, dir, "stdin")
			r := &taskAPI.CreateTaskRequest{ID: "a", Bundle: dir, Stdin: stdin, Stdout: stdout, Stderr: stdout}
			tc.breakCreate(t, h, r)
			if _, err := h.svc.Create(h.ctx, r); err == nil {
				t.Fatal("Create succeeded")
			}
			if asked := h.rt.createCount() > 0; asked != tc.runtimeAsked {
				t.Errorf("runtime asked: %v, want %v", asked, tc.runtimeAsked)
			}
			if _, err := h.svc.State(h.ctx, &taskAPI.StateRequest{ID: "a"}); errKind(err) != "NotFound" {
				t.Errorf("State after a failed Create: %v, want NotFound", err)
			}
			if got := h.events.topics(); len(got) != 0 {
				t.Errorf("a failed Create published %v", got)
			}
			// Only containerd's own descriptor is left on the FIFOs.
			if n := descriptorsOn(t, stdout); n != 1 {
				t.Errorf("%d descriptors on the stdout FIFO after a failed Create, want containerd's alone", n)
			}
			if n := descriptorsOn(t, stdin); n != 0 {
				t.Errorf("%d descriptors on the stdin FIFO after a failed Create, want none", n)
			}

			tc.mend(h, r)
			ft := h.createWith(t, r)
			st, err := h.svc.State(h.ctx, &taskAPI.StateRequest{ID: "a"})
			if err != nil || st.Status != task.Status_CREATED || st.Pid != uint32(ft.pid) {
				t.Fatalf("State after Create retried: %v, %v", st, err)
			}
			if got := h.events.topics(); !reflect.DeepEqual(got, []string{topicCreate}) {
				t.Errorf("events %v, want one TaskCreate", got)
			}
		})
	}
}

// A failed Create with no other container leaves an idle shim, which must
// end even if containerd never calls Shutdown.
func TestIdleShimEnds(t *testing.T) {
	tests := []struct {
		name  string
		drive func(t *testing.T, h *harness)
	}{
		{"after its last delete", func(t *testing.T, h *harness) {
			h.create(t, "a")
			if _, err := h.svc.Delete(h.ctx, &taskAPI.DeleteRequest{ID: "a"}); err != nil {
				t.Fatal(err)
			}
		}},
		{"after a failed first create", func(t *testing.T, h *harness) {
			h.rt.createErr = errTest
			if _, err := h.svc.Create(h.ctx, &taskAPI.CreateTaskRequest{ID: "a", Bundle: "/b"}); err == nil {
				t.Fatal("Create succeeded")
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.svc.idleExitAfter = time.Millisecond
			tc.drive(t, h)
			select {
			case <-h.sd.Done():
			case <-time.After(eventually):
				t.Fatal("an idle shim did not end")
			}
		})
	}
}

// Shutdown ends the shim only when it holds no container: containerd
// calls it after every Delete, and a grouped shim serves a whole pod.
func TestShutdown(t *testing.T) {
	tests := []struct {
		name      string
		drive     func(t *testing.T, h *harness)
		wantEnded bool
	}{
		{"with no container ever", func(t *testing.T, h *harness) {}, true},
		{"with a container left", func(t *testing.T, h *harness) { h.create(t, "a") }, false},
		{"with one of two containers deleted", func(t *testing.T, h *harness) {
			h.create(t, "a")
			h.create(t, "b")
			if _, err := h.svc.Delete(h.ctx, &taskAPI.DeleteRequest{ID: "a"}); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"after the last delete", func(t *testing.T, h *harness) {
			h.create(t, "a")
			if _, err := h.svc.Delete(h.ctx, &taskAPI.DeleteRequest{ID: "a"}); err != nil {
				t.Fatal(err)
			}
		}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			tc.drive(t, h)
			if _, err := h.svc.Shutdown(h.ctx, &taskAPI.ShutdownRequest{}); err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
			if got := h.sd.ended(); got != tc.wantEnded {
				t.Errorf("shim ended: %v, want %v", got, tc.wantEnded)
			}
		})
	}
}

// Wait answers when the task exits, every caller alike, and gives up
// when its caller does.
func TestWait(t *testing.T) {
	t.Run("honours its context", func(t *testing.T) {
		h := newHarness(t)
		h.create(t, "a")
		h.start(t, "a")
		ctx, cancel := context.WithCancel(h.ctx)
		cancel()
		if _, err := h.svc.Wait(ctx, &taskAPI.WaitRequest{ID: "a"}); errKind(err) != "Canceled" {
			t.Errorf("Wait with a cancelled context: %v (%s), want Canceled", err, errKind(err))
		}
		ctx, cancel = context.WithTimeout(h.ctx, time.Millisecond)
		defer cancel()
		if _, err := h.svc.Wait(ctx, &taskAPI.WaitRequest{ID: "a"}); errKind(err) != "DeadlineExceeded" {
			t.Errorf("Wait past its deadline: %v (%s), want DeadlineExceeded", err, errKind(err))
		}
	})
	t.Run("many waiters, one answer", func(t *testing.T) {
		h := newHarness(t)
		ft := h.create(t, "a")
		h.start(t, "a")
		const waiters = 8
		answers := make(chan *taskAPI.WaitResponse, waiters)
		var wg sync.WaitGroup
		for i := 0; i < waiters; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				resp, err := h.svc.Wait(h.ctx, &taskAPI.WaitRequest{ID: "a"})
				if err != nil {
					t.Errorf("Wait: %v", err)
					return
				}
				answers <- resp
			}()
		}
		ft.exitWith(42)
		wg.Wait()
		close(answers)
		// A late caller gets the same answer too.
		late, err := h.svc.Wait(h.ctx, &taskAPI.WaitRequest{ID: "a"})
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for a := range answers {
			n++
			if a.ExitStatus != 42 || !sameTime(a.ExitedAt, late.ExitedAt) {
				t.Errorf("a waiter got %d at %v, the late one %d at %v", a.ExitStatus, a.ExitedAt.AsTime(), late.ExitStatus, late.ExitedAt.AsTime())
			}
		}
		if n != waiters {
			t.Errorf("%d of %d waiters answered", n, waiters)
		}
	})
}

// OOM kills reach containerd once, before the exit they explain, whether
// the cgroup's notification or the exit sees them first.
func TestOOMEvents(t *testing.T) {
	tests := []struct {
		name   string
		notify bool // the cgroup notifies before the exit
	}{
		{"notified before the exit", true},
		{"seen only at the exit", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			oom := make(chan struct{}, 1)
			h.rt.configure = func(ft *fakeTask) { ft.oom = oom }
			ft := h.create(t, "a")
			h.start(t, "a")
			if tc.notify {
				oom <- struct{}{}
				h.events.waitForTopic(t, ctrdruntime.TaskOOMEventTopic)
			}
			ft.mu.Lock()
			ft.oomKilled = true
			ft.exitLocked(137)
			ft.mu.Unlock()
			h.events.waitForTopic(t, topicExit)
			want := []string{topicCreate, topicStart, ctrdruntime.TaskOOMEventTopic, topicExit}
			if got := h.events.topics(); !reflect.DeepEqual(got, want) {
				t.Errorf("events %v, want %v", got, want)
			}
			if oom := h.events.all()[2].(*eventstypes.TaskOOM); oom.ContainerID != "a" {
				t.Errorf("TaskOOM for %q, want a", oom.ContainerID)
			}
		})
	}
}

// Pause and Resume move the task and say so; Pids, Stats, Update and
// Connect pass the runtime's answers through unchanged.
func TestTaskQueries(t *testing.T) {
	h := newHarness(t)
	h.rt.configure = func(ft *fakeTask) { ft.pids = []int{7001, 7002} }
	ft := h.create(t, "a")
	h.start(t, "a")

	if _, err := h.svc.Pause(h.ctx, &taskAPI.PauseRequest{ID: "a"}); err != nil {
		t.Fatalf("Pause: %v", err)
	}
	if st, _ := h.svc.State(h.ctx, &taskAPI.StateRequest{ID: "a"}); st.Status != task.Status_PAUSED {
		t.Errorf("State after Pause: %v", st.Status)
	}
	if _, err := h.svc.Resume(h.ctx, &taskAPI.ResumeRequest{ID: "a"}); err != nil {
		t.Fatalf("Resume: %v", err)
	}
	if st, _ := h.svc.State(h.ctx, &taskAPI.StateRequest{ID: "a"}); st.Status != task.Status_RUNNING {
		t.Errorf("State after Resume: %v", st.Status)
	}
	want := []string{topicCreate, topicStart, ctrdruntime.TaskPausedEventTopic, ctrdruntime.TaskResumedEventTopic}
	if got := h.events.topics(); !reflect.DeepEqual(got, want) {
		t.Errorf("events %v, want %v", got, want)
	}

	pids, err := h.svc.Pids(h.ctx, &taskAPI.PidsRequest{ID: "a"})
	if err != nil {
		t.Fatalf("Pids: %v", err)
	}
	var got []uint32
	for _, p := range pids.Processes {
		got = append(got, p.Pid)
	}
	if wantPids := []uint32{uint32(ft.pid), 7001, 7002}; !reflect.DeepEqual(got, wantPids) {
		t.Errorf("Pids %v, want %v", got, wantPids)
	}

	st, err := h.svc.Stats(h.ctx, &taskAPI.StatsRequest{ID: "a"})
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	m, err := typeurl.UnmarshalAny(st.Stats)
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	if m, ok := m.(*stats.Metrics); !ok || m.Pids.GetCurrent() != 3 {
		t.Errorf("Stats %T %v, want cgroup v1 metrics with 3 pids", m, m)
	}

	shares := uint64(512)
	if _, err := h.svc.Update(h.ctx, &taskAPI.UpdateTaskRequest{ID: "a", Resources: resources(&specs.LinuxResources{CPU: &specs.LinuxCPU{Shares: &shares}})}); err != nil {
		t.Fatalf("Update: %v", err)
	}
	ft.mu.Lock()
	res := ft.res
	ft.mu.Unlock()
	if res == nil || res.CPU == nil || res.CPU.Shares == nil || *res.CPU.Shares != shares {
		t.Errorf("Update handed the runtime %+v, want CPU shares %d", res, shares)
	}

	conn, err := h.svc.Connect(h.ctx, &taskAPI.ConnectRequest{ID: "a"})
	if err != nil || conn.ShimPid != uint32(os.Getpid()) || conn.TaskPid != uint32(ft.pid) {
		t.Errorf("Connect = %v, %v; want shim pid %d, task pid %d", conn, err, os.Getpid(), ft.pid)
	}
	// containerd connects to a shim whose task may be gone: that is no
	// error, just no task pid.
	if conn, err := h.svc.Connect(h.ctx, &taskAPI.ConnectRequest{ID: "gone"}); err != nil || conn.TaskPid != 0 {
		t.Errorf("Connect to an unknown task = %v, %v", conn, err)
	}
	if got, want := ft.callLog(), []string{"start", "pause", "resume", "update"}; !reflect.DeepEqual(got, want) {
		t.Errorf("runtime calls %q, want %q", got, want)
	}
}

// Create hands the runtime what containerd asked for and the host's
// configuration.
func TestCreateHandsTheRuntimeTheRequest(t *testing.T) {
	h := newHarness(t)
	h.rt.host = config.HostConfig{Runtime: config.RuntimeConfig{}, UnusedKeys: []string{"x (line 1)"}}
	dir := t.TempDir()
	stdout := mkfifo(t, dir, "stdout")
	stderr := mkfifo(t, dir, "stderr")
	containerdReads(t, stdout)
	containerdReads(t, stderr)
	r := &taskAPI.CreateTaskRequest{
		ID: "a", Bundle: dir, Stdout: stdout, Stderr: stderr,
		Rootfs: []*types.Mount{{Type: "overlay", Source: "overlay", Target: "", Options: []string{"lowerdir=/l", "upperdir=/u"}}},
	}
	h.createWith(t, r)
	h.rt.mu.Lock()
	opts := h.rt.creates[0]
	h.rt.mu.Unlock()
	if opts.ID != "a" || opts.Namespace != "testns" || opts.Bundle != dir {
		t.Errorf("Create options %+v", opts)
	}
	if len(opts.Rootfs) != 1 || opts.Rootfs[0].Type != "overlay" || !reflect.DeepEqual(opts.Rootfs[0].Options, r.Rootfs[0].Options) {
		t.Errorf("rootfs %+v, want the request's", opts.Rootfs)
	}
	if !reflect.DeepEqual(opts.Host.UnusedKeys, h.rt.host.UnusedKeys) {
		t.Errorf("host config %+v, want the loaded one", opts.Host)
	}
	if opts.Stdio.Stdout == nil || opts.Stdio.Stderr == nil || opts.Stdio.Stdout == opts.Stdio.Stderr || opts.Stdio.Stdin != nil {
		t.Errorf("stdio %+v, want separate stdout and stderr, no stdin", opts.Stdio)
	}
	if opts.Console == nil {
		t.Error("no console tap for a guest whose stdout the shim copies")
	}
}

// What the monitor writes reaches containerd's FIFOs, and their end
// comes with the monitor's; stdin flows until CloseIO.
func TestStdioThroughFIFOs(t *testing.T) {
	h := newHarness(t)
	dir := t.TempDir()
	stdin, stdout := mkfifo(t, dir, "stdin"), mkfifo(t, dir, "stdout")
	// containerd's side: it reads stdout and writes stdin.
	out := containerdReads(t, stdout)
	ft := h.createWith(t, &taskAPI.CreateTaskRequest{ID: "a", Bundle: dir, Stdin: stdin, Stdout: stdout, Stderr: stdout})
	h.start(t, "a")

	in, err := os.OpenFile(stdin, os.O_WRONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatalf("open stdin FIFO as containerd: %v", err)
	}
	defer in.Close()

	if _, err := in.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	ping := make([]byte, 4)
	if _, err := io.ReadFull(ft.stdio.Stdin, ping); err != nil || string(ping) != "ping" {
		t.Fatalf("the monitor read %q, %v from stdin, want ping", ping, err)
	}
	if _, err := h.svc.CloseIO(h.ctx, &taskAPI.CloseIORequest{ID: "a", Stdin: true}); err != nil {
		t.Fatalf("CloseIO: %v", err)
	}
	// Then EOF, though containerd still holds the FIFO open.
	if rest := readAllWithin(t, ft.stdio.Stdin); rest != "" {
		t.Errorf("the monitor read %q after CloseIO", rest)
	}

	if _, err := ft.stdio.Stdout.Write([]byte("to stdout\n")); err != nil {
		t.Fatal(err)
	}
	if _, err := ft.stdio.Stderr.Write([]byte("to stderr\n")); err != nil {
		t.Fatal(err)
	}
	ft.exitWith(0)
	if got := readAllWithin(t, out); got != "to stdout\nto stderr\n" {
		t.Errorf("containerd read %q from the stdout FIFO", got)
	}
	h.events.waitForTopic(t, topicExit)
	if _, err := h.svc.Delete(h.ctx, &taskAPI.DeleteRequest{ID: "a"}); err != nil {
		t.Fatalf("Delete: %v", err)
	}
}

// CloseIO ends the guest's stdin after what containerd already wrote:
// data still waiting in the FIFO reaches the monitor before its EOF, as
// with containerd's runc shim, where CloseIO drops only the shim's hold.
func TestCloseIOKeepsWrittenStdin(t *testing.T) {
	h := newHarness(t)
	dir := t.TempDir()
	stdin := mkfifo(t, dir, "stdin")
	ft := h.createWith(t, &taskAPI.CreateTaskRequest{ID: "a", Bundle: dir, Stdin: stdin})
	h.start(t, "a")

	in, err := os.OpenFile(stdin, os.O_WRONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatalf("open stdin FIFO as containerd: %v", err)
	}
	defer in.Close()
	if _, err := in.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	if _, err := h.svc.CloseIO(h.ctx, &taskAPI.CloseIORequest{ID: "a", Stdin: true}); err != nil {
		t.Fatalf("CloseIO: %v", err)
	}
	if got := readAllWithin(t, ft.stdio.Stdin); got != "ping" {
		t.Errorf("the monitor read %q then EOF from stdin, want ping then EOF", got)
	}
	ft.exitWith(0)
	h.events.waitForTopic(t, topicExit)
	if _, err := h.svc.Delete(h.ctx, &taskAPI.DeleteRequest{ID: "a"}); err != nil {
		t.Fatalf("Delete: %v", err)
	}
}

// readAllWithin reads r to EOF, failing the test if that does not come.
func readAllWithin(t *testing.T, r io.Reader) string {
	t.Helper()
	type result struct {
		data []byte
		err  error
	}
	done := make(chan result, 1)
	go func() {
		data, err := io.ReadAll(r)
		done <- result{data, err}
	}()
	select {
	case res := <-done:
		if res.err != nil {
			t.Fatalf("read: %v", res.err)
		}
		return string(res.data)
	case <-time.After(eventually):
		t.Fatal("no EOF")
		return ""
	}
}

// A terminal task gets a pty whose size ResizePty sets.
func TestTerminalResize(t *testing.T) {
	h := newHarness(t)
	dir := t.TempDir()
	stdout := mkfifo(t, dir, "stdout")
	containerdReads(t, stdout)
	ft := h.createWith(t, &taskAPI.CreateTaskRequest{ID: "a", Bundle: dir, Stdout: stdout, Terminal: true})
	if _, err := h.svc.ResizePty(h.ctx, &taskAPI.ResizePtyRequest{ID: "a", Width: 100, Height: 40}); err != nil {
		t.Fatalf("ResizePty: %v", err)
	}
	var ws *unix.Winsize
	var wsErr error
	rc, err := ft.stdio.Stdout.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	if err := rc.Control(func(fd uintptr) { ws, wsErr = unix.IoctlGetWinsize(int(fd), unix.TIOCGWINSZ) }); err != nil || wsErr != nil {
		t.Fatalf("the monitor's terminal size: %v, %v", err, wsErr)
	}
	if ws.Col != 100 || ws.Row != 40 {
		t.Errorf("the monitor's terminal is %dx%d, want 100x40", ws.Col, ws.Row)
	}
	if st, _ := h.svc.State(h.ctx, &taskAPI.StateRequest{ID: "a"}); !st.Terminal || st.Stdout != stdout {
		t.Errorf("State %+v, want the request's stdio", st)
	}
	ft.exitWith(0)
	if _, err := h.svc.Delete(h.ctx, &taskAPI.DeleteRequest{ID: "a"}); err != nil {
		t.Fatalf("Delete: %v", err)
	}
}
