package stdio

import (
	"context"
	"fmt"
	"io"
	"os"
	"syscall"

	"github.com/containerd/console"

	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/guestconsole"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/lifecycle"
)

// openTerminal gives the monitor a pty; the shim copies between the pty
// master and the stdin and stdout FIFOs.
func (s *Streams) openTerminal(ctx context.Context) error {
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
	return s.AttachConsole(ctx, master)
}

// AttachConsole copies between a pty master and the stdin and stdout
// FIFOs: the shim's own (openTerminal) or runc's for a terminal exec,
// which arrives once the exec runs. The master reads EIO once the last
// holder of the slave is gone, which ends the copy; the master itself is
// closed with the rest at Close, not by the copy: ResizePty still uses it.
func (s *Streams) AttachConsole(ctx context.Context, master console.Console) error {
	s.console = master
	s.track(master)
	in, err := s.openStdinFifo()
	if err != nil {
		return err
	}
	if in != nil {
		go func() {
			// A pty in a guest (the guest agent's) is told that its input
			// has ended; a host pty's input ends with its process.
			if err := copyWhenReady(master, in); err == nil {
				if w, ok := master.(interface{ CloseWrite() error }); ok {
					_ = w.CloseWrite()
				}
			}
		}()
	}
	if s.cfg.Stdout != "" {
		return s.copyToFifo(ctx, fifoPath(s.cfg.Stdout), io.NopCloser(master), s.guestConsole)
	}
	return nil
}
