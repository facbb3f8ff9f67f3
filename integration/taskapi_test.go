//go:build integration

package integration

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/console"
	eventstypes "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/api/services/tasks/v1"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/config"
)

// runDetached runs the test guest detached (/init ARGS) with its console in
// a log file, whose path it returns.
func runDetached(t *testing.T, id string, args ...string) string {
	t.Helper()
	return runDetachedWith(t, id, nil, args...)
}

// runDetachedWith is runDetached with extra ctr run flags.
func runDetachedWith(t *testing.T, id string, flags []string, args ...string) string {
	t.Helper()
	return runDetachedImage(t, id, image, flags, append([]string{"/init"}, args...)...)
}

// runDetachedImage runs img detached with the process argv and extra ctr
// run flags, its console in a log file, whose path it returns.
func runDetachedImage(t *testing.T, id, img string, flags []string, argv ...string) string {
	t.Helper()
	logFile := filepath.Join(t.TempDir(), id+".log")
	full := append([]string{"run", "-d", "--log-uri", "file://" + logFile, "--runtime", runtimeName}, flags...)
	ctr(t, append(append(full, img, id), argv...)...)
	return logFile
}

// Events arrive in order Create, Start, Exit, Delete for a run, a kill and
// a delete, as containerd's event service sees them.
func TestEventOrder(t *testing.T) {
	id := newID(t)
	c, ctx := newClient(t)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	evc, errc := subscribeLive(ctx, t, c, `topic~="/tasks/"`)
	runDetached(t, id, "sleep")
	ctr(t, "task", "kill", "-s", "SIGKILL", id)
	waitFor(t, 10*time.Second, "stop", func() bool { return taskStatus(t, id) == "STOPPED" })
	ctr(t, "task", "rm", id)
	var got []string
	var exit *eventstypes.TaskExit
	timeout := time.After(15 * time.Second)
	for len(got) < 4 {
		select {
		case env := <-evc:
			v, err := typeurl.UnmarshalAny(env.Event)
			if err != nil {
				t.Fatal(err)
			}
			var cid string
			switch e := v.(type) {
			case *eventstypes.TaskCreate:
				cid = e.ContainerID
			case *eventstypes.TaskStart:
				cid = e.ContainerID
			case *eventstypes.TaskExit:
				cid, exit = e.ContainerID, e
			case *eventstypes.TaskDelete:
				cid = e.ContainerID
			}
			if cid == id {
				got = append(got, env.Topic)
			}
		case err := <-errc:
			t.Fatal(err)
		case <-timeout:
			t.Fatalf("events so far: %v", got)
		}
	}
	want := []string{"/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("events %v, want %v", got, want)
	}
	if exit.ID != id || exit.ExitStatus != 137 || exit.Pid == 0 {
		t.Fatalf("TaskExit = %+v, want ID %s, status 137 and the real pid", exit, id)
	}
}

