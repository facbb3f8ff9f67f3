package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/guestagent"
)

// Virtio device IDs, as /sys/bus/virtio/devices/*/device shows them.
const (
	virtioConsole = 0x0003
	virtioVsock   = 0x0013
)

// virtioDevices returns the virtio devices the kernel found (under
// sysDir, /sys/bus/virtio/devices), by device ID, each telling whether a
// driver took it. The bus lists a device whether or not its driver is in
// the kernel, and before init runs: the monitor's devices are there at
// boot, unlike virtio-serial ports, which come as the host announces them.
func virtioDevices(sysDir string) map[uint64]bool {
	devs := map[uint64]bool{}
	entries, _ := os.ReadDir(sysDir)
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(sysDir, e.Name(), "device"))
		if err != nil {
			continue
		}
		id, err := strconv.ParseUint(strings.TrimSpace(string(data)), 0, 32)
		if err != nil {
			continue
		}
		_, err = os.Lstat(filepath.Join(sysDir, e.Name(), "driver"))
		devs[id] = devs[id] || err == nil
	}
	return devs
}

// channelPaths are where the agent looks for its channel; tests replace
// them.
type channelPaths struct {
	virtioBus   string // /sys/bus/virtio/devices
	virtioPorts string // /sys/class/virtio-ports
	portWait    time.Duration
	listenVsock func(port uint32) (net.Listener, error)
}

var guestChannel = channelPaths{
	virtioBus:   "/sys/bus/virtio/devices",
	virtioPorts: "/sys/class/virtio-ports",
	portWait:    portWait,
	listenVsock: listenVsock,
}

// listen finds the agent's channel to the shim and listens on it: the
// virtio-serial port named guestagent.PortName first (qemu), else the
// vsock port guestagent.VsockPort where the monitor gave the guest a
// virtio-vsock device (firecracker, cloud-hypervisor). A guest without a
// virtio console device does not wait for a port that cannot come. The
// error names the kernel option a missing driver needs.
func (p channelPaths) listen() (net.Listener, error) {
	devs := virtioDevices(p.virtioBus)
	_, console := devs[virtioConsole]
	vsockDriver, vsock := devs[virtioVsock]
	var serialErr error
	if console || !vsock {
		port, err := findPort(p.virtioPorts, guestagent.PortName, p.portWait)
		if err == nil {
			return newPortListener(port), nil
		}
		if !vsock {
			return nil, err
		}
		serialErr = fmt.Errorf("%w; ", err)
	}
	if !vsockDriver {
		return nil, fmt.Errorf("%sthe virtio-vsock device has no driver: the guest kernel has no virtio vsock transport (CONFIG_VIRTIO_VSOCKETS=y), so the agent has no channel to the shim", errText(serialErr))
	}
	ln, err := p.listenVsock(guestagent.VsockPort)
	if err != nil {
		return nil, fmt.Errorf("%s%w", errText(serialErr), err)
	}
	return ln, nil
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// listenVsock listens on port of every CID the guest has.
func listenVsock(port uint32) (net.Listener, error) {
	fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("vsock socket: %w: the guest kernel has no vsock (CONFIG_VSOCKETS=y, CONFIG_VIRTIO_VSOCKETS=y), so the agent has no channel to the shim", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrVM{CID: unix.VMADDR_CID_ANY, Port: port}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind vsock port %d: %w", port, err)
	}
	if err := unix.Listen(fd, 4); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("listen on vsock port %d: %w", port, err)
	}
	return newFDListener(fd, chanAddr{"vsock", "port " + strconv.FormatUint(uint64(port), 10)}, peerIsHost), nil
}

// peerIsHost admits a vsock connection only from the host (CID 2), the
// side where the monitor forwards the shim's connections: an app in the
// guest reaching the port over the kernel's loopback (its own CID, or
// CID 1) must not get the agent's service, which runs execs as any user.
func peerIsHost(fd int) error {
	sa, err := unix.Getpeername(fd)
	if err != nil {
		return fmt.Errorf("vsock peer: %w", err)
	}
	vm, ok := sa.(*unix.SockaddrVM)
	if !ok || vm.CID != unix.VMADDR_CID_HOST {
		return fmt.Errorf("vsock connection from %v refused: only the host's is served", sa)
	}
	return nil
}

// fdListener is a listening socket of a family the net package does not
// know (AF_VSOCK) as a net.Listener: accept waits in Go's poller, and
// each connection is a pollable file, so ttrpc's reads and writes and its
// deadlines work as on any socket. Connections admit refuses are closed
// at once. Several connections may be open at a time.
type fdListener struct {
	f     *os.File
	rc    syscall.RawConn
	addr  net.Addr
	admit func(fd int) error
}

// newFDListener takes fd, a non-blocking listening socket.
func newFDListener(fd int, addr net.Addr, admit func(fd int) error) *fdListener {
	f := os.NewFile(uintptr(fd), addr.String())
	rc, _ := f.SyscallConn()
	return &fdListener{f: f, rc: rc, addr: addr, admit: admit}
}

func (l *fdListener) Accept() (net.Conn, error) {
	for {
		var nfd int
		var aerr error
		err := l.rc.Read(func(fd uintptr) bool {
			nfd, _, aerr = unix.Accept4(int(fd), unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK)
			return !errors.Is(aerr, unix.EAGAIN)
		})
		if err != nil {
			return nil, net.ErrClosed
		}
		if aerr != nil {
			// An Errno is a net.Error: ttrpc retries the temporary
			// ones (ECONNABORTED, EMFILE).
			return nil, aerr
		}
		if l.admit != nil {
			if err := l.admit(nfd); err != nil {
				logf("%v", err)
				unix.Close(nfd)
				continue
			}
		}
		return &fileConn{File: os.NewFile(uintptr(nfd), l.addr.String()), addr: l.addr}, nil
	}
}

func (l *fdListener) Close() error   { return l.f.Close() }
func (l *fdListener) Addr() net.Addr { return l.addr }

// chanAddr names one end of a channel of the agent's.
type chanAddr struct{ network, name string }

func (a chanAddr) Network() string { return a.network }
func (a chanAddr) String() string  { return a.name }
