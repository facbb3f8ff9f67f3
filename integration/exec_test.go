//go:build integration

package integration

import (
	"bytes"
	"context"
	"io"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/api/types/runc/options"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/typeurl/v2"
)

// execContract is what an exec into running container id must do, the
// same for a plain container (runc's) and a Linux guest (its agent's);
// the container has busybox's applets on its PATH:
//   - through ctr: output, exit status 5, stdin piped in and closed, and
//     -t on a terminal of 33x111 whose size the exec reads back;
//   - through the Go client: the exec's entry in Pids marked with its ID
//     where it is a host process (execInGuest false; a guest's exec is
//     not, and Pids lists host processes only), State, Kill, Wait and
//     Delete, with TaskExecAdded, TaskExecStarted
//     and its TaskExit in that order; a terminal exec's pty, resized
//     through ResizePty, its stdin and output through the FIFOs.
func execContract(t *testing.T, id string, execInGuest bool) {
	t.Helper()
	out := ctr(t, "task", "exec", "--exec-id", "probe", id, "/bin/busybox", "echo", "hello-from-exec")
	if !strings.Contains(out, "hello-from-exec") {
		t.Fatalf("exec output: %q", out)
	}
	if out, err := ctrRaw("task", "exec", "--exec-id", "fails", id, "/bin/sh", "-c", "exit 5"); exitCode(err) != 5 {
		t.Fatalf("exec exit: %v, want 5\n%s", err, out)
	}
	if out, err := ctrWithStdin("piped-in line\n", "task", "exec", "--exec-id", "stdin", id, "/bin/sh", "-c", "cat; echo stdin-closed"); err != nil ||
		!strings.Contains(out, "piped-in line\nstdin-closed") {
		t.Fatalf("exec with stdin: %v\n%q", err, out)
	}
	// ctr -t resizes the exec's pty to its own terminal's size once the
	// exec has started: script(1) gives it 33 rows and 111 columns, and
	// the exec reads the size once it is set (a new pty is 0x0 until
	// then, on which busybox's stty size prints nothing to stdout).
	line := "stty rows 33 cols 111; ctr --address " + env.socket() + " --namespace " + namespace +
		" task exec -t --exec-id tty-ctr " + id + ` /bin/sh -c 'i=0; until [ -n "$(stty size 2>/dev/null)" ] || [ $i = 600 ]; do sleep 0.1; i=$((i+1)); done; stty size'`
	ttyOut, err := exec.Command("script", "-qec", line, "/dev/null").CombinedOutput()
	if err != nil || !strings.Contains(string(ttyOut), "33 111") {
		t.Fatalf("ctr task exec -t: %v\n%q", err, ttyOut)
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
	if execID, ok := pidsExecID(t, ctx, task, proc.Pid()); execInGuest && execID != "" || !execInGuest && (!ok || execID != "long") {
		t.Fatalf("task pids: the exec's pid %d is listed %v, marked %q", proc.Pid(), ok, execID)
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
	// A terminal exec (kubectl exec -it, a shell): a pty in the
	// container, resized through ResizePty, its stdin and output through
	// the FIFOs.
	pspec.Terminal = true
	pspec.Args = []string{"/bin/sh", "-c", "read go; tty; stty size"}
	stdinR, stdinW := io.Pipe()
	var ttyBuf bytes.Buffer
	tp, err := task.Exec(ctx, "tty", &pspec, cio.NewCreator(cio.WithStreams(stdinR, &ttyBuf, nil), cio.WithTerminal))
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
	if out := ttyBuf.String(); !strings.Contains(out, "/dev/pts/") || !strings.Contains(out, "45 123") {
		t.Fatalf("tty exec output %q, want its pty's name and the size 45 123", out)
	}
}

// pidsExecID is the exec ID task's Pids marks pid with.
func pidsExecID(t *testing.T, ctx context.Context, task containerd.Task, pid uint32) (string, bool) {
	t.Helper()
	procs, err := task.Pids(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range procs {
		if p.Pid != pid {
			continue
		}
		if p.Info == nil {
			return "", true
		}
		v, err := typeurl.UnmarshalAny(p.Info)
		if err != nil {
			t.Fatal(err)
		}
		if d, ok := v.(*options.ProcessDetails); ok {
			return d.ExecID, true
		}
		return "", true
	}
	return "", false
}

// ctrWithStdin runs ctr with stdin from in.
func ctrWithStdin(in string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ctr", append([]string{"--address", env.socket(), "--namespace", namespace}, args...)...)
	cmd.Stdin = strings.NewReader(in)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return filterCtrNoise(out.String()), err
}
