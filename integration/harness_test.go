//go:build integration

// Package integration drives a private containerd daemon, real clients and
// real qemu guests. Run as root after integration/setup.sh; `make test`
// does both.
package integration

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/urunc-dev/containerd-shim-urunc-v2/integration/testimage"
)

const (
	runtimeName = "io.containerd.urunc.v2"
	namespace   = "default"
	guestDir    = "/var/cache/urunc-test/guest"
	// builtinKernel has virtio-blk, ext4, 9p and virtiofs built in, for
	// guests that boot from a disk or a shared directory (setup builds it).
	builtinKernel = "/var/cache/urunc-test/guest-builtin/bzImage"
	// virtiofsd is Debian's, from qemu.
	virtiofsd = "/usr/lib/qemu/virtiofsd"
)

// env is the test environment shared by every test: one private containerd
// with its own root, state and socket under a temp dir.
var env *testEnv

type testEnv struct {
	dir      string // everything of this run lives under here
	bin      string // the freshly built shim, first on containerd's PATH
	shimPath string
	// launcherPath is urunc-launcher, beside the shim: each unikernel
	// container's launcher runs it until it execs the monitor.
	launcherPath string
	cliPath      string // the urunc command (build, check, ps)
	hostConfig   string // URUNC_CONFIG_FILE of the daemon
	qmpDir       string
	standin      string // a static stand-in for qemu, for fast and exit-code tests
	logger       string // a containerd logging binary
	// shimSockets are the shim sockets that existed before the tests;
	// anything beyond them afterwards is a leftover.
	shimSockets map[string]bool
	daemon      *exec.Cmd
	logFile     *os.File
}

func (e *testEnv) socket() string { return filepath.Join(e.dir, "containerd.sock") }

// crashFile is the crash-injection switch of the shims of this run
// (runtime.CrashFileEnv): a step name written there kills the shim that
// reaches it.
func (e *testEnv) crashFile() string { return filepath.Join(e.dir, "crash-at") }

// blockfileScratch is the empty ext4 image the blockfile snapshotter
// copies for each snapshot.
func (e *testEnv) blockfileScratch() string { return filepath.Join(e.dir, "blockfile-scratch.ext4") }

// criNamespace is where CRI keeps pods, containers and images.
const criNamespace = "k8s.io"

// criCNIDir holds the CNI config CRI gives pods: a plain bridge on
// 198.18.30.0/24 with no masquerade, written by the CRI test.
func (e *testEnv) criCNIDir() string { return filepath.Join(e.dir, "cri-cni") }
func (e *testEnv) stateDir() string {
	return filepath.Join(e.dir, "state")
}
func (e *testEnv) bundle(id string) string {
	return filepath.Join(e.stateDir(), "io.containerd.runtime.v2.task", namespace, id)
}

// defaultHostConfig selects TCG: real guests hang under KVM on these hosts.
func (e *testEnv) defaultHostConfig() string {
	return fmt.Sprintf("[monitors.qemu]\naccel = \"tcg\"\ndefault_memory_mb = 256\n\n[runtime]\nstop_grace_s = 6\nstate_dir = %q\n", e.qmpDir)
}

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		fmt.Println("integration tests need root")
		os.Exit(1)
	}
	code, err := run(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration setup:", err)
		os.Exit(1)
	}
	os.Exit(code)
}

