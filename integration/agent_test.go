//go:build integration

package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"

	"github.com/urunc-dev/containerd-shim-urunc-v2/integration/testimage"
)

// agentImage is the test guest on the kernel with the virtio console
// built in, the guest agent's channel, booting from its initrd; its init
// is also at /urunit.
const agentImage = "docker.io/urunc/test-guest-agent:latest"

var (
	agentImageOnce sync.Once
	errAgentImage  error
)

// importAgentImage builds and imports agentImage once per run, for ctr
// and for CRI.
func importAgentImage(t *testing.T) {
	t.Helper()
	agentImageOnce.Do(func() {
		path := filepath.Join(env.dir, "agent-guest.tar")
		o := guestImageOptions()
		o.Name, o.Kernel, o.ModulesDir, o.Modules, o.InitAlias = agentImage, builtinKernel, "", nil, "urunit"
		if errAgentImage = testimage.WriteOCIArchive(path, o); errAgentImage != nil {
			return
		}
		for _, ns := range []string{namespace, criNamespace} {
			if out, err := ctrRaw("--namespace", ns, "images", "import", path); err != nil {
				errAgentImage = fmt.Errorf("import %s into %s: %w: %s", path, ns, err, out)
				return
			}
		}
	})
	if errAgentImage != nil {
		t.Fatal(errAgentImage)
	}
}

// withAgent turns the guest agent on for the rest of the test.
func withAgent(t *testing.T) {
	withHostConfig(t, env.defaultHostConfig()+"\n[guests.linux]\nagent = true\n")
}

// agentRun is one container of a test: its task, its console log and
// its exit.
type agentRun struct {
	t     *testing.T
	id    string
	log   string
	task  containerd.Task
	exitC <-chan containerd.ExitStatus
}

// startAgentGuest starts img with args (and spec options) and its console
// in a log file.
func startAgentGuest(t *testing.T, img string, args []string, opts ...oci.SpecOpts) *agentRun {
	t.Helper()
	id := newID(t)
	c, ctx := newClient(t)
	image, err := c.GetImage(ctx, img)
	if err != nil {
		t.Fatal(err)
	}
	opts = append([]oci.SpecOpts{oci.WithImageConfig(image), oci.WithProcessArgs(args...)}, opts...)
	cont, err := c.NewContainer(ctx, id, containerd.WithRuntime(runtimeName, nil), containerd.WithNewSnapshot(id, image),
		containerd.WithNewSpec(opts...))
	if err != nil {
		t.Fatal(err)
	}
	r := &agentRun{t: t, id: id, log: filepath.Join(t.TempDir(), "console.log")}
	t.Cleanup(func() {
		// A test that failed midway leaves its task running.
		if r.task != nil {
			_, _ = r.task.Delete(ctx, containerd.WithProcessKill)
		}
		_ = cont.Delete(ctx, containerd.WithSnapshotCleanup)
		assertNoLeftovers(t, id)
	})
	if r.task, err = cont.NewTask(ctx, cio.LogFile(r.log)); err != nil {
		t.Fatal(err)
	}
	if r.exitC, err = r.task.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.task.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *agentRun) console() string {
	data, _ := os.ReadFile(r.log)
	return string(data)
}

// exit waits for the guest's end, deletes the task and returns its status.
func (r *agentRun) exit() int {
	r.t.Helper()
	var st containerd.ExitStatus
	select {
	case st = <-r.exitC:
	case <-time.After(3 * time.Minute):
		r.t.Fatalf("the guest did not end; its console:\n%s", r.console())
	}
	_, ctx := newClient(r.t)
	if _, err := r.task.Delete(ctx); err != nil {
		r.t.Fatal(err)
	}
	return int(st.ExitCode())
}

// sigtermOnceReady sends SIGTERM once the app has printed its ready line,
// and returns the container's exit status.
func (r *agentRun) sigtermOnceReady() int {
	r.t.Helper()
	waitFor(r.t, 3*time.Minute, "the app's ready line", func() bool { return strings.Contains(r.console(), "URUNC_GUEST_READY") })
	_, ctx := newClient(r.t)
	if err := r.task.Kill(ctx, syscall.SIGTERM); err != nil {
		r.t.Fatal(err)
	}
	return r.exit()
}

