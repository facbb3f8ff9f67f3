package unikernel

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/urunc-dev/containerd-shim-urunc-v2/internal/annotation"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/config"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/lifecycle"
)

// testBundle is a bundle on disk: config.json and a rootfs holding a
// guest kernel and initrd (the stand-in never boots them).
type testBundle struct {
	dir, id, cgroup string
	out             string // where the monitor's stdout goes
	spec            *specs.Spec
}

// newBundle writes a bundle whose guest runs args under the stand-in,
// with the image's settings as spec annotations (over a Linux guest with
// its initrd under qemu), in new namespaces and a cgroup of its own.
func newBundle(t *testing.T, args []string, annotations map[string]string) *testBundle {
	t.Helper()
	dir := t.TempDir()
	id := fmt.Sprintf("u%d", time.Now().UnixNano())
	rootfsDir := filepath.Join(dir, "rootfs")
	if err := os.MkdirAll(rootfsDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"kernel", "initrd"} {
		if err := os.WriteFile(filepath.Join(rootfsDir, f), []byte("not booted by the stand-in"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ann := map[string]string{}
	for k, v := range map[string]string{"unikernelType": "linux", "hypervisor": "qemu", "binary": "/kernel", "initrd": "/initrd"} {
		ann[annotation.Prefix+k] = v
	}
	for k, v := range annotations {
		ann[annotation.Prefix+k] = v
	}
	b := &testBundle{dir: dir, id: id, cgroup: "/urunc-unit-test/" + id, out: filepath.Join(dir, "monitor.out")}
	b.spec = &specs.Spec{
		Version:     specs.Version,
		Process:     &specs.Process{Args: args, Cwd: "/"},
		Root:        &specs.Root{Path: "rootfs"},
		Annotations: ann,
		Linux: &specs.Linux{
			CgroupsPath: b.cgroup,
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace}, {Type: specs.MountNamespace}, {Type: specs.IPCNamespace},
				{Type: specs.UTSNamespace}, {Type: specs.NetworkNamespace},
			},
		},
	}
	t.Cleanup(func() {
		parents, _ := filepath.Glob("/sys/fs/cgroup/*/urunc-unit-test")
		parents = append(parents, "/sys/fs/cgroup/urunc-unit-test")
		for _, p := range parents {
			_ = os.Remove(p) // fails while another test's cgroup is in it
		}
	})
	return b
}

func hostConfig(t *testing.T) config.HostConfig {
	t.Helper()
	h, err := config.ParseHostConfig("test", []byte(fmt.Sprintf("[monitors.qemu]\npath = %q\naccel = \"tcg\"\n\n[runtime]\nstate_dir = %q\n",
		realEnv.standin, t.TempDir())))
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// create runs Create on b as the shim's bundle.Create would, the monitor's
// stdout going to b.out.
func (b *testBundle) create(t *testing.T) (*Container, error) {
	t.Helper()
	out, err := os.Create(b.out)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	rootfsDir := lifecycle.RootfsDir(b.dir, b.spec)
	cfg, err := config.ResolveUnikernelConfig(b.spec.Annotations, rootfsDir)
	if err != nil {
		return nil, err
	}
	opts := lifecycle.CreateOptions{ID: b.id, Namespace: "unit", Bundle: b.dir, Host: hostConfig(t),
		Stdio: lifecycle.Stdio{Stdout: out, Stderr: out}, Launcher: realEnv.launcher}
	st := lifecycle.PersistedState{ID: b.id, Namespace: "unit"}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return Create(ctx, lifecycle.NewTimeline(), opts, b.spec, cfg, st, rootfsDir)
}

// mustCreate creates b and deletes what is left of it when the test ends.
func (b *testBundle) mustCreate(t *testing.T) *Container {
	t.Helper()
	c, err := b.create(t)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	t.Cleanup(func() {
		_ = c.Kill(context.Background(), unix.SIGKILL, true)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _ = c.Wait(ctx)
		_, _ = c.Delete(ctx)
	})
	return c
}

// waitExit waits for c's exit, bounded so that a broken exit path fails
// the test instead of hanging it.
func waitExit(t *testing.T, c *Container) lifecycle.ExitStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	e, err := c.Wait(ctx)
	if err != nil {
		t.Fatalf("wait: %v", err)
	}
	return e
}

// assertGone checks that nothing of b is left on the host: no process,
// no mount under the bundle, no cgroup, no state file, no monitor root.
func (b *testBundle) assertGone(t *testing.T, pid int) {
	t.Helper()
	if pid > 0 {
		if err := unix.Kill(pid, 0); !errors.Is(err, unix.ESRCH) {
			t.Errorf("process %d still exists (kill 0: %v)", pid, err)
		}
	}
	if m := mountsUnder(t, b.dir); len(m) > 0 {
		t.Errorf("mounts left under the bundle: %v", m)
	}
	if cgs := cgroupDirs(b.cgroup); len(cgs) > 0 {
		t.Errorf("cgroup left: %v", cgs)
	}
	for _, f := range []string{lifecycle.StateFile, lifecycle.MonitorRootDir} {
		if _, err := os.Stat(filepath.Join(b.dir, f)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left in the bundle (%v)", f, err)
		}
	}
}

func mountsUnder(t *testing.T, dir string) []string {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) > 4 && strings.HasPrefix(fields[4], dir) {
			out = append(out, fields[4])
		}
	}
	return out
}