func run(m *testing.M) (int, error) {
	dir, err := os.MkdirTemp("", "urunc-it-")
	if err != nil {
		return 0, err
	}
	env = &testEnv{dir: dir, bin: filepath.Join(dir, "bin"), qmpDir: filepath.Join(dir, "qmp")}
	defer env.teardown()
	if err := os.MkdirAll(filepath.Join(dir, "race"), 0o755); err != nil {
		return 0, err
	}
	env.shimPath = filepath.Join(env.bin, "containerd-shim-urunc-v2")
	// The launcher goes beside the shim, where the shim looks for it.
	env.launcherPath = filepath.Join(env.bin, "urunc-launcher")
	env.cliPath = filepath.Join(env.bin, "urunc")
	env.standin = filepath.Join(dir, "standin", "qemu-system-x86_64")
	env.logger = filepath.Join(dir, "bin-test", "test-logger")
	// The shim and the launcher are static, as make build makes them; the
	// race detector needs cgo.
	race := raceEnabled()
	for _, b := range []struct {
		what, out, pkg      string
		static, race, guest bool
	}{
		{"shim", env.shimPath, "../cmd/containerd-shim-urunc-v2", !race, race, false},
		{"the launcher", env.launcherPath, "../cmd/urunc-launcher", true, false, false},
		{"the urunc command", env.cliPath, "../cmd/urunc", false, false, false},
		{"the guest agent", filepath.Join(env.bin, "urunc-agent"), "../cmd/urunc-agent", true, false, true},
		{"stand-in monitor", env.standin, "./cmd/standin-monitor", true, false, false},
		{"test logger", env.logger, "./cmd/test-logger", false, false, false},
	} {
		args := []string{"build", "-o", b.out}
		if b.static {
			// As make build strips them: the guest agent's size is
			// what each guest loads.
			args = append(args, "-ldflags", "-s -w")
		}
		if b.guest {
			// As make build: no build host's paths in the guest.
			args = append(args, "-trimpath")
		}
		if b.race {
			args = append(args, "-race")
		}
		build := exec.Command("go", append(args, b.pkg)...)
		if b.static {
			build.Env = append(os.Environ(), "CGO_ENABLED=0")
		}
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			return 0, fmt.Errorf("build %s: %w", b.what, err)
		}
	}
	env.shimSockets = shimSockets()
	env.hostConfig = filepath.Join(dir, "urunc.toml")
	if err := os.WriteFile(env.hostConfig, []byte(env.defaultHostConfig()), 0o644); err != nil {
		return 0, err
	}
	if err := env.startDaemon(); err != nil {
		return 0, err
	}
	image := filepath.Join(dir, "guest.tar")
	if err := testimage.WriteOCIArchive(image, guestImageOptions()); err != nil {
		return 0, err
	}
	plain := filepath.Join(dir, "plain.tar")
	if err := testimage.WritePlainArchive(plain, "/bin/busybox"); err != nil {
		return 0, err
	}
	pause := filepath.Join(dir, "pause.tar")
	if err := testimage.WritePauseArchive(pause, "/bin/busybox"); err != nil {
		return 0, err
	}
	rootfsImage := filepath.Join(dir, "rootfs-guest.tar")
	if err := testimage.WriteRootfsArchive(rootfsImage, builtinKernel, "/bin/busybox"); err != nil {
		return 0, err
	}
	blockImage := filepath.Join(dir, "block-guest.tar")
	if err := testimage.WriteBlockArchive(blockImage, builtinKernel, "/bin/busybox"); err != nil {
		return 0, err
	}
	images := []string{image, plain, rootfsImage, blockImage}
	for _, kind := range testimage.HostileKinds {
		img := filepath.Join(dir, "hostile-"+kind+".tar")
		if err := testimage.WriteHostileArchive(img, kind); err != nil {
			return 0, err
		}
		images = append(images, img)
	}
	for _, img := range images {
		if out, err := ctrRaw("images", "import", img); err != nil {
			return 0, fmt.Errorf("import image %s: %v: %s", img, err, out)
		}
	}
	// The blockfile snapshotter hands out each container's rootfs as an
	// ext4 file mounted through a loop device.
	if out, err := ctrRaw("images", "import", "--local", "--snapshotter", "blockfile", rootfsImage); err != nil {
		return 0, fmt.Errorf("import image %s into blockfile: %v: %s", rootfsImage, err, out)
	}
	// CRI works in the k8s.io namespace: the pod's images live there.
	for _, img := range []string{image, pause, plain, rootfsImage} {
		if out, err := ctrContext(context.Background(), "--namespace", criNamespace, "images", "import", img); err != nil {
			return 0, fmt.Errorf("import image %s for CRI: %v: %s", img, err, out)
		}
	}
	code := m.Run()
	if reports, _ := filepath.Glob(filepath.Join(dir, "race", "*")); len(reports) > 0 {
		for _, r := range reports {
			data, _ := os.ReadFile(r)
			fmt.Fprintf(os.Stderr, "data race in the shim (%s):\n%s\n", r, data)
		}
		code = 1
	}
	return code, nil
}