// SIGTERM reaches the app itself through the agent: its trap makes the
// container's status 7, and the power button is never pressed (the
// image's acpid would print URUNC_GUEST_POWERDOWN and power off with 0).
func TestAgentSigtermReachesApp(t *testing.T) {
	importAgentImage(t)
	withAgent(t)
	r := startAgentGuest(t, agentImage, []string{"/init", "trapterm"})
	code := r.sigtermOnceReady()
	out := r.console()
	if code != 7 || !strings.Contains(out, "URUNC_GUEST_TERM") {
		t.Fatalf("exit %d, want the app's 7 from its SIGTERM trap; console:\n%s", code, out)
	}
	if strings.Contains(out, "URUNC_GUEST_POWERDOWN") || strings.Contains(out, "Attempted to kill init") {
		t.Fatalf("the power button was pressed or the kernel reported the exit:\n%s", out)
	}
}

// An app that prints the kernel's line of init's end with status 9 and
// exits 0 gives 0: the status is the agent's report, and the guest powers
// off without the kernel reporting any init's end.
func TestAgentForgedExitLine(t *testing.T) {
	importAgentImage(t)
	withAgent(t)
	r := startAgentGuest(t, agentImage, []string{"/init", "forge"})
	code := r.exit()
	out := r.console()
	if code != 0 || !strings.Contains(out, "exitcode=0x00000900") {
		t.Fatalf("exit %d, want 0 from an app that forged a kernel line; console:\n%s", code, out)
	}
	if !strings.Contains(out, "reboot: Power down") || strings.Contains(out, "exitcode=0x00000000") {
		t.Fatalf("the guest did not end by the agent's power-off:\n%s", out)
	}
}

// The spec's env, cwd, user and hostname reach the app in an initrd root:
// a lowercase variable with spaces, which the kernel command line cannot
// carry, among them.
func TestAgentProcessIdentity(t *testing.T) {
	importAgentImage(t)
	withAgent(t)
	r := startAgentGuest(t, agentImage, []string{"/init", "ident", "my_var"},
		oci.WithEnv([]string{"my_var=has two spaces"}), oci.WithProcessCwd("/tmp"),
		oci.WithUIDGID(1000, 1001), oci.WithHostname("agent-host"))
	code := r.exit()
	out := r.console()
	want := "URUNC_GUEST_IDENT uid=1000 gid=1001 cwd=/tmp host=agent-host my_var=has two spaces"
	if code != 0 || !strings.Contains(out, want) {
		t.Fatalf("exit %d; console lacks %q:\n%s", code, want, out)
	}
}

// The same where the guest boots from a disk or a share: the agent starts
// from an initrd of its own, mounts the root the kernel's parameters name,
// switches to it and starts the app there.
func TestAgentProcessIdentityOtherRoots(t *testing.T) {
	for _, tc := range []struct{ name, image, hostConfig string }{
		{"block", testimage.BlockImageName, env.defaultHostConfig()},
		{"9p", testimage.RootfsImageName, env.defaultHostConfig()},
		{"virtiofs", testimage.RootfsImageName, env.virtiofsHostConfig()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			withHostConfig(t, tc.hostConfig+"\n[guests.linux]\nagent = true\n")
			r := startAgentGuest(t, tc.image, []string{"/init", "ident", "my_var"},
				oci.WithEnv([]string{"my_var=has two spaces"}), oci.WithProcessCwd("/bin"),
				oci.WithUIDGID(1000, 1001), oci.WithHostname("agent-host"))
			code := r.exit()
			out := r.console()
			want := "URUNC_GUEST_IDENT uid=1000 gid=1001 cwd=/bin host=agent-host my_var=has two spaces"
			if code != 0 || !strings.Contains(out, want) {
				t.Fatalf("exit %d; console lacks %q:\n%s", code, want, out)
			}
		})
	}
}

// An app named urunit stays the guest's init with the agent on: the
// kernel reports its exit on the console, as before.
func TestAgentLeavesUrunit(t *testing.T) {
	importAgentImage(t)
	withAgent(t)
	r := startAgentGuest(t, agentImage, []string{"/urunit", "exit", "3"})
	code := r.exit()
	out := r.console()
	if code != 3 || !strings.Contains(out, "exitcode=0x00000300") || strings.Contains(out, "urunc-agent") {
		t.Fatalf("exit %d, want 3 reported by the kernel with no agent; console:\n%s", code, out)
	}
}

// A guest kernel without the virtio console built in (Debian's, where it
// is a module) is found at Create, from its file: the guest boots without
// the agent, the shim's log names the option and the kernel, and the exit
// status comes through the console, the kernel's report of init's end.
func TestAgentWithoutVirtioConsole(t *testing.T) {
	withAgent(t)
	r := startAgentGuest(t, image, []string{"/init", "exit", "3"})
	code := r.exit()
	out := r.console()
	if code != 3 || !strings.Contains(out, "exitcode=0x00000300") {
		t.Fatalf("exit %d, want 3 reported by the kernel; console:\n%s", code, out)
	}
	if strings.Contains(out, "CONFIG_VIRTIO_CONSOLE") || strings.Contains(out, "urunc-agent") {
		t.Fatalf("the agent booted with a kernel that cannot serve it:\n%s", out)
	}
	waitFor(t, 30*time.Second, "the shim's warning naming CONFIG_VIRTIO_CONSOLE=y", func() bool {
		return shimLogHas(r.id, "lacks CONFIG_VIRTIO_CONSOLE=y")
	})
}