// A guest that exits 3: created, started, stopped with its status
// persisted, deleted with nothing left, and every later call answered
// as the state machine says.
func TestContainerRunsToItsExit(t *testing.T) {
	needReal(t)
	ctx := context.Background()
	b := newBundle(t, []string{"/init", "exit", "3"}, nil)
	c := b.mustCreate(t)
	pid := c.Pid()
	if st := c.State(); st.Status != lifecycle.StatusCreated || pid <= 0 || st.ID != b.id || st.Bundle != b.dir {
		t.Fatalf("after create: %+v", st)
	}
	persisted, err := lifecycle.ReadState(b.dir)
	if err != nil || persisted == nil {
		t.Fatalf("persisted state: %v %v", persisted, err)
	}
	if persisted.Pid != pid || persisted.Monitor != "qemu" || persisted.GuestType != "linux" || persisted.Cgroup != b.cgroup || persisted.Exit != nil {
		t.Fatalf("persisted %+v", persisted)
	}
	if cgs := cgroupDirs(b.cgroup); len(cgs) == 0 {
		t.Fatalf("no cgroup %s", b.cgroup)
	}
	if pids, err := c.Pids(ctx); err != nil || len(pids) == 0 || pids[0] != pid {
		t.Fatalf("pids %v %v, want the launcher %d first", pids, err, pid)
	}
	if err := c.Start(ctx); err != nil {
		t.Fatalf("start: %v", err)
	}
	if err := c.Start(ctx); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("second start: %v", err)
	}
	if _, err := c.Delete(ctx); !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "kill it before delete") {
		t.Fatalf("delete while running: %v", err)
	}
	exit := waitExit(t, c)
	if exit.Status != 3 || exit.Pid != pid || exit.At.IsZero() {
		out, _ := os.ReadFile(b.out)
		t.Fatalf("exit %+v, want status 3 of pid %d; monitor said %q", exit, pid, out)
	}
	out, _ := os.ReadFile(b.out)
	if !strings.Contains(string(out), "STANDIN_EXITING 3") {
		t.Fatalf("the monitor did not run the guest's args: %q", out)
	}
	if st := c.State(); st.Status != lifecycle.StatusStopped || st.Exit != exit {
		t.Fatalf("state after exit: %+v", st)
	}
	if persisted, _ := lifecycle.ReadState(b.dir); persisted == nil || persisted.Exit == nil || persisted.Exit.Status != 3 {
		t.Fatalf("exit not persisted: %+v", persisted)
	}
	if pids, _ := c.Pids(ctx); len(pids) != 1 || pids[0] != pid {
		t.Fatalf("pids of a stopped task %v, want [%d] until delete", pids, pid)
	}
	if err := c.Kill(ctx, unix.SIGTERM, false); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("kill after exit: %v", err)
	}
	got, err := c.Delete(ctx)
	if err != nil || got != exit {
		t.Fatalf("delete: %+v %v, want %+v", got, err, exit)
	}
	b.assertGone(t, pid)
	if _, err := c.Delete(ctx); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	if late, err := c.Wait(ctx); err != nil || late != exit {
		t.Fatalf("a late wait: %+v %v", late, err)
	}
}

