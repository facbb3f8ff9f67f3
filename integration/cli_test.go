//go:build integration

package integration

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/urunc-dev/containerd-shim-urunc-v2/integration/testimage"
)

// registryBinary is distribution's registry, built by setup.sh.
const registryBinary = "/usr/local/lib/urunc-test/registry"

// urunc runs the urunc command with the test daemon's host config.
func urunc(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(env.cliPath, args...)
	cmd.Env = append(os.Environ(), "URUNC_CONFIG_FILE="+env.hostConfig, "PATH="+env.bin+":"+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// guestFiles writes the test guest's kernel and initrd to files, as a
// user would have them on disk.
func guestFiles(t *testing.T) (kernel, initrd string) {
	t.Helper()
	o := guestImageOptions()
	data, err := testimage.BuildInitrd(o)
	if err != nil {
		t.Fatal(err)
	}
	initrd = filepath.Join(t.TempDir(), "initrd.cpio")
	if err := os.WriteFile(initrd, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return o.Kernel, initrd
}

// A user goes from a kernel file to a running container: urunc build
// imports the image into containerd and ctr runs it, with the image's
// command. The same build as an OCI layout tar imports with ctr.
func TestURuncBuildBootsThroughContainerd(t *testing.T) {
	kernel, initrd := guestFiles(t)
	name := "docker.io/urunc/test-built:latest"
	layout := filepath.Join(t.TempDir(), "built.tar")
	out, err := urunc(t, "build", "-t", name, "-type", "linux", "-monitor", "qemu", "-kernel", kernel, "-initrd", initrd,
		"-o", layout, "-import", "-address", env.socket(), "-namespace", namespace, "--", "/init", "echo", "built-by-urunc")
	if err != nil || !strings.Contains(out, "imported "+name) {
		t.Fatalf("urunc build: %v\n%s", err, out)
	}
	t.Cleanup(func() { _, _ = ctrRaw("images", "rm", name) })
	id := newID(t)
	if out := ctr(t, "run", "--rm", "--runtime", runtimeName, name, id); !strings.Contains(out, "URUNC_GUEST_ARGS: built-by-urunc") {
		t.Fatalf("the built image did not run its command:\n%s", out)
	}
	ctr(t, "images", "rm", name)
	if out := ctr(t, "images", "import", layout); !strings.Contains(out, name) && !strings.Contains(ctr(t, "images", "ls", "-q"), name) {
		t.Fatalf("ctr cannot import the layout tar:\n%s", out)
	}
}

// A pair that does not fit, or a missing file, is refused before anything
// is written, naming the problem.
func TestURuncBuildRefusesBadInput(t *testing.T) {
	kernel, initrd := guestFiles(t)
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"pair", []string{"-type", "rumprun", "-monitor", "qemu", "-kernel", kernel}, "guest rumprun (annotation com.urunc.unikernel.unikernelType) cannot run under monitor qemu"},
		{"missing kernel", []string{"-type", "linux", "-monitor", "qemu", "-kernel", filepath.Join(dir, "nope")}, "kernel: stat " + filepath.Join(dir, "nope")},
		{"solo5 initrd", []string{"-type", "mirage", "-monitor", "spt", "-kernel", kernel, "-initrd", initrd}, "monitor spt cannot boot an initrd"},
		{"unknown monitor", []string{"-type", "linux", "-monitor", "vbox", "-kernel", kernel}, `unknown hypervisor "vbox"`},
	} {
		out := filepath.Join(dir, tc.name+".tar")
		got, err := urunc(t, append(append([]string{"build", "-t", "x/y:z", "-o", out}, tc.args...), "--", "/init")...)
		if err == nil || !strings.Contains(got, tc.want) {
			t.Errorf("%s: %v\n%s\nwant %q", tc.name, err, got, tc.want)
		}
		if _, err := os.Stat(out); err == nil {
			t.Errorf("%s: %s was written", tc.name, out)
		}
	}
}

// urunc build pushes to a registry (distribution's, on loopback), and
// containerd pulls the image back and runs it.
func TestURuncBuildPushesToRegistry(t *testing.T) {
	if _, err := os.Stat(registryBinary); err != nil {
		t.Fatalf("no registry (integration/setup.sh builds it): %v", err)
	}
	addr := freeLoopbackAddr(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n", filepath.Join(dir, "data"), addr)), 0o644); err != nil {
		t.Fatal(err)
	}
	reg := exec.Command(registryBinary, "serve", cfg)
	reg.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := reg.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reg.Process.Kill(); _ = reg.Wait() })
	waitFor(t, 20*time.Second, "the registry to listen", func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	kernel, initrd := guestFiles(t)
	name := addr + "/urunc/pushed:v1"
	out, err := urunc(t, "build", "-t", name, "-type", "linux", "-monitor", "qemu", "-kernel", kernel, "-initrd", initrd,
		"-push", "-plain-http", "-address", env.socket(), "-namespace", namespace, "--", "/init", "echo", "pulled-back")
	if err != nil || !strings.Contains(out, "pushed "+name) {
		t.Fatalf("urunc build -push: %v\n%s", err, out)
	}
	t.Cleanup(func() { _, _ = ctrRaw("images", "rm", name) })
	ctr(t, "images", "rm", name)
	ctr(t, "images", "pull", "--plain-http", name)
	id := newID(t)
	if out := ctr(t, "run", "--rm", "--runtime", runtimeName, name, id); !strings.Contains(out, "URUNC_GUEST_ARGS: pulled-back") {
		t.Fatalf("the pulled image did not run:\n%s", out)
	}
}