// raceEnabled builds the shim with the race detector (URUNC_TEST_RACE=1,
// `make integration-race`); its reports fail the run.
func raceEnabled() bool { return os.Getenv("URUNC_TEST_RACE") != "" }

func guestImageOptions() testimage.Options {
	return testimage.Options{
		Kernel:     filepath.Join(guestDir, "vmlinuz"),
		Busybox:    "/bin/busybox",
		ModulesDir: filepath.Join(guestDir, "modules"),
		Modules:    testimage.DebianGuestModules,
	}
}

func (e *testEnv) startDaemon() error {
	cfg := fmt.Sprintf(`version = 3
root = %q
state = %q
[grpc]
  address = %q
[ttrpc]
  address = %q
[debug]
  level = "debug"
# The kubelet's record of a container's ports reaches the shim: the
# guest serves those at the pod's localhost too.
[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.urunc]
  runtime_type = %q
  container_annotations = ["io.kubernetes.container.ports"]
# A RuntimeClass whose pods' rootfs are block files: a block guest.
[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.urunc-block]
  runtime_type = %q
  container_annotations = ["io.kubernetes.container.ports"]
  snapshotter = "blockfile"
[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
[plugins."io.containerd.cri.v1.images".pinned_images]
  sandbox = %q
# These machines deny CAP_SYS_RESOURCE even to root: a pause container
# may not lower its oom_score_adj below the shim's.
[plugins."io.containerd.cri.v1.runtime"]
  restrict_oom_score_adj = true
[plugins."io.containerd.cri.v1.runtime".cni]
  bin_dirs = ["/usr/lib/cni"]
  conf_dir = %q
[plugins."io.containerd.snapshotter.v1.blockfile"]
  scratch_file = %q
  fs_type = "ext4"
  mount_options = []
`, filepath.Join(e.dir, "root"), e.stateDir(), e.socket(), e.socket()+".ttrpc", runtimeName, runtimeName,
		testimage.PauseImageName, e.criCNIDir(), e.blockfileScratch())
	if _, err := os.Stat(e.blockfileScratch()); err != nil {
		out, err := exec.Command("mkfs.ext4", "-q", "-F", e.blockfileScratch(), "64M").CombinedOutput()
		if err != nil {
			return fmt.Errorf("blockfile scratch: %v: %s", err, out)
		}
	}
	cfgPath := filepath.Join(e.dir, "containerd.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return err
	}
	if e.logFile == nil {
		f, err := os.Create(filepath.Join(e.dir, "containerd.log"))
		if err != nil {
			return err
		}
		e.logFile = f
	}
	cmd := exec.Command("containerd", "--config", cfgPath)
	cmd.Env = append(os.Environ(),
		"PATH="+e.bin+":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"URUNC_CONFIG_FILE="+e.hostConfig,
		"URUNC_TEST_CRASH_FILE="+e.crashFile(),
		"GORACE=log_path="+filepath.Join(e.dir, "race", "report"))
	cmd.Stdout, cmd.Stderr = e.logFile, e.logFile
	// Its own process group, so that killing it never reaches the shims.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start containerd: %w", err)
	}
	e.daemon = cmd
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := ctrRaw("version"); err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("containerd did not come up; see %s", e.logFile.Name())
}

// killDaemon kills containerd with SIGKILL, as a crash would.
func (e *testEnv) killDaemon() {
	_ = e.daemon.Process.Signal(syscall.SIGKILL)
	_, _ = e.daemon.Process.Wait()
}

func (e *testEnv) teardown() {
	if e.daemon != nil {
		// Delete whatever a failed test left, then stop the daemon.
		out, _ := ctrRaw("task", "ls", "-q")
		for _, id := range strings.Fields(out) {
			forceRemove(id)
		}
		_ = e.daemon.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _, _ = e.daemon.Process.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			e.killDaemon()
		}
	}
	for _, p := range append(processesOf(e.shimPath), processesOf(e.launcherPath)...) {
		_ = syscall.Kill(p, syscall.SIGKILL)
	}
	for _, mp := range mountsUnder(e.dir) {
		_ = syscall.Unmount(mp, syscall.MNT_DETACH)
	}
	if e.logFile != nil {
		e.logFile.Close()
	}
	if os.Getenv("URUNC_KEEP_TEST_DIR") == "" {
		os.RemoveAll(e.dir)
	} else {
		fmt.Println("test dir kept:", e.dir)
	}
}

