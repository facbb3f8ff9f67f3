// Package stdio is a container's or an exec's stdio on the shim's side:
// containerd's FIFOs, file:// logs, binary:// loggers or a pty, and the
// copies between them and the monitor, with the guest's console tapped on
// its way out.
package stdio

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/containerd/console"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"

	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/guestconsole"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/lifecycle"
)

// Config is the container's stdio as containerd asks for it.
type Config struct {
	Stdin, Stdout, Stderr string
	Terminal              bool
	// ConsoleFromRuntime: the pty is made by the runtime (runc, for a
	// terminal exec) and attached with AttachConsole once it exists.
	ConsoleFromRuntime bool
}

// Streams owns the container's side of its stdio: FIFOs, log files, a
// logger binary or a pty, and the copies between them and the monitor.
type Streams struct {
	cfg     Config
	monitor lifecycle.Stdio // the monitor's ends, closed once it holds them

	// stdinFifo is the shim's read end of the stdin FIFO, when the shim
	// copies it into the monitor's stdin.
	stdinFifo *os.File
	console   console.Console

	copies  sync.WaitGroup // copies of the monitor's output
	closers []io.Closer
	// guestConsole gets a copy of stdout, when the shim copies it:
	// what a guest says there about its exit.
	guestConsole *guestconsole.Tap
	// loggerPidfd is a pidfd of the binary:// logger, -1 without one.
	loggerPidfd int
	once        sync.Once
}

// Open opens everything the request names, for container or exec id in
// namespace (a binary:// logger's environment). On error nothing stays
// open.
func Open(ctx context.Context, id, namespace string, cfg Config) (_ *Streams, retErr error) {
	s := &Streams{cfg: cfg, loggerPidfd: -1}
	defer func() {
		if retErr != nil {
			s.CloseMonitorEnds()
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

// Monitor is the monitor's ends of its stdio, for the runtime to hand
// over; CloseMonitorEnds closes the shim's copies once it holds its own.
func (s *Streams) Monitor() lifecycle.Stdio { return s.monitor }

// GuestConsole is the tap on the guest's console, nil when the shim does
// not copy the guest's stdout.
func (s *Streams) GuestConsole() *guestconsole.Tap { return s.guestConsole }

func (s *Streams) track(c io.Closer) { s.closers = append(s.closers, c) }

// CloseMonitorEnds closes the shim's copies of the monitor's stdio once the
// launcher holds its own; otherwise the copies would never see EOF.
func (s *Streams) CloseMonitorEnds() {
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
func (s *Streams) CloseStdin() {
	if s.stdinFifo != nil {
		_ = s.stdinFifo.SetReadDeadline(time.Now())
	}
}

// Resize resizes the pty.
func (s *Streams) Resize(width, height uint32) error {
	if s.console == nil {
		return fmt.Errorf("container has no terminal")
	}
	return s.console.Resize(console.WinSize{Width: uint16(width), Height: uint16(height)})
}

// WaitOutput waits, at most timeout, for the monitor's output to be copied
// out; it returns once the monitor (and every holder of its stdout) is gone.
func (s *Streams) WaitOutput(timeout time.Duration) {
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
func (s *Streams) Close() {
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