// SIGTERM asks the guest to power down over QMP: a guest that handles the
// ACPI power button ends cleanly well before the grace period; one that
// ignores it is killed at the grace period (6 s in the tests' host config).
// SIGWINCH leaves a guest running; SIGKILL gives 137.
func TestKillSignals(t *testing.T) {
	const grace = 6 * time.Second
	t.Run("SIGTERM powers down a cooperative guest", func(t *testing.T) {
		id := newID(t)
		log := runDetached(t, id, "sleep")
		waitForOutput(t, log, "URUNC_GUEST_READY", 60*time.Second)
		start := time.Now()
		ctr(t, "task", "kill", "-s", "SIGTERM", id)
		waitFor(t, 2*grace, "stop", func() bool { return taskStatus(t, id) == "STOPPED" })
		took := time.Since(start)
		if _, code := taskState(t, id); code != 0 {
			t.Fatalf("exit %d, want 0 from a clean power-down", code)
		}
		if took >= grace {
			t.Fatalf("took %s, not well before the %s grace period", took, grace)
		}
		t.Logf("guest powered down %.2fs after SIGTERM", took.Seconds())
	})
	t.Run("SIGTERM kills a guest that ignores it at the grace period", func(t *testing.T) {
		id := newID(t)
		log := runDetached(t, id, "noacpi", "sleep")
		waitForOutput(t, log, "URUNC_GUEST_READY", 60*time.Second)
		start := time.Now()
		ctr(t, "task", "kill", "-s", "SIGTERM", id)
		waitFor(t, 3*grace, "stop", func() bool { return taskStatus(t, id) == "STOPPED" })
		took := time.Since(start)
		if _, code := taskState(t, id); code != 137 {
			t.Fatalf("exit %d, want 137", code)
		}
		if took < grace-500*time.Millisecond {
			t.Fatalf("stopped after %s, before the %s grace period", took, grace)
		}
	})
	t.Run("without stop_grace_s SIGTERM only asks: the caller's SIGKILL ends a guest that ignores it", func(t *testing.T) {
		withHostConfig(t, fmt.Sprintf("[monitors.qemu]\naccel = \"tcg\"\n\n[runtime]\nstate_dir = %q\n", env.qmpDir))
		id := newID(t)
		log := runDetached(t, id, "noacpi", "sleep")
		waitForOutput(t, log, "URUNC_GUEST_READY", 60*time.Second)
		ctr(t, "task", "kill", "-s", "SIGTERM", id)
		// Longer than the grace period the shim used to enforce (10 s):
		// the kubelet's terminationGracePeriodSeconds is not the shim's.
		time.Sleep(11 * time.Second)
		if st := taskStatus(t, id); st != "RUNNING" {
			t.Fatalf("after SIGTERM without stop_grace_s: %s, want RUNNING", st)
		}
		ctr(t, "task", "kill", "-s", "SIGKILL", id)
		waitFor(t, 10*time.Second, "stop", func() bool { return taskStatus(t, id) == "STOPPED" })
		if _, code := taskState(t, id); code != 137 {
			t.Fatalf("exit %d, want 137", code)
		}
	})
	t.Run("SIGWINCH and SIGHUP leave the guest running, SIGKILL gives 137", func(t *testing.T) {
		id := newID(t)
		log := runDetached(t, id, "count")
		waitForOutput(t, log, "count 1", 60*time.Second)
		ctr(t, "task", "kill", "-s", "SIGWINCH", id)
		ctr(t, "task", "kill", "-s", "SIGHUP", id)
		time.Sleep(2 * time.Second)
		if st := taskStatus(t, id); st != "RUNNING" {
			t.Fatalf("after SIGWINCH and SIGHUP: %s", st)
		}
		ctr(t, "task", "kill", "-s", "SIGKILL", id)
		waitFor(t, 10*time.Second, "stop", func() bool { return taskStatus(t, id) == "STOPPED" })
		if _, code := taskState(t, id); code != 137 {
			t.Fatalf("exit %d, want 137", code)
		}
		out, err := ctrRaw("task", "kill", "-s", "SIGKILL", id)
		if err == nil || !strings.Contains(out, "not found") {
			t.Fatalf("kill after exit: %v %s, want not found", err, out)
		}
	})
}

// Pause freezes the guest (no output), resume thaws it (output again).
func TestPauseResume(t *testing.T) {
	id := newID(t)
	log := runDetached(t, id, "count")
	waitForOutput(t, log, "count 2", 60*time.Second)
	ctr(t, "task", "pause", id)
	if st := taskStatus(t, id); st != "PAUSED" {
		t.Fatalf("status %s, want PAUSED", st)
	}
	time.Sleep(500 * time.Millisecond) // what was in flight is out
	before, _ := os.ReadFile(log)
	time.Sleep(3 * time.Second)
	during, _ := os.ReadFile(log)
	if len(during) != len(before) {
		t.Fatalf("output while paused:\n%s", during[len(before):])
	}
	ctr(t, "task", "resume", id)
	if st := taskStatus(t, id); st != "RUNNING" {
		t.Fatalf("status %s, want RUNNING", st)
	}
	waitFor(t, 10*time.Second, "output after resume", func() bool {
		after, _ := os.ReadFile(log)
		return strings.Contains(string(after[len(during):]), "count ")
	})
}