// ctrRaw runs ctr against the private daemon, returning combined output.
func ctrRaw(args ...string) (string, error) {
	return ctrContext(context.Background(), args...)
}

func ctrContext(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ctr", append([]string{"--address", env.socket(), "--namespace", namespace}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return filterCtrNoise(out.String()), err
}

// filterCtrNoise drops ctr's cgroup v1 deprecation warning, printed on
// every call on these hosts.
func filterCtrNoise(s string) string {
	var keep []string
	for _, l := range strings.SplitAfter(s, "\n") {
		if strings.Contains(l, "DEPRECATION: The support for cgroup v1") {
			continue
		}
		keep = append(keep, l)
	}
	return strings.Join(keep, "")
}

// ctr runs ctr and fails the test on error.
func ctr(t *testing.T, args ...string) string {
	t.Helper()
	out, err := ctrRaw(args...)
	if err != nil {
		t.Fatalf("ctr %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// exitCode returns the exit status of a finished command's error.
func exitCode(err error) int {
	if err == nil {
		return 0
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	return -1
}

// forceRemove kills and deletes a container whatever its state.
func forceRemove(id string) {
	_, _ = ctrRaw("task", "kill", "-s", "SIGKILL", id)
	for i := 0; i < 50; i++ {
		if _, err := ctrRaw("task", "rm", "-f", id); err == nil {
			break
		}
		if out, _ := ctrRaw("task", "ls", "-q"); !strings.Contains(" "+strings.Join(strings.Fields(out), " ")+" ", " "+id+" ") {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	_, _ = ctrRaw("container", "rm", id)
}

// newID returns a container ID unique to the test and registers its
// cleanup: forced removal, then the leftover check, which runs even when
// the test failed.
func newID(t *testing.T) string {
	t.Helper()
	id := strings.ToLower(strings.NewReplacer("/", "-", "_", "-", ":", "-").Replace(t.Name()))
	if len(id) > 40 {
		id = id[:40]
	}
	// containerd's identifiers allow no run of separators.
	id = strings.TrimRight(id, "-._")
	id = fmt.Sprintf("%s-%d", id, time.Now().UnixNano()%100000)
	t.Cleanup(func() {
		forceRemove(id)
		assertNoLeftovers(t, id)
	})
	return id
}

// taskStatus returns the STATUS column of `ctr task ls` for id, or "".
func taskStatus(t *testing.T, id string) string {
	t.Helper()
	out, _ := ctrRaw("task", "ls")
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) >= 3 && f[0] == id {
			return f[2]
		}
	}
	return ""
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// processesWhere lists live processes for which match holds.
func processesWhere(match func(pid int) bool) []int {
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil && match(pid) {
			out = append(out, pid)
		}
	}
	return out
}

// processesOf lists live processes whose executable is path.
func processesOf(path string) []int {
	return processesWhere(func(pid int) bool {
		exe, err := os.Readlink(filepath.Join("/proc", strconv.Itoa(pid), "exe"))
		return err == nil && strings.TrimSuffix(exe, " (deleted)") == path
	})
}

// monitorProcesses lists qemu processes booting a guest of this shim (their
// kernel sits at /guest/kernel in the confined root).
func monitorProcesses() []int {
	return processesWhere(func(pid int) bool {
		cmdline, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
		if err != nil {
			return false
		}
		argv0 := strings.SplitN(string(cmdline), "\x00", 2)[0]
		return strings.HasPrefix(filepath.Base(argv0), "qemu-system") && strings.Contains(string(cmdline), "/guest/kernel")
	})
}

// mountsUnder lists mount points at or below dir, deepest first.
func mountsUnder(dir string) []string {
	data, _ := os.ReadFile("/proc/self/mountinfo")
	var out []string
	for _, l := range strings.Split(string(data), "\n") {
		f := strings.Fields(l)
		if len(f) > 4 && strings.HasPrefix(f[4], dir) {
			out = append(out, f[4])
		}
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out
}

// cgroupPaths are where the container's cgroup would be, v1 and v2.
func cgroupPaths(id string) []string {
	return []string{
		filepath.Join("/sys/fs/cgroup/memory", namespace, id),
		filepath.Join("/sys/fs/cgroup/freezer", namespace, id),
		filepath.Join("/sys/fs/cgroup/pids", namespace, id),
		filepath.Join("/sys/fs/cgroup", namespace, id),
	}
}

// leftovers describes what is left of container id on the host, or "".
func leftovers(id string) string {
	var found []string
	if p := processesOf(env.shimPath); len(p) > 0 {
		found = append(found, fmt.Sprintf("shim processes %v", p))
	}
	if p := processesOf(env.launcherPath); len(p) > 0 {
		found = append(found, fmt.Sprintf("launcher processes %v", p))
	}
	if p := monitorProcesses(); len(p) > 0 {
		found = append(found, fmt.Sprintf("monitor processes %v", p))
	}
	if p := processesOf(virtiofsd); len(p) > 0 {
		found = append(found, fmt.Sprintf("virtiofsd processes %v", p))
	}
	if l := loopDevicesUnder(env.dir); len(l) > 0 {
		found = append(found, fmt.Sprintf("loop devices %v", l))
	}
	if m := mountsUnder(env.stateDir()); len(m) > 0 {
		found = append(found, fmt.Sprintf("mounts %v", m))
	}
	for _, cg := range cgroupPaths(id) {
		if _, err := os.Stat(cg); err == nil {
			found = append(found, "cgroup "+cg)
		}
	}
	if _, err := os.Stat(env.bundle(id)); err == nil {
		found = append(found, "bundle "+env.bundle(id))
	}
	if socks, _ := filepath.Glob(filepath.Join(env.qmpDir, "*.qmp")); len(socks) > 0 {
		found = append(found, fmt.Sprintf("control sockets %v", socks))
	}
	if runcState, _ := filepath.Glob(filepath.Join(env.qmpDir, "runc", "*", "*")); len(runcState) > 0 {
		found = append(found, fmt.Sprintf("runc state %v", runcState))
	}
	for s := range shimSockets() {
		if !env.shimSockets[s] {
			found = append(found, "shim socket "+s)
		}
	}
	return strings.Join(found, "; ")
}

// assertNoLeftovers fails the test if anything of id (or of any shim) is
// left, giving asynchronous teardown a few seconds.
func assertNoLeftovers(t *testing.T, id string) {
	t.Helper()
	var left string
	deadline := time.Now().Add(10 * time.Second)
	for {
		if left = leftovers(id); left == "" {
			return
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Errorf("leftovers after %s: %s", id, left)
}

// withHostConfig replaces the daemon's host config for the rest of the
// test; the shim reads it on every Create.
func withHostConfig(t *testing.T, cfg string) {
	t.Helper()
	if err := os.WriteFile(env.hostConfig, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.WriteFile(env.hostConfig, []byte(env.defaultHostConfig()), 0o644) })
}

// shimSocketDir is where containerd places shim sockets (its default).
const shimSocketDir = "/run/containerd/s"

func shimSockets() map[string]bool {
	out := map[string]bool{}
	entries, _ := os.ReadDir(shimSocketDir)
	for _, e := range entries {
		out[e.Name()] = true
	}
	return out
}

// standinHostConfig points the qemu monitor at the stand-in.
func (e *testEnv) standinHostConfig() string {
	return fmt.Sprintf("[monitors.qemu]\npath = %q\naccel = \"tcg\"\n\n[runtime]\nstop_grace_s = 6\nstate_dir = %q\n", e.standin, e.qmpDir)
}

// shimOf returns the pid of the shim daemon serving id, or 0.
func shimOf(id string) int {
	for _, p := range processesOf(env.shimPath) {
		cmdline, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(p), "cmdline"))
		if strings.Contains(string(cmdline), "\x00-id\x00"+id+"\x00") {
			return p
		}
	}
	return 0
}

// taskPids returns the pids `ctr task ps` lists for id.
func taskPids(t *testing.T, id string) []int {
	t.Helper()
	ps := ctr(t, "task", "ps", id)
	var pids []int
	for _, l := range strings.Split(ps, "\n")[1:] {
		if f := strings.Fields(l); len(f) > 0 {
			if p, err := strconv.Atoi(f[0]); err == nil {
				pids = append(pids, p)
			}
		}
	}
	return pids
}

// isMonitor tells whether pid is a live qemu (or stand-in) process.
func isMonitor(pid int) bool {
	exe, err := os.Readlink(filepath.Join("/proc", strconv.Itoa(pid), "exe"))
	return err == nil && strings.HasPrefix(filepath.Base(exe), "qemu-system")
}

// assertGuestPage waits for the test guest's HTTP server at url (from the
// host) and checks the page it serves.
func assertGuestPage(t *testing.T, url string) {
	t.Helper()
	client := http.Client{Timeout: 5 * time.Second}
	var body []byte
	waitFor(t, 30*time.Second, "the guest's page at "+url, func() bool {
		resp, err := client.Get(url)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		body, _ = io.ReadAll(resp.Body)
		return resp.StatusCode == http.StatusOK
	})
	if !strings.Contains(string(body), "hello from the urunc guest") {
		t.Fatalf("page at %s: %q", url, body)
	}
}

// loopDevices lists loop devices whose backing file satisfies match.
func loopDevices(match func(backing string) bool) []string {
	var out []string
	files, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, f := range files {
		data, err := os.ReadFile(f)
		if backing := strings.TrimSpace(string(data)); err == nil && match(backing) {
			out = append(out, "/dev/"+filepath.Base(filepath.Dir(filepath.Dir(f)))+" ("+backing+")")
		}
	}
	return out
}

// loopDevicesUnder lists loop devices whose backing file is below dir
// (the blockfile snapshots of this run among them).
func loopDevicesUnder(dir string) []string {
	return loopDevices(func(b string) bool { return strings.HasPrefix(b, dir) })
}

// killAndRemove ends a running task with SIGKILL and deletes it and its
// container, failing the test on any error.
func killAndRemove(t *testing.T, id string) {
	t.Helper()
	ctr(t, "task", "kill", "-s", "SIGKILL", id)
	waitFor(t, 10*time.Second, id+" to stop", func() bool { return taskStatus(t, id) == "STOPPED" })
	ctr(t, "task", "rm", id)
	ctr(t, "container", "rm", id)
}

// orphan leaves id's container to the operator: containerd is killed (its
// state "lost"; it restarts when the test ends), then the shim, so that
// nobody runs the delete command.
func orphan(t *testing.T, id string) {
	t.Helper()
	env.killDaemon()
	t.Cleanup(func() {
		if err := env.startDaemon(); err != nil {
			t.Fatal(err)
		}
	})
	killProcess(t, shimOf(id))
}

// killProcess kills pid with SIGKILL and returns once it has exited.
// kill(2) returns before the kernel has torn the process down, and until
// then a shim's listening socket still accepts connections; an exited
// process (a zombie too) holds no descriptor.
func killProcess(t *testing.T, pid int) {
	t.Helper()
	// A pidfd names this very process, even if its pid is reused.
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		t.Fatalf("pidfd_open %d: %v", pid, err)
	}
	defer unix.Close(fd)
	if err := unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0); err != nil {
		t.Fatalf("kill %d: %v", pid, err)
	}
	// The pidfd becomes readable when the process has exited.
	deadline := time.Now().Add(15 * time.Second)
	for {
		wait := time.Until(deadline)
		if wait <= 0 {
			t.Fatalf("process %d still runs 15s after SIGKILL", pid)
		}
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, int(wait.Milliseconds())+1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			t.Fatalf("poll pidfd of %d: %v", pid, err)
		}
		if n > 0 {
			return
		}
	}
}

// orphansStateDir is containerd's task state dir of this run, for
// cleanup-orphans.
func orphansStateDir() string { return filepath.Join(env.stateDir(), "io.containerd.runtime.v2.task") }
