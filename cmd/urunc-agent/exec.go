package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"

	"github.com/containerd/console"
	"golang.org/x/sys/unix"

	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/guestagent/agentapi"
)

// maxExecs bounds the execs the agent holds at once (running, or ended
// and not yet deleted): each holds pipes or a pty.
const maxExecs = 256

// execProc is an extra process the shim started beside the app: its pid,
// its exit, and the agent's ends of its stdio, which the shim reads and
// writes through the service until it deletes the exec.
type execProc struct {
	id  string
	pid int
	// pidfd signals the process itself, never a later one that reuses
	// its pid once it is reaped; -1 where the kernel gives none.
	pidfd  int
	done   chan struct{} // closed once it has ended; status is then set
	status uint32

	// stdin is the exec's stdin pipe, or its pty's master; nil for none.
	// A write may block on a full pipe: nothing that waits for a write
	// may be held by the reaper's lock (close does not wait for one).
	stdin       io.WriteCloser
	stdinMu     sync.Mutex // guards stdinClosed only, never held over a write
	stdinClosed bool

	// outputs are stdout and stderr by agentapi.Stream; a terminal has
	// one, its pty's master, as stdout.
	outputs [2]*output
	pty     console.Console // a terminal's master, nil otherwise
}

// output is the read end of an exec's stdout or stderr.
type output struct {
	mu  sync.Mutex // one read at a time keeps the bytes in order
	r   io.ReadCloser
	eof bool
}

// read returns the next bytes, waiting for some; eof once the stream has
// ended. A pty's master reads EIO once its last slave is closed: that is
// its end.
func (o *output) read(max int) ([]byte, bool, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.eof {
		return nil, true, nil
	}
	buf := make([]byte, max)
	n, err := o.r.Read(buf)
	if n > 0 {
		return buf[:n], false, nil
	}
	if err == nil || err == io.EOF || errors.Is(err, syscall.EIO) || errors.Is(err, os.ErrClosed) {
		o.eof = true
		return nil, true, nil
	}
	return nil, false, err
}

// exec starts req's process with pipes for its stdio, or a pty for a
// terminal, and keeps it under its ID until deleted.
func (s *supervisor) exec(req *agentapi.ExecRequest) (*execProc, error) {
	p := req.GetProcess()
	if req.GetExecId() == "" {
		return nil, fmt.Errorf("exec: no exec ID")
	}
	if len(p.GetArgs()) == 0 || p.GetArgs()[0] == "" {
		return nil, fmt.Errorf("exec %s: no process args", req.GetExecId())
	}
	path, err := lookPath(p.GetArgs()[0], p.GetEnv())
	if err != nil {
		return nil, fmt.Errorf("exec %s: %s: %w", req.GetExecId(), p.GetArgs()[0], err)
	}
	e := &execProc{id: req.GetExecId(), done: make(chan struct{}), pidfd: -1}
	attr := procAttr(p)
	attr.Sys.PidFD = &e.pidfd
	// The child's ends, closed here once it holds its own.
	var child []*os.File
	defer func() {
		for _, f := range child {
			f.Close()
		}
	}()
	if p.GetTerminal() {
		if child, err = e.openTerminal(req); err != nil {
			return nil, fmt.Errorf("exec %s: %w", e.id, err)
		}
		attr.Sys.Setctty = true
		attr.Sys.Ctty = 0
	} else if child, err = e.openPipes(req.GetStdin()); err != nil {
		return nil, fmt.Errorf("exec %s: %w", e.id, err)
	}
	attr.Files = []uintptr{child[0].Fd(), child[1].Fd(), child[2].Fd()}

	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.execs[e.id]; ok {
		e.close()
		return nil, fmt.Errorf("exec %s already exists", e.id)
	}
	if len(s.execs) >= maxExecs {
		e.close()
		return nil, fmt.Errorf("exec %s: %d execs are held already; delete ended ones", e.id, maxExecs)
	}
	e.pid, err = syscall.ForkExec(path, p.GetArgs(), attr)
	if err != nil {
		e.close()
		return nil, fmt.Errorf("exec %s: %s: %w", e.id, p.GetArgs()[0], err)
	}
	s.execs[e.id] = e
	s.byPid[e.pid] = e
	return e, nil
}

// openTerminal gives the exec a pty of the size asked for, and returns
// the slave as the child's stdio.
func (e *execProc) openTerminal(req *agentapi.ExecRequest) ([]*os.File, error) {
	master, slavePath, err := console.NewPty()
	if err != nil {
		return nil, fmt.Errorf("pty (is devpts mounted on /dev/pts?): %w", err)
	}
	if w, h := req.GetWidth(), req.GetHeight(); w > 0 && h > 0 {
		if err := master.Resize(console.WinSize{Width: uint16(w), Height: uint16(h)}); err != nil {
			master.Close()
			return nil, fmt.Errorf("pty size: %w", err)
		}
	}
	slave, err := os.OpenFile(slavePath, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		master.Close()
		return nil, fmt.Errorf("open %s: %w", slavePath, err)
	}
	e.pty = master
	e.stdin = master
	e.outputs[agentapi.Stream_STDOUT] = &output{r: io.NopCloser(master)}
	return []*os.File{slave, slave, slave}, nil
}

