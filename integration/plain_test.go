//go:build integration

package integration

import (
	"bytes"
	"context"
	"io"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/typeurl/v2"

	"github.com/urunc-dev/containerd-shim-urunc-v2/integration/testimage"
)

// A container whose image names no unikernel is run by runc through
// go-runc, under this shim: output, exit status, kill and delete work, and
// nothing (runc state included) is left.
func TestPlainContainerRunsUnderRunc(t *testing.T) {
	t.Run("one-shot", func(t *testing.T) {
		id := newID(t)
		out, err := ctrRaw("run", "--rm", "--runtime", runtimeName, testimage.PlainImageName, id, "/bin/busybox", "echo", "hello-plain")
		if err != nil || !strings.Contains(out, "hello-plain") {
			t.Fatalf("ctr run: %v\n%s", err, out)
		}
	})
	t.Run("exit status", func(t *testing.T) {
		id := newID(t)
		out, err := ctrRaw("run", "--rm", "--runtime", runtimeName, testimage.PlainImageName, id, "/bin/sh", "-c", "exit 7")
		if exitCode(err) != 7 {
			t.Fatalf("ctr run: %v, want exit 7\n%s", err, out)
		}
	})
	t.Run("detached, kill, delete", func(t *testing.T) {
		id := newID(t)
		log := filepath.Join(t.TempDir(), "out.log")
		ctr(t, "run", "-d", "--log-uri", "file://"+log, "--runtime", runtimeName, testimage.PlainImageName, id,
			"/bin/sh", "-c", "echo plain-ready; exec /bin/busybox sleep 1000")
		waitForOutput(t, log, "plain-ready", 20*time.Second)
		if st := taskStatus(t, id); st != "RUNNING" {
			t.Fatalf("status %s", st)
		}
		if pids := taskPids(t, id); len(pids) == 0 {
			t.Fatal("no pids")
		}
		ctr(t, "task", "pause", id)
		ctr(t, "task", "resume", id)
		ctr(t, "task", "kill", "-s", "SIGKILL", id)
		waitFor(t, 10*time.Second, "stop", func() bool { return taskStatus(t, id) == "STOPPED" })
		if _, code := taskState(t, id); code != 137 {
			t.Fatalf("exit %d, want 137", code)
		}
		ctr(t, "task", "rm", id)
		ctr(t, "container", "rm", id)
	})
}

// Exec into a plain container (a sidecar's probe, kubectl exec), as
// containerd's runc shim does it: output and exit status through ctr, and
// through the Go client an exec's Pids entry, Kill, Wait, State and
// Delete, with TaskExecAdded, TaskExecStarted and its TaskExit.
func TestExecInPlainContainer(t *testing.T) {
	id := newID(t)
	ctr(t, "run", "-d", "--runtime", runtimeName, testimage.PlainImageName, id, "/bin/busybox", "sleep", "1000")
	out := ctr(t, "task", "exec", "--exec-id", "probe", id, "/bin/busybox", "echo", "hello-from-exec")
	if !strings.Contains(out, "hello-from-exec") {
		t.Fatalf("exec output: %q", out)
	}
	if out, err := ctrRaw("task", "exec", "--exec-id", "fails", id, "/bin/sh", "-c", "exit 5"); exitCode(err) != 5 {
		t.Fatalf("exec exit: %v, want 5\n%s", err, out)
	}

	cont, task, ctx := loadTask(t, id)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c, _ := newClient(t)
	evc, errc := subscribeLive(ctx, t, c, `topic~="/tasks/exec"`, `topic=="/tasks/exit"`)
	spec, err := cont.Spec(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pspec := *spec.Process
	pspec.Args = []string{"/bin/busybox", "sleep", "1000"}
	proc, err := task.Exec(ctx, "long", &pspec, cio.NullIO)
	if err != nil {
		t.Fatal(err)
	}
	exitC, err := proc.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := proc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if pids := taskPids(t, id); !containsAny(pids, []int{int(proc.Pid())}) {
		t.Fatalf("task ps %v lacks the exec's pid %d", pids, proc.Pid())
	}
	if st, err := proc.Status(ctx); err != nil || st.Status != containerd.Running {
		t.Fatalf("exec status: %+v %v", st, err)
	}
	if err := proc.Kill(ctx, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if st := <-exitC; st.ExitCode() != 137 {
		t.Fatalf("exec Wait: %d, want 137", st.ExitCode())
	}
	if st, err := proc.Delete(ctx); err != nil || st.ExitCode() != 137 {
		t.Fatalf("exec Delete: %v %v", st, err)
	}
	if _, err := proc.Delete(ctx); err == nil {
		t.Fatal("a second exec Delete succeeded")
	}
	// Its events, in order: added, started, exit (ID the exec's).
	var got []string
	timeout := time.After(15 * time.Second)
	for len(got) < 3 {
		select {
		case env := <-evc:
			v, err := typeurl.UnmarshalAny(env.Event)
			if err != nil {
				t.Fatal(err)
			}
			switch e := v.(type) {
			case *eventstypes.TaskExecAdded:
				if e.ExecID == "long" {
					got = append(got, env.Topic)
				}
			case *eventstypes.TaskExecStarted:
				if e.ExecID == "long" && e.Pid == proc.Pid() {
					got = append(got, env.Topic)
				}
			case *eventstypes.TaskExit:
				if e.ID == "long" && e.ExitStatus == 137 {
					got = append(got, env.Topic)
				}
			}
		case err := <-errc:
			t.Fatal(err)
		case <-timeout:
			t.Fatalf("exec events so far: %v", got)
		}
	}
	if want := "/tasks/exec-added /tasks/exec-started /tasks/exit"; strings.Join(got, " ") != want {
		t.Fatalf("exec events %v, want %s", got, want)
	}
	// A terminal exec (kubectl exec -it, a shell): runc's pty in the
	// container, resized through ResizePty, its stdin and output through
	// the FIFOs.
	pspec.Terminal = true
	pspec.Args = []string{"/bin/sh", "-c", "read go; tty; stty size"}
	stdinR, stdinW := io.Pipe()
	var ttyOut bytes.Buffer
	tp, err := task.Exec(ctx, "tty", &pspec, cio.NewCreator(cio.WithStreams(stdinR, &ttyOut, nil), cio.WithTerminal))
	if err != nil {
		t.Fatalf("tty exec: %v", err)
	}
	ttyExit, err := tp.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := tp.Start(ctx); err != nil {
		t.Fatalf("tty exec start: %v", err)
	}
	if err := tp.Resize(ctx, 123, 45); err != nil {
		t.Fatalf("tty exec resize: %v", err)
	}
	if _, err := stdinW.Write([]byte("go\n")); err != nil {
		t.Fatal(err)
	}
	if st := <-ttyExit; st.ExitCode() != 0 {
		t.Fatalf("tty exec exit: %d", st.ExitCode())
	}
	stdinW.Close()
	if _, err := tp.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	if out := ttyOut.String(); !strings.Contains(out, "/dev/pts/") || !strings.Contains(out, "45 123") {
		t.Fatalf("tty exec output %q, want its pty's name and the size 45 123", out)
	}
	killAndRemove(t, id)
}
