package unikernel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/console"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/guestagent"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/guestagent/agentapi"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/lifecycle"
)

// execOutputWait bounds how long an ended exec's output is still copied
// before its exit is recorded: a process it left behind holding stdout
// must not hold the exit (containerd's runc shim bounds it alike).
const execOutputWait = 2 * time.Second

// statusExecLost is an exec's status when the guest went away before the
// agent reported it: the exec ended with its VM, as a process of a
// container ends with SIGKILL when its init does.
const statusExecLost = 128 + int(syscall.SIGKILL)

// NewExec prepares an exec in the guest, which its agent runs. A guest
// without the agent has no process to join: it is refused, saying what
// would make it possible.
func (c *Container) NewExec(id string, spec *specs.Process) (lifecycle.Process, error) {
	link := c.agentOf()
	if link == nil {
		return nil, fmt.Errorf("exec into a unikernel is not supported without the guest agent: it is one application inside a VM, with no process to join; "+
			"a Linux guest takes an exec when the host runs its agent ([guests.linux] agent = true) and its kernel has the channel's driver built in (CONFIG_VIRTIO_CONSOLE=y under qemu, CONFIG_VIRTIO_VSOCKETS=y under firecracker and cloud-hypervisor): %w", errdefs.ErrNotImplemented)
	}
	if err := c.Do(lifecycle.EventExec, nil); err != nil {
		return nil, err
	}
	if spec == nil || len(spec.Args) == 0 {
		return nil, fmt.Errorf("exec %s: no process args: %w", id, errdefs.ErrInvalidArgument)
	}
	return &agentExec{Exec: lifecycle.NewExec(id, c.Bundle()), container: c, link: link, spec: *spec}, nil
}

// agentExec is an exec in a Linux guest: the agent runs it; the shim
// copies its stdio over the agent's channel. Its ID, pid (in the guest),
// State and life are every exec's lifecycle.Exec.
type agentExec struct {
	lifecycle.Exec
	container *Container
	link      *agentLink
	spec      specs.Process

	mu      sync.Mutex // guards console and stop
	console *agentConsole
	// stop ends the exec's calls still waiting on the guest (its output
	// reads, its stdin writes): at Delete, and once its output has had
	// its time after the exit. A guest that never answers them holds
	// nothing of the shim's past that.
	stop context.CancelFunc
}

// PidInGuest: the exec's pid is the guest's, not a host process's.
func (e *agentExec) PidInGuest() bool { return true }

// Console is a terminal exec's pty, in the guest; nil otherwise.
func (e *agentExec) Console() console.Console {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.console == nil {
		return nil
	}
	return e.console
}

// Start runs the exec in the guest with stdio, and returns once it runs.
// The caller keeps stdio's files and closes them after Start. A terminal
// exec takes no stdio: its pty is Console's.
func (e *agentExec) Start(ctx context.Context, stdio lifecycle.Stdio) error {
	return e.Do(lifecycle.EventStart, func(lifecycle.Status) error { return e.start(ctx, stdio) })
}

func (e *agentExec) start(ctx context.Context, stdio lifecycle.Stdio) error {
	// A guest still booting answers within the first answer's bound: an
	// exec probe right after the start waits for it.
	client, err := e.link.reached(ctx, agentFirstAnswer)
	if err != nil {
		return fmt.Errorf("exec %s: %w: the guest agent did not answer (see the shim's log): %w", e.ID(), err, errdefs.ErrUnavailable)
	}
	req := &agentapi.ExecRequest{ExecId: e.ID(), Process: agentProcess(&e.spec), Stdin: e.spec.Terminal || stdio.Stdin != nil}
	if cs := e.spec.ConsoleSize; cs != nil {
		req.Width, req.Height = uint32(cs.Width), uint32(cs.Height)
	}
	// The shim's own copies: the caller closes its files after Start,
	// and the copies' ends must outlive it until the exec has ended.
	files, err := dupStdio(stdio)
	if err != nil {
		return fmt.Errorf("exec %s: %w", e.ID(), err)
	}
	cctx, cancel := context.WithTimeout(ctx, agentCallTimeout)
	pid, err := client.Exec(cctx, req)
	cancel()
	if err != nil {
		files.close()
		// The answer may have been lost after the guest started it:
		// it must not run on, unseen, holding one of the agent's slots.
		e.forget(client)
		return fmt.Errorf("exec %s: %w", e.ID(), err)
	}
	calls, stop := context.WithCancel(context.Background())
	e.SetPid(int(pid))
	e.mu.Lock()
	e.stop = stop
	if e.spec.Terminal {
		e.console = newAgentConsole(calls, stop, client, e.ID())
	}
	e.mu.Unlock()

	var copies sync.WaitGroup
	if !e.spec.Terminal {
		for _, out := range []struct {
			stream agentapi.Stream
			dst    *os.File
		}{{agentapi.Stream_STDOUT, files.Stdout}, {agentapi.Stream_STDERR, files.Stderr}} {
			if out.dst == nil {
				continue
			}
			copies.Add(1)
			go func() {
				defer copies.Done()
				_, _ = io.Copy(out.dst, &agentOutput{ctx: calls, client: client, id: e.ID(), stream: out.stream})
			}()
		}
		if files.Stdin != nil {
			go func() {
				_, err := io.Copy(agentStdin{ctx: calls, client: client, id: e.ID()}, files.Stdin)
				if err == nil {
					// The shim's stdin ended (CloseIO): so does the exec's.
					closeStdin(calls, client, e.ID())
				}
			}()
		}
	}
	go e.waitExit(client, &copies, files, stop)
	return nil
}

