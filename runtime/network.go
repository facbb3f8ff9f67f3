package runtime

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// The guest takes over the container's network interface: a tap for the
// guest is joined to the interface with tc (an ingress qdisc on each and a
// mirred egress redirect each way), so every frame crosses between them
// while the interface keeps its address, as CNI set it up. The guest gets
// the interface's IPv4 address, prefix, gateway and MAC.

// netPlan is the network a guest gets from the container's namespace.
type netPlan struct {
	Netns   string `json:"netns"` // a path to the namespace
	Link    string `json:"link"`  // the container interface
	Tap     string `json:"tap"`
	MAC     string `json:"mac"`
	MTU     int    `json:"mtu"`
	Owner   uint32 `json:"owner"` // uid the monitor runs as
	Address string `json:"-"`
	Mask    string `json:"-"`
	Gateway string `json:"-"`
}

// linkCandidate is a non-loopback interface with an IPv4 address.
type linkCandidate struct {
	name string
	link netlink.Link
	addr netlink.Addr
}

// chooseLink picks the container's interface: eth0 if it is a candidate,
// else the only candidate; with several and no eth0 there is no telling
// which one the guest should take, and it gets none.
func chooseLink(candidates []linkCandidate) *linkCandidate {
	for i := range candidates {
		if candidates[i].name == "eth0" {
			return &candidates[i]
		}
	}
	if len(candidates) == 1 {
		return &candidates[0]
	}
	return nil
}

// tapName is unique to the container, so that two unikernel containers in
// one network namespace never collide, and fits IFNAMSIZ.
func tapName(id string) string {
	sum := sha256.Sum256([]byte(id))
	return "urtap" + hex.EncodeToString(sum[:])[:10]
}

// errLinkTaken means another guest already took the interface over.
var errLinkTaken = errors.New("the container interface already carries a guest")

