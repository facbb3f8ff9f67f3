package unikernel

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/urunc-dev/containerd-shim-urunc-v2/monitors"
	"github.com/urunc-dev/containerd-shim-urunc-v2/rootfs"
	"github.com/urunc-dev/containerd-shim-urunc-v2/rootfs/inroot"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/config"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/guestagent"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/guests"
)

// AgentBinary is the guest agent's binary, looked for beside the shim's
// unless the host config names it.
const AgentBinary = "urunc-agent"

// Bounds of the shim's calls to the guest agent: none of them may hold a
// container's exit or stop.
const (
	// agentDialTimeout bounds the connect to the channel's socket: one
	// the shim itself listens on (virtio-serial), or the wait for the
	// monitor to bind its own (hybrid vsock).
	agentDialTimeout = 5 * time.Second
	// agentFirstAnswer bounds the wait for the agent's first answer (and,
	// on vsock, for it to listen): the guest's boot under TCG on a loaded
	// host, with room to spare.
	agentFirstAnswer = 60 * time.Second
	// agentCallTimeout bounds every call but the waits (Wait, ReadOutput),
	// whose answers come when the guest has them.
	agentCallTimeout = 5 * time.Second
	// agentKillWait bounds how long a signal waits for an agent that has
	// not answered yet (a guest still booting) before the VM takes it.
	agentKillWait = 3 * time.Second
)

// guestAgentFiles returns the files of the guest agent's archive (the
// agent, the app's config) when the host turns the agent on and the guest
// type, the monitor and the app take it; nil otherwise. An app that is
// urunit stays the guest's init.
func guestAgentFiles(host config.HostConfig, g guests.Guest, mon monitors.Monitor, spec *specs.Spec, args []string, hostname string) ([]rootfs.InitrdFile, error) {
	if !host.Guests.Linux.Agent {
		return nil, nil
	}
	if a, ok := g.(guests.AgentHost); !ok || !a.TakesAgent() {
		return nil, nil
	}
	if monitors.AgentTransportOf(mon) == monitors.AgentNone {
		return nil, nil
	}
	if guests.RunsUrunit(args) || len(args) == 0 {
		return nil, nil
	}
	bin, err := agentBinary(host.Guests.Linux.AgentPath)
	if err != nil {
		return nil, err
	}
	cfg := guestagent.Config{Args: args, Hostname: hostname}
	if p := spec.Process; p != nil {
		cfg.Env, cfg.Cwd = p.Env, p.Cwd
		cfg.UID, cfg.GID, cfg.AdditionalGids = p.User.UID, p.User.GID, p.User.AdditionalGids
	}
	data, err := cfg.Marshal()
	if err != nil {
		return nil, err
	}
	return []rootfs.InitrdFile{
		{Name: strings.TrimPrefix(guestagent.BinaryPath, "/"), Mode: 0o755, Source: bin},
		// root's alone: the app, run as the spec's user, does not read
		// what it was not given.
		{Name: strings.TrimPrefix(guestagent.ConfigPath, "/"), Mode: 0o600, Data: data},
	}, nil
}

// agentBinary is the agent the host config names, else urunc-agent
// beside this binary; a missing one is said by name.
func agentBinary(asked string) (string, error) {
	path := asked
	if path == "" {
		self, err := os.Executable()
		if err != nil {
			return "", err
		}
		path = filepath.Join(filepath.Dir(self), AgentBinary)
	}
	const hint = "make install puts " + AgentBinary + " beside the shim; [guests.linux] agent_path names another"
	st, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("guest agent is on ([guests.linux] agent) but its binary is missing (%s): %w", hint, err)
	}
	if !st.Mode().IsRegular() {
		return "", fmt.Errorf("guest agent is on ([guests.linux] agent) but %s is %s, not a regular file (%s)", path, inroot.FileKind(st.Mode()), hint)
	}
	return path, nil
}

// agentPath is the agent's path in the guest, "" without the agent.
func (p *bootPlan) agentPath() string {
	if p.guest.Agent == nil {
		return ""
	}
	return guestagent.BinaryPath
}

// agentLink is the shim's end of the guest agent's channel: one
// connection, on which it asks for the app's exit status as soon as the
// agent answers, and which carries signals for the app.
type agentLink struct {
	id      string
	channel *agentChannel

	// settled is closed once the agent has answered its first call or
	// is known not to.
	settled chan struct{}

	mu     sync.Mutex
	client *guestagent.Client // set once the agent has answered
	status *uint32            // the app's exit status, once known
}