// ctr task metrics shows the cgroup's figures for a running guest.
func TestMetrics(t *testing.T) {
	id := newID(t)
	log := runDetached(t, id, "sleep")
	waitForOutput(t, log, "URUNC_GUEST_READY", 60*time.Second)
	out := ctr(t, "task", "metrics", id)
	var usage string
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) == 2 && (f[0] == "memory.usage_in_bytes" || f[0] == "memory.usage") {
			usage = f[1]
		}
	}
	if usage == "" || usage == "0" {
		t.Fatalf("no memory usage in metrics:\n%s", out)
	}
	t.Logf("memory usage of a running guest: %s bytes", usage)
}

// A binary:// logger receives the guest's output, started as containerd
// defines it (fds 3, 4, 5 and the container's ID in its environment).
func TestBinaryLogger(t *testing.T) {
	id := newID(t)
	out := filepath.Join(t.TempDir(), "logger.out")
	ctr(t, "run", "-d", "--log-uri", "binary://"+env.logger+"?out="+out, "--runtime", runtimeName, image, id, "/init", "echo", "to", "the", "logger")
	waitForOutput(t, out, "URUNC_GUEST_ARGS: to the logger", 60*time.Second)
	waitForOutput(t, out, "LOGGER for "+namespace+"/"+id, time.Second)
	waitFor(t, 20*time.Second, "stop", func() bool { return taskStatus(t, id) == "STOPPED" })
	ctr(t, "task", "rm", id)
	ctr(t, "container", "rm", id)
	waitFor(t, 5*time.Second, "the logger to exit", func() bool { return len(processesOf(env.logger)) == 0 })
}

// ctr run -t gives an interactive console on a pty: a command typed into
// it runs in the guest and its answer comes back.
func TestInteractiveTerminal(t *testing.T) {
	id := newID(t)
	master, slavePath, err := console.NewPty()
	if err != nil {
		t.Fatal(err)
	}
	defer master.Close()
	slave, err := os.OpenFile(slavePath, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ctr", "--address", env.socket(), "--namespace", namespace,
		"run", "-t", "--rm", "--runtime", runtimeName, image, id, "/init", "sh")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	slave.Close()
	defer cmd.Process.Kill()
	out := make(chan string, 1024)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := master.Read(buf)
			if n > 0 {
				out <- string(buf[:n])
			}
			if err != nil {
				close(out)
				return
			}
		}
	}()
	var seen strings.Builder
	expect := func(want string, timeout time.Duration) {
		t.Helper()
		deadline := time.After(timeout)
		for !strings.Contains(seen.String(), want) {
			select {
			case s, ok := <-out:
				if !ok {
					t.Fatalf("console closed before %q:\n%s", want, seen.String())
				}
				seen.WriteString(s)
			case <-deadline:
				t.Fatalf("no %q on the console after %s:\n%s", want, timeout, seen.String())
			}
		}
	}
	expect("URUNC_GUEST_SHELL", 60*time.Second)
	time.Sleep(time.Second)
	if _, err := io.WriteString(master, "echo answer-$((6*7))\r"); err != nil {
		t.Fatal(err)
	}
	expect("answer-42", 20*time.Second)
	if _, err := io.WriteString(master, "poweroff -f\r"); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("ctr run -t: %v\n%s", err, seen.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("ctr run -t did not end after poweroff")
	}
}

