package lifecycle

import (
	"os"
	"os/signal"

	"github.com/containerd/containerd/v2/pkg/sys/reaper"
	runc "github.com/containerd/go-runc"
	"golang.org/x/sys/unix"

	"github.com/urunc-dev/containerd-shim-urunc-v2/rootfs/hostmount"
)

// ReapChildren runs the SIGCHLD→reaper loop for one-shot commands
// (the shim's delete, cleanup-orphans); the daemon runs it in its own
// signal loop. Without it a child started through the reaper
// (runc for a plain container, an OCI hook) is never reported and its
// caller waits forever. It must run before any child starts.
func ReapChildren() {
	UseReaperForCommands()
	ch := make(chan os.Signal, 32)
	signal.Notify(ch, unix.SIGCHLD)
	go func() {
		for range ch {
			_ = reaper.Reap()
		}
	}()
}

// ReapedExit waits on ec, a reaper subscription made before pid started,
// for pid's exit, then ends the subscription.
func ReapedExit(ec chan runc.Exit, pid int) ExitStatus {
	defer reaper.Default.Unsubscribe(ec)
	for e := range ec {
		if e.Pid == pid {
			return ExitStatus{Pid: pid, Status: e.Status, At: e.Timestamp}
		}
	}
	return ExitStatus{Pid: pid}
}

// UseReaperForCommands makes the commands the hostmount package runs (e2fsck
// before a mount back) wait through the reaper, which a process that
// reaps every child of its own must use.
func UseReaperForCommands() { hostmount.RunCommand = RunReaped }
