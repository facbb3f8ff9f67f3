package plain

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"testing"

	"github.com/containerd/containerd/v2/pkg/sys/reaper"
	runc "github.com/containerd/go-runc"
	"golang.org/x/sys/unix"
)

// skipReal says why the tests that run real containers with runc cannot
// run here ("" when they can).
var skipReal string

func TestMain(m *testing.M) {
	skipReal = setUpReal()
	os.Exit(m.Run())
}

// setUpReal makes this process what the shim is: child subreaper (runc's
// init and a detached exec are reparented to it), containerd's reaper
// taking every child's exit on SIGCHLD, and go-runc waiting through that
// reaper. It returns why the real tests cannot run, or "".
func setUpReal() string {
	if os.Geteuid() != 0 {
		return "needs root to run containers with runc"
	}
	for _, tool := range []string{"runc", busybox} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Sprintf("needs %s (integration/setup.sh installs it): %v", tool, err)
		}
	}
	if err := reaper.SetSubreaper(1); err != nil {
		return fmt.Sprintf("cannot become child subreaper: %v", err)
	}
	runc.Monitor = reaper.Default
	sigs := make(chan os.Signal, 32)
	signal.Notify(sigs, unix.SIGCHLD)
	go func() {
		for range sigs {
			_ = reaper.Reap()
		}
	}()
	return ""
}

// busybox is a static busybox, the containers' only binary.
const busybox = "/bin/busybox"

func needReal(t *testing.T) {
	t.Helper()
	if skipReal != "" {
		t.Skip(skipReal)
	}
}
