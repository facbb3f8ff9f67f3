package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/guestagent"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/guestagent/agentapi"
)

// defaultPath is the search path for an app named without a '/' when its
// environment has no PATH (runc's default).
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// statusNotStarted is the app's status when it could not be started,
// as a shell reports a command it cannot run.
const statusNotStarted = 127

// supervisor starts the app and the execs, reaps every process of the
// guest (as PID 1 it inherits all orphans) and forwards signals to the
// app. It is the only caller of wait4.
type supervisor struct {
	// mu is held while a process starts, so that the reaper, which takes
	// it before it looks a pid up, knows every pid it reaps.
	mu     sync.Mutex
	appPid int
	// started is closed once start has run: the app runs (appPid is
	// set) or has ended unstarted.
	started chan struct{}
	done    chan struct{} // closed once the app has ended; status is then set
	status  uint32
	execs   map[string]*execProc
	byPid   map[int]*execProc // running execs
	chld    chan os.Signal
	sigs    chan os.Signal
	quit    chan struct{}
}

func newSupervisor() *supervisor {
	s := &supervisor{started: make(chan struct{}), done: make(chan struct{}), chld: make(chan os.Signal, 1), sigs: make(chan os.Signal, 16), quit: make(chan struct{}),
		execs: map[string]*execProc{}, byPid: map[int]*execProc{}}
	// Before any child exists, so that no exit goes unnoticed.
	signal.Notify(s.chld, unix.SIGCHLD)
	go s.reap()
	return s
}

// forwardSignals passes every signal the agent gets to the app. The
// kernel delivers to PID 1 only the signals it handles, so it handles
// them all; SIGURG is the Go runtime's own and SIGPIPE the agent's. One
// that comes while the app starts waits in sigs for it.
func (s *supervisor) forwardSignals() {
	signal.Notify(s.sigs, forwarded()...)
	go func() {
		select {
		case <-s.started:
		case <-s.quit:
			return
		}
		for sig := range s.sigs {
			if n, ok := sig.(syscall.Signal); ok {
				_ = s.signal(n)
			}
		}
	}()
}

// stop ends the reaping and the forwarding: tests run several
// supervisors in one process, one at a time.
func (s *supervisor) stop() {
	signal.Stop(s.sigs)
	signal.Stop(s.chld)
	close(s.quit)
}

// forwarded are the signals passed to the app: every standard one but
// those that cannot be caught and those above.
func forwarded() []os.Signal {
	var out []os.Signal
	for n := syscall.Signal(1); n < 32; n++ {
		switch n {
		case unix.SIGKILL, unix.SIGSTOP, unix.SIGCHLD, unix.SIGURG, unix.SIGPIPE:
			continue
		}
		out = append(out, n)
	}
	return out
}

// start starts the app; one that cannot be started ends at once with
// statusNotStarted.
func (s *supervisor) start(cfg guestagent.Config) error {
	defer close(s.started)
	s.mu.Lock()
	defer s.mu.Unlock()
	path, err := lookPath(cfg.Args[0], cfg.Env)
	if err == nil {
		s.appPid, err = syscall.ForkExec(path, cfg.Args, procAttr(cfg.Process()))
	}
	if err != nil {
		s.status = statusNotStarted
		close(s.done)
		return fmt.Errorf("%s: %w", cfg.Args[0], err)
	}
	return nil
}

// procAttr is how a process runs: the spec's cwd, env and identity, the
// agent's console as its stdio (an exec replaces it), in a session of its
// own.
func procAttr(p *agentapi.Process) *syscall.ProcAttr {
	dir := p.GetCwd()
	if dir == "" {
		dir = "/"
	}
	groups := p.GetAdditionalGids()
	if groups == nil {
		// Empty, not nil: nil keeps the agent's own groups.
		groups = []uint32{}
	}
	return &syscall.ProcAttr{
		Dir:   dir,
		Env:   p.GetEnv(),
		Files: []uintptr{0, 1, 2},
		Sys: &syscall.SysProcAttr{
			Setsid:     true,
			Credential: &syscall.Credential{Uid: p.GetUid(), Gid: p.GetGid(), Groups: groups},
		},
	}
}

// lookPath finds the app as a shell would with the app's own PATH.
func lookPath(name string, env []string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	path := defaultPath
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "PATH="); ok {
			path = v
		}
	}
	for _, dir := range strings.Split(path, ":") {
		if dir == "" {
			dir = "."
		}
		p := dir + "/" + name
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("not found in PATH %s", path)
}

// waitStarted waits until start has run: the agent serves the shim while
// the app starts, and what concerns the app waits for it.
func (s *supervisor) waitStarted(ctx context.Context) error {
	select {
	case <-s.started:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// pid is the app's pid, 0 if it never started.
func (s *supervisor) pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.appPid
}

// signal sends sig to the app while it runs.
func (s *supervisor) signal(sig syscall.Signal) error {
	select {
	case <-s.done:
		return fmt.Errorf("the app: %w", errEnded)
	default:
	}
	pid := s.pid()
	if pid <= 0 {
		return fmt.Errorf("the app is not running")
	}
	return unix.Kill(pid, sig)
}

// wait returns the app's exit status once it has ended.
func (s *supervisor) wait() uint32 {
	<-s.done
	return s.status
}

// reap collects every exited child at each SIGCHLD, the app's status among
// them.
func (s *supervisor) reap() {
	for {
		select {
		case <-s.chld:
		case <-s.quit:
			return
		}
		for {
			var ws unix.WaitStatus
			pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
			if err == unix.EINTR {
				continue
			}
			if pid <= 0 || err != nil {
				break
			}
			s.mu.Lock()
			if pid == s.appPid {
				s.status = exitStatus(ws)
				close(s.done)
			}
			if e := s.byPid[pid]; e != nil {
				delete(s.byPid, pid)
				e.status = exitStatus(ws)
				close(e.done)
			}
			s.mu.Unlock()
		}
	}
}

// exitStatus is a wait status as a shell reports it: the exit code, or
// 128+signal.
func exitStatus(ws unix.WaitStatus) uint32 {
	if ws.Signaled() {
		return 128 + uint32(ws.Signal())
	}
	return uint32(ws.ExitStatus())
}
