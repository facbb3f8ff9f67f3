package network

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/launch"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/lifecycle"
)

const (
	standInPodIP   = "198.18.40.2"
	standInGateway = "198.18.40.1"
)

// openTap attaches to the tap named name (creating it in the calling
// thread's namespace if there is none) as a monitor does: no packet
// information, a virtio-net header.
func openTap(name string) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("attach to tap %s: %w", name, err)
	}
	// Handed to Go's poller only once attached: a tun descriptor polled
	// before is never woken.
	return os.NewFile(uintptr(fd), name), nil
}

// standInGuest is a guest's network stack for the test: a namespace of its
// own whose tap holds the pod IP and the pod interface's MAC, as a guest
// that took the interface over does; frames are copied between its tap
// and the pod's, as a monitor copies them between the tap and the guest.
// It answers TCP with what it saw (its own address and the peer's) and
// echoes UDP.
type standInGuest struct {
	nsPath string
	stop   chan struct{}
	done   chan struct{}
}

func startStandInGuest(t *testing.T, podTap *os.File, mac string, port int) *standInGuest {
	t.Helper()
	g := &standInGuest{stop: make(chan struct{}), done: make(chan struct{})}
	ready := make(chan error, 1)
	go func() {
		defer close(g.done)
		// Never unlocked: the thread and its namespace end with it.
		runtime.LockOSThread()
		ns, err := netns.New()
		if err != nil {
			ready <- err
			return
		}
		defer ns.Close()
		var closers []io.Closer
		defer func() {
			for _, c := range closers {
				c.Close()
			}
		}()
		g.nsPath = fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid())
		guestTap, err := openTap("guest0")
		if err != nil {
			ready <- err
			return
		}
		closers = append(closers, guestTap)
		if err := configureStandIn(mac); err != nil {
			ready <- err
			return
		}
		ln, err := net.Listen("tcp4", fmt.Sprintf("%s:%d", standInPodIP, port))
		if err != nil {
			ready <- err
			return
		}
		closers = append(closers, ln)
		udp, err := net.ListenPacket("udp4", fmt.Sprintf("%s:%d", standInPodIP, port))
		if err != nil {
			ready <- err
			return
		}
		closers = append(closers, udp)
		closers = append(closers, podTap)
		go copyFrames(podTap, guestTap)
		go copyFrames(guestTap, podTap)
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				fmt.Fprintf(c, "guest at %s from %s", c.LocalAddr(), c.RemoteAddr())
				c.Close()
			}
		}()
		go func() {
			buf := make([]byte, 1500)
			for {
				n, from, err := udp.ReadFrom(buf)
				if err != nil {
					return
				}
				_, _ = udp.WriteTo(append([]byte("guest echoes "), buf[:n]...), from)
			}
		}()
		ready <- nil
		<-g.stop
	}()
	if err := <-ready; err != nil {
		t.Fatalf("stand-in guest: %v", err)
	}
	return g
}

func configureStandIn(mac string) error {
	link, err := netlink.LinkByName("guest0")
	if err != nil {
		return err
	}
	hw, err := net.ParseMAC(mac)
	if err != nil {
		return err
	}
	if err := netlink.LinkSetHardwareAddr(link, hw); err != nil {
		return err
	}
	addr, _ := netlink.ParseAddr(standInPodIP + "/24")
	if err := netlink.AddrAdd(link, addr); err != nil {
		return err
	}
	for _, l := range []string{"lo", "guest0"} {
		if l, err := netlink.LinkByName(l); err != nil || netlink.LinkSetUp(l) != nil {
			return fmt.Errorf("bring %s up: %v", l, err)
		}
	}
	// The gateway is never there; its MAC is one the pod never owns, as
	// a real gateway's is.
	gwMAC, _ := net.ParseMAC("02:00:00:00:00:01")
	if err := netlink.NeighSet(&netlink.Neigh{LinkIndex: link.Attrs().Index, Family: netlink.FAMILY_V4,
		State: netlink.NUD_PERMANENT, IP: net.ParseIP(standInGateway), HardwareAddr: gwMAC}); err != nil {
		return err
	}
	return netlink.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Gw: net.ParseIP(standInGateway)})
}

func copyFrames(from, to *os.File) {
	buf := make([]byte, 70000)
	for {
		n, err := from.Read(buf)
		if err != nil {
			return
		}
		if _, err := to.Write(buf[:n]); err != nil && errors.Is(err, os.ErrClosed) {
			return
		}
	}
}

func (g *standInGuest) close() {
	close(g.stop)
	<-g.done
}

