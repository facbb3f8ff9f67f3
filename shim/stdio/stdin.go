package stdio

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// openStdin opens the stdin FIFO and copies it into a pipe the monitor
// reads.
func (s *Streams) openStdin() error {
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

// openStdinFifo opens the stdin FIFO, if the request has one, for reading
// without blocking. containerd's fifo package would instead park an OS
// thread in a blocking open(2) until a writer comes, which for a detached
// container (ctr run -d) is never: a thread for the container's whole
// life. copyWhenReady tells "no writer yet" from EOF.
func (s *Streams) openStdinFifo() (*os.File, error) {
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
