package shim

import (
	"context"
	"fmt"
	"reflect"
	"syscall"
	"testing"

	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/api/types/task"
	ctrdruntime "github.com/containerd/containerd/v2/core/runtime"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

const (
	topicExecAdded   = ctrdruntime.TaskExecAddedEventTopic
	topicExecStarted = ctrdruntime.TaskExecStartedEventTopic
)

// runningTask creates and starts task "a", which takes execs as a plain
// container does.
func runningTask(t *testing.T, h *harness) *fakeTask {
	t.Helper()
	ft := h.create(t, "a")
	h.start(t, "a")
	return ft
}

func (h *harness) exec(t *testing.T, r *taskAPI.ExecProcessRequest) {
	t.Helper()
	if r.Spec == nil {
		r.Spec = processSpec(&specs.Process{Args: []string{"sh"}, Cwd: "/"})
	}
	if _, err := h.svc.Exec(h.ctx, r); err != nil {
		t.Fatalf("Exec %s: %v", r.ExecID, err)
	}
}

// An exec's life: added, started, exited, deleted, with its events in that
// order after the task's own; its TaskExit names the exec by its ID in the
// container's; Wait, State and Delete agree; the task itself runs on.
func TestExecLifecycle(t *testing.T) {
	tests := []struct {
		name       string
		drive      func(t *testing.T, h *harness, p *fakeProcess)
		wantStatus int
	}{
		{"exits by itself", func(t *testing.T, h *harness, p *fakeProcess) { p.exitWith(5) }, 5},
		{"killed", func(t *testing.T, h *harness, p *fakeProcess) {
			if _, err := h.svc.Kill(h.ctx, &taskAPI.KillRequest{ID: "a", ExecID: "e", Signal: uint32(syscall.SIGKILL)}); err != nil {
				t.Fatalf("Kill exec: %v", err)
			}
		}, 128 + int(syscall.SIGKILL)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			ft := runningTask(t, h)
			h.exec(t, &taskAPI.ExecProcessRequest{ID: "a", ExecID: "e"})
			p := ft.exec("e")
			if st, err := h.svc.State(h.ctx, &taskAPI.StateRequest{ID: "a", ExecID: "e"}); err != nil || st.Status != task.Status_CREATED || st.ExecID != "e" {
				t.Fatalf("State of a new exec: %v, %v", st, err)
			}
			started, err := h.svc.Start(h.ctx, &taskAPI.StartRequest{ID: "a", ExecID: "e"})
			if err != nil {
				t.Fatalf("Start exec: %v", err)
			}
			if started.Pid != uint32(p.pidOnStart) {
				t.Errorf("Start exec returned pid %d, want %d", started.Pid, p.pidOnStart)
			}
			tc.drive(t, h, p)
			wait, err := h.svc.Wait(h.ctx, &taskAPI.WaitRequest{ID: "a", ExecID: "e"})
			if err != nil {
				t.Fatalf("Wait exec: %v", err)
			}
			st, err := h.svc.State(h.ctx, &taskAPI.StateRequest{ID: "a", ExecID: "e"})
			if err != nil || st.Status != task.Status_STOPPED {
				t.Fatalf("State of an ended exec: %v, %v", st, err)
			}
			del, err := h.svc.Delete(h.ctx, &taskAPI.DeleteRequest{ID: "a", ExecID: "e"})
			if err != nil {
				t.Fatalf("Delete exec: %v", err)
			}
			if del.Pid != started.Pid || del.ExitStatus != uint32(tc.wantStatus) {
				t.Errorf("Delete exec = pid %d status %d, want pid %d status %d", del.Pid, del.ExitStatus, started.Pid, tc.wantStatus)
			}
			if wait.ExitStatus != del.ExitStatus || st.ExitStatus != del.ExitStatus || !sameTime(wait.ExitedAt, del.ExitedAt) || !sameTime(st.ExitedAt, del.ExitedAt) {
				t.Errorf("Wait %d, State %d, Delete %d: they must agree, time too", wait.ExitStatus, st.ExitStatus, del.ExitStatus)
			}

			want := []string{topicCreate, topicStart, topicExecAdded, topicExecStarted, topicExit}
			if got := h.events.topics(); !reflect.DeepEqual(got, want) {
				t.Fatalf("events %v, want %v", got, want)
			}
			evs := h.events.all()
			if e := evs[2].(*eventstypes.TaskExecAdded); e.ContainerID != "a" || e.ExecID != "e" {
				t.Errorf("TaskExecAdded %+v", e)
			}
			if e := evs[3].(*eventstypes.TaskExecStarted); e.ContainerID != "a" || e.ExecID != "e" || e.Pid != started.Pid {
				t.Errorf("TaskExecStarted %+v, want pid %d", e, started.Pid)
			}
			if e := evs[4].(*eventstypes.TaskExit); e.ContainerID != "a" || e.ID != "e" || e.Pid != started.Pid || e.ExitStatus != uint32(tc.wantStatus) {
				t.Errorf("TaskExit %+v, want container a, ID e, pid %d, status %d", e, started.Pid, tc.wantStatus)
			}

			if _, err := h.svc.Delete(h.ctx, &taskAPI.DeleteRequest{ID: "a", ExecID: "e"}); errKind(err) != "NotFound" {
				t.Errorf("second Delete of the exec: %v, want NotFound", err)
			}
			if st, err := h.svc.State(h.ctx, &taskAPI.StateRequest{ID: "a"}); err != nil || st.Status != task.Status_RUNNING {
				t.Errorf("the task after its exec: %v, %v; want it running", st, err)
			}
		})
	}
}

