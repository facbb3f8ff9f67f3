package stdio

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"os"
	"syscall"

	"github.com/containerd/fifo"

	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/guestconsole"
)

// openOutput wires stdout and stderr according to their URI scheme: a
// FIFO (a path or fifo://PATH), file://PATH or binary://PATH?args. Either
// stream may be absent: the monitor then writes it to /dev/null.
func (s *Streams) openOutput(ctx context.Context, id, namespace string) error {
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
func (s *Streams) openFifoOutputs(ctx context.Context) error {
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
func (s *Streams) openFifoOutput(ctx context.Context, path string, tap *guestconsole.Tap) (*os.File, error) {
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
func (s *Streams) copyToFifo(ctx context.Context, path string, src io.ReadCloser, tap *guestconsole.Tap) error {
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
func (s *Streams) openFile(path string) error {
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
func (s *Streams) copyThroughTap(dst *os.File) (*os.File, error) {
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