func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// urunc check reads this host as the shim would: qemu found, the test's
// containerd config has the CRI runtime, the host config parses; a bad
// host config key fails the check, naming it.
func TestURuncCheck(t *testing.T) {
	out, err := urunc(t, "check", "-o", "json", "-containerd-config", filepath.Join(env.dir, "containerd.toml"))
	var results []struct{ Check, Status, Detail, Fix string }
	if jerr := json.Unmarshal([]byte(out), &results); jerr != nil {
		t.Fatalf("urunc check -o json: %v (%v)\n%s", jerr, err, out)
	}
	got := map[string]string{}
	for _, r := range results {
		got[r.Check] = r.Status + ": " + r.Detail
	}
	for check, want := range map[string]string{
		"monitor qemu": "ok: ", "tun": "ok: /dev/net/tun", "host config": "ok: " + env.hostConfig,
		"containerd config": "ok: CRI runtime handler urunc", "shim": "ok: " + env.shimPath,
		"launcher": "ok: " + env.launcherPath,
	} {
		if !strings.HasPrefix(got[check], want) {
			t.Errorf("check %q = %q, want %q…", check, got[check], want)
		}
	}
	if _, ok := got["kvm"]; !ok {
		t.Error("no kvm check")
	}
	withHostConfig(t, "[monitors.qemu]\ndefault_vcpus = \"two\"\n")
	out, err = urunc(t, "check")
	if err == nil || !strings.Contains(out, "monitors.qemu.default_vcpus (line 2)") {
		t.Fatalf("a bad host config: %v\n%s", err, out)
	}
}

// urunc ps lists a running unikernel container with its monitor, from the
// bundles; once its shim is gone it is flagged an orphan, and urunc's
// cleanup-orphans cleans it.
func TestURuncPs(t *testing.T) {
	withHostConfig(t, env.standinHostConfig())
	id := newID(t)
	ctr(t, "run", "-d", "--runtime", runtimeName, image, id, "/init", "sleep")
	monitor := taskPids(t, id)[0]
	stateDir := orphansStateDir()
	row := psRow(t, stateDir, id)
	for k, want := range map[string]any{"guest": "linux", "monitor": "qemu", "pid": float64(monitor), "state": "running",
		"shim": "answers", "orphan": false, "rootfsMode": "initrd"} {
		if row[k] != want {
			t.Errorf("ps %s = %v, want %v", k, row[k], want)
		}
	}
	if out, _ := urunc(t, "ps", "-state-dir", stateDir); !strings.Contains(out, id) || !strings.Contains(out, "running") {
		t.Errorf("ps table lacks the container:\n%s", out)
	}
	orphan(t, id)
	if row := psRow(t, stateDir, id); row["orphan"] != true || row["shim"] != "gone" || row["state"] != "running" {
		t.Errorf("after its shim died: %v", row)
	}
	if out, err := urunc(t, "cleanup-orphans", "-state-dir", stateDir); err != nil || !strings.Contains(out, namespace+"/"+id+": cleaned") {
		t.Fatalf("urunc cleanup-orphans: %v\n%s", err, out)
	}
	waitFor(t, 5*time.Second, "the monitor to be killed", func() bool { return !isMonitorOrStandin(monitor) })
	if row := psRow(t, stateDir, id); row != nil {
		t.Errorf("ps still lists the cleaned container: %v", row)
	}
}

