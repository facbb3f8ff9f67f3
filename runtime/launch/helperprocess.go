package launch

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/urunc-dev/containerd-shim-urunc-v2/internal/confined"
	"golang.org/x/sys/unix"
)

// helperStartTimeout bounds the wait for a helper's socket.
const helperStartTimeout = 10 * time.Second

// helperRunDir is where a helper running as the spec's user keeps its
// socket and pid file and finds the directory it serves: a tmpfs of the
// user's mounted, in the launcher's mount namespace only, over the C
// virtiofsd's state directory (/run/virtiofsd, where it locks a pid file
// named after its socket). The user can reach it where it cannot pass the
// bundle's directories, and each container's helper gets its own.
const helperRunDir = "/run/virtiofsd"

// StartHelperProcess starts h from the launcher, before it pivots into root (the
// confined root): the helper sees the host's view of the rootfs, the
// monitor later sees only the socket under root. It returns once the
// helper listens, or with the helper's own words if it exits first. Its
// output goes to a log in the confined root's tmpfs, not to the
// container's console; that log is bounded by the tmpfs size.
//
// With user (the spec's user, not root) the helper runs in a user
// namespace of its own whose only root is that user: it keeps the
// capabilities its sandbox needs, but they hold over that user's files
// alone, and to the host it is the user, with no supplementary group.
func StartHelperProcess(root string, h confined.HelperProcess, user *specs.User) error {
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
	// A mount namespace of its own, copied before the launcher
	// pivots: pivot_root moves the root of every process of a
	// namespace that sits on the old one, and virtiofsd only
	// sandboxes itself into the rootfs after the monitor connects,
	// when the launcher's namespace no longer has the rootfs.
	sys := &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNS}
	listen, share := sock, h.Share
	if user != nil {
		if listen, share, err = helperRunDirFor(h, *user); err != nil {
			return err
		}
		sys.Cloneflags |= syscall.CLONE_NEWUSER
		sys.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(user.UID), Size: 1}}
		sys.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(user.GID), Size: 1}}
		// setgroups to none: the launcher's own groups (root's) must not
		// follow the helper.
		sys.GidMappingsEnableSetgroups = true
		sys.Credential = &syscall.Credential{Uid: 0, Gid: 0, Groups: []uint32{}}
	}
	// The socket is named relative to its directory, the helper's working
	// directory: a bundle path can exceed the 108 bytes of a unix socket
	// address.
	argv := append([]string{h.Argv[0], h.SocketFlag + filepath.Base(listen)}, h.Argv[1:]...)
	if share != "" && len(h.ShareFlag) > 0 {
		last := len(h.ShareFlag) - 1
		argv = append(append(argv, h.ShareFlag[:last]...), h.ShareFlag[last]+share)
	}
	proc, err := os.StartProcess(argv[0], argv, &os.ProcAttr{
		Dir:   filepath.Dir(listen),
		Env:   []string{"PATH=/usr/bin:/bin"},
		Files: []*os.File{devNull, logf, logf},
		Sys:   sys,
	})
	if err != nil {
		return fmt.Errorf("start %s: %w", h.Name, err)
	}
	deadline := time.Now().Add(helperStartTimeout)
	for {
		if st, err := os.Stat(listen); err == nil && st.Mode()&os.ModeSocket != 0 {
			break
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
	if listen == sock {
		return nil
	}
	// The socket reaches the confined root by a bind of its own; the
	// pivot then drops the run directory with the rest of the old root.
	return bindInto(root, confined.Bind{Source: listen, Target: h.Socket}, "")
}

// helperRunDirFor mounts the user's run directory and binds the shared
// directory into it, read-only flags and submounts kept (the launcher
// bound the volumes and made a read-only root read-only before). It
// returns where the helper listens and the directory it serves.
func helperRunDirFor(h confined.HelperProcess, user specs.User) (listen, share string, err error) {
	// The user namespace's maps are written through /proc/PID, PID as
	// this launcher sees it: the host's proc names another process by it,
	// so this namespace's own goes over it (the pivot drops it).
	if err := unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return "", "", fmt.Errorf("mount this pid namespace's proc for %s's user namespace: %w", h.Name, err)
	}
	if err := os.MkdirAll(helperRunDir, 0o700); err != nil {
		return "", "", err
	}
	opts := fmt.Sprintf("mode=0700,uid=%d,gid=%d,size=1m", user.UID, user.GID)
	if err := unix.Mount("tmpfs", helperRunDir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, opts); err != nil {
		return "", "", fmt.Errorf("mount %s's run directory at %s: %w", h.Name, helperRunDir, err)
	}
	listen = filepath.Join(helperRunDir, filepath.Base(h.Socket))
	if h.Share == "" {
		return listen, "", nil
	}
	share = filepath.Join(helperRunDir, "share")
	if err := os.Mkdir(share, 0o755); err != nil {
		return "", "", err
	}
	if err := unix.Mount(h.Share, share, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return "", "", fmt.Errorf("bind %s for %s: %w", h.Share, h.Name, err)
	}
	return listen, share, nil
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
