// Package network gives a guest the container's network: it picks the
// container's interface and the ports the guest serves at the pod's
// localhost, and removes the tap and the pod-local path on delete.
package network

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

	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/launch"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/lifecycle"
)

// The guest takes over the container's network interface: a tap for the
// guest is joined to the interface with tc (an ingress qdisc on each and a
// mirred egress redirect each way), so every frame crosses between them
// while the interface keeps its address, as CNI set it up. The guest gets
// the interface's IPv4 address, prefix, gateway and MAC.

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

// ErrLinkTaken means another guest already took the interface over.
var ErrLinkTaken = launch.ErrLinkTaken

// Discover finds the container's interface in the namespace at
// nsPath: eth0, or else the single non-loopback interface with an IPv4
// address. It returns nil when there is none (a container with only
// loopback runs with no guest network).
func Discover(nsPath, id string) (*launch.Network, error) {
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
			return nil, fmt.Errorf("network namespace %s: %w", nsPath, launch.LinkTakenError(h, chosen))
		}
	}
	plan := &launch.Network{
		Container: id,
		Netns:     nsPath,
		Link:      chosen.Attrs().Name,
		Tap:       tapName(id),
		MAC:       chosen.Attrs().HardwareAddr.String(),
		MTU:       chosen.Attrs().MTU,
		Address:   addr.IP.String(),
		Mask:      net.IP(addr.Mask).String(),
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

// Remove undoes launch.SetupTap from outside the namespace. A namespace
// that is gone took the tap with it; everything missing is fine, so it is
// idempotent. A namespace known only through the monitor's pid is entered
// only while that pid is still the monitor: a reused pid would lead into
// another container's namespace.
func Remove(t lifecycle.Tap, monitorPid int, monitorStart uint64) error {
	if t.ViaPid && !lifecycle.SameProcess(monitorPid, monitorStart) {
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
	// Only what this container made goes: its pod-local tables (named
	// after its tap), its tap with the rest of that path, and, while the
	// interface's ingress still redirects to that tap, the interface's
	// ingress qdisc. Another guest's claim on the interface (one that won
	// a race with this container's Create) is never removed.
	var errs []error
	if err := launch.RemovePodLocal(int(ns), t.Name); err != nil {
		errs = append(errs, fmt.Errorf("remove the pod-local path of %s: %w", t.Name, err))
	}
	tap, err := h.LinkByName(t.Name)
	if err != nil {
		return errors.Join(errs...)
	}
	if link, err := h.LinkByName(t.Link); err == nil && launch.RedirectsTo(h, link, tap.Attrs().Index) {
		if err := ignoreNotExist(h.QdiscDel(launch.IngressQdisc(link))); err != nil {
			errs = append(errs, fmt.Errorf("remove ingress qdisc of %s: %w", t.Link, err))
		}
	}
	if err := h.LinkDel(tap); err != nil {
		errs = append(errs, fmt.Errorf("delete tap %s: %w", t.Name, err))
	}
	return errors.Join(errs...)
}

func ignoreNotExist(err error) error {
	if err == nil || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EINVAL) || errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}