func psRow(t *testing.T, stateDir, id string) map[string]any {
	t.Helper()
	out, err := urunc(t, "ps", "-o", "json", "-state-dir", stateDir)
	var rows []map[string]any
	if jerr := json.Unmarshal([]byte(out), &rows); err != nil || jerr != nil {
		t.Fatalf("urunc ps -o json: %v %v\n%s", err, jerr, out)
	}
	for _, r := range rows {
		if r["id"] == id {
			return r
		}
	}
	return nil
}

// isMonitorOrStandin tells whether pid is a live process at all.
func isMonitorOrStandin(pid int) bool {
	return syscall.Kill(pid, 0) == nil
}

// A root filesystem directory on disk becomes the image's root and the
// guest's (mountRootfs, over 9p here): the kernel goes to /boot, the
// directory's files stay where they are.
func TestURuncBuildFromRootfsDirectory(t *testing.T) {
	dir := t.TempDir()
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatal(err)
	}
	for path, data := range map[string][]byte{"bin/busybox": bb, "init": []byte(testimage.GuestInit)} {
		p := filepath.Join(dir, "root", path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	name := "docker.io/urunc/test-built-rootfs:latest"
	out, err := urunc(t, "build", "-t", name, "-type", "linux", "-monitor", "qemu", "-kernel", builtinKernel, "-rootfs", filepath.Join(dir, "root"),
		"-import", "-address", env.socket(), "-namespace", namespace, "--", "/init", "echo", "from-a-rootfs-directory")
	if err != nil {
		t.Fatalf("urunc build -rootfs: %v\n%s", err, out)
	}
	t.Cleanup(func() { _, _ = ctrRaw("images", "rm", name) })
	id := newID(t)
	if out := ctr(t, "run", "--rm", "--runtime", runtimeName, name, id); !strings.Contains(out, "URUNC_GUEST_ARGS: from-a-rootfs-directory") {
		t.Fatalf("the guest did not boot from the image's root:\n%s", out)
	}
}

// The unikraft, hermit and mewz command-line forms boot under real qemu
// through containerd, in images urunc build makes. The kernel is this
// project's multiboot test kernel (testimage.MultibootKernel): it prints
// the command line qemu gave it, then reports an exit code through
// isa-debug-exit, which only mewz's images have: mewz's decoded code is
// the container's status; the others end with the monitor's 0.
func TestGuestFormsBootUnderQemu(t *testing.T) {
	kernel := filepath.Join(t.TempDir(), "multiboot.bin")
	if err := os.WriteFile(kernel, testimage.MultibootKernel(), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		guest, want string
		args        []string
		exit        int
	}{
		// qemu puts the kernel's path first. The env is ctr's default.
		{"unikraft", "/guest/kernel Unikraft env.vars=[ PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin ] -- hello-unikraft 1",
			[]string{"hello-unikraft", "1"}, 0},
		{"hermit", "/guest/kernel hello-hermit", []string{"hello-hermit"}, 0},
		// mewz takes only its network, and this container has none.
		{"mewz", "/guest/kernel", nil, testimage.MultibootExitValue},
	} {
		t.Run(tc.guest, func(t *testing.T) {
			name := "docker.io/urunc/test-mbk-" + tc.guest + ":latest"
			args := append([]string{"build", "-t", name, "-type", tc.guest, "-monitor", "qemu", "-kernel", kernel,
				"-import", "-address", env.socket(), "-namespace", namespace, "--"}, tc.args...)
			if out, err := urunc(t, args...); err != nil {
				t.Fatalf("urunc build: %v\n%s", err, out)
			}
			t.Cleanup(func() { _, _ = ctrRaw("images", "rm", name) })
			id := newID(t)
			out, err := ctrRaw("run", "--rm", "--runtime", runtimeName, name, id)
			if code := exitCode(err); code != tc.exit {
				t.Errorf("exit status %d (%v), want %d", code, err, tc.exit)
			}
			var printed string
			for _, l := range strings.Split(out, "\n") {
				if after, ok := strings.CutPrefix(l, "MBK_CMDLINE: "); ok {
					printed = strings.TrimRight(after, "\r ")
				}
			}
			if printed != tc.want {
				t.Errorf("the kernel's command line: %q, want %q\n%s", printed, tc.want, out)
			}
		})
	}
}

// urunc ps and cleanup-orphans find containerd's task state by themselves:
// with no flag, from the running containerd (here the test's private one,
// started with --config); with -containerd-config, from that file, which
// is what is left once containerd is gone. A shim that is stopped accepts
// on its socket but answers nothing: ps calls it hung, an orphan, and
// answers again once it runs.
func TestURuncPsFindsContainerdState(t *testing.T) {
	withHostConfig(t, env.standinHostConfig())
	id := newID(t)
	ctr(t, "run", "-d", "--runtime", runtimeName, image, id, "/init", "sleep")
	config := filepath.Join(env.dir, "containerd.toml")
	if row := psRowWith(t, id); row == nil || row["shim"] != "answers" || row["state"] != "running" || row["bundle"] != env.bundle(id) {
		t.Fatalf("urunc ps with no flags: %v", row)
	}
	if row := psRowWith(t, id, "-containerd-config", config); row == nil || row["shim"] != "answers" {
		t.Fatalf("urunc ps -containerd-config: %v", row)
	}
	shim := shimOf(id)
	if err := syscall.Kill(shim, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := true
	defer func() {
		if stopped {
			_ = syscall.Kill(shim, syscall.SIGCONT)
		}
	}()
	start := time.Now()
	if row := psRowWith(t, id, "-shim-timeout", "1s"); row == nil || row["shim"] != "hung" || row["orphan"] != true {
		t.Errorf("a stopped shim: %v", row)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("ps took %s with a stopped shim and a 1s probe timeout", took)
	}
	if err := syscall.Kill(shim, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	stopped = false
	if row := psRowWith(t, id); row == nil || row["shim"] != "answers" || row["orphan"] != false {
		t.Errorf("the shim running again: %v", row)
	}
	orphan(t, id)
	// With containerd gone nothing points at its private state: the
	// command says where it looked and what to give (or, on a host with
	// a containerd of its own, lists that one's).
	out, err := urunc(t, "cleanup-orphans", "-dry-run")
	if strings.Contains(out, id) || (err != nil && !strings.Contains(out, "give -containerd-config FILE (its --config) or -state-dir DIR")) {
		t.Errorf("cleanup-orphans with containerd gone and no flag: %v\n%s", err, out)
	}
	out, err = urunc(t, "cleanup-orphans", "-dry-run", "-containerd-config", config)
	if err != nil || !strings.Contains(out, namespace+"/"+id+": shim gone") {
		t.Fatalf("cleanup-orphans -dry-run -containerd-config: %v\n%s", err, out)
	}
	out, err = urunc(t, "cleanup-orphans", "-containerd-config", config)
	if err != nil || !strings.Contains(out, namespace+"/"+id+": cleaned") {
		t.Fatalf("cleanup-orphans -containerd-config: %v\n%s", err, out)
	}
}

// psRowWith is id's row of urunc ps -o json with the given flags.
func psRowWith(t *testing.T, id string, flags ...string) map[string]any {
	t.Helper()
	out, err := urunc(t, append([]string{"ps", "-o", "json"}, flags...)...)
	var rows []map[string]any
	if jerr := json.Unmarshal([]byte(out), &rows); err != nil || jerr != nil {
		t.Fatalf("urunc ps -o json %v: %v %v\n%s", flags, err, jerr, out)
	}
	for _, r := range rows {
		if r["id"] == id {
			return r
		}
	}
	return nil
}

// urunc build -import against a socket that is not there says so, naming
// it, at once.
func TestURuncBuildMissingSocket(t *testing.T) {
	kernel, initrd := guestFiles(t)
	sock := filepath.Join(t.TempDir(), "containerd.sock")
	start := time.Now()
	out, err := urunc(t, "build", "-t", "docker.io/urunc/no-socket:latest", "-type", "linux", "-monitor", "qemu", "-kernel", kernel, "-initrd", initrd,
		"-import", "-address", sock, "--", "/init")
	took := time.Since(start)
	if err == nil || !strings.Contains(out, "containerd socket "+sock+": no such file: is containerd running? (-address names its socket)") {
		t.Fatalf("urunc build against a missing socket: %v\n%s", err, out)
	}
	if strings.Contains(out, "timeout") || strings.Contains(out, "deadline") || took > 5*time.Second {
		t.Errorf("took %s: %s", took, out)
	}
}
