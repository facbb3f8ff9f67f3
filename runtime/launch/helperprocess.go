package launch

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/urunc-dev/containerd-shim-urunc-v2/internal/confined"
	"golang.org/x/sys/unix"
)

// helperStartTimeout bounds the wait for a helper's socket.
const helperStartTimeout = 10 * time.Second

// StartHelperProcess starts h from the launcher, before it pivots into root (the
// confined root): the helper sees the host's view of the rootfs, the
// monitor later sees only the socket under root. It returns once the
// helper listens, or with the helper's own words if it exits first. Its
// output goes to a log in the confined root's tmpfs, not to the
// container's console; that log is bounded by the tmpfs size.
func StartHelperProcess(root string, h confined.HelperProcess) error {
	sock := filepath.Join(root, h.Socket)
	if err := os.MkdirAll(filepath.Dir(sock), 0o755); err != nil {
		return err
	}
	logPath := filepath.Join(filepath.Dir(sock), h.Name+".log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	devNull, err := os.Open(os.DevNull)
	if err != nil {
		return err
	}
	defer devNull.Close()
	// The socket is named relative to its directory, the helper's working
	// directory: a bundle path can exceed the 108 bytes of a unix socket
	// address.
	argv := append([]string{h.Argv[0], h.SocketFlag + filepath.Base(sock)}, h.Argv[1:]...)
	proc, err := os.StartProcess(argv[0], argv, &os.ProcAttr{
		Dir:   filepath.Dir(sock),
		Env:   []string{"PATH=/usr/bin:/bin"},
		Files: []*os.File{devNull, logf, logf},
		// A mount namespace of its own, copied before the launcher
		// pivots: pivot_root moves the root of every process of a
		// namespace that sits on the old one, and virtiofsd only
		// sandboxes itself into the rootfs after the monitor connects,
		// when the launcher's namespace no longer has the rootfs.
		Sys: &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNS},
	})
	if err != nil {
		return fmt.Errorf("start %s: %w", h.Name, err)
	}
	deadline := time.Now().Add(helperStartTimeout)
	for {
		if st, err := os.Stat(sock); err == nil && st.Mode()&os.ModeSocket != 0 {
			return nil
		}
		var ws unix.WaitStatus
		if pid, _ := unix.Wait4(proc.Pid, &ws, unix.WNOHANG, nil); pid == proc.Pid {
			out, _ := os.ReadFile(logPath)
			return fmt.Errorf("%s exited (%s) before it listened: %s", h.Name, describeWait(ws), strings.TrimSpace(lastLines(string(out), 3)))
		}
		if time.Now().After(deadline) {
			_ = proc.Kill()
			return fmt.Errorf("%s did not listen on %s within %s", h.Name, h.Socket, helperStartTimeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func describeWait(ws unix.WaitStatus) string {
	if ws.Signaled() {
		return "signal " + ws.Signal().String()
	}
	return fmt.Sprintf("status %d", ws.ExitStatus())
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " / ")
}