// untoldImage is the test guest on Debian's kernel with its boot header's
// payload length zeroed, which neither qemu nor the kernel reads: the
// shim cannot tell from the file whether the virtio console is built in.
const untoldImage = "docker.io/urunc/test-guest-untold-kernel:latest"

// A kernel the shim cannot tell boots with the agent, as before the
// check: the agent finds no channel, says so by name on the console,
// and the exit status still comes through the console.
func TestAgentWithoutVirtioConsoleAtRunTime(t *testing.T) {
	importUntoldImage(t)
	withAgent(t)
	r := startAgentGuest(t, untoldImage, []string{"/init", "exit", "3"})
	code := r.exit()
	out := r.console()
	if code != 3 || !strings.Contains(out, "CONFIG_VIRTIO_CONSOLE") {
		t.Fatalf("exit %d, want 3 and the missing option named; console:\n%s", code, out)
	}
	if !shimLogHas(r.id, "cannot be told from its file") {
		t.Fatal("the shim's log does not say the kernel could not be told")
	}
}

// importUntoldImage imports untoldImage: the test image on Debian's
// kernel (virtio console a module) with its bzImage header's
// payload_length zeroed, which neither qemu nor the kernel reads, so that
// the shim's Create-time check cannot tell and the agent boots.
func importUntoldImage(t *testing.T) {
	t.Helper()
	kernel, err := os.ReadFile(guestImageOptions().Kernel)
	if err != nil {
		t.Fatal(err)
	}
	const payloadLength = 0x24c
	if len(kernel) < payloadLength+4 || string(kernel[0x202:0x206]) != "HdrS" {
		t.Fatalf("%s is not a bzImage", guestImageOptions().Kernel)
	}
	copy(kernel[payloadLength:], []byte{0, 0, 0, 0})
	patched := filepath.Join(t.TempDir(), "vmlinuz")
	if err := os.WriteFile(patched, kernel, 0o644); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "untold.tar")
	o := guestImageOptions()
	o.Name, o.Kernel = untoldImage, patched
	if err := testimage.WriteOCIArchive(path, o); err != nil {
		t.Fatal(err)
	}
	if out, err := ctrRaw("images", "import", path); err != nil {
		t.Fatalf("import %s: %v: %s", path, err, out)
	}
}

// shimLogHas tells whether a line of the shim's log (in containerd's)
// about container id has want.
func shimLogHas(id, want string) bool {
	data, _ := os.ReadFile(filepath.Join(env.dir, "containerd.log"))
	for _, line := range strings.Split(string(data), "\n") {
		if strings.Contains(line, "id="+id) && strings.Contains(line, want) {
			return true
		}
	}
	return false
}

// Where the agent has no channel (the kernel lacks the virtio console and
// the shim could not tell at Create), SIGTERM presses the ACPI power
// button, which a guest booted for the agent (acpi=noirq) still gets: its
// acpid powers it off with 0, well before the grace period would kill it
// with 137.
func TestAgentWithoutVirtioConsolePowerButton(t *testing.T) {
	importUntoldImage(t)
	withAgent(t)
	r := startAgentGuest(t, untoldImage, []string{"/init", "sleep"})
	code := r.sigtermOnceReady()
	out := r.console()
	if code != 0 || !strings.Contains(out, "reboot: Power down") || !strings.Contains(out, "acpi=noirq") {
		t.Fatalf("exit %d, want 0 from the power button's clean power-off; console:\n%s", code, out)
	}
}