// closeStdin ends an exec's stdin in the guest.
func closeStdin(ctx context.Context, client *guestagent.Client, id string) {
	ctx, cancel := context.WithTimeout(ctx, agentCallTimeout)
	defer cancel()
	_ = client.CloseStdin(ctx, id)
}

// forget kills and deletes the exec in the guest, as far as the agent
// still answers: an exec whose start failed on the shim's side.
func (e *agentExec) forget(client *guestagent.Client) {
	ctx, cancel := context.WithTimeout(context.Background(), agentCallTimeout)
	defer cancel()
	_ = client.Kill(ctx, e.ID(), uint32(syscall.SIGKILL))
	_, _ = client.Wait(ctx, e.ID())
	_ = client.DeleteExec(ctx, e.ID())
}

// waitExit records the exec's exit once the agent reports it and its
// output has been copied (bounded); a guest gone first is statusExecLost.
func (e *agentExec) waitExit(client *guestagent.Client, copies *sync.WaitGroup, files stdioFiles, stop context.CancelFunc) {
	status, err := client.Wait(context.Background(), e.ID())
	exit := lifecycle.ExitStatus{Pid: e.Pid(), Status: int(status), At: time.Now()}
	if err != nil || status > maxExitStatus {
		log.L.WithField("id", e.container.ID()).WithField("exec", e.ID()).WithError(err).Info("exec: the guest agent gave no exit status; the exec ended with the guest")
		exit.Status = statusExecLost
	}
	done := make(chan struct{})
	go func() {
		copies.Wait()
		close(done)
	}()
	t := time.NewTimer(execOutputWait)
	select {
	case <-done:
	case <-t.C:
	}
	t.Stop()
	// Closing the shim's ends ends its copies to containerd: they read
	// EOF, and only then does the exit go out (shim's forwardExecExit).
	files.close()
	if !e.spec.Terminal {
		// Reads the guest still holds open end here; a terminal's go
		// with its console, which containerd's stdio closes.
		stop()
	}
	e.RecordExit(exit, nil)
}

// Kill signals the exec in the guest; after its exit it is NotFound.
func (e *agentExec) Kill(ctx context.Context, sig syscall.Signal) error {
	return e.KillStarted(func(int) error {
		client, err := e.link.reached(ctx, 0)
		if err != nil {
			// The agent is gone, and the exec with its guest.
			return fmt.Errorf("kill exec %s: %w: %w", e.ID(), err, errdefs.ErrNotFound)
		}
		ctx, cancel := context.WithTimeout(ctx, agentCallTimeout)
		defer cancel()
		err = client.Kill(ctx, e.ID(), uint32(sig))
		if status.Code(err) == codes.NotFound {
			// Ended in the guest, its exit not recorded yet.
			return fmt.Errorf("kill exec %s: %w: %w", e.ID(), err, errdefs.ErrNotFound)
		}
		return err
	})
}

// Delete forgets the exec, in the guest too, and returns its exit.
func (e *agentExec) Delete(ctx context.Context) (lifecycle.ExitStatus, error) {
	return e.DeleteReleasing(func() {
		e.mu.Lock()
		if e.stop != nil {
			e.stop()
		}
		e.mu.Unlock()
		// What the guest still holds of it goes with the guest if the
		// agent is gone: nothing of the host's is left.
		if client, err := e.link.reached(ctx, 0); err == nil {
			ctx, cancel := context.WithTimeout(ctx, agentCallTimeout)
			defer cancel()
			if err := client.DeleteExec(ctx, e.ID()); err != nil {
				log.G(ctx).WithError(err).WithField("exec", e.ID()).Debug("exec: delete in the guest")
			}
		}
	})
}

// agentProcess is the OCI process as the agent runs it.
func agentProcess(p *specs.Process) *agentapi.Process {
	return &agentapi.Process{Args: p.Args, Env: p.Env, Cwd: p.Cwd, Uid: p.User.UID, Gid: p.User.GID,
		AdditionalGids: p.User.AdditionalGids, Terminal: p.Terminal}
}

