package unikernel

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/containerd/errdefs"

	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/launch"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/lifecycle"
)

// LauncherArg is the hidden first argument that turns the shim binary into
// the launcher: the process that becomes the container's monitor.
const LauncherArg = "__urunc_launch"

// launcherConn is the shim's end of the protocol: it sends the launch
// spec, waits for ready, and releases the launcher on Start.
type launcherConn struct {
	control *os.File // write: the launch spec, then the start byte
	status  *os.File // read: the launcher's reports
	statusR *bufio.Reader
}

// newLauncherConn makes the two pipes; childFiles are the launcher's ends,
// in fd order from launch.ControlFD, to be closed by the caller once the
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
func (l *launcherConn) prepare(ctx context.Context, spec launch.Spec) error {
	if err := launch.WriteSpec(l.control, spec); err != nil {
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
	case line == launch.StatusReady:
		return nil
	case strings.HasPrefix(line, launch.StatusErrorPrefix):
		msg := strings.TrimPrefix(line, launch.StatusErrorPrefix)
		if strings.HasSuffix(msg, launch.ErrLinkTaken.Error()) {
			// Lost the race for the interface to another guest: the
			// same refusal as Discover's, with the same code.
			return fmt.Errorf("%w: %s", errdefs.ErrFailedPrecondition, msg)
		}
		return fmt.Errorf("%s", msg)
	case err != nil:
		return fmt.Errorf("launcher exited before it was ready: %w", err)
	default:
		return fmt.Errorf("launcher said %q", line)
	}
}

// LauncherBinary is the launcher's own binary, looked for beside the
// shim's: it links only package launch, so its start-up is about half the
// shim binary's, time every container's start waits for.
const LauncherBinary = "urunc-launcher"

// LauncherBeside returns the path of urunc-launcher beside the shim binary
// at shim, and whether an executable file is there: the shim runs it, and
// urunc check looks for it, with this one test.
func LauncherBeside(shim string) (string, bool) {
	path := filepath.Join(filepath.Dir(shim), LauncherBinary)
	st, err := os.Stat(path)
	return path, err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0
}

// launcherBinary is what runs as the launcher: the one asked for, else
// urunc-launcher beside this binary, else this binary itself (a shim
// installed alone still works, with a slower start).
func launcherBinary(asked string) (string, error) {
	if asked != "" {
		return asked, nil
	}
	self, err := os.Executable()
	if err != nil {
		return "", err
	}
	if beside, ok := LauncherBeside(self); ok {
		return beside, nil
	}
	return self, nil
}

// startLauncher forks the launcher into the container's namespaces and
// cgroup; it then waits for its launch spec.
func (c *Container) startLauncher(ctx context.Context, opts lifecycle.CreateOptions, nsp nsPlan, extra []*os.File) error {
	launcher, err := launcherBinary(opts.Launcher)
	if err != nil {
		return err
	}
	conn, childFiles, err := newLauncherConn()
	if err != nil {
		return err
	}
	c.launcher = conn
	cmd := exec.Command(launcher, LauncherArg)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = opts.Stdio.Stdin, opts.Stdio.Stdout, opts.Stdio.Stderr
	cmd.ExtraFiles = append(childFiles, extra...)
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{}
	if isTerminal(opts.Stdio.Stdin) {
		// The monitor's console is the pty: it needs a session of its
		// own with the pty as controlling terminal.
		cmd.SysProcAttr.Setsid = true
		cmd.SysProcAttr.Setctty = true
		cmd.SysProcAttr.Ctty = 0
	}
	ec, err := startInNamespaces(cmd, nsp)
	for _, f := range childFiles {
		f.Close()
	}
	if err != nil {
		return fmt.Errorf("start launcher: %w", err)
	}
	c.process = cmd.Process
	pid := cmd.Process.Pid
	start, _ := lifecycle.ProcessStartTime(pid)
	// Persist before anything else needs undoing, so a shim that dies
	// from here on leaves a state the delete command reads.
	if err := c.Record(func(st *lifecycle.PersistedState) { st.Pid, st.PidStartTime = pid, start }); err != nil {
		go c.WatchExit(ec, pid)
		return err
	}
	go c.WatchExit(ec, pid)
	if c.cgroup != nil {
		if err := c.cgroup.AddProc(pid); err != nil {
			return fmt.Errorf("add monitor to cgroup %s: %w", c.Persisted().Cgroup, err)
		}
	}
	return nil
}
