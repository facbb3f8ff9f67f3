package unikernel

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"testing"

	"github.com/containerd/containerd/v2/pkg/sys/reaper"
	"golang.org/x/sys/unix"
)

// realEnv is what the tests that drive a real container need: the
// stand-in monitor (played as qemu) and the launcher, built once; skip
// says why those tests cannot run here.
var realEnv struct {
	standin, launcher string
	skip              string
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "urunc-unikernel-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	realEnv.skip = setUpReal(dir)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// setUpReal builds the stand-in monitor and the launcher into dir and
// makes this process what the shim is: child subreaper, with containerd's
// reaper taking every child's exit on SIGCHLD. It returns why the real
// tests cannot run, or "".
func setUpReal(dir string) string {
	if os.Geteuid() != 0 {
		return "needs root (namespaces, cgroups, the monitor's confined root)"
	}
	if _, err := exec.LookPath("go"); err != nil {
		return "needs the go command to build the stand-in monitor and the launcher"
	}
	realEnv.standin = filepath.Join(dir, "standin", "qemu-system-x86_64")
	realEnv.launcher = filepath.Join(dir, "urunc-launcher")
	for out, pkg := range map[string]string{
		realEnv.standin:  "../../integration/cmd/standin-monitor",
		realEnv.launcher: "../../cmd/urunc-launcher",
	} {
		// Static, as make build makes them: the confined root holds the
		// monitor's binary and nothing of the host's libraries.
		build := exec.Command("go", "build", "-o", out, pkg)
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if msg, err := build.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n%s", pkg, err, msg)
			os.Exit(1)
		}
	}
	// Started after the builds: the reaper's wait4(-1) would steal their
	// statuses from exec.Cmd.
	if err := reaper.SetSubreaper(1); err != nil {
		return fmt.Sprintf("cannot become child subreaper: %v", err)
	}
	sigs := make(chan os.Signal, 32)
	signal.Notify(sigs, unix.SIGCHLD)
	go func() {
		for range sigs {
			_ = reaper.Reap()
		}
	}()
	return ""
}

func needReal(t *testing.T) {
	t.Helper()
	if realEnv.skip != "" {
		t.Skip(realEnv.skip)
	}
}