// discoverNetwork finds the container's interface in the namespace at
// nsPath: eth0, or else the single non-loopback interface with an IPv4
// address. It returns nil when there is none (a container with only
// loopback runs with no guest network).
func discoverNetwork(nsPath, id string) (*netPlan, error) {
	ns, err := netns.GetFromPath(nsPath)
	if err != nil {
		return nil, fmt.Errorf("open network namespace %s: %w", nsPath, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, fmt.Errorf("netlink in %s: %w", nsPath, err)
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list interfaces in %s: %w", nsPath, err)
	}
	var candidates []linkCandidate
	for _, l := range links {
		if l.Attrs().Flags&net.FlagLoopback != 0 || l.Type() == "tuntap" {
			continue
		}
		addrs, err := h.AddrList(l, netlink.FAMILY_V4)
		if err != nil || len(addrs) == 0 {
			continue
		}
		candidates = append(candidates, linkCandidate{name: l.Attrs().Name, link: l, addr: addrs[0]})
	}
	picked := chooseLink(candidates)
	if picked == nil {
		return nil, nil
	}
	chosen, addr := picked.link, &picked.addr
	qdiscs, err := h.QdiscList(chosen)
	if err != nil {
		return nil, fmt.Errorf("list qdiscs of %s: %w", chosen.Attrs().Name, err)
	}
	for _, q := range qdiscs {
		if q.Type() == "ingress" {
			return nil, fmt.Errorf("%s in %s: %w", chosen.Attrs().Name, nsPath, errLinkTaken)
		}
	}
	plan := &netPlan{
		Netns:   nsPath,
		Link:    chosen.Attrs().Name,
		Tap:     tapName(id),
		MAC:     chosen.Attrs().HardwareAddr.String(),
		MTU:     chosen.Attrs().MTU,
		Address: addr.IP.String(),
		Mask:    net.IP(addr.Mask).String(),
	}
	routes, err := h.RouteList(chosen, netlink.FAMILY_V4)
	if err == nil {
		for _, r := range routes {
			if (r.Dst == nil || r.Dst.IP.IsUnspecified()) && r.Gw != nil {
				plan.Gateway = r.Gw.String()
			}
		}
	}
	return plan, nil
}

// setupTap creates the tap and the tc redirects in the current network
// namespace; the launcher runs it, already inside the container's
// namespace, so the tap is born there.
func setupTap(n *netPlan) (retErr error) {
	link, err := netlink.LinkByName(n.Link)
	if err != nil {
		return fmt.Errorf("container interface %s: %w", n.Link, err)
	}
	tap := &netlink.Tuntap{
		LinkAttrs: netlink.LinkAttrs{Name: n.Tap, MTU: n.MTU},
		Mode:      netlink.TUNTAP_MODE_TAP,
		Flags:     netlink.TUNTAP_NO_PI | netlink.TUNTAP_VNET_HDR,
		Owner:     n.Owner,
		Group:     n.Owner,
	}
	if err := netlink.LinkAdd(tap); err != nil {
		return fmt.Errorf("create tap %s: %w", n.Tap, err)
	}
	defer func() {
		if retErr != nil {
			_ = netlink.LinkDel(tap)
			_ = netlink.QdiscDel(ingressQdisc(link))
		}
	}()
	tapLink, err := netlink.LinkByName(n.Tap)
	if err != nil {
		return err
	}
	if err := netlink.LinkSetUp(tapLink); err != nil {
		return fmt.Errorf("bring up tap %s: %w", n.Tap, err)
	}
	for _, pair := range [][2]netlink.Link{{link, tapLink}, {tapLink, link}} {
		if err := redirect(pair[0], pair[1]); err != nil {
			return err
		}
	}
	return nil
}

// redirect sends every frame arriving at from out of to.
func redirect(from, to netlink.Link) error {
	if err := netlink.QdiscAdd(ingressQdisc(from)); err != nil {
		return fmt.Errorf("add ingress qdisc to %s: %w", from.Attrs().Name, err)
	}
	filter := &netlink.U32{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: from.Attrs().Index,
			Parent:    netlink.MakeHandle(0xffff, 0),
			Priority:  1,
			Protocol:  unix.ETH_P_ALL,
		},
		Sel: &netlink.TcU32Sel{
			Flags: netlink.TC_U32_TERMINAL,
			Keys:  []netlink.TcU32Key{{Mask: 0, Val: 0, Off: 0}},
		},
		Actions: []netlink.Action{netlink.NewMirredAction(to.Attrs().Index)},
	}
	if err := netlink.FilterAdd(filter); err != nil {
		return fmt.Errorf("redirect %s to %s: %w", from.Attrs().Name, to.Attrs().Name, err)
	}
	return nil
}

// ingressQdisc is the ingress qdisc of link.
func ingressQdisc(link netlink.Link) *netlink.Ingress {
	return &netlink.Ingress{QdiscAttrs: netlink.QdiscAttrs{
		LinkIndex: link.Attrs().Index,
		Handle:    netlink.MakeHandle(0xffff, 0),
		Parent:    netlink.HANDLE_INGRESS,
	}}
}

// removeNetwork undoes setupTap from outside the namespace. A namespace
// that is gone took the tap with it; everything missing is fine, so it is
// idempotent. A namespace known only through the monitor's pid is entered
// only while that pid is still the monitor: a reused pid would lead into
// another container's namespace.
func removeNetwork(t Tap, monitorPid int, monitorStart uint64) error {
	if t.ViaPid && !sameProcess(monitorPid, monitorStart) {
		return nil
	}
	ns, err := netns.GetFromPath(t.Netns)
	if err != nil {
		return nil
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("netlink in %s: %w", t.Netns, err)
	}
	defer h.Close()
	var errs []error
	if tap, err := h.LinkByName(t.Name); err == nil {
		if err := h.LinkDel(tap); err != nil {
			errs = append(errs, fmt.Errorf("delete tap %s: %w", t.Name, err))
		}
	}
	if link, err := h.LinkByName(t.Link); err == nil {
		if err := ignoreNotExist(h.QdiscDel(ingressQdisc(link))); err != nil {
			errs = append(errs, fmt.Errorf("remove ingress qdisc of %s: %w", t.Link, err))
		}
	}
	return errors.Join(errs...)
}

func ignoreNotExist(err error) error {
	if err == nil || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EINVAL) || errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}