// A running guest is paused and resumed through its cgroup, reports
// metrics, takes a resource update (not of its memory limit), is killed
// with SIGKILL and deleted.
func TestContainerPauseResumeKill(t *testing.T) {
	needReal(t)
	ctx := context.Background()
	b := newBundle(t, []string{"/init", "sleep"}, nil)
	c := b.mustCreate(t)
	if err := c.Pause(ctx); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("pause before start: %v", err)
	}
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Pause(ctx); err != nil || c.Status() != lifecycle.StatusPaused {
		t.Fatalf("pause: %v, %s", err, c.Status())
	}
	if err := c.Resume(ctx); err != nil || c.Status() != lifecycle.StatusRunning {
		t.Fatalf("resume: %v, %s", err, c.Status())
	}
	if err := c.Resume(ctx); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("resume of a running task: %v", err)
	}
	if m, err := c.Metrics(ctx); err != nil || m == nil {
		t.Fatalf("metrics: %v %v", m, err)
	}
	quota, period := int64(50000), uint64(100000)
	if err := c.Update(ctx, &specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: &quota, Period: &period}}); err != nil {
		t.Fatalf("update: %v", err)
	}
	// The guest's RAM was fixed at boot: a memory limit now is refused.
	limit := int64(512 << 20)
	if err := c.Update(ctx, &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit}}); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("update of the memory limit: %v, want FailedPrecondition", err)
	}
	if c.OOMKilled() {
		t.Fatal("OOM killed without an OOM")
	}
	if _, err := c.NewExec("e", &specs.Process{Args: []string{"sh"}}); !errors.Is(err, errdefs.ErrNotImplemented) {
		t.Fatalf("exec: %v", err)
	}
	// Harmless signals never end a VM.
	if err := c.Kill(ctx, unix.SIGWINCH, false); err != nil || c.Status() != lifecycle.StatusRunning {
		t.Fatalf("SIGWINCH: %v, %s", err, c.Status())
	}
	// A kill of a paused guest thaws it, or it would never die.
	if err := c.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	pid := c.Pid()
	if err := c.Kill(ctx, unix.SIGKILL, true); err != nil {
		t.Fatal(err)
	}
	if exit := waitExit(t, c); exit.Status != 128+int(syscall.SIGKILL) {
		t.Fatalf("exit %+v, want 137", exit)
	}
	if _, err := c.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	b.assertGone(t, pid)
}

// SIGTERM asks the guest to power down; the stand-in answers no
// power-down request, so after the request's time-out the monitor gets
// the signal and ends of it (a Go program exits 2 on SIGTERM).
func TestContainerGracefulStop(t *testing.T) {
	needReal(t)
	ctx := context.Background()
	b := newBundle(t, []string{"/init", "sleep"}, nil)
	c := b.mustCreate(t)
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Kill(ctx, unix.SIGTERM, false); err != nil {
		t.Fatal(err)
	}
	if exit := waitExit(t, c); exit.Status != 2 && exit.Status != 128+int(syscall.SIGTERM) {
		t.Fatalf("exit %+v after SIGTERM", exit)
	}
}

// A created container that is deleted (or killed) without a start: its
// launcher ends and nothing is left.
func TestCreatedContainerDeleteAndKill(t *testing.T) {
	needReal(t)
	ctx := context.Background()
	t.Run("delete", func(t *testing.T) {
		b := newBundle(t, []string{"/init", "sleep"}, nil)
		c := b.mustCreate(t)
		pid := c.Pid()
		if _, err := c.Delete(ctx); err != nil {
			t.Fatal(err)
		}
		if !c.HasExited() {
			t.Fatal("deleted without the launcher's exit")
		}
		b.assertGone(t, pid)
	})
	t.Run("kill", func(t *testing.T) {
		b := newBundle(t, []string{"/init", "sleep"}, nil)
		c := b.mustCreate(t)
		// Any terminating signal ends a launcher: it has no guest to
		// power down.
		if err := c.Kill(ctx, unix.SIGTERM, false); err != nil {
			t.Fatal(err)
		}
		waitExit(t, c)
		if err := c.Start(ctx); !errors.Is(err, errdefs.ErrFailedPrecondition) {
			t.Fatalf("start after the exit: %v", err)
		}
		pid := c.Pid()
		if _, err := c.Delete(ctx); err != nil {
			t.Fatal(err)
		}
		b.assertGone(t, pid)
	})
}

