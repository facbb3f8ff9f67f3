package shim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/console"
	"github.com/containerd/fifo"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"

	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/guestconsole"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/lifecycle"
)

// stdioConfig is the container's stdio as containerd asks for it.
type stdioConfig struct {
	Stdin, Stdout, Stderr string
	Terminal              bool
	// ConsoleFromRuntime: the pty is made by the runtime (runc, for a
	// terminal exec) and attached with attachConsole once it exists.
	ConsoleFromRuntime bool
}

// stdio owns the container's side of its stdio: FIFOs, log files, a logger
// binary or a pty, and the copies between them and the monitor.
type stdio struct {
	cfg     stdioConfig
	monitor lifecycle.Stdio // the monitor's ends, closed once it holds them

	// stdinFifo is the shim's read end of the stdin FIFO, when the shim
	// copies it into the monitor's stdin.
	stdinFifo *os.File
	console   console.Console

	copies  sync.WaitGroup // copies of the monitor's output
	closers []io.Closer
	// console gets a copy of stdout, when the shim copies it (FIFOs):
	// what a guest says there about its exit.
	guestConsole *guestconsole.Tap
	// loggerPidfd is a pidfd of the binary:// logger, -1 without one.
	loggerPidfd int
	once        sync.Once
}

// openStdio opens everything the request names. On error nothing stays
// open.
func openStdio(ctx context.Context, id, namespace string, cfg stdioConfig) (_ *stdio, retErr error) {
	s := &stdio{cfg: cfg, loggerPidfd: -1}
	defer func() {
		if retErr != nil {
			s.closeMonitorEnds()
			s.Close()
		}
	}()
	switch {
	case cfg.Terminal && cfg.ConsoleFromRuntime:
		// Nothing to open before the runtime hands over its pty.
	case cfg.Terminal:
		if err := s.openTerminal(ctx); err != nil {
			return nil, err
		}
	default:
		if err := s.openStdin(); err != nil {
			return nil, err
		}
		if err := s.openOutput(ctx, id, namespace); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func (s *stdio) track(c io.Closer) { s.closers = append(s.closers, c) }

// openStdin opens the stdin FIFO and copies it into a pipe the monitor
// reads.
func (s *stdio) openStdin() error {
	in, err := s.openStdinFifo()
	if in == nil || err != nil {
		return err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	s.monitor.Stdin, s.stdinFifo = r, in
	// Close closes w too, should the monitor never read what is left.
	s.track(w)
	go func() {
		if err := copyWhenReady(w, in); errors.Is(err, os.ErrDeadlineExceeded) {
			// CloseStdin: what the FIFO holds was written before it.
			_ = drainReady(w, in)
		}
		// EOF on stdin, the writer's or CloseIO's, is the guest's EOF too.
		w.Close()
	}()
	return nil
}

// drainReady copies into dst what src, a FIFO opened non-blocking, holds
// now, without waiting for more; it clears src's read deadline first.
func drainReady(dst io.Writer, src *os.File) error {
	if err := src.SetReadDeadline(time.Time{}); err != nil {
		return err
	}
	rc, err := src.SyscallConn()
	if err != nil {
		return err
	}
	buf := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(buf)
	for {
		var n int
		var rerr error
		// Returning true reads once, without waiting for readiness.
		if err := rc.Read(func(fd uintptr) bool { n, rerr = unix.Read(int(fd), *buf); return true }); err != nil {
			return err
		}
		if n > 0 {
			if _, err := dst.Write((*buf)[:n]); err != nil {
				return err
			}
			continue
		}
		switch {
		case errors.Is(rerr, unix.EINTR):
		case errors.Is(rerr, unix.EAGAIN), rerr == nil: // nothing more now, or EOF
			return nil
		default:
			return rerr
		}
	}
}

// openStdinFifo opens the stdin FIFO, if the request has one, for reading
// without blocking. containerd's fifo package would instead park an OS
// thread in a blocking open(2) until a writer comes, which for a detached
// container (ctr run -d) is never: a thread for the container's whole
// life. copyWhenReady tells "no writer yet" from EOF.
func (s *stdio) openStdinFifo() (*os.File, error) {
	if s.cfg.Stdin == "" {
		return nil, nil
	}
	in, err := os.OpenFile(fifoPath(s.cfg.Stdin), os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("open stdin %s: %w", s.cfg.Stdin, err)
	}
	s.track(in)
	return in, nil
}

// copyBuffers lend a buffer to a copy only while data moves: an idle
// container's copies hold none, where io.Copy keeps 32 KiB per stream for
// the container's life.
var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// copyWhenReady copies src, a pipe or FIFO in Go's poller, into dst until
// EOF or an error. It waits for src to be readable before it takes a
// buffer. For a FIFO opened before any writer, a read would say EOF at
// once; poll(2) instead reports it readable only once a writer has written,
// or has come and gone (POLLHUP), so that EOF is the writer's.
func copyWhenReady(dst io.Writer, src *os.File) error {
	rc, err := src.SyscallConn()
	if err != nil {
		return err
	}
	readable := func(fd uintptr) bool {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 0)
		return err == nil && n > 0
	}
	for {
		if err := rc.Read(readable); err != nil {
			return err
		}
		buf := copyBuffers.Get().(*[]byte)
		n, rerr := src.Read(*buf)
		var werr error
		if n > 0 {
			_, werr = dst.Write((*buf)[:n])
		}
		copyBuffers.Put(buf)
		switch {
		case werr != nil:
			return werr
		case errors.Is(rerr, io.EOF):
			return nil
		case rerr != nil:
			return rerr
		}
	}
}

// openOutput wires stdout and stderr according to their URI scheme: a
// FIFO (a path or fifo://PATH), file://PATH or binary://PATH?args. Either
// stream may be absent: the monitor then writes it to /dev/null.
func (s *stdio) openOutput(ctx context.Context, id, namespace string) error {
	uri := s.cfg.Stdout
	if uri == "" {
		uri = s.cfg.Stderr
	}
	if uri == "" {
		return nil
	}
	u, err := url.Parse(uri)
	if err != nil {
		return fmt.Errorf("stdio URI %q: %w", uri, err)
	}
	switch u.Scheme {
	case "", "fifo":
		return s.openFifoOutputs(ctx)
	case "file":
		// Loggers take both streams, as containerd's runc shim does.
		return s.openFile(u.Path)
	case "binary":
		return s.startLogger(ctx, u, id, namespace)
	default:
		return fmt.Errorf("stdio URI %q: unsupported scheme %q", uri, u.Scheme)
	}
}

// openFifoOutputs opens the stdout and stderr FIFOs that are set, one copy
// when both name the same FIFO.
func (s *stdio) openFifoOutputs(ctx context.Context) error {
	var err error
	if s.cfg.Stdout != "" {
		s.guestConsole = guestconsole.NewTap()
		if s.monitor.Stdout, err = s.openFifoOutput(ctx, fifoPath(s.cfg.Stdout), s.guestConsole); err != nil {
			return err
		}
	}
	switch {
	case s.cfg.Stderr == "":
	case s.cfg.Stderr == s.cfg.Stdout:
		s.monitor.Stderr = s.monitor.Stdout
	default:
		if s.monitor.Stderr, err = s.openFifoOutput(ctx, fifoPath(s.cfg.Stderr), nil); err != nil {
			return err
		}
	}
	return nil
}

// fifoPath is the FIFO a stdio URI names: the path of fifo://PATH, or the
// URI itself, a plain path.
func fifoPath(uri string) string {
	if u, err := url.Parse(uri); err == nil && u.Scheme == "fifo" {
		return u.Path
	}
	return uri
}

// openFifoOutput returns the write end of a pipe whose output is copied to
// the FIFO at path. The shim holds the FIFO open for reading too, so that a
// reader that goes away (containerd restarting) never makes the monitor
// die of SIGPIPE; output just waits in the pipe.
func (s *stdio) openFifoOutput(ctx context.Context, path string, tap *guestconsole.Tap) (*os.File, error) {
	r, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	if err := s.copyToFifo(ctx, path, r, tap); err != nil {
		r.Close()
		pw.Close()
		return nil, err
	}
	return pw, nil
}

// copyToFifo copies src into the FIFO at path until src ends, then closes
// the FIFO: containerd's client waits for EOF on it before it deletes, so
// it must close when the monitor is gone, not at Delete. While the copy
// runs the shim also holds the FIFO open for reading, so that a reader
// that goes away never breaks the pipe.
func (s *stdio) copyToFifo(ctx context.Context, path string, src io.ReadCloser, tap *guestconsole.Tap) error {
	w, err := fifo.OpenFifo(ctx, path, syscall.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("open FIFO %s: %w", path, err)
	}
	s.track(w)
	keep, err := fifo.OpenFifo(ctx, path, syscall.O_RDONLY, 0)
	if err != nil {
		return fmt.Errorf("open FIFO %s for reading: %w", path, err)
	}
	s.track(keep)
	s.copies.Add(1)
	go func() {
		defer s.copies.Done()
		var dst io.Writer = w
		if tap != nil {
			// The tap never fails a write, so the FIFO's pace is kept.
			dst = io.MultiWriter(tap, w)
			defer tap.Close()
		}
		if f, ok := src.(*os.File); ok {
			_ = copyWhenReady(dst, f)
		} else {
			// A pty master, which reads EIO at its end.
			_, _ = io.Copy(dst, src)
		}
		src.Close()
		w.Close()
		keep.Close()
	}()
	return nil
}

// openFile appends the monitor's stdout and stderr to a log file, through
// the shim: the shim reads the guest's console on every path, so the
// guest's exit status does not depend on where its logs go.
func (s *stdio) openFile(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("open log file %s: %w", path, err)
	}
	pw, err := s.copyThroughTap(f)
	if err != nil {
		return err
	}
	s.monitor.Stdout, s.monitor.Stderr = pw, pw
	return nil
}

// copyThroughTap returns the write end of a pipe whose output the shim
// copies into dst, read by a new guestConsole on the way, and closes dst
// when the output ends. A log that cannot take the output (a full disk,
// a logger gone) loses it, but the copy still drains the pipe, so the
// monitor never blocks on its console.
func (s *stdio) copyThroughTap(dst *os.File) (*os.File, error) {
	r, pw, err := os.Pipe()
	if err != nil {
		dst.Close()
		return nil, err
	}
	s.guestConsole = guestconsole.NewTap()
	tap := s.guestConsole
	s.copies.Add(1)
	go func() {
		defer s.copies.Done()
		_ = copyWhenReady(io.MultiWriter(tap, &lossyWriter{w: dst}), r)
		tap.Close()
		r.Close()
		dst.Close()
	}()
	return pw, nil
}

// lossyWriter passes writes to w until one fails, then drops the rest,
// always reporting success.
type lossyWriter struct {
	w      io.Writer
	failed bool
}

func (l *lossyWriter) Write(p []byte) (int, error) {
	if !l.failed {
		if _, err := l.w.Write(p); err != nil {
			l.failed = true
			log.L.WithError(err).Warn("container log lost its output; the rest is dropped")
		}
	}
	return len(p), nil
}

// startLogger runs a logging binary as containerd defines it: the
// container's stdout on fd 3, stderr on fd 4, and fd 5 closed once the
// logger is ready; CONTAINER_ID and CONTAINER_NAMESPACE in its environment.
func (s *stdio) startLogger(ctx context.Context, u *url.URL, id, namespace string) error {
	var args []string
	for k, vs := range u.Query() {
		args = append(args, k)
		if len(vs) > 0 && vs[0] != "" {
			args = append(args, vs[0])
		}
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		return err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return err
	}
	readyR, readyW, err := os.Pipe()
	if err != nil {
		for _, f := range []*os.File{outR, outW, errR, errW} {
			f.Close()
		}
		return err
	}
	// stdout, the guest's console, passes through the shim, which reads
	// the guest's exit status from it.
	consoleW, err := s.copyThroughTap(outW)
	if err != nil {
		for _, f := range []*os.File{outR, errR, errW, readyR, readyW} {
			f.Close()
		}
		return err
	}
	s.monitor.Stdout, s.monitor.Stderr = consoleW, errW
	cmd := exec.Command(u.Path, args...)
	cmd.Env = append(os.Environ(), "CONTAINER_ID="+id, "CONTAINER_NAMESPACE="+namespace)
	cmd.ExtraFiles = []*os.File{outR, errR, readyW}
	// Started without subscribing to the reaper: a subscription that is
	// read only at Close fills after 32 exits of the shim's other
	// children, and then every exit waits a second. The reaper's loop
	// still reaps the logger; Close waits on a pidfd, which reports the
	// exit without taking the status.
	pidfd := -1
	cmd.SysProcAttr = &syscall.SysProcAttr{PidFD: &pidfd}
	err = cmd.Start()
	outR.Close()
	errR.Close()
	readyW.Close()
	if err != nil {
		readyR.Close()
		return fmt.Errorf("start logger %s: %w", u.Path, err)
	}
	s.loggerPidfd = pidfd
	defer readyR.Close()
	ready := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, readyR)
		ready <- err
	}()
	select {
	case err := <-ready:
		if err != nil {
			return fmt.Errorf("logger %s: %w", u.Path, err)
		}
	case <-ctx.Done():
		return fmt.Errorf("logger %s did not become ready: %w", u.Path, ctx.Err())
	}
	return nil
}

