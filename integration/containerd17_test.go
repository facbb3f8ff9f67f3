//go:build integration

package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// containerd17Dir holds containerd and ctr v1.7, built by setup.sh off
// PATH so that they never shadow the v2 binaries.
const containerd17Dir = "/usr/local/lib/urunc-test/containerd-1.7"

// The same shim binary serves containerd 1.7, which starts shims the old
// way (no bootstrap payload, a JSON answer) and speaks task API v2: a
// one-shot guest prints, a detached one is killed and removed, nothing is
// left.
func TestContainerd17(t *testing.T) {
	bin := func(name string) string { return filepath.Join(containerd17Dir, name) }
	if _, err := os.Stat(bin("containerd")); err != nil {
		t.Skipf("containerd 1.7 not built (integration/setup.sh builds it): %v", err)
	}
	dir := filepath.Join(env.dir, "c17")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "containerd.sock")
	cfg := fmt.Sprintf("version = 2\nroot = %q\nstate = %q\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = %q\n[ttrpc]\n  address = %q\n",
		filepath.Join(dir, "root"), filepath.Join(dir, "state"), sock, sock+".ttrpc")
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "containerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	daemon := exec.Command(bin("containerd"), "--config", filepath.Join(dir, "config.toml"))
	daemon.Env = append(os.Environ(),
		"PATH="+env.bin+":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"URUNC_CONFIG_FILE="+env.hostConfig)
	daemon.Stdout, daemon.Stderr = logf, logf
	daemon.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := daemon.Start(); err != nil {
		t.Fatal(err)
	}
	const id17 = "c17-detached"
	ctr17 := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, bin("ctr"), append([]string{"--address", sock, "--namespace", namespace}, args...)...).CombinedOutput()
		return filterCtrNoise(string(out)), err
	}
	t.Cleanup(func() {
		out, _ := ctr17("task", "ls", "-q")
		for _, id := range strings.Fields(out) {
			_, _ = ctr17("task", "kill", "-s", "SIGKILL", id)
			time.Sleep(time.Second)
			_, _ = ctr17("task", "rm", "-f", id)
			_, _ = ctr17("container", "rm", id)
		}
		_ = daemon.Process.Signal(syscall.SIGTERM)
		_, _ = daemon.Process.Wait()
		if m := mountsUnder(dir); len(m) > 0 {
			t.Errorf("mounts left by containerd 1.7's containers: %v", m)
			for _, mp := range m {
				_ = syscall.Unmount(mp, syscall.MNT_DETACH)
			}
		}
		assertNoLeftovers(t, id17)
	})
	waitFor(t, 30*time.Second, "containerd 1.7", func() bool { _, err := ctr17("version"); return err == nil })
	if out, err := ctr17("images", "import", filepath.Join(env.dir, "guest.tar")); err != nil {
		t.Fatalf("import: %v\n%s", err, out)
	}

	out, err := ctr17("run", "--rm", "--runtime", runtimeName, image, "c17-oneshot", "/init", "echo", "from", "containerd", "1.7")
	if err != nil || !strings.Contains(out, "URUNC_GUEST_ARGS: from containerd 1.7") {
		t.Fatalf("ctr 1.7 run --rm: %v\n%s", err, out)
	}

	if out, err := ctr17("run", "-d", "--runtime", runtimeName, image, id17, "/init", "sleep"); err != nil {
		t.Fatalf("ctr 1.7 run -d: %v\n%s", err, out)
	}
	ls, _ := ctr17("task", "ls")
	if !strings.Contains(ls, id17) || !strings.Contains(ls, "RUNNING") {
		t.Fatalf("task ls:\n%s", ls)
	}
	if out, err := ctr17("task", "kill", "-s", "SIGKILL", id17); err != nil {
		t.Fatalf("kill: %v\n%s", err, out)
	}
	waitFor(t, 10*time.Second, "stop", func() bool { ls, _ := ctr17("task", "ls"); return strings.Contains(ls, "STOPPED") })
	if out, err := ctr17("task", "rm", id17); err != nil {
		t.Fatalf("task rm: %v\n%s", err, out)
	}
	if out, err := ctr17("container", "rm", id17); err != nil {
		t.Fatalf("container rm: %v\n%s", err, out)
	}
	waitFor(t, 15*time.Second, "the shims to exit", func() bool { return len(processesOf(env.shimPath)) == 0 })
	if p := monitorProcesses(); len(p) > 0 {
		t.Fatalf("monitors left: %v", p)
	}
	if m := mountsUnder(dir); len(m) > 0 {
		t.Fatalf("mounts left: %v", m)
	}
	for s := range shimSockets() {
		if !env.shimSockets[s] {
			t.Fatalf("shim socket left: %s", s)
		}
	}
}
