package stdio

import (
	"errors"
	"io"
	"os"
	"sync"
	"time"

	"github.com/containerd/log"
	"golang.org/x/sys/unix"
)

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