// Bad input is refused, naming what is wrong, and leaves nothing behind.
func TestCreateRefusesBadInput(t *testing.T) {
	needReal(t)
	for _, tc := range []struct {
		name        string
		annotations map[string]string
		want        string
	}{
		{"unknown monitor", map[string]string{"hypervisor": "nosuchvisor"}, "nosuchvisor"},
		{"unknown guest type", map[string]string{"unikernelType": "nosuchguest"}, "nosuchguest"},
		{"missing kernel", map[string]string{"binary": "/no/such/kernel"}, "/no/such/kernel"},
		{"bad annotation", map[string]string{"mountRootfs": "perhaps"}, "mountRootfs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBundle(t, []string{"/init", "sleep"}, tc.annotations)
			c, err := b.create(t)
			if err == nil {
				c.Kill(context.Background(), unix.SIGKILL, true)
				c.Delete(context.Background())
				t.Fatal("created")
			}
			if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q: want InvalidArgument naming %q", err, tc.want)
			}
			b.assertGone(t, 0)
		})
	}
}

// cgroupDirs are the directories of cgroup path: one under a unified
// hierarchy, one per controller under cgroup v1.
func cgroupDirs(path string) []string {
	dirs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup/*", path))
	if _, err := os.Stat(filepath.Join("/sys/fs/cgroup", path)); err == nil {
		dirs = append(dirs, filepath.Join("/sys/fs/cgroup", path))
	}
	return dirs
}

// The container's cgroup is given the memory limit, the guest's RAM, plus
// the monitor's overhead, memory+swap with it; a limit too small for any
// guest is refused at Create, naming it, before a cgroup exists.
func TestCreateSizesTheCgroup(t *testing.T) {
	needReal(t)
	if _, err := os.Stat("/sys/fs/cgroup/memory"); err != nil {
		t.Skip("reads cgroup v1's memory controller")
	}
	overhead := int64(config.DefaultMemoryOverheadMB("qemu", "tcg")) << 20
	for _, tc := range []struct {
		name          string
		limit         int64
		wantCgroup    int64
		wantErrSubstr string
	}{
		{"128Mi", 128 << 20, 128<<20 + overhead, ""},
		{"8Mi", 8 << 20, 0, "memory limit 8388608 bytes (8Mi) is below 16 MiB"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBundle(t, []string{"/init", "sleep"}, nil)
			limit, swap := tc.limit, tc.limit
			b.spec.Linux.Resources = &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit, Swap: &swap}}
			cgDir := filepath.Join("/sys/fs/cgroup/memory", b.cgroup)
			if tc.wantErrSubstr != "" {
				_, err := b.create(t)
				if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), tc.wantErrSubstr) {
					t.Fatalf("create: %v, want InvalidArgument with %q", err, tc.wantErrSubstr)
				}
				if _, err := os.Stat(cgDir); !os.IsNotExist(err) {
					t.Fatalf("a refused create left its cgroup: %v", err)
				}
				return
			}
			b.mustCreate(t)
			for _, f := range []string{"memory.limit_in_bytes", "memory.memsw.limit_in_bytes"} {
				data, err := os.ReadFile(filepath.Join(cgDir, f))
				if os.IsNotExist(err) && f == "memory.memsw.limit_in_bytes" {
					continue // no swap accounting on this host
				}
				if err != nil {
					t.Fatal(err)
				}
				if got := strings.TrimSpace(string(data)); got != fmt.Sprint(tc.wantCgroup) {
					t.Errorf("%s %s, want %d: the limit and the monitor's %d", f, got, tc.wantCgroup, overhead)
				}
			}
		})
	}
}
