package launch

import (
	"errors"
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
	Netns string `json:"netns"` // a path to the namespace
	Link  string `json:"link"`  // the container interface
	Tap   string `json:"tap"`
	MAC   string `json:"mac"`
	MTU   int    `json:"mtu"`
	// Container is the container's ID, the tap's alias.
	Container string `json:"container,omitempty"`
	Owner     uint32 `json:"owner"` // uid the monitor runs as
	Group     uint32 `json:"group"` // gid the monitor runs as
	Address   string `json:"-"`
	Mask      string `json:"-"`
	Gateway   string `json:"-"`
	// LocalPorts are the ports the guest serves at the pod's 127.0.0.1
	// (the pod-local path, podlocal.go).
	LocalPorts []LocalPort `json:"localPorts,omitempty"`
}

// ErrLinkTaken means another guest already took the container interface
// over: a pod's network carries one unikernel guest.
var ErrLinkTaken = errors.New("the container interface already carries another guest (one unikernel container per pod network)")

// SetupTap creates the tap, the tc redirects and the pod-local path in
// the current network namespace; the launcher runs it, already inside
// the container's namespace, so the tap is born there. On failure it
// undoes only what it made itself.
func SetupTap(n *Network) (retErr error) {
	link, err := netlink.LinkByName(n.Link)
	if err != nil {
		return fmt.Errorf("container interface %s: %w", n.Link, err)
	}
	// The interface's ingress qdisc is the claim on it: the kernel adds
	// it exclusively, so of two guests racing for one interface one wins,
	// and the other fails here, having made nothing it must undo, and
	// never removes the winner's.
	if err := netlink.QdiscAdd(IngressQdisc(link)); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return LinkTakenError(&netlink.Handle{}, link)
		}
		return fmt.Errorf("add ingress qdisc to %s: %w", n.Link, err)
	}
	defer func() {
		if retErr != nil {
			_ = netlink.QdiscDel(IngressQdisc(link))
		}
	}()
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
		}
	}()
	tapLink, err := netlink.LinkByName(n.Tap)
	if err != nil {
		return err
	}
	// The alias names the container, for the refusal a second guest gets.
	if n.Container != "" {
		if err := netlink.LinkSetAlias(tapLink, n.Container); err != nil {
			return fmt.Errorf("name tap %s after its container: %w", n.Tap, err)
		}
	}
	if err := netlink.LinkSetUp(tapLink); err != nil {
		return fmt.Errorf("bring up tap %s: %w", n.Tap, err)
	}
	if err := redirectFilter(link, tapLink, 1); err != nil {
		return err
	}
	if err := netlink.QdiscAdd(IngressQdisc(tapLink)); err != nil {
		return fmt.Errorf("add ingress qdisc to %s: %w", n.Tap, err)
	}
	if err := redirectFilter(tapLink, link, tapRedirectPriority); err != nil {
		return err
	}
	// Last, as it undoes its own tables on failure and nothing after it
	// can fail.
	return setupPodLocal(n, link, tapLink)
}

// LinkTakenError says which guest holds link: the container its tap
// names, else the tap, else that its holder is unknown.
func LinkTakenError(h *netlink.Handle, link netlink.Link) error {
	// An ingress qdisc without a redirect yet is a guest still being set
	// up, or something else that owns the interface's ingress.
	holder := "another guest being set up, or a holder this runtime does not know"
	if tap := redirectTarget(h, link); tap != nil {
		holder = "tap " + tap.Attrs().Name
		if alias := tap.Attrs().Alias; alias != "" {
			holder = "container " + alias + " (" + holder + ")"
		}
	}
	return fmt.Errorf("%s is taken by %s: %w", link.Attrs().Name, holder, ErrLinkTaken)
}

// RedirectsTo tells whether link's ingress redirects its frames to the
// interface at index: whether that interface's guest holds link.
func RedirectsTo(h *netlink.Handle, link netlink.Link, index int) bool {
	for _, i := range redirectTargets(h, link) {
		if i == index {
			return true
		}
	}
	return false
}

// redirectTarget is the interface link's ingress redirects to, if any.
func redirectTarget(h *netlink.Handle, link netlink.Link) netlink.Link {
	for _, i := range redirectTargets(h, link) {
		if l, err := h.LinkByIndex(i); err == nil {
			return l
		}
	}
	return nil
}

func redirectTargets(h *netlink.Handle, link netlink.Link) []int {
	filters, err := h.FilterList(link, netlink.MakeHandle(0xffff, 0))
	if err != nil {
		return nil
	}
	var out []int
	for _, f := range filters {
		u, ok := f.(*netlink.U32)
		if !ok {
			continue
		}
		for _, a := range u.Actions {
			if m, ok := a.(*netlink.MirredAction); ok {
				out = append(out, m.Ifindex)
			}
		}
	}
	return out
}

// redirectFilter sends every frame arriving at from (whose ingress qdisc
// is there) out of to, unless a filter of a lower priority took it.
func redirectFilter(from, to netlink.Link, priority uint16) error {
	filter := &netlink.U32{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: from.Attrs().Index,
			Parent:    netlink.MakeHandle(0xffff, 0),
			Priority:  priority,
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