// TestAgentBootFigures prints the time of a one-shot guest (`ctr run --rm`
// of an app that exits 0 at once) with and without the guest agent, and
// with a Go program that only execs the app in the agent's place (the
// floor any Go PID 1 costs), in alternating rounds on the same kernel and
// image, with the medians' ratios, where the guest's clock puts init's
// start and the guest's end (medians), and the agent's size: make bench
// runs it (URUNC_BENCH_AGENT=1; AGENT_ROUNDS rounds, 7 by default).
func TestAgentBootFigures(t *testing.T) {
	if os.Getenv("URUNC_BENCH_AGENT") == "" {
		t.Skip("a measurement: URUNC_BENCH_AGENT=1 (make bench)")
	}
	importAgentImage(t)
	rounds := 7
	if n, err := strconv.Atoi(os.Getenv("AGENT_ROUNDS")); err == nil && n > 0 {
		rounds = n
	}
	floorInit := filepath.Join(t.TempDir(), "execonly-init")
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", floorInit, "./cmd/execonly-init")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build execonly-init: %v\n%s", err, out)
	}
	type variant struct {
		name, hostConfig string
		// poweredOff: the guest ends by the agent's power-off, not by
		// its init's exit.
		poweredOff bool
		took       []time.Duration
		// The guest's clock (printk times), seconds after its boot.
		initAt, endAt []time.Duration
	}
	variants := []*variant{
		{name: "with the agent", hostConfig: env.defaultHostConfig() + "\n[guests.linux]\nagent = true\n", poweredOff: true},
		{name: "without", hostConfig: env.defaultHostConfig()},
		{name: "a Go exec-only init", hostConfig: env.defaultHostConfig() + fmt.Sprintf("\n[guests.linux]\nagent = true\nagent_path = %q\n", floorInit)},
	}
	for i := 0; i < rounds; i++ {
		for _, v := range variants {
			withHostConfig(t, v.hostConfig)
			id := newID(t)
			start := time.Now()
			// The app; cmd/execonly-init execs the same one, named there.
			out, err := ctrRaw("run", "--rm", "--runtime", runtimeName, agentImage, id, "/init", "exit", "0")
			d := time.Since(start)
			if err != nil {
				t.Fatalf("ctr run (%s): %v\n%s", v.name, err, out)
			}
			initAt, endAt := kernelTimes(out)
			v.initAt = append(v.initAt, time.Duration(initAt*float64(time.Second)))
			v.endAt = append(v.endAt, time.Duration(endAt*float64(time.Second)))
			if i == rounds-1 && os.Getenv("AGENT_CONSOLE") != "" {
				t.Logf("%s: console:\n%s", v.name, out)
			}
			if v.poweredOff != strings.Contains(out, "reboot: Power down") {
				t.Fatalf("run %s ended otherwise:\n%s", v.name, out)
			}
			assertNoLeftovers(t, id)
			v.took = append(v.took, d)
		}
	}
	base := median(variants[1].took)
	for _, v := range variants {
		t.Logf("%-20s median %s, ratio to without %.3f; by the guest's clock (medians) init runs at %s and the guest ends at %s",
			v.name, median(v.took).Round(time.Millisecond), float64(median(v.took))/float64(base),
			median(v.initAt).Round(time.Millisecond), median(v.endAt).Round(time.Millisecond))
	}
	for _, bin := range []string{filepath.Join(env.bin, "urunc-agent"), floorInit} {
		st, err := os.Stat(bin)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %d bytes", filepath.Base(bin), st.Size())
	}
	t.Logf("one-shot guest, ctr run --rm, median of %d rounds under TCG", rounds)
}

// kernelTimes are the guest clock's times of the kernel's "Run ... as init
// process" line and of its last stamped line.
func kernelTimes(console string) (initAt, endAt float64) {
	for _, l := range strings.Split(console, "\n") {
		open, close := strings.Index(l, "["), strings.Index(l, "]")
		if open < 0 || close < open {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(l[open+1:close]), 64)
		if err != nil {
			continue
		}
		if strings.Contains(l, "as init process") {
			initAt = v
		}
		endAt = v
	}
	return initAt, endAt
}

