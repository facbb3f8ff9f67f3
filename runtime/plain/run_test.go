package plain

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/config"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/lifecycle"
)

// testBundle is a bundle with a busybox rootfs.
type testBundle struct {
	dir, id, cgroup, stateDir string
	out                       string // the container's stdout and stderr
	spec                      *specs.Spec
}

func newBundle(t *testing.T, args ...string) *testBundle {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "rootfs", "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	bb, err := os.ReadFile(busybox)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bin, "busybox"), bb, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, applet := range []string{"sh", "sleep", "echo", "cat"} {
		if err := os.Symlink("busybox", filepath.Join(bin, applet)); err != nil {
			t.Fatal(err)
		}
	}
	id := fmt.Sprintf("p%d", time.Now().UnixNano())
	b := &testBundle{dir: dir, id: id, cgroup: "/urunc-unit-test-plain/" + id, stateDir: t.TempDir(), out: filepath.Join(dir, "out")}
	b.spec = &specs.Spec{
		Version: specs.Version,
		Process: &specs.Process{Args: args, Cwd: "/", Env: []string{"PATH=/bin"}},
		Root:    &specs.Root{Path: "rootfs"},
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc"},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "mode=755"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"}},
		},
		Linux: &specs.Linux{
			CgroupsPath: b.cgroup,
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace}, {Type: specs.MountNamespace}, {Type: specs.IPCNamespace},
				{Type: specs.UTSNamespace}, {Type: specs.NetworkNamespace},
			},
		},
	}
	t.Cleanup(func() {
		parents, _ := filepath.Glob("/sys/fs/cgroup/*/urunc-unit-test-plain")
		for _, p := range append(parents, "/sys/fs/cgroup/urunc-unit-test-plain") {
			_ = os.Remove(p) // fails while another test's cgroup is in it
		}
	})
	return b
}

func (b *testBundle) create(t *testing.T) (*Container, error) {
	t.Helper()
	data, err := json.Marshal(b.spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(b.dir, "config.json"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := os.Create(b.out)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	host, err := config.ParseHostConfig("test", []byte(fmt.Sprintf("[runtime]\nstate_dir = %q\n", b.stateDir)))
	if err != nil {
		t.Fatal(err)
	}
	opts := lifecycle.CreateOptions{ID: b.id, Namespace: "unit", Bundle: b.dir, Host: host,
		Stdio: lifecycle.Stdio{Stdout: out, Stderr: out}}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return Create(ctx, opts, b.spec, lifecycle.PersistedState{ID: b.id, Namespace: "unit"})
}

func (b *testBundle) mustCreate(t *testing.T) *Container {
	t.Helper()
	c, err := b.create(t)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = c.Kill(ctx, unix.SIGKILL, true)
		_, _ = c.Wait(ctx)
		_, _ = c.Delete(ctx)
	})
	return c
}

type waiter interface {
	Wait(context.Context) (lifecycle.ExitStatus, error)
}

func waitExit(t *testing.T, w waiter) lifecycle.ExitStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	e, err := w.Wait(ctx)
	if err != nil {
		t.Fatalf("wait: %v", err)
	}
	return e
}

// assertGone checks that nothing of b is left: no process, no runc
// container, no cgroup, no state file, no mount under the bundle.
func (b *testBundle) assertGone(t *testing.T, pid int) {
	t.Helper()
	if pid > 0 {
		if err := unix.Kill(pid, 0); !errors.Is(err, unix.ESRCH) {
			t.Errorf("process %d still exists (kill 0: %v)", pid, err)
		}
	}
	if _, err := os.Stat(filepath.Join(b.stateDir, "runc", "unit", b.id)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("runc still knows container %s (%v)", b.id, err)
	}
	if cgs := cgroupDirs(b.cgroup); len(cgs) > 0 {
		t.Errorf("cgroup left: %v", cgs)
	}
	if _, err := os.Stat(lifecycle.StatePath(b.dir)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state file left (%v)", err)
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) > 4 && strings.HasPrefix(fields[4], b.dir) {
			t.Errorf("mount left: %s", fields[4])
		}
	}
}