// askTCP connects from the calling thread's namespace and returns what
// the peer said.
func askTCP(addr string) (string, error) {
	c, err := net.DialTimeout("tcp4", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	return string(b), err
}

func askUDP(addr, msg string) (string, error) {
	c, err := net.DialTimeout("udp4", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		return "", err
	}
	buf := make([]byte, 1500)
	n, err := c.Read(buf)
	return string(buf[:n]), err
}

func nftTables(t *testing.T) []string {
	t.Helper()
	conn, err := nftables.New()
	if err != nil {
		t.Fatalf("nftables: %v", err)
	}
	tables, err := conn.ListTables()
	if err != nil {
		t.Fatalf("list nftables tables: %v", err)
	}
	var out []string
	for _, tb := range tables {
		out = append(out, tb.Name)
	}
	return out
}

// The pod's own processes reach the guest as containers of one pod reach
// each other: at the pod IP on any port and at 127.0.0.1 on the guest's
// declared ports, TCP and UDP, and the guest sees them come to the pod
// IP. Other localhost ports stay the pod's. Remove leaves no table, and
// the guest behind the tap is a stand-in with a Linux stack (the
// integration tests use a real guest).
func TestPodLocalPathReachesTheGuest(t *testing.T) {
	inNewNetns(t, func(nsPath string) {
		lo, err := netlink.LinkByName("lo")
		if err == nil {
			err = netlink.LinkSetUp(lo)
		}
		if err != nil {
			t.Errorf("bring lo up: %v", err)
			return
		}
		n, err := Discover(nsPath, "podlocal")
		if err != nil || n == nil {
			t.Errorf("discover: %v, %v", n, err)
			return
		}
		n.Owner, n.Group = uint32(os.Geteuid()), uint32(os.Getegid())
		// A free port, declared for the guest, TCP and UDP.
		probe, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Errorf("pick a port: %v", err)
			return
		}
		port := probe.Addr().(*net.TCPAddr).Port
		probe.Close()
		n.LocalPorts = []launch.LocalPort{{Protocol: "TCP", Port: uint16(port)}, {Protocol: "UDP", Port: uint16(port)}}
		if err := launch.SetupTap(n); err != nil {
			t.Errorf("set-up: %v", err)
			return
		}
		tap := lifecycle.Tap{Name: n.Tap, Netns: nsPath, Link: n.Link}
		defer func() { _ = Remove(tap, 0, 0) }()
		podTap, err := openTap(n.Tap)
		if err != nil {
			t.Errorf("open the pod's tap: %v", err)
			return
		}
		g := startStandInGuest(t, podTap, n.MAC, port)
		defer g.close()
		// A port of the pod's own at localhost, which the guest never
		// takes.
		local, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Errorf("listen at localhost: %v", err)
			return
		}
		defer local.Close()
		go func() {
			for {
				c, err := local.Accept()
				if err != nil {
					return
				}
				fmt.Fprint(c, "the pod's own")
				c.Close()
			}
		}()

		want := fmt.Sprintf("guest at %s:%d from 169.254.77.1:", standInPodIP, port)
		for _, addr := range []string{fmt.Sprintf("%s:%d", standInPodIP, port), fmt.Sprintf("127.0.0.1:%d", port)} {
			if got, err := askTCP(addr); err != nil || !strings.HasPrefix(got, want) {
				t.Errorf("TCP to %s from the pod: %q, %v; want %q…", addr, got, err, want)
			}
			if got, err := askUDP(addr, "hello"); err != nil || got != "guest echoes hello" {
				t.Errorf("UDP to %s from the pod: %q, %v", addr, got, err)
			}
		}
		if t.Failed() {
			for _, ns := range []string{nsPath, g.nsPath} {
				out, _ := exec.Command("nsenter", "--net="+ns, "sh", "-c", "ip -br addr; ip route; ip neigh; tc -s filter show dev "+n.Tap+" ingress; tc -s filter show dev eth0 ingress; nft list ruleset; cat /proc/net/nf_conntrack; nstat -az | grep -v ' 0 '; ip -s link").CombinedOutput()
				t.Logf("namespace %s:\n%s", ns, out)
			}
		}
		if got, err := askTCP(local.Addr().String()); err != nil || got != "the pod's own" {
			t.Errorf("the pod's own localhost port: %q, %v", got, err)
		}
		if tables := nftTables(t); len(tables) != 2 || tables[0] != n.Tap || tables[1] != n.Tap {
			t.Errorf("nftables tables after the set-up: %v, want two named %s", tables, n.Tap)
		}
		if err := Remove(tap, 0, 0); err != nil {
			t.Errorf("remove: %v", err)
		}
		if tables := nftTables(t); len(tables) != 0 {
			t.Errorf("nftables tables after remove: %v", tables)
		}
	})
}