// Exec into a running Linux guest through its agent keeps the same
// contract as exec into a plain container (execContract); the exec's
// processes end, and the guest ends as before.
func TestAgentExec(t *testing.T) {
	importAgentImage(t)
	withAgent(t)
	r := startAgentGuest(t, agentImage, []string{"/init", "sleep"})
	waitFor(t, 3*time.Minute, "the app's ready line", func() bool { return strings.Contains(r.console(), "URUNC_GUEST_READY") })
	execContract(t, r.id, true)
	_, ctx := newClient(t)
	if err := r.task.Kill(ctx, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if code := r.exit(); code != 137 {
		t.Fatalf("exit %d, want 137", code)
	}
}

// Exec into the unikernel of a pod through CRI, as the kubelet's probes
// and kubectl exec do it: ExecSync (an exec probe) with its output and a
// failing status, a streamed exec, one with stdin, and -it on a terminal
// whose size the exec reads back.
func TestCRIExecIntoGuest(t *testing.T) {
	criNetwork(t)
	importAgentImage(t)
	withAgent(t)
	pod := startCRIPod(t, "urunc", "exec-pod", nil)
	cfg := writeJSON(t, filepath.Join(pod.dir, "guest.json"), map[string]any{
		"metadata": map[string]string{"name": "guest"}, "image": map[string]string{"image": agentImage},
		"command": []string{"/init", "sleep"}, "log_path": "guest.log", "linux": map[string]any{},
	})
	guest := crictl(t, "create", "--no-pull", pod.id, cfg, pod.config)
	crictl(t, "start", guest)
	waitForOutput(t, filepath.Join(pod.logDir, "guest.log"), "URUNC_GUEST_READY", 3*time.Minute)

	if out := crictl(t, "exec", "--sync", guest, "/bin/busybox", "echo", "hello-sync"); !strings.Contains(out, "hello-sync") {
		t.Fatalf("crictl exec --sync: %q", out)
	}
	if out, errOut, err := crictlRaw("exec", "--sync", guest, "/bin/sh", "-c", "echo failing; exit 3"); err == nil || !strings.Contains(errOut, "exited with 3") {
		t.Fatalf("crictl exec --sync of a failing command: %v\n%s%s", err, out, errOut)
	}
	if out := crictl(t, "exec", guest, "/bin/sh", "-c", "echo hello-streamed; hostname"); !strings.Contains(out, "hello-streamed") {
		t.Fatalf("crictl exec: %q", out)
	}
	if out, errOut, err := crictlRaw("exec", guest, "/bin/sh", "-c", "exit 4"); err == nil || !strings.Contains(errOut, "command terminated with exit code 4") {
		t.Fatalf("crictl exec of a failing command: %v\n%s%s", err, out, errOut)
	}
	if out, err := crictlWithStdin("piped-in line\n", "exec", "-i", guest, "/bin/sh", "-c", "cat; echo stdin-closed"); err != nil ||
		!strings.Contains(out, "piped-in line\nstdin-closed") {
		t.Fatalf("crictl exec -i: %v\n%q", err, out)
	}
	// crictl -it sizes the exec's terminal as its own once it runs:
	// script(1) gives it 33x111 (see execContract).
	line := "stty rows 33 cols 111; crictl --runtime-endpoint unix://" + env.socket() + " exec -it " + guest +
		` /bin/sh -c 'i=0; until [ -n "$(stty size 2>/dev/null)" ] || [ $i = 600 ]; do sleep 0.1; i=$((i+1)); done; tty; stty size'`
	ttyOut, err := exec.Command("script", "-qec", line, "/dev/null").CombinedOutput()
	if err != nil || !strings.Contains(string(ttyOut), "33 111") || !strings.Contains(string(ttyOut), "/dev/pts/") {
		t.Fatalf("crictl exec -it: %v\n%q", err, ttyOut)
	}
	pod.remove(t)
}

// crictlWithStdin runs crictl with stdin from in; stdout and stderr
// together.
func crictlWithStdin(in string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "crictl", append([]string{"--runtime-endpoint", "unix://" + env.socket()}, args...)...)
	cmd.Stdin = strings.NewReader(in)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// A guest's agent outlives a containerd crash, as the guest does: after
// the restart an exec still runs in it, and SIGTERM still reaches the app
// (its trap's status 7 is the container's).
func TestAgentExecAfterContainerdRestart(t *testing.T) {
	importAgentImage(t)
	withAgent(t)
	id := newID(t)
	t.Cleanup(func() {
		_, _ = ctrRaw("task", "kill", "-s", "SIGKILL", id)
		_, _ = ctrRaw("task", "rm", "-f", id)
		_, _ = ctrRaw("container", "rm", id)
		assertNoLeftovers(t, id)
	})
	ctr(t, "run", "-d", "--runtime", runtimeName, agentImage, id, "/init", "trapterm")
	// The exec waits for the agent of a guest still booting.
	if out := ctr(t, "task", "exec", "--exec-id", "before", id, "/bin/busybox", "echo", "before-restart"); !strings.Contains(out, "before-restart") {
		t.Fatalf("exec before the restart: %q", out)
	}
	env.killDaemon()
	if err := env.startDaemon(); err != nil {
		t.Fatal(err)
	}
	if out := ctr(t, "task", "exec", "--exec-id", "after", id, "/bin/busybox", "echo", "after-restart"); !strings.Contains(out, "after-restart") {
		t.Fatalf("exec after the restart: %q", out)
	}
	ctr(t, "task", "kill", "-s", "SIGTERM", id)
	waitFor(t, time.Minute, id+" to stop", func() bool { return taskStatus(t, id) == "STOPPED" })
	if _, code := taskState(t, id); code != 7 {
		t.Fatalf("exit %d after SIGTERM, want the app's 7", code)
	}
}