// stdioFiles are the shim's duplicates of an exec's stdio.
type stdioFiles lifecycle.Stdio

func dupStdio(s lifecycle.Stdio) (stdioFiles, error) {
	var out stdioFiles
	for _, f := range []struct {
		src *os.File
		dst **os.File
	}{{s.Stdin, &out.Stdin}, {s.Stdout, &out.Stdout}, {s.Stderr, &out.Stderr}} {
		if f.src == nil {
			continue
		}
		fd, err := syscall.Dup(int(f.src.Fd()))
		if err != nil {
			out.close()
			return stdioFiles{}, fmt.Errorf("dup %s: %w", f.src.Name(), err)
		}
		syscall.CloseOnExec(fd)
		*f.dst = os.NewFile(uintptr(fd), f.src.Name())
	}
	return out, nil
}

func (s stdioFiles) close() {
	for _, f := range []*os.File{s.Stdin, s.Stdout, s.Stderr} {
		if f != nil {
			f.Close()
		}
	}
}

// errEmptyRead: the guest answered a read with neither data nor the end.
var errEmptyRead = errors.New("guest agent answered ReadOutput with no data before the end; the output is cut")

// agentOutput reads an exec's stdout or stderr from the agent.
type agentOutput struct {
	ctx    context.Context // the exec's calls
	client *guestagent.Client
	id     string
	stream agentapi.Stream
	buf    []byte // read from the guest, not yet handed on
	eof    bool
}

func (o *agentOutput) Read(p []byte) (int, error) {
	for len(o.buf) == 0 {
		if o.eof {
			return 0, io.EOF
		}
		data, eof, err := o.client.ReadOutput(o.ctx, o.id, o.stream)
		if err != nil {
			return 0, err
		}
		if len(data) == 0 && !eof {
			// The agent answers once there is output or the end: an empty
			// answer would have the shim call again at once, without end.
			return 0, errEmptyRead
		}
		o.buf, o.eof = data, eof
	}
	n := copy(p, o.buf)
	o.buf = o.buf[n:]
	return n, nil
}

// agentStdin writes to an exec's stdin through the agent.
type agentStdin struct {
	ctx    context.Context // the exec's calls
	client *guestagent.Client
	id     string
}

func (w agentStdin) Write(p []byte) (int, error) {
	if err := w.client.WriteStdin(w.ctx, w.id, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// agentConsole is a terminal exec's pty in the guest, as the shim's stdio
// copies a pty master: reads are the exec's output, writes its input, and
// a resize goes to the guest's pty.
type agentConsole struct {
	agentOutput
	in   agentStdin
	stop context.CancelFunc

	mu   sync.Mutex
	size console.WinSize
}

var _ console.Console = (*agentConsole)(nil)

func newAgentConsole(ctx context.Context, stop context.CancelFunc, client *guestagent.Client, id string) *agentConsole {
	return &agentConsole{agentOutput: agentOutput{ctx: ctx, client: client, id: id, stream: agentapi.Stream_STDOUT},
		in: agentStdin{ctx: ctx, client: client, id: id}, stop: stop}
}

func (c *agentConsole) Write(p []byte) (int, error) { return c.in.Write(p) }

// CloseWrite ends the exec's input once containerd's stdin has ended: the
// guest's pty gets the end-of-file character.
func (c *agentConsole) CloseWrite() error {
	closeStdin(c.ctx, c.client, c.id)
	return nil
}

// Close ends the calls still waiting on the guest for this console (the
// shim closes it with the exec's stdio); the guest's pty is freed with
// the exec.
func (c *agentConsole) Close() error {
	c.stop()
	return nil
}

// Fd: the pty is in the guest; there is no descriptor of it here.
func (c *agentConsole) Fd() uintptr  { return ^uintptr(0) }
func (c *agentConsole) Name() string { return "guest pty of exec " + c.id }

func (c *agentConsole) Resize(ws console.WinSize) error {
	ctx, cancel := context.WithTimeout(context.Background(), agentCallTimeout)
	defer cancel()
	if err := c.client.ResizePty(ctx, c.id, uint32(ws.Width), uint32(ws.Height)); err != nil {
		return err
	}
	c.mu.Lock()
	c.size = ws
	c.mu.Unlock()
	return nil
}

func (c *agentConsole) ResizeFrom(other console.Console) error {
	ws, err := other.Size()
	if err != nil {
		return err
	}
	return c.Resize(ws)
}

var errGuestPty = errors.New("the terminal is a pty in the guest: its modes are the guest's")

func (c *agentConsole) SetRaw() error      { return errGuestPty }
func (c *agentConsole) DisableEcho() error { return errGuestPty }
func (c *agentConsole) Reset() error       { return nil }

func (c *agentConsole) Size() (console.WinSize, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.size, nil
}