// startAgentLink dials the agent's channel and follows the app until
// exited is closed (the monitor has ended).
func startAgentLink(id string, channel *agentChannel, exited <-chan struct{}) *agentLink {
	l := &agentLink{id: id, channel: channel, settled: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-exited:
		case <-ctx.Done():
		}
		cancel()
	}()
	go func() {
		defer cancel()
		l.run(ctx)
	}()
	return l
}

func (l *agentLink) run(ctx context.Context) {
	settle := sync.OnceFunc(func() { close(l.settled) })
	defer settle()
	logger := log.G(ctx).WithField("id", l.id)
	// A channel whose guest end must listen first (vsock) is only
	// connected once the guest has booted that far.
	dctx, cancel := context.WithTimeout(ctx, agentFirstAnswer)
	conn, err := l.channel.dial(dctx)
	cancel()
	l.channel.release()
	if err != nil {
		if ctx.Err() == nil {
			logger.WithError(err).Warnf("guest agent: no channel (%s); the guest kernel may lack %s; the exit status comes from the console and SIGTERM presses the power button",
				l.channel.name, l.channel.driver)
		}
		return
	}
	client := guestagent.NewClient(conn)
	defer client.Close()
	first, cancel := context.WithTimeout(ctx, agentFirstAnswer)
	pid, err := client.State(first)
	cancel()
	if err != nil {
		if ctx.Err() == nil {
			logger.WithError(err).Warnf("guest agent: no answer on %s within %s: the guest kernel may lack %s; the exit status comes from the console and SIGTERM presses the power button",
				l.channel.name, agentFirstAnswer, l.channel.driver)
		}
		return
	}
	logger.WithField("guestPid", pid).Debug("guest agent answered")
	l.mu.Lock()
	l.client = client
	l.mu.Unlock()
	settle()
	defer func() {
		l.mu.Lock()
		l.client = nil
		l.mu.Unlock()
	}()
	status, err := client.Wait(ctx, "")
	if err != nil {
		if ctx.Err() == nil {
			// Also the monitor ending just before its exit is seen.
			logger.WithError(err).Info("guest agent: lost before the app's exit status; it comes from the console")
		}
		return
	}
	if status > maxExitStatus {
		logger.Warnf("guest agent: reported exit status %d, which no process has; the status comes from the console", status)
	}
	l.mu.Lock()
	l.status = &status
	l.mu.Unlock()
	// Only now may the guest power off: the monitor's exit then finds
	// the status here. The monitor may end before the answer arrives.
	sctx, cancel := context.WithTimeout(context.Background(), agentCallTimeout)
	defer cancel()
	if err := client.Shutdown(sctx); err != nil && ctx.Err() == nil {
		logger.WithError(err).Warn("guest agent: shutdown")
	}
}

// maxExitStatus is the highest status a process has (an exit code, or
// 128+signal): a guest's agent that reports more is not believed.
const maxExitStatus = 255

// exitStatus is the app's exit status as the agent reported it.
func (l *agentLink) exitStatus() (int, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.status == nil || *l.status > maxExitStatus {
		return 0, false
	}
	return int(*l.status), true
}

// errNoAgent: the agent has not answered (yet, or at all).
var errNoAgent = fmt.Errorf("guest agent not reached")

// reached returns the agent's client once it has answered, waiting up to
// wait for a guest still booting; errNoAgent if it has not answered, or
// has gone (the app has ended).
func (l *agentLink) reached(ctx context.Context, wait time.Duration) (*guestagent.Client, error) {
	t := time.NewTimer(wait)
	select {
	case <-l.settled:
	case <-t.C:
	case <-ctx.Done():
	}
	t.Stop()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.client == nil {
		return nil, errNoAgent
	}
	return l.client, nil
}

// kill sends sig to the app through the agent, waiting a little for an
// agent that has not answered yet.
func (l *agentLink) kill(ctx context.Context, sig syscall.Signal) error {
	client, err := l.reached(ctx, agentKillWait)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, agentCallTimeout)
	defer cancel()
	return client.Kill(ctx, "", uint32(sig))
}

func (c *Container) setAgent(l *agentLink) {
	c.agentMu.Lock()
	defer c.agentMu.Unlock()
	c.agent = l
}

func (c *Container) agentOf() *agentLink {
	c.agentMu.Lock()
	defer c.agentMu.Unlock()
	return c.agent
}

// agentExit is the app's exit status as the guest agent reported it.
func (c *Container) agentExit() (int, bool) {
	if l := c.agentOf(); l != nil {
		return l.exitStatus()
	}
	return 0, false
}