// openTerminal gives the monitor a pty; the shim copies between the pty
// master and the stdin and stdout FIFOs.
func (s *stdio) openTerminal(ctx context.Context) error {
	master, slavePath, err := console.NewPty()
	if err != nil {
		return fmt.Errorf("create pty: %w", err)
	}
	slave, err := os.OpenFile(slavePath, os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		master.Close()
		return fmt.Errorf("open pty %s: %w", slavePath, err)
	}
	s.monitor = lifecycle.Stdio{Stdin: slave, Stdout: slave, Stderr: slave}
	s.guestConsole = guestconsole.NewTap()
	return s.attachConsole(ctx, master)
}

// attachConsole copies between a pty master and the stdin and stdout
// FIFOs: the shim's own (openTerminal) or runc's for a terminal exec,
// which arrives once the exec runs. The master reads EIO once the last
// holder of the slave is gone, which ends the copy; the master itself is
// closed with the rest at Close, not by the copy: ResizePty still uses it.
func (s *stdio) attachConsole(ctx context.Context, master console.Console) error {
	s.console = master
	s.track(master)
	in, err := s.openStdinFifo()
	if err != nil {
		return err
	}
	if in != nil {
		go func() { _ = copyWhenReady(master, in) }()
	}
	if s.cfg.Stdout != "" {
		return s.copyToFifo(ctx, fifoPath(s.cfg.Stdout), io.NopCloser(master), s.guestConsole)
	}
	return nil
}

