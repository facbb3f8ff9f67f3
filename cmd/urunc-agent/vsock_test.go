package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/ttrpc"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/guestagent"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/guestagent/agentapi"
)

// fakeSys lays out a virtio bus (device ID, driver bound or not) and, when
// port is set, a virtio-ports class holding that port.
func fakeSys(t *testing.T, devices map[string]bool, class bool, port string) channelPaths {
	t.Helper()
	dir := t.TempDir()
	bus := filepath.Join(dir, "bus")
	i := 0
	for id, driver := range devices {
		dev := filepath.Join(bus, fmt.Sprintf("virtio%d", i))
		i++
		if err := os.MkdirAll(dev, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dev, "device"), []byte(id+"\n"), 0o444); err != nil {
			t.Fatal(err)
		}
		if driver {
			if err := os.Symlink("../../drivers/x", filepath.Join(dev, "driver")); err != nil {
				t.Fatal(err)
			}
		}
	}
	ports := filepath.Join(dir, "virtio-ports")
	if class {
		if err := os.MkdirAll(ports, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if port != "" {
		if err := os.MkdirAll(filepath.Join(ports, "vport1p1"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(ports, "vport1p1", "name"), []byte(port+"\n"), 0o444); err != nil {
			t.Fatal(err)
		}
	}
	return channelPaths{virtioBus: bus, virtioPorts: ports}
}

// The agent's channel: the virtio-serial port first; vsock where the
// monitor gave a vsock device and no port, without waiting for a port
// where there is no virtio console; each missing driver named.
func TestChannelChoice(t *testing.T) {
	const vsockListener = "vsock"
	for name, tc := range map[string]struct {
		devices  map[string]bool
		class    bool
		port     string
		portWait time.Duration
		vsockErr error
		want     string // "serial", vsockListener, or an error's text
	}{
		"qemu: the port":                     {devices: map[string]bool{"0x0003": true}, class: true, port: guestagent.PortName, portWait: time.Second, want: "serial"},
		"firecracker: vsock, no port waited": {devices: map[string]bool{"0x0013": true, "0x0001": true}, class: true, portWait: 5 * time.Second, want: vsockListener},
		"clh without virtio console driver":  {devices: map[string]bool{"0x0013": true}, portWait: 5 * time.Second, want: vsockListener},
		"a console without the port, and vsock": {devices: map[string]bool{"0x0003": true, "0x0013": true}, class: true, port: "other", portWait: 20 * time.Millisecond,
			want: vsockListener},
		"the port before vsock": {devices: map[string]bool{"0x0003": true, "0x0013": true}, class: true, port: guestagent.PortName, portWait: time.Second, want: "serial"},
		"vsock device without its driver": {devices: map[string]bool{"0x0013": false}, portWait: time.Hour,
			want: "the virtio-vsock device has no driver: the guest kernel has no virtio vsock transport (CONFIG_VIRTIO_VSOCKETS=y)"},
		"no AF_VSOCK": {devices: map[string]bool{"0x0013": true}, portWait: time.Hour, vsockErr: errors.New("vsock socket: address family not supported: the guest kernel has no vsock (CONFIG_VSOCKETS=y"),
			want: "CONFIG_VSOCKETS=y"},
		"no channel device, no console driver": {devices: map[string]bool{"0x0001": true}, portWait: time.Hour, want: "CONFIG_VIRTIO_CONSOLE=y"},
		"console without the port, no vsock":   {devices: map[string]bool{"0x0003": true}, class: true, portWait: 20 * time.Millisecond, want: "no virtio-serial port named urunc.agent"},
	} {
		t.Run(name, func(t *testing.T) {
			p := fakeSys(t, tc.devices, tc.class, tc.port)
			p.portWait = tc.portWait
			var asked []uint32
			p.listenVsock = func(port uint32) (net.Listener, error) {
				asked = append(asked, port)
				if tc.vsockErr != nil {
					return nil, tc.vsockErr
				}
				return &chanListener{done: make(chan struct{})}, nil
			}
			start := time.Now()
			ln, err := p.listen()
			if _, console := tc.devices["0x0003"]; !console && time.Since(start) >= tc.portWait {
				t.Fatalf("waited %s for a port without a virtio console device", time.Since(start))
			}
			switch tc.want {
			case "serial":
				if pl, ok := ln.(*portListener); err != nil || !ok || pl.path != "/dev/vport1p1" || len(asked) != 0 {
					t.Fatalf("listen: %T %v, vsock asked %v; want the port", ln, err, asked)
				}
			case vsockListener:
				if _, ok := ln.(*chanListener); err != nil || !ok || len(asked) != 1 || asked[0] != guestagent.VsockPort {
					t.Fatalf("listen: %T %v, vsock asked %v; want vsock port %d", ln, err, asked, guestagent.VsockPort)
				}
			default:
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("listen: %v; want an error with %q", err, tc.want)
				}
			}
		})
	}
}

// stateOnly answers State, the shim's first call.
type stateOnly struct{ agentapi.AgentService }

func (stateOnly) State(context.Context, *emptypb.Empty) (*agentapi.StateResponse, error) {
	return &agentapi.StateResponse{Pid: 42}, nil
}

// The listener of a socket the net package does not know serves ttrpc,
// several connections at a time, and closes a connection its admission
// check refuses before anything is served on it. It runs here on an
// AF_UNIX socket, through the same code as vsock: this host has
// /dev/vsock but no vsock loopback, so no vsock peer can connect.
func TestFDListenerServes(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "agent.sock")
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: sock}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 4); err != nil {
		t.Fatal(err)
	}
	var seen atomic.Int32
	ln := newFDListener(fd, chanAddr{"unix", sock}, func(fd int) error {
		if seen.Add(1) == 1 {
			return errors.New("the first connection is refused")
		}
		return nil
	})
	srv, err := ttrpc.NewServer()
	if err != nil {
		t.Fatal(err)
	}
	agentapi.RegisterAgentService(srv, stateOnly{})
	served := make(chan error, 1)
	go func() { served <- srv.Serve(context.Background(), ln) }()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	refused, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer refused.Close()
	// Bounded, so that a served connection fails the test at once.
	refused.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := refused.Read(make([]byte, 1)); n != 0 || !(errors.Is(err, io.EOF) || errors.Is(err, unix.ECONNRESET)) {
		t.Fatalf("a refused connection read %d bytes, %v; want it closed", n, err)
	}
	var clients []*guestagent.Client
	for range 2 {
		conn, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		c := guestagent.NewClient(conn)
		defer c.Close()
		clients = append(clients, c)
	}
	for i, c := range clients {
		if pid, err := c.State(ctx); err != nil || pid != 42 {
			t.Fatalf("client %d: State %d, %v", i, pid, err)
		}
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-served; err != nil && !errors.Is(err, ttrpc.ErrServerClosed) {
		t.Fatalf("Serve after Close: %v", err)
	}
}

// The vsock listener binds and listens where the kernel has AF_VSOCK
// (this host: /dev/vsock with the virtio transport), its Accept waits,
// and Close ends that wait. Only the host's connections are admitted.
func TestVsockListener(t *testing.T) {
	ln, err := listenVsock(unix.VMADDR_PORT_ANY)
	if err != nil {
		t.Skipf("no AF_VSOCK here: %v", err)
	}
	accepted := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if c != nil {
			c.Close()
		}
		accepted <- err
	}()
	select {
	case err := <-accepted:
		t.Fatalf("Accept returned %v with no peer", err)
	default:
	}
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-accepted; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close: %v; want net.ErrClosed", err)
	}
	if ln.Addr().Network() != "vsock" {
		t.Fatalf("address %v", ln.Addr())
	}
	// A peer that is not a vsock host (here a unix socket) is refused.
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	if err := peerIsHost(fds[0]); err == nil {
		t.Fatal("a unix peer passed for the vsock host")
	}
}