// An exec added and deleted without a start goes without blocking and
// without an exit event.
func TestExecDeletedBeforeStart(t *testing.T) {
	h := newHarness(t)
	runningTask(t, h)
	h.exec(t, &taskAPI.ExecProcessRequest{ID: "a", ExecID: "e"})
	if _, err := h.svc.Delete(h.ctx, &taskAPI.DeleteRequest{ID: "a", ExecID: "e"}); err != nil {
		t.Fatalf("Delete exec: %v", err)
	}
	if want, got := []string{topicCreate, topicStart, topicExecAdded}, h.events.topics(); !reflect.DeepEqual(got, want) {
		t.Errorf("events %v, want %v", got, want)
	}
	if _, err := h.svc.State(h.ctx, &taskAPI.StateRequest{ID: "a", ExecID: "e"}); errKind(err) != "NotFound" {
		t.Errorf("State of a deleted exec: %v", err)
	}
}

// An exec's refusals map to gRPC codes like the task's.
func TestExecErrors(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, h *harness, ft *fakeTask)
		call  func(h *harness) error
		want  string
	}{
		{
			name: "an exec ID taken",
			setup: func(t *testing.T, h *harness, ft *fakeTask) {
				h.exec(t, &taskAPI.ExecProcessRequest{ID: "a", ExecID: "e"})
			},
			call: func(h *harness) error {
				_, err := h.svc.Exec(h.ctx, &taskAPI.ExecProcessRequest{ID: "a", ExecID: "e", Spec: processSpec(&specs.Process{Args: []string{"sh"}})})
				return err
			},
			want: "AlreadyExists",
		},
		{
			name: "kill of an exec not started",
			setup: func(t *testing.T, h *harness, ft *fakeTask) {
				h.exec(t, &taskAPI.ExecProcessRequest{ID: "a", ExecID: "e"})
			},
			call: func(h *harness) error {
				_, err := h.svc.Kill(h.ctx, &taskAPI.KillRequest{ID: "a", ExecID: "e", Signal: 9})
				return err
			},
			want: "FailedPrecondition",
		},
		{
			name: "delete of a running exec",
			setup: func(t *testing.T, h *harness, ft *fakeTask) {
				h.exec(t, &taskAPI.ExecProcessRequest{ID: "a", ExecID: "e"})
				if _, err := h.svc.Start(h.ctx, &taskAPI.StartRequest{ID: "a", ExecID: "e"}); err != nil {
					t.Fatal(err)
				}
			},
			call: func(h *harness) error {
				_, err := h.svc.Delete(h.ctx, &taskAPI.DeleteRequest{ID: "a", ExecID: "e"})
				return err
			},
			want: "FailedPrecondition",
		},
		{
			name: "start the runtime refuses",
			setup: func(t *testing.T, h *harness, ft *fakeTask) {
				h.exec(t, &taskAPI.ExecProcessRequest{ID: "a", ExecID: "e"})
				ft.exec("e").startErr = fmt.Errorf("runc exec: %w", errdefs.ErrInvalidArgument)
			},
			call: func(h *harness) error {
				_, err := h.svc.Start(h.ctx, &taskAPI.StartRequest{ID: "a", ExecID: "e"})
				return err
			},
			want: "InvalidArgument",
		},
		{
			name: "wait past its context",
			setup: func(t *testing.T, h *harness, ft *fakeTask) {
				h.exec(t, &taskAPI.ExecProcessRequest{ID: "a", ExecID: "e"})
			},
			call: func(h *harness) error {
				ctx, cancel := context.WithCancel(h.ctx)
				cancel()
				_, err := h.svc.Wait(ctx, &taskAPI.WaitRequest{ID: "a", ExecID: "e"})
				return err
			},
			want: "Canceled",
		},
		{
			name: "exec into a task not running",
			setup: func(t *testing.T, h *harness, ft *fakeTask) {
				ft.exitWith(0)
			},
			call: func(h *harness) error {
				_, err := h.svc.Exec(h.ctx, &taskAPI.ExecProcessRequest{ID: "a", ExecID: "e", Spec: processSpec(&specs.Process{Args: []string{"sh"}})})
				return err
			},
			want: "FailedPrecondition",
		},
	}
	for _, op := range []string{"state", "wait", "kill", "delete", "resize", "closeio"} {
		op := op
		tests = append(tests, struct {
			name  string
			setup func(t *testing.T, h *harness, ft *fakeTask)
			call  func(h *harness) error
			want  string
		}{
			name: op + " of an unknown exec",
			call: func(h *harness) error {
				var err error
				switch op {
				case "state":
					_, err = h.svc.State(h.ctx, &taskAPI.StateRequest{ID: "a", ExecID: "x"})
				case "wait":
					_, err = h.svc.Wait(h.ctx, &taskAPI.WaitRequest{ID: "a", ExecID: "x"})
				case "kill":
					_, err = h.svc.Kill(h.ctx, &taskAPI.KillRequest{ID: "a", ExecID: "x", Signal: 9})
				case "delete":
					_, err = h.svc.Delete(h.ctx, &taskAPI.DeleteRequest{ID: "a", ExecID: "x"})
				case "resize":
					_, err = h.svc.ResizePty(h.ctx, &taskAPI.ResizePtyRequest{ID: "a", ExecID: "x"})
				case "closeio":
					_, err = h.svc.CloseIO(h.ctx, &taskAPI.CloseIORequest{ID: "a", ExecID: "x", Stdin: true})
				}
				return err
			},
			want: "NotFound",
		})
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			ft := runningTask(t, h)
			if tc.setup != nil {
				tc.setup(t, h, ft)
			}
			if err := tc.call(h); errKind(err) != tc.want {
				t.Fatalf("error %v is %s, want %s", err, errKind(err), tc.want)
			}
		})
	}
}