// closeMonitorEnds closes the shim's copies of the monitor's stdio once the
// launcher holds its own; otherwise the copies would never see EOF.
func (s *stdio) closeMonitorEnds() {
	seen := map[*os.File]bool{}
	for _, f := range []*os.File{s.monitor.Stdin, s.monitor.Stdout, s.monitor.Stderr} {
		if f != nil && !seen[f] {
			seen[f] = true
			f.Close()
		}
	}
}

// CloseStdin closes the guest's stdin (CloseIO) once the copy has passed
// on what the FIFO already holds: the read deadline wakes the copy, which
// then drains the FIFO and closes the monitor's stdin.
func (s *stdio) CloseStdin() {
	if s.stdinFifo != nil {
		_ = s.stdinFifo.SetReadDeadline(time.Now())
	}
}

// Resize resizes the pty.
func (s *stdio) Resize(width, height uint32) error {
	if s.console == nil {
		return fmt.Errorf("container has no terminal")
	}
	return s.console.Resize(console.WinSize{Width: uint16(width), Height: uint16(height)})
}

// WaitOutput waits, at most timeout, for the monitor's output to be copied
// out; it returns once the monitor (and every holder of its stdout) is gone.
func (s *stdio) WaitOutput(timeout time.Duration) {
	done := make(chan struct{})
	go func() {
		s.copies.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(timeout):
	}
}

// Close drains what is left and closes everything; it is idempotent.
func (s *stdio) Close() {
	s.once.Do(func() {
		if s.console != nil {
			// The master read ends with EIO when the slave closes.
			s.WaitOutput(time.Second)
		} else {
			s.WaitOutput(2 * time.Second)
		}
		s.CloseStdin()
		var errs []error
		for _, c := range s.closers {
			if err := c.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
				errs = append(errs, err)
			}
		}
		if s.loggerPidfd >= 0 {
			// The logger flushes and exits once its pipes close.
			fds := []unix.PollFd{{Fd: int32(s.loggerPidfd), Events: unix.POLLIN}}
			if n, err := unix.Poll(fds, 5000); err != nil || n == 0 {
				errs = append(errs, fmt.Errorf("logger did not exit within 5s: %v", err))
			}
			unix.Close(s.loggerPidfd)
		}
		if err := errors.Join(errs...); err != nil {
			log.L.WithError(err).Debug("close stdio")
		}
	})
}
