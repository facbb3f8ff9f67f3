package unikernel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/urunc-dev/containerd-shim-urunc-v2/monitors"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/guestagent"
)

// agentChannel is how the shim reaches the guest agent, one dialer per
// kind of channel (monitors.AgentTransport).
type agentChannel struct {
	// name is the channel as the logs name it.
	name string
	// driver is the guest kernel's option the channel needs, named when
	// the agent does not answer.
	driver string
	// dial connects to the agent, bounded by its own waits and ctx.
	dial func(ctx context.Context) (net.Conn, error)
	// release lets go of what the channel holds once dialed (or not).
	release func()
}

// Bounds of the hybrid vsock dial.
const (
	// vsockSocketWait bounds the wait for the monitor to bind its vsock
	// socket, which it does as it builds the VM, before the guest boots.
	vsockSocketWait = agentDialTimeout
	// vsockConnectTimeout bounds the monitor's answer to one CONNECT.
	vsockConnectTimeout = 5 * time.Second
	// vsockRetryFirst and vsockRetryMost pace the CONNECTs while nothing
	// in the guest listens yet (it boots): the monitor closes such a
	// connection at once, and tells the host of no listener appearing,
	// so asking again is the only way to learn of it.
	vsockRetryFirst = 10 * time.Millisecond
	vsockRetryMost  = 200 * time.Millisecond
)

// serialChannel is qemu's virtio-serial port, on the listening socket the
// shim made at Create (so it is there to connect to at once).
func serialChannel(socket string) *agentChannel {
	return &agentChannel{
		name:   "virtio-serial port " + guestagent.PortName,
		driver: "the virtio console (CONFIG_VIRTIO_CONSOLE=y, built in)",
		dial: func(ctx context.Context) (net.Conn, error) {
			d := net.Dialer{Timeout: agentDialTimeout}
			return d.DialContext(ctx, "unix", socket)
		},
		release: func() {},
	}
}

// hybridVsockChannel is firecracker's or cloud-hypervisor's vsock device:
// the socket the monitor binds at socketInRoot in its confined root,
// reached through root (/proc/PID/root of the monitor), opened now while
// the monitor runs: the descriptor keeps to that root whatever becomes of
// the pid. Each connection asks for the agent's port.
func hybridVsockChannel(root, socketInRoot string, port uint32) (*agentChannel, error) {
	rootDir, err := os.OpenFile(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open the monitor's root %s: %w", root, err)
	}
	v := hybridVsock{root: rootDir, socket: socketInRoot, port: port,
		socketWait: vsockSocketWait, connectTimeout: vsockConnectTimeout, retryFirst: vsockRetryFirst, retryMost: vsockRetryMost}
	return &agentChannel{
		name:    fmt.Sprintf("vsock port %d (hybrid vsock %s in the monitor's root)", port, socketInRoot),
		driver:  "virtio vsock (CONFIG_VIRTIO_VSOCKETS=y, built in)",
		dial:    v.dial,
		release: func() { rootDir.Close() },
	}, nil
}

// hybridVsock dials the guest's vsock port through a monitor's socket.
type hybridVsock struct {
	root                  *os.File // O_PATH, the monitor's root
	socket                string   // the socket's path in root
	port                  uint32
	socketWait            time.Duration
	connectTimeout        time.Duration
	retryFirst, retryMost time.Duration
	// retried, when set, is told of each failed attempt that is retried.
	retried func(error)
}

// errVsockSocketMissing: the monitor has not bound its socket (yet).
var errVsockSocketMissing = errors.New("the monitor's vsock socket is not there")

// dial connects to the guest's port: it waits, within socketWait, for the
// monitor to bind its socket, then, within ctx, for the guest to listen
// (it boots), asking again while the monitor closes the connection for
// want of a listener or does not answer in time. An answer that is not
// the protocol's ends the dial at once.
func (v hybridVsock) dial(ctx context.Context) (net.Conn, error) {
	start := time.Now()
	wait := v.retryFirst
	var last error
	for {
		conn, err := v.connect(ctx)
		if err == nil {
			return conn, nil
		}
		if cerr := ctxEnded(ctx); cerr != nil {
			// The attempt that ctx cut short says less than the last
			// one that ran its course.
			if last == nil {
				last = err
			}
			return nil, fmt.Errorf("%w (last: %w)", cerr, last)
		}
		retry := errors.Is(err, monitors.ErrVsockNoListener) || errors.Is(err, os.ErrDeadlineExceeded)
		if errors.Is(err, errVsockSocketMissing) {
			retry = time.Since(start) < v.socketWait
			if !retry {
				err = fmt.Errorf("%w within %s: %w", errVsockSocketMissing, v.socketWait, err)
			}
		}
		if !retry {
			return nil, err
		}
		last = err
		if v.retried != nil {
			v.retried(err)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("%w (last: %w)", ctx.Err(), last)
		case <-t.C:
		}
		wait = min(2*wait, v.retryMost)
	}
}

// ctxEnded is ctx's error, or DeadlineExceeded once its deadline has
// passed: a dial bounded by it can time out just before ctx says so.
func ctxEnded(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
		return context.DeadlineExceeded
	}
	return nil
}

// connect makes one connection through the monitor's socket and asks for
// the port on it.
func (v hybridVsock) connect(ctx context.Context) (net.Conn, error) {
	sock, err := openSocketAt(v.root, v.socket)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, fmt.Errorf("%w: %w", errVsockSocketMissing, err)
		}
		return nil, err
	}
	defer sock.Close()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", procSelfFD(sock))
	if err != nil {
		// Bound but not listening yet, or gone with its monitor.
		if errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("%w: %w", errVsockSocketMissing, err)
		}
		return nil, fmt.Errorf("hybrid vsock %s: %w", v.socket, err)
	}
	// The answer's own bound holds even if ctx ends first.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	err = monitors.HybridVsockConnect(conn, v.port, v.connectTimeout)
	if !stop() || err != nil {
		conn.Close()
		if err == nil {
			err = ctx.Err()
		}
		return nil, err
	}
	return conn, nil
}

// agentChannel is the channel to this container's guest agent, nil for a
// guest without the agent; called at Start, once the monitor runs.
func (c *Container) agentChannel() (*agentChannel, error) {
	switch c.agentTransport {
	case monitors.AgentVirtioSerial:
		if sock := c.Persisted().AgentSocket; sock != "" {
			return serialChannel(sock), nil
		}
	case monitors.AgentHybridVsock:
		return hybridVsockChannel(fmt.Sprintf("/proc/%d/root", c.Pid()), monitors.AgentVsockSocketInRoot, guestagent.VsockPort)
	}
	return nil, nil
}
