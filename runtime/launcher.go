package runtime

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/urunc-dev/containerd-shim-urunc-v2/rootfs"
)

// LauncherArg is the hidden first argument that turns the shim binary into
// the launcher: the process that becomes the container's monitor.
const LauncherArg = "__urunc_launch"

// File descriptors the launcher inherits.
const (
	launcherControlFD = 3 // read: launch spec, then one byte meaning "start"
	launcherStatusFD  = 4 // write: "ready" or an error; closed by a successful exec
	// LauncherControlSocketFD is the monitor's control socket (QMP), if any.
	LauncherControlSocketFD = 5
	// launcherFirstDiskFD and up are disks the launcher opens for a
	// monitor that runs as a user other than root.
	launcherFirstDiskFD = 6
)

// Messages on the status pipe.
const (
	statusReady       = "ready"
	statusErrorPrefix = "error: "
)

// launchSpec is everything the launcher needs, sent over the control pipe.
type launchSpec struct {
	RootDir string         `json:"rootDir"` // host dir to build the confined root on
	Binds   []rootfs.Bind  `json:"binds"`
	Files   []launchedFile `json:"files,omitempty"`
	Argv    []string       `json:"argv"`
	Env     []string       `json:"env"`
	Network *netPlan       `json:"network,omitempty"`
	// Rootfs is the container rootfs on the host; Volumes are bound into
	// it, in the launcher's mount namespace only, for a shared root.
	Rootfs  string        `json:"rootfs,omitempty"`
	Volumes []rootfs.Bind `json:"volumes,omitempty"`
	// Helper runs beside the monitor (virtiofsd).
	Helper *rootfs.Helper `json:"helper,omitempty"`
	// Proc mounts a pids-only proc in the confined root, for a monitor
	// that reaches its own descriptors through /proc/self/fd (qemu's 9p
	// server).
	Proc bool `json:"proc,omitempty"`
	// MonitorFDs are inherited descriptors for the monitor alone (its
	// control socket, its disks), hidden from the helper.
	MonitorFDs []int `json:"monitorFDs,omitempty"`
	// Confine is what the monitor and its helper get of the container's
	// confinement.
	Confine confinement `json:"confine"`
}

// launchedFile is a small file written into the confined root (firecracker's
// config).
type launchedFile struct {
	Path string `json:"path"`
	Data []byte `json:"data"`
}

// writeLaunchSpec sends spec length-prefixed, so the launcher can read it
// without waiting for EOF: the same pipe later carries the start byte.
func writeLaunchSpec(w io.Writer, spec launchSpec) error {
	data, err := json.Marshal(spec)
	if err != nil {
		return err
	}
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(data)))
	if _, err := w.Write(n[:]); err != nil {
		return err
	}
	_, err = w.Write(data)
	return err
}

func readLaunchSpec(r io.Reader) (launchSpec, error) {
	var spec launchSpec
	var n [4]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return spec, fmt.Errorf("read launch spec: %w", err)
	}
	data := make([]byte, binary.BigEndian.Uint32(n[:]))
	if _, err := io.ReadFull(r, data); err != nil {
		return spec, fmt.Errorf("read launch spec: %w", err)
	}
	return spec, json.Unmarshal(data, &spec)
}

// LauncherMain is the launcher: it runs as PID 1 of the container's new pid
// namespace, in a new mount namespace, already inside the container's other
// namespaces (joined by the shim before the fork). It builds the monitor's
// confined root, reports ready, waits for Start and then execs the monitor.
// It never returns.
func LauncherMain() {
	// no_new_privs, the capability sets and the bounding set belong to a
	// thread, and execve keeps those of the thread that calls it: every
	// step from here to the exec runs on this one thread.
	goruntime.LockOSThread()
	// The pipes to the shim must reach no other process: a helper that
	// inherited the status pipe would keep Start waiting for its EOF
	// forever, and the monitor's exec is what closes it.
	unix.CloseOnExec(launcherStatusFD)
	unix.CloseOnExec(launcherControlFD)
	control := os.NewFile(launcherControlFD, "control")
	status := os.NewFile(launcherStatusFD, "status")
	fail := func(err error) {
		fmt.Fprintf(status, "%s%s\n", statusErrorPrefix, strings.ReplaceAll(err.Error(), "\n", " "))
		os.Exit(127)
	}
	spec, err := readLaunchSpec(control)
	if err != nil {
		fail(err)
	}
	if err := prepareConfinedRoot(spec); err != nil {
		fail(err)
	}
	if _, err := fmt.Fprintln(status, statusReady); err != nil {
		os.Exit(127)
	}
	var b [1]byte
	if n, _ := control.Read(b[:]); n == 0 {
		// The shim closed the pipe without starting us: the container
		// was deleted before Start.
		os.Exit(0)
	}
	// A successful exec closes the status pipe (close-on-exec since the
	// start), which is how Start learns the monitor runs.
	err = unix.Exec(spec.Argv[0], spec.Argv, spec.Env)
	fail(fmt.Errorf("exec monitor %s: %w", spec.Argv[0], err))
}