// A terminal exec's pty comes from the runtime once it runs; the shim
// copies it to the stdout FIFO and resizes it.
func TestExecTerminal(t *testing.T) {
	h := newHarness(t)
	ft := runningTask(t, h)
	dir := t.TempDir()
	stdout := mkfifo(t, dir, "exec-stdout")
	out := containerdReads(t, stdout)
	h.exec(t, &taskAPI.ExecProcessRequest{ID: "a", ExecID: "e", Terminal: true, Stdout: stdout})
	p := ft.exec("e")
	if !p.spec.Terminal {
		t.Fatal("the request's terminal did not reach the exec's spec")
	}
	if _, err := h.svc.Start(h.ctx, &taskAPI.StartRequest{ID: "a", ExecID: "e"}); err != nil {
		t.Fatalf("Start exec: %v", err)
	}
	if _, err := h.svc.ResizePty(h.ctx, &taskAPI.ResizePtyRequest{ID: "a", ExecID: "e", Width: 120, Height: 30}); err != nil {
		t.Fatalf("ResizePty: %v", err)
	}
	ws, err := unix.IoctlGetWinsize(int(p.stdio.Stdin.Fd()), unix.TIOCGWINSZ)
	if err != nil || ws.Col != 120 || ws.Row != 30 {
		t.Errorf("the exec's terminal: %+v, %v; want 120x30", ws, err)
	}
	if _, err := p.stdio.Stdin.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	p.exitWith(0)
	if got := readAllWithin(t, out); got != "hello" {
		t.Errorf("containerd read %q from the exec's stdout", got)
	}
	h.events.waitForTopic(t, topicExit)
	if _, err := h.svc.Delete(h.ctx, &taskAPI.DeleteRequest{ID: "a", ExecID: "e"}); err != nil {
		t.Fatalf("Delete exec: %v", err)
	}
}