// openPipes gives the exec pipes for stdout and stderr, and for stdin
// when the shim has one (else /dev/null), and returns the child's ends.
func (e *execProc) openPipes(withStdin bool) (child []*os.File, err error) {
	defer func() {
		if err != nil {
			for _, f := range child {
				f.Close()
			}
			e.close()
		}
	}()
	if withStdin {
		r, w, err := os.Pipe()
		if err != nil {
			return child, fmt.Errorf("stdin pipe: %w", err)
		}
		child, e.stdin = append(child, r), w
	} else {
		null, err := os.Open(os.DevNull)
		if err != nil {
			return child, err
		}
		child = append(child, null)
	}
	for _, stream := range []agentapi.Stream{agentapi.Stream_STDOUT, agentapi.Stream_STDERR} {
		r, w, err := os.Pipe()
		if err != nil {
			return child, fmt.Errorf("%s pipe: %w", stream, err)
		}
		child = append(child, w)
		e.outputs[stream] = &output{r: r}
	}
	return child, nil
}

// writeStdin writes all of data to the exec's stdin; a write blocked on a
// full pipe ends when the pipe is closed.
func (e *execProc) writeStdin(data []byte) error {
	e.stdinMu.Lock()
	closed := e.stdinClosed
	e.stdinMu.Unlock()
	if e.stdin == nil || closed {
		return fmt.Errorf("exec %s has no stdin", e.id)
	}
	_, err := e.stdin.Write(data)
	return err
}

// veof is a terminal's end-of-file character (^D) in its default modes.
const veof = 0x04

// closeStdin ends the exec's input: its stdin pipe is closed, so it reads
// EOF; a terminal, whose pty carries its output too, gets the end-of-file
// character, as typing ^D would give it.
func (e *execProc) closeStdin() error {
	e.stdinMu.Lock()
	if e.stdin == nil || e.stdinClosed {
		e.stdinMu.Unlock()
		return nil
	}
	if e.pty == nil {
		e.stdinClosed = true
	}
	e.stdinMu.Unlock()
	if e.pty != nil {
		_, err := e.pty.Write([]byte{veof})
		return err
	}
	return e.stdin.Close()
}

// close frees the agent's ends of the exec's stdio and its pidfd; a read
// or a write in flight ends.
func (e *execProc) close() {
	e.stdinMu.Lock()
	e.stdinClosed = true
	e.stdinMu.Unlock()
	if e.stdin != nil && e.pty == nil {
		e.stdin.Close()
	}
	if e.pty != nil {
		e.pty.Close()
	}
	for _, o := range e.outputs {
		if o != nil {
			o.r.Close()
		}
	}
	if e.pidfd >= 0 {
		unix.Close(e.pidfd)
		e.pidfd = -1
	}
}

// signal sends sig to the exec while it runs: through its pidfd, which
// cannot reach another process, where the kernel gave one.
func (e *execProc) signal(sig unix.Signal) error {
	select {
	case <-e.done:
		return fmt.Errorf("exec %s: %w", e.id, errEnded)
	default:
	}
	if e.pidfd >= 0 {
		err := unix.PidfdSendSignal(e.pidfd, sig, nil, 0)
		if err == unix.ESRCH {
			return fmt.Errorf("exec %s: %w", e.id, errEnded)
		}
		return err
	}
	return unix.Kill(e.pid, sig)
}

// errNotFound and errEnded reach the shim as ttrpc's NotFound, which
// containerd's callers expect of a process that is gone (an exec probe's
// kill at its timeout).
var (
	errNotFound = errors.New("not found")
	errEnded    = errors.New("has ended")
)

// execByID returns a held exec.
func (s *supervisor) execByID(id string) (*execProc, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.execs[id]
	if !ok {
		return nil, fmt.Errorf("exec %s: %w", id, errNotFound)
	}
	return e, nil
}

// deleteExec forgets an ended exec and frees its stdio. The files are
// closed once the reaper's lock is let go: closing may wait for a write
// in flight.
func (s *supervisor) deleteExec(id string) error {
	s.mu.Lock()
	e, ok := s.execs[id]
	if !ok {
		s.mu.Unlock()
		return fmt.Errorf("exec %s: %w", id, errNotFound)
	}
	select {
	case <-e.done:
	default:
		s.mu.Unlock()
		return fmt.Errorf("exec %s is still running", id)
	}
	delete(s.execs, id)
	s.mu.Unlock()
	e.close()
	return nil
}