// A pod's sidecar: created and started by runc, exec'd into, paused and
// resumed, killed, deleted with nothing left.
func TestPlainContainerLifecycle(t *testing.T) {
	needReal(t)
	ctx := context.Background()
	b := newBundle(t, "sh", "-c", "echo started; exec sleep 1000")
	c := b.mustCreate(t)
	pid := c.Pid()
	if st := c.State(); st.Status != lifecycle.StatusCreated || pid <= 0 {
		t.Fatalf("after create: %+v", st)
	}
	if st, _ := lifecycle.ReadState(b.dir); st == nil || !st.Runc || st.Pid != pid || st.PidStartTime == 0 {
		t.Fatalf("persisted: %+v", st)
	}
	if _, err := c.NewExec("early", &specs.Process{Args: []string{"true"}}); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("exec before start: %v", err)
	}
	if err := c.Start(ctx); err != nil {
		t.Fatalf("start: %v", err)
	}
	if c.Status() != lifecycle.StatusRunning {
		t.Fatalf("status %s", c.Status())
	}
	if pids, err := c.Pids(ctx); err != nil || len(pids) == 0 {
		t.Fatalf("pids: %v %v", pids, err)
	}
	if _, err := c.Delete(ctx); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("delete while running: %v", err)
	}
	if err := c.Pause(ctx); err != nil || c.Status() != lifecycle.StatusPaused {
		t.Fatalf("pause: %v %s", err, c.Status())
	}
	if err := c.Resume(ctx); err != nil || c.Status() != lifecycle.StatusRunning {
		t.Fatalf("resume: %v %s", err, c.Status())
	}
	if m, err := c.Metrics(ctx); err != nil || m == nil {
		t.Fatalf("metrics: %v %v", m, err)
	}
	limit := int64(256 << 20)
	if err := c.Update(ctx, &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit}}); err != nil {
		t.Fatalf("update: %v", err)
	}
	if c.OOMKilled() || c.OOM() != nil {
		t.Fatal("OOM without an OOM")
	}
	if err := c.Kill(ctx, unix.SIGKILL, true); err != nil {
		t.Fatalf("kill: %v", err)
	}
	exit := waitExit(t, c)
	if exit.Status != 128+int(syscall.SIGKILL) || exit.Pid != pid {
		t.Fatalf("exit %+v", exit)
	}
	if st, _ := lifecycle.ReadState(b.dir); st == nil || st.Exit == nil || st.Exit.Status != exit.Status || !st.Exit.At.Equal(exit.At) {
		t.Fatalf("exit not persisted: %+v", st)
	}
	if err := c.Kill(ctx, unix.SIGTERM, false); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("kill after exit: %v", err)
	}
	if pids, _ := c.Pids(ctx); len(pids) != 1 || pids[0] != pid {
		t.Fatalf("pids after exit %v", pids)
	}
	if _, err := c.NewExec("late", &specs.Process{Args: []string{"true"}}); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("exec after exit: %v", err)
	}
	got, err := c.Delete(ctx)
	if err != nil || got != exit {
		t.Fatalf("delete: %+v %v", got, err)
	}
	b.assertGone(t, pid)
	if _, err := c.Delete(ctx); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	out, _ := os.ReadFile(b.out)
	if !strings.Contains(string(out), "started") {
		t.Fatalf("the container's stdout got %q", out)
	}
}