// The calls containerd's clients rely on, checked with containerd's Go
// client: Exec and Checkpoint are NotImplemented with a reason; Wait
// answers early and late callers alike and honours its context; Delete is
// refused while running and NotFound the second time; a task that never
// started deletes without a kill; Update applies new limits.
func TestTaskAPIContracts(t *testing.T) {
	c, ctx := newClient(t)
	img, err := c.GetImage(ctx, image)
	if err != nil {
		t.Fatal(err)
	}
	newContainerWith := func(t *testing.T, opts []oci.SpecOpts, args ...string) containerd.Container {
		id := newID(t)
		opts = append([]oci.SpecOpts{oci.WithImageConfig(img), oci.WithProcessArgs(append([]string{"/init"}, args...)...)}, opts...)
		cont, err := c.NewContainer(ctx, id,
			containerd.WithNewSnapshot(id, img),
			containerd.WithRuntime(runtimeName, nil),
			containerd.WithNewSpec(opts...))
		if err != nil {
			t.Fatal(err)
		}
		return cont
	}
	newContainer := func(t *testing.T, args ...string) containerd.Container { return newContainerWith(t, nil, args...) }

	t.Run("never started", func(t *testing.T) {
		cont := newContainer(t, "sleep")
		task, err := cont.NewTask(ctx, cio.NullIO)
		if err != nil {
			t.Fatal(err)
		}
		st, err := task.Status(ctx)
		if err != nil || st.Status != containerd.Created {
			t.Fatalf("status %v %v, want created", st.Status, err)
		}
		// containerd's client refuses to delete a created task without
		// a kill; the daemon's task service asks the shim directly.
		resp, err := c.TaskService().Delete(ctx, &tasks.DeleteTaskRequest{ContainerID: cont.ID()})
		if err != nil {
			t.Fatalf("delete of a created task: %v", err)
		}
		if resp.Pid != task.Pid() {
			t.Fatalf("delete reported pid %d, want %d", resp.Pid, task.Pid())
		}
		if err := cont.Delete(ctx, containerd.WithSnapshotCleanup); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("killed before start", func(t *testing.T) {
		cont := newContainer(t, "sleep")
		task, err := cont.NewTask(ctx, cio.NullIO)
		if err != nil {
			t.Fatal(err)
		}
		wc, err := task.Wait(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := task.Kill(ctx, syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if st := <-wc; st.ExitCode() != 137 {
			t.Fatalf("exit %d, want 137 for a launcher killed before start", st.ExitCode())
		}
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if _, err := task.Delete(dctx); err != nil {
			t.Fatalf("delete: %v", err)
		}
		if err := cont.Delete(ctx, containerd.WithSnapshotCleanup); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("running", func(t *testing.T) {
		// The guest's RAM is the memory limit; its monitor's cgroup is
		// given the limit and the monitor's overhead.
		limit := int64(128 << 20)
		overhead := int64(config.DefaultMemoryOverheadMB("qemu", "tcg")) << 20
		cont := newContainerWith(t, []oci.SpecOpts{oci.WithMemoryLimit(uint64(limit))}, "sleep")
		task, err := cont.NewTask(ctx, cio.NullIO)
		if err != nil {
			t.Fatal(err)
		}
		early, err := task.Wait(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := task.Start(ctx); err != nil {
			t.Fatal(err)
		}

		_, err = task.Exec(ctx, "x", &specs.Process{Args: []string{"/bin/sh"}, Cwd: "/"}, cio.NullIO)
		if !errdefs.IsNotImplemented(err) || !strings.Contains(err.Error(), "exec into a unikernel is not supported") {
			t.Fatalf("exec: %v, want NotImplemented with the reason", err)
		}
		_, err = task.Checkpoint(ctx)
		if !errdefs.IsNotImplemented(err) && !strings.Contains(fmt.Sprint(err), "not supported") {
			t.Fatalf("checkpoint: %v, want NotImplemented", err)
		}
		if _, err := task.Delete(ctx); !errdefs.IsFailedPrecondition(err) {
			t.Fatalf("delete while running: %v, want FailedPrecondition", err)
		}
		if err := task.Resize(ctx, 80, 24); !errdefs.IsFailedPrecondition(err) {
			t.Fatalf("resize of a task without a terminal: %v, want FailedPrecondition", err)
		}
		if err := task.CloseIO(ctx, containerd.WithStdinCloser); err != nil {
			t.Fatalf("CloseIO: %v", err)
		}
		if err := task.Pause(ctx); err != nil {
			t.Fatalf("pause: %v", err)
		}
		if err := task.Pause(ctx); !errdefs.IsFailedPrecondition(err) {
			t.Fatalf("second pause: %v, want FailedPrecondition", err)
		}
		if err := task.Resume(ctx); err != nil {
			t.Fatalf("resume: %v", err)
		}

		if got := readCgroupMemoryLimit(cont.ID()); got != limit+overhead {
			t.Fatalf("memory limit at create: %d, want %d + the monitor's %d", got, limit, overhead)
		}
		// An update with the same memory limit applies the rest (a CPU
		// quota) and keeps the overhead on top; another memory limit is
		// refused, saying why, and changes nothing: a running guest's RAM
		// is fixed.
		quota, period := int64(50000), uint64(100000)
		if err := task.Update(ctx, containerd.WithResources(&specs.LinuxResources{
			Memory: &specs.LinuxMemory{Limit: &limit}, CPU: &specs.LinuxCPU{Quota: &quota, Period: &period}})); err != nil {
			t.Fatalf("update: %v", err)
		}
		if got := readCgroupMemoryLimit(cont.ID()); got != limit+overhead {
			t.Fatalf("memory limit after an update of the CPU quota: %d, want %d", got, limit+overhead)
		}
		if data, err := os.ReadFile(filepath.Join("/sys/fs/cgroup/cpu", namespace, cont.ID(), "cpu.cfs_quota_us")); err == nil && strings.TrimSpace(string(data)) != "50000" {
			t.Fatalf("CPU quota after update: %s, want 50000", data)
		}
		larger := int64(300 << 20)
		err = task.Update(ctx, containerd.WithResources(&specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &larger}}))
		if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "memory limit 314572800 bytes (300Mi): the guest's RAM was fixed at boot at 128 MiB") {
			t.Fatalf("update of the memory limit: %v, want FailedPrecondition saying the guest's RAM is fixed", err)
		}
		if got := readCgroupMemoryLimit(cont.ID()); got != limit+overhead {
			t.Fatalf("memory limit after a refused update: %d, want %d", got, limit+overhead)
		}

		wctx, wcancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer wcancel()
		wc, err := task.Wait(wctx)
		if err != nil {
			t.Fatal(err)
		}
		if st := <-wc; st.Error() == nil {
			t.Fatalf("Wait with an ending context returned %v, want its error", st)
		}

		if err := task.Kill(ctx, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		first := <-early
		late, err := task.Wait(ctx)
		if err != nil {
			t.Fatal(err)
		}
		second := <-late
		st, err := task.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if first.ExitCode() != 137 || second.ExitCode() != 137 || st.ExitStatus != 137 ||
			!first.ExitTime().Equal(second.ExitTime()) || !first.ExitTime().Equal(st.ExitTime) {
			t.Fatalf("early wait %d@%v, late wait %d@%v, state %d@%v: want one status and time",
				first.ExitCode(), first.ExitTime(), second.ExitCode(), second.ExitTime(), st.ExitStatus, st.ExitTime)
		}
		del, err := task.Delete(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if del.ExitCode() != 137 || !del.ExitTime().Equal(st.ExitTime) {
			t.Fatalf("delete: %d@%v", del.ExitCode(), del.ExitTime())
		}
		if _, err := task.Delete(ctx); !errdefs.IsNotFound(err) {
			t.Fatalf("second delete: %v, want NotFound", err)
		}
		if err := cont.Delete(ctx, containerd.WithSnapshotCleanup); err != nil {
			t.Fatal(err)
		}
	})
}

func readCgroupMemoryLimit(id string) int64 {
	for _, p := range []string{
		filepath.Join("/sys/fs/cgroup/memory", namespace, id, "memory.limit_in_bytes"),
		filepath.Join("/sys/fs/cgroup", namespace, id, "memory.max"),
	} {
		if data, err := os.ReadFile(p); err == nil {
			var v int64
			fmt.Sscan(string(data), &v)
			return v
		}
	}
	return -1
}

// Containers with the same io.kubernetes.cri.sandbox-id share one shim,
// which exits when the last of them is deleted.
func TestSandboxGroupSharesOneShim(t *testing.T) {
	a, b := newID(t), newID(t)
	for _, id := range []string{a, b} {
		ctr(t, "run", "-d", "--annotation", "io.kubernetes.cri.sandbox-id=pod-"+a, "--runtime", runtimeName, image, id, "/init", "sleep")
	}
	shims := processesOf(env.shimPath)
	if len(shims) != 1 {
		t.Fatalf("%d shim processes for two grouped containers, want 1: %v", len(shims), shims)
	}
	if pa, pb := taskPids(t, a), taskPids(t, b); len(pa) == 0 || len(pb) == 0 || pa[0] == pb[0] {
		t.Fatalf("monitors %v and %v", pa, pb)
	}
	ctr(t, "task", "kill", "-s", "SIGKILL", a)
	waitFor(t, 10*time.Second, "stop", func() bool { return taskStatus(t, a) == "STOPPED" })
	ctr(t, "task", "rm", a)
	ctr(t, "container", "rm", a)
	time.Sleep(500 * time.Millisecond)
	if s := processesOf(env.shimPath); len(s) != 1 || s[0] != shims[0] {
		t.Fatalf("after deleting one container the shim is %v, want %v still serving", s, shims)
	}
	if st := taskStatus(t, b); st != "RUNNING" {
		t.Fatalf("other container %s", st)
	}
	ctr(t, "task", "kill", "-s", "SIGKILL", b)
	waitFor(t, 10*time.Second, "stop", func() bool { return taskStatus(t, b) == "STOPPED" })
	ctr(t, "task", "rm", b)
	ctr(t, "container", "rm", b)
	waitFor(t, 10*time.Second, "the shim to exit", func() bool { return len(processesOf(env.shimPath)) == 0 })
}

// A monitor that outgrows the container's memory limit is OOM-killed in
// its cgroup: TaskOOM is published, and the exit is 137. (A stand-in
// monitor grows on purpose; a real guest is sized to the limit.)
func TestOOMEvent(t *testing.T) {
	withHostConfig(t, env.standinHostConfig())
	id := newID(t)
	c, ctx := newClient(t)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	evc, errc := subscribeLive(ctx, t, c, `topic=="/tasks/oom"`)
	ctr(t, "run", "-d", "--memory-limit", fmt.Sprint(64<<20), "--runtime", runtimeName, image, id, "/init", "oom")
	select {
	case env := <-evc:
		v, err := typeurl.UnmarshalAny(env.Event)
		if err != nil {
			t.Fatal(err)
		}
		if e, ok := v.(*eventstypes.TaskOOM); !ok || e.ContainerID != id {
			t.Fatalf("event %T %+v", v, v)
		}
	case err := <-errc:
		t.Fatal(err)
	case <-time.After(60 * time.Second):
		t.Fatalf("no TaskOOM; task is %s", taskStatus(t, id))
	}
	waitFor(t, 10*time.Second, "stop", func() bool { return taskStatus(t, id) == "STOPPED" })
	if _, code := taskState(t, id); code != 137 {
		t.Fatalf("exit %d, want 137", code)
	}
}

// Each container's launcher is urunc-launcher, found beside the shim;
// without it the shim binary runs as the launcher, and the container
// behaves the same. The launcher is the task's pid until Start.
func TestLauncherBinary(t *testing.T) {
	withHostConfig(t, env.standinHostConfig())
	c, ctx := newClient(t)
	img, err := c.GetImage(ctx, image)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		installed bool
		want      string
	}{
		{"urunc-launcher beside the shim", true, env.launcherPath},
		{"the shim itself without it", false, env.shimPath},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !tc.installed {
				hidden := env.launcherPath + ".hidden"
				if err := os.Rename(env.launcherPath, hidden); err != nil {
					t.Fatal(err)
				}
				defer func() {
					if err := os.Rename(hidden, env.launcherPath); err != nil {
						t.Errorf("put urunc-launcher back: %v", err)
					}
				}()
			}
			id := newID(t)
			cont, err := c.NewContainer(ctx, id, containerd.WithNewSnapshot(id, img), containerd.WithRuntime(runtimeName, nil),
				containerd.WithNewSpec(oci.WithImageConfig(img), oci.WithProcessArgs("/init", "exit", "3")))
			if err != nil {
				t.Fatal(err)
			}
			task, err := cont.NewTask(ctx, cio.NullIO)
			if err != nil {
				t.Fatal(err)
			}
			exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", task.Pid()))
			if err != nil || exe != tc.want {
				t.Fatalf("the launcher runs %q (%v), want %s", exe, err, tc.want)
			}
			wc, err := task.Wait(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := task.Start(ctx); err != nil {
				t.Fatal(err)
			}
			if st := <-wc; st.ExitCode() != 3 {
				t.Fatalf("exit %d, want the stand-in's 3", st.ExitCode())
			}
			if _, err := task.Delete(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}
