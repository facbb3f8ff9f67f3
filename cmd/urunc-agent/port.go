package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// findPort returns the device of the virtio-serial port named name,
// looking in sysDir (/sys/class/virtio-ports) for up to wait. A kernel
// without the virtio console driver has no such class at all, which is
// said by name at once.
func findPort(sysDir, name string, wait time.Duration) (string, error) {
	if _, err := os.Stat(sysDir); err != nil {
		return "", fmt.Errorf("no %s: the guest kernel has no virtio console driver (CONFIG_VIRTIO_CONSOLE=y), so the agent has no channel to the shim", sysDir)
	}
	deadline := time.Now().Add(wait)
	for {
		ports, _ := os.ReadDir(sysDir)
		for _, p := range ports {
			data, err := os.ReadFile(filepath.Join(sysDir, p.Name(), "name"))
			if err == nil && strings.TrimSpace(string(data)) == name {
				return "/dev/" + p.Name(), nil
			}
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no virtio-serial port named %s in %s after %s: the monitor gave the guest no agent channel", name, sysDir, wait)
		}
		// The driver adds ports as the host announces them, which is
		// not an event the agent can wait on.
		time.Sleep(10 * time.Millisecond)
	}
}

// portListener hands ttrpc the port as one connection at a time: the
// port opens once, and a host that goes away (a restarted shim) ends
// the connection, after which the next one waits for a host again.
type portListener struct {
	path   string
	open   func() (int, error) // opens the port, non-blocking
	free   chan struct{}       // holds a token while no connection is open
	closed chan struct{}
	once   sync.Once
}

func newPortListener(path string) *portListener {
	l := &portListener{path: path, free: make(chan struct{}, 1), closed: make(chan struct{}),
		open: func() (int, error) {
			return unix.Open(path, unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
		}}
	l.free <- struct{}{}
	return l
}

// hostPoll is how often the agent looks whether the host end of the port
// is open: the driver reports it only through poll's POLLHUP, which is
// set for as long as no host is there.
const hostPoll = 10 * time.Millisecond

func (l *portListener) Accept() (net.Conn, error) {
	select {
	case <-l.free:
	case <-l.closed:
		return nil, net.ErrClosed
	}
	fd, err := l.open()
	if err != nil {
		l.free <- struct{}{}
		return nil, fmt.Errorf("open %s: %w", l.path, err)
	}
	for {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN | unix.POLLOUT}}
		_, err := unix.Poll(fds, 0)
		if err == nil && fds[0].Revents&unix.POLLHUP == 0 {
			break
		}
		if err != nil && !errors.Is(err, unix.EINTR) {
			unix.Close(fd)
			l.free <- struct{}{}
			return nil, fmt.Errorf("poll %s: %w", l.path, err)
		}
		select {
		case <-l.closed:
			unix.Close(fd)
			return nil, net.ErrClosed
		case <-time.After(hostPoll):
		}
	}
	return &fileConn{File: os.NewFile(uintptr(fd), l.path), release: func() { l.free <- struct{}{} }}, nil
}

func (l *portListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *portListener) Addr() net.Addr { return portAddr(l.path) }

// fileConn is a character device, or a socket the net package does not
// know, as a net.Conn.
type fileConn struct {
	*os.File
	once    sync.Once
	release func()
	addr    net.Addr // nil: the virtio-serial port of the file's name
}

func (c *fileConn) Close() error {
	var err error
	c.once.Do(func() {
		err = c.File.Close()
		if c.release != nil {
			c.release()
		}
	})
	return err
}

func (c *fileConn) LocalAddr() net.Addr {
	if c.addr != nil {
		return c.addr
	}
	return portAddr(c.Name())
}
func (c *fileConn) RemoteAddr() net.Addr { return portAddr("host") }

type portAddr string

func (a portAddr) Network() string { return "virtio-serial" }
func (a portAddr) String() string  { return string(a) }