// Execs share the container's state machine: an exec runs to its status,
// a never-started one is deleted with its waiters answered, a terminal
// exec hands over its pty.
func TestExec(t *testing.T) {
	needReal(t)
	ctx := context.Background()
	b := newBundle(t, "sleep", "1000")
	c := b.mustCreate(t)
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.NewExec("noargs", &specs.Process{}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("exec without args: %v", err)
	}

	t.Run("runs to its status", func(t *testing.T) {
		p, err := c.NewExec("e1", &specs.Process{Args: []string{"sh", "-c", "echo from-exec; exit 5"}, Cwd: "/", Env: []string{"PATH=/bin"}})
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Kill(ctx, unix.SIGTERM); !errors.Is(err, errdefs.ErrFailedPrecondition) {
			t.Fatalf("kill before start: %v", err)
		}
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		if err := p.Start(ctx, lifecycle.Stdio{Stdout: w}); err != nil {
			t.Fatalf("start: %v", err)
		}
		w.Close()
		if err := p.Start(ctx, lifecycle.Stdio{}); !errors.Is(err, errdefs.ErrFailedPrecondition) {
			t.Fatalf("second start: %v", err)
		}
		out, _ := io.ReadAll(r)
		exit := waitExit(t, p)
		if exit.Status != 5 || exit.Pid != p.Pid() || p.Pid() <= 0 || strings.TrimSpace(string(out)) != "from-exec" {
			t.Fatalf("exit %+v, pid %d, output %q", exit, p.Pid(), out)
		}
		if st := p.State(); st.Status != lifecycle.StatusStopped || st.Exit != exit || st.ID != "e1" {
			t.Fatalf("state %+v", st)
		}
		if err := p.Kill(ctx, unix.SIGTERM); !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("kill after exit: %v", err)
		}
		if got, err := p.Delete(ctx); err != nil || got != exit {
			t.Fatalf("delete: %+v %v", got, err)
		}
		if _, err := p.Delete(ctx); !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("second delete: %v", err)
		}
	})

	t.Run("killed", func(t *testing.T) {
		p, err := c.NewExec("e2", &specs.Process{Args: []string{"sleep", "1000"}, Cwd: "/", Env: []string{"PATH=/bin"}})
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Start(ctx, lifecycle.Stdio{}); err != nil {
			t.Fatal(err)
		}
		if _, err := p.Delete(ctx); !errors.Is(err, errdefs.ErrFailedPrecondition) {
			t.Fatalf("delete while running: %v", err)
		}
		if err := p.Kill(ctx, unix.SIGKILL); err != nil {
			t.Fatal(err)
		}
		if exit := waitExit(t, p); exit.Status != 128+int(syscall.SIGKILL) {
			t.Fatalf("exit %+v", exit)
		}
	})

	t.Run("never started", func(t *testing.T) {
		p, err := c.NewExec("e3", &specs.Process{Args: []string{"true"}})
		if err != nil {
			t.Fatal(err)
		}
		waited := make(chan lifecycle.ExitStatus)
		go func() { e, _ := p.Wait(ctx); waited <- e }()
		exit, err := p.Delete(ctx)
		if err != nil || exit.At.IsZero() {
			t.Fatalf("delete: %+v %v", exit, err)
		}
		select {
		case got := <-waited:
			if got != exit {
				t.Fatalf("waiter got %+v, delete %+v", got, exit)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a waiter of the deleted exec never returned")
		}
		if err := p.Start(ctx, lifecycle.Stdio{}); !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("start after delete: %v", err)
		}
	})

	t.Run("terminal", func(t *testing.T) {
		p, err := c.NewExec("e4", &specs.Process{Args: []string{"sh", "-c", "echo on-the-pty"}, Cwd: "/", Env: []string{"PATH=/bin"}, Terminal: true})
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Start(ctx, lifecycle.Stdio{}); err != nil {
			t.Fatal(err)
		}
		con := p.Console()
		if con == nil {
			t.Fatal("no pty master")
		}
		defer con.Close()
		out, _ := io.ReadAll(con) // EIO once the exec's side closes
		if !strings.Contains(string(out), "on-the-pty") {
			t.Fatalf("pty said %q", out)
		}
		waitExit(t, p)
	})

	t.Run("runc refuses", func(t *testing.T) {
		p, err := c.NewExec("e5", &specs.Process{Args: []string{"/no/such/binary"}, Cwd: "/"})
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Start(ctx, lifecycle.Stdio{}); err == nil || !strings.Contains(err.Error(), "runc exec") {
			t.Fatalf("start of a missing binary: %v", err)
		}
		if p.State().Status != lifecycle.StatusCreated {
			t.Fatalf("a failed start moved the exec to %s", p.State().Status)
		}
	})
}

// A created container deleted without a start: runc's init is killed and
// removed.
func TestPlainDeleteCreated(t *testing.T) {
	needReal(t)
	b := newBundle(t, "sleep", "1000")
	c := b.mustCreate(t)
	pid := c.Pid()
	if _, err := c.Delete(context.Background()); err != nil {
		t.Fatal(err)
	}
	b.assertGone(t, pid)
}

// What runc cannot run is refused, saying why, and leaves no runc
// container; a terminal init is not supported.
func TestPlainCreateRefused(t *testing.T) {
	needReal(t)
	b := newBundle(t, "/no/such/binary")
	if c, err := b.create(t); err == nil {
		c.Delete(context.Background())
		t.Fatal("created")
	} else if !strings.Contains(err.Error(), "runc create") || !strings.Contains(err.Error(), "/no/such/binary") {
		t.Fatalf("error %q does not say runc create failed on the binary", err)
	}
	if _, err := os.Stat(filepath.Join(b.stateDir, "runc", "unit", b.id)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("runc still knows the container (%v)", err)
	}
	b = newBundle(t, "sh")
	b.spec.Process.Terminal = true
	if _, err := b.create(t); !errors.Is(err, errdefs.ErrNotImplemented) {
		t.Fatalf("terminal init: %v", err)
	}
}

// Release after a dead shim works from the persisted state alone, and
// twice is as good as once.
func TestPlainReleaseFromState(t *testing.T) {
	needReal(t)
	ctx := context.Background()
	b := newBundle(t, "sleep", "1000")
	c := b.mustCreate(t)
	pid := c.Pid()
	st := c.Persisted()
	for i := range 2 {
		if err := Release(ctx, b.dir, &st); err != nil {
			t.Fatalf("release %d: %v", i, err)
		}
	}
	waitExit(t, c)
	b.assertGone(t, pid)
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
