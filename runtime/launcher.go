package runtime

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/launch"
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
		return fmt.Errorf("%s", strings.TrimPrefix(line, launch.StatusErrorPrefix))
	case err != nil:
		return fmt.Errorf("launcher exited before it was ready: %w", err)
	default:
		return fmt.Errorf("launcher said %q", line)
	}
}
