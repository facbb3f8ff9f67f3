package launch

import (
	"fmt"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The guest takes over the container's network interface: a tap for the
// guest is joined to the interface with tc (an ingress qdisc on each and a
// mirred egress redirect each way), so every frame crosses between them
// while the interface keeps its address, as CNI set it up.

// Network is the network a guest gets from the container's namespace.
type Network struct {
	Netns   string `json:"netns"` // a path to the namespace
	Link    string `json:"link"`  // the container interface
	Tap     string `json:"tap"`
	MAC     string `json:"mac"`
	MTU     int    `json:"mtu"`
	Owner   uint32 `json:"owner"` // uid the monitor runs as
	Group   uint32 `json:"group"` // gid the monitor runs as
	Address string `json:"-"`
	Mask    string `json:"-"`
	Gateway string `json:"-"`
}

// SetupTap creates the tap and the tc redirects in the current network
// namespace; the launcher runs it, already inside the container's
// namespace, so the tap is born there.
func SetupTap(n *Network) (retErr error) {
	link, err := netlink.LinkByName(n.Link)
	if err != nil {
		return fmt.Errorf("container interface %s: %w", n.Link, err)
	}
	tap := &netlink.Tuntap{
		LinkAttrs: netlink.LinkAttrs{Name: n.Tap, MTU: n.MTU},
		Mode:      netlink.TUNTAP_MODE_TAP,
		Flags:     netlink.TUNTAP_NO_PI | netlink.TUNTAP_VNET_HDR,
		Owner:     n.Owner,
		// The kernel lets the owner or a member of the group open the tap;
		// the netlink package always sets a group, so it is the monitor's
		// own, never another principal's (a uid taken for a gid).
		Group: n.Group,
	}
	if err := netlink.LinkAdd(tap); err != nil {
		return fmt.Errorf("create tap %s: %w", n.Tap, err)
	}
	defer func() {
		if retErr != nil {
			_ = netlink.LinkDel(tap)
			_ = netlink.QdiscDel(IngressQdisc(link))
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
	if err := netlink.QdiscAdd(IngressQdisc(from)); err != nil {
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

// IngressQdisc is the ingress qdisc of link.
func IngressQdisc(link netlink.Link) *netlink.Ingress {
	return &netlink.Ingress{QdiscAttrs: netlink.QdiscAttrs{
		LinkIndex: link.Attrs().Index,
		Handle:    netlink.MakeHandle(0xffff, 0),
		Parent:    netlink.HANDLE_INGRESS,
	}}
}
