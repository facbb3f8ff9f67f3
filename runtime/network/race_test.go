package network

import (
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/launch"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/lifecycle"
)

// inNewNetns runs f on a thread of its own in a new network namespace
// holding eth0 (one end of a veth, with an address from 198.18.0.0/15);
// the thread is discarded afterwards, so the test's namespace is never
// changed.
func inNewNetns(t *testing.T, f func(nsPath string)) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a network namespace and taps")
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Never unlocked: the goroutine's exit ends the thread and its
		// namespace with it.
		runtime.LockOSThread()
		ns, err := netns.New()
		if err != nil {
			t.Errorf("new network namespace: %v", err)
			return
		}
		defer ns.Close()
		eth0 := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "peer0"}
		if err := netlink.LinkAdd(eth0); err != nil {
			t.Errorf("add eth0: %v", err)
			return
		}
		addr, _ := netlink.ParseAddr("198.18.40.2/24")
		if err := netlink.AddrAdd(eth0, addr); err != nil {
			t.Errorf("address eth0: %v", err)
			return
		}
		if err := netlink.LinkSetUp(eth0); err != nil {
			t.Errorf("bring eth0 up: %v", err)
			return
		}
		f(fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid()))
	}()
	<-done
}

// eth0Claim describes eth0's ingress: its qdisc and the taps it
// redirects to.
func eth0Claim(t *testing.T) string {
	t.Helper()
	link, err := netlink.LinkByName("eth0")
	if err != nil {
		t.Fatalf("eth0: %v", err)
	}
	qdiscs, _ := netlink.QdiscList(link)
	var out []string
	for _, q := range qdiscs {
		if q.Type() == "ingress" {
			out = append(out, "ingress")
		}
	}
	h := &netlink.Handle{}
	if tap, err := netlink.LinkByName(tapName("winner")); err == nil && launch.RedirectsTo(h, link, tap.Attrs().Index) {
		out = append(out, "redirect to the winner's tap")
	}
	return strings.Join(out, ", ")
}

// Two guests racing for one interface, both past Discover's check: the
// one whose set-up comes second is refused, naming the first, and neither
// its failed set-up nor its release removes the first's claim; the
// first's release removes everything.
func TestSecondGuestNeverRemovesFirstsNetwork(t *testing.T) {
	inNewNetns(t, func(nsPath string) {
		var plans []*launch.Network
		for _, id := range []string{"winner", "loser"} {
			n, err := Discover(nsPath, id)
			if err != nil || n == nil {
				t.Errorf("discover for %s: %v, %v", id, n, err)
				return
			}
			n.Owner, n.Group = uint32(os.Geteuid()), uint32(os.Getegid())
			plans = append(plans, n)
		}
		winner, loser := plans[0], plans[1]
		if err := launch.SetupTap(winner); err != nil {
			t.Errorf("the first guest's set-up: %v", err)
			return
		}
		const claimed = "ingress, redirect to the winner's tap"
		if got := eth0Claim(t); got != claimed {
			t.Errorf("after the first set-up, eth0: %q", got)
		}
		err := launch.SetupTap(loser)
		if !errors.Is(err, ErrLinkTaken) || !strings.Contains(err.Error(), "container winner") {
			t.Errorf("the second guest's set-up: %v, want it refused naming container winner", err)
		}
		if got := eth0Claim(t); got != claimed {
			t.Errorf("after the second guest's failed set-up, eth0: %q, want %q", got, claimed)
		}
		if _, err := netlink.LinkByName(loser.Tap); err == nil {
			t.Errorf("the refused guest left its tap")
		}
		// A later Create is refused at Discover, naming the holder.
		if _, err := Discover(nsPath, "third"); !errors.Is(err, ErrLinkTaken) || !strings.Contains(err.Error(), "container winner") {
			t.Errorf("a third guest's discovery: %v, want it refused naming container winner", err)
		}
		tapOf := func(n *launch.Network) lifecycle.Tap {
			return lifecycle.Tap{Name: n.Tap, Netns: nsPath, Link: n.Link}
		}
		if err := Remove(tapOf(loser), 0, 0); err != nil {
			t.Errorf("the second guest's release: %v", err)
		}
		if got := eth0Claim(t); got != claimed {
			t.Errorf("after the second guest's release, eth0: %q, want %q", got, claimed)
		}
		if err := Remove(tapOf(winner), 0, 0); err != nil {
			t.Errorf("the first guest's release: %v", err)
		}
		if got := eth0Claim(t); got != "" {
			t.Errorf("after the first guest's release, eth0: %q", got)
		}
		links, _ := netlink.LinkList()
		for _, l := range links {
			if strings.HasPrefix(l.Attrs().Name, "urtap") {
				t.Errorf("tap %s left", l.Attrs().Name)
			}
		}
		if link, _ := netlink.LinkByName("eth0"); link != nil {
			addrs, _ := netlink.AddrList(link, netlink.FAMILY_V4)
			if len(addrs) != 1 || !addrs[0].IP.Equal(net.ParseIP("198.18.40.2")) {
				t.Errorf("eth0's addresses: %v", addrs)
			}
		}
	})
}
