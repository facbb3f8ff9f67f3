package lifecycle

import (
	"context"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/pkg/sys/reaper"
	"golang.org/x/sys/unix"
)

// reapLikeTheShim runs the shim's SIGCHLD loop (containerd's reaper taking
// every child's status with wait4(-1)) for the rest of the test, so that a
// command waited any other way loses the race for its status.
func reapLikeTheShim(t *testing.T) {
	t.Helper()
	sigs := make(chan os.Signal, 32)
	signal.Notify(sigs, unix.SIGCHLD)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-sigs:
				_ = reaper.Reap()
			case <-done:
				return
			}
		}
	}()
	t.Cleanup(func() {
		signal.Stop(sigs)
		close(done)
	})
}

func TestRunReaped(t *testing.T) {
	reapLikeTheShim(t)
	for _, tc := range []struct {
		name       string
		script     string
		timeout    time.Duration
		wantOut    string
		wantStatus int
	}{
		{"output and status", "echo out; echo err >&2; exit 3", time.Minute, "out\nerr\n", 3},
		{"killed at the caller's deadline", "echo started; exec sleep 60", 300 * time.Millisecond, "started\n", 128 + 9},
		// A child left holding the pipe: the output is what was written
		// before the command exited, not what the child writes later.
		{"a child left holding the output", "echo parent; (sleep 1; echo late) & exit 0", time.Minute, "parent\n", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), tc.timeout)
			defer cancel()
			cmd := exec.CommandContext(ctx, "sh", "-c", tc.script)
			cmd.WaitDelay = 100 * time.Millisecond
			out, status, err := RunReaped(cmd)
			if err != nil {
				t.Fatalf("runReaped: %v", err)
			}
			if string(out) != tc.wantOut || status != tc.wantStatus {
				t.Errorf("got %q, status %d; want %q, status %d", out, status, tc.wantOut, tc.wantStatus)
			}
		})
	}
}

// Under the shim's SIGCHLD loop a monitor's probe gets its output every
// time, and a failed one its status.
func TestRunMonitorProbe(t *testing.T) {
	reapLikeTheShim(t)
	for i := 0; i < 20; i++ {
		out, err := RunMonitorProbe(exec.Command("sh", "-c", "echo solo5-hvt v0.11.0"))
		if err != nil || strings.TrimSpace(string(out)) != "solo5-hvt v0.11.0" {
			t.Fatalf("run %d: %q, %v", i, out, err)
		}
	}
	if _, err := RunMonitorProbe(exec.Command("sh", "-c", "exit 4")); err == nil || !strings.Contains(err.Error(), "status 4") {
		t.Fatalf("a failed probe: %v, want its status", err)
	}
}