func prepareConfinedRoot(spec launchSpec) error {
	if len(spec.Argv) == 0 {
		return fmt.Errorf("launch spec has no monitor command")
	}
	// The launcher is inside the container's network namespace already,
	// so the tap is created right where the guest's frames flow.
	if spec.Network != nil {
		if err := setupTap(spec.Network); err != nil {
			return err
		}
	}
	if err := rootfs.MakeMountsPrivate(); err != nil {
		return err
	}
	if err := spec.Confine.apply(); err != nil {
		return err
	}
	if err := rootfs.BindVolumes(spec.Rootfs, spec.Volumes); err != nil {
		return err
	}
	if err := rootfs.BuildConfinedRoot(spec.RootDir, spec.Binds); err != nil {
		return err
	}
	if spec.Proc {
		if err := rootfs.MountPidsProc(spec.RootDir); err != nil {
			return err
		}
	}
	for _, f := range spec.Files {
		if err := writeConfinedFile(spec.RootDir, f); err != nil {
			return err
		}
	}
	// The helper starts before the pivot: it needs the rootfs, which the
	// monitor must not see.
	if spec.Helper != nil {
		if err := startHelper(spec); err != nil {
			return err
		}
	}
	if err := rootfs.PivotInto(spec.RootDir); err != nil {
		return err
	}
	return spec.Confine.confineLast()
}

// startHelper starts the helper without the descriptors meant for the
// monitor alone, then gives its socket to the monitor's user.
func startHelper(spec launchSpec) error {
	for _, fd := range spec.MonitorFDs {
		unix.CloseOnExec(fd)
	}
	err := rootfs.StartHelper(spec.RootDir, *spec.Helper)
	for _, fd := range spec.MonitorFDs {
		if _, ferr := unix.FcntlInt(uintptr(fd), unix.F_SETFD, 0); ferr != nil && err == nil {
			err = fmt.Errorf("keep fd %d for the monitor: %w", fd, ferr)
		}
	}
	if err != nil || spec.Confine.User == nil {
		return err
	}
	sock := filepath.Join(spec.RootDir, spec.Helper.Socket)
	if err := os.Chown(sock, int(spec.Confine.User.UID), int(spec.Confine.User.GID)); err != nil {
		return fmt.Errorf("give %s's socket to user %d: %w", spec.Helper.Argv[0], spec.Confine.User.UID, err)
	}
	return nil
}

func writeConfinedFile(root string, f launchedFile) error {
	path := root + "/" + strings.TrimPrefix(f.Path, "/")
	if err := os.MkdirAll(path[:strings.LastIndexByte(path, '/')], 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, f.Data, 0o644)
}

// launcherConn is the shim's end of the protocol: it sends the launch
// spec, waits for ready, and releases the launcher on Start.
type launcherConn struct {
	control *os.File // write: the launch spec, then the start byte
	status  *os.File // read: the launcher's reports
	statusR *bufio.Reader
}

// newLauncherConn makes the two pipes; childFiles are the launcher's ends,
// in fd order from launcherControlFD, to be closed by the caller once the
// launcher has them.
func newLauncherConn() (conn *launcherConn, childFiles []*os.File, err error) {
	controlR, controlW, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	statusR, statusW, err := os.Pipe()
	if err != nil {
		controlR.Close()
		controlW.Close()
		return nil, nil, err
	}
	conn = &launcherConn{control: controlW, status: statusR, statusR: bufio.NewReader(statusR)}
	return conn, []*os.File{controlR, statusW}, nil
}

// prepare hands the launcher its spec and waits until it reports ready.
func (l *launcherConn) prepare(ctx context.Context, spec launchSpec) error {
	if err := writeLaunchSpec(l.control, spec); err != nil {
		return fmt.Errorf("send launch spec: %w", err)
	}
	ready := make(chan error, 1)
	go func() { ready <- readStatusLine(l.statusR) }()
	select {
	case err := <-ready:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// start lets the launcher exec the monitor and returns once it runs, or
// with the launcher's reason if the exec failed: a successful exec closes
// the status pipe (close-on-exec) without a word.
func (l *launcherConn) start() error {
	if _, err := l.control.Write([]byte{1}); err != nil {
		return fmt.Errorf("launcher is gone: %w", err)
	}
	l.control.Close()
	msg, _ := io.ReadAll(l.statusR)
	l.status.Close()
	if len(msg) > 0 {
		return readStatusLine(bufio.NewReader(bytes.NewReader(msg)))
	}
	return nil
}

// close drops the shim's ends; a launcher waiting for Start then exits.
func (l *launcherConn) close() {
	l.control.Close()
	l.status.Close()
}

// readStatusLine reads the launcher's first report: nil when ready.
func readStatusLine(r *bufio.Reader) error {
	line, err := r.ReadString('\n')
	line = strings.TrimSpace(line)
	switch {
	case line == statusReady:
		return nil
	case strings.HasPrefix(line, statusErrorPrefix):
		return fmt.Errorf("%s", strings.TrimPrefix(line, statusErrorPrefix))
	case err != nil:
		return fmt.Errorf("launcher exited before it was ready: %w", err)
	default:
		return fmt.Errorf("launcher said %q", line)
	}
}
