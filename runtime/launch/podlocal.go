package launch

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The pod-local path: the pod's own processes (sidecars, exec probes)
// reach the guest as containers of one pod reach each other. The guest
// owns the pod IP for every frame that crosses the interface, but a
// packet the namespace itself sends to the pod IP (or to localhost) is
// delivered to the namespace's own stack and refused. So, in the
// namespace, beside the tap and removed with it:
//
//   - the guest is reached at a link-local alias (guestAlias) routed out
//     of the tap to the guest's MAC, from a link-local address of the
//     namespace's on the tap (podSide);
//   - nat output: locally sent packets to the pod IP (any port) and to
//     127.0.0.1 at the guest's declared ports go to guestAlias; nat
//     postrouting: their source becomes podSide, which the guest answers
//     through its gateway;
//   - after source NAT, the destination is written back to the pod IP,
//     the only address the guest accepts;
//   - the guest's answers to podSide stay in the namespace (a u32 filter
//     ahead of the tap's redirect), and at the tap's netdev ingress their
//     source becomes guestAlias and their type host (they carry the
//     gateway's MAC), before conntrack undoes both translations.
//
// Traffic from outside the pod never enters the namespace's stack and
// never meets these rules. IPv4 only: the guest takes an IPv4 address.

var (
	// podSide is the namespace's address on the tap.
	podSide = net.IPv4(169, 254, 77, 1).To4()
	// guestAlias is the guest, as the namespace addresses it.
	guestAlias = net.IPv4(169, 254, 77, 2).To4()
	localhost  = net.IPv4(127, 0, 0, 1).To4()
)

// LocalPort is a port the guest serves at the pod's localhost.
type LocalPort struct {
	Protocol string `json:"protocol"` // TCP, UDP or SCTP
	Port     uint16 `json:"port"`
}

func (p LocalPort) ipProto() (byte, error) {
	switch p.Protocol {
	case "TCP", "":
		return unix.IPPROTO_TCP, nil
	case "UDP":
		return unix.IPPROTO_UDP, nil
	case "SCTP":
		return unix.IPPROTO_SCTP, nil
	}
	return 0, fmt.Errorf("port %d: protocol %q is none of TCP, UDP, SCTP", p.Port, p.Protocol)
}

// Tap filter priorities on the tap's ingress: the guest's answers to the
// namespace are kept ahead of the redirect that takes everything else.
const (
	keepPodLocalPriority = 1
	tapRedirectPriority  = 2
)

// podLocalTables are the nftables tables of the pod-local path of the
// guest behind tap: named after the tap, so that each container removes
// only its own.
func podLocalTables(tap string) []*nftables.Table {
	return []*nftables.Table{
		{Name: tap, Family: nftables.TableFamilyIPv4},
		{Name: tap, Family: nftables.TableFamilyNetdev},
	}
}

// setupPodLocal makes the pod-local path in the current namespace for the
// guest behind tap, which has taken link over. Its addresses, route,
// neighbour and filter go with the tap; its tables are removed on failure
// here and by RemovePodLocal.
func setupPodLocal(n *Network, link, tap netlink.Link) (retErr error) {
	addrs, err := netlink.AddrList(link, netlink.FAMILY_V4)
	if err != nil || len(addrs) == 0 {
		return fmt.Errorf("pod-local path: the IPv4 address of %s: %v", n.Link, err)
	}
	podIP := addrs[0].IP.To4()
	guestMAC, err := net.ParseMAC(n.MAC)
	if err != nil {
		return fmt.Errorf("pod-local path: guest MAC %q: %w", n.MAC, err)
	}
	if err := netlink.AddrAdd(tap, &netlink.Addr{IPNet: &net.IPNet{IP: podSide, Mask: net.CIDRMask(32, 32)}}); err != nil {
		return fmt.Errorf("pod-local path: address %s on %s: %w", podSide, n.Tap, err)
	}
	// A route through guestAlias as its own gateway: the neighbour is
	// looked up for guestAlias even after the destination is rewritten
	// to the pod IP, which the namespace holds itself.
	if err := netlink.RouteReplace(&netlink.Route{
		LinkIndex: tap.Attrs().Index,
		Dst:       &net.IPNet{IP: guestAlias, Mask: net.CIDRMask(32, 32)},
		Gw:        guestAlias,
		Flags:     int(netlink.FLAG_ONLINK),
		Src:       podSide,
	}); err != nil {
		return fmt.Errorf("pod-local path: route to %s on %s: %w", guestAlias, n.Tap, err)
	}
	if err := netlink.NeighSet(&netlink.Neigh{
		LinkIndex:    tap.Attrs().Index,
		Family:       netlink.FAMILY_V4,
		State:        netlink.NUD_PERMANENT,
		IP:           guestAlias,
		HardwareAddr: guestMAC,
	}); err != nil {
		return fmt.Errorf("pod-local path: neighbour %s on %s: %w", guestAlias, n.Tap, err)
	}
	// 127.0.0.1 may leave by the tap, and its answers come back by it.
	if err := os.WriteFile("/proc/sys/net/ipv4/conf/"+n.Tap+"/route_localnet", []byte("1"), 0o644); err != nil {
		return fmt.Errorf("pod-local path: route_localnet on %s: %w", n.Tap, err)
	}
	if err := keepPodLocalFilter(tap); err != nil {
		return err
	}
	ports := make([]portMatch, 0, len(n.LocalPorts))
	for _, p := range n.LocalPorts {
		proto, err := p.ipProto()
		if err != nil {
			return fmt.Errorf("pod-local path: %w", err)
		}
		ports = append(ports, portMatch{proto: proto, port: p.Port})
	}
	conn, err := nftables.New()
	if err != nil {
		return fmt.Errorf("pod-local path: nftables: %w", err)
	}
	defer func() {
		if retErr != nil {
			_ = removeTables(conn, n.Tap)
		}
	}()
	addPodLocalRules(conn, n.Tap, uint32(tap.Attrs().Index), podIP, ports)
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("pod-local path: nftables rules in %s: %w", n.Netns, err)
	}
	return nil
}

// keepPodLocalFilter lets the guest's answers to podSide into the
// namespace, ahead of the tap's redirect (a terminal match without an
// action passes the frame on: act_gact is not needed).
func keepPodLocalFilter(tap netlink.Link) error {
	filter := &netlink.U32{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: tap.Attrs().Index,
			Parent:    netlink.MakeHandle(0xffff, 0),
			Priority:  keepPodLocalPriority,
			Protocol:  unix.ETH_P_IP,
		},
		ClassId: netlink.MakeHandle(1, 1),
		Sel: &netlink.TcU32Sel{
			Flags: netlink.TC_U32_TERMINAL,
			// The destination address, 16 bytes into the IPv4 header.
			Keys: []netlink.TcU32Key{{Mask: 0xffffffff, Val: binary.BigEndian.Uint32(podSide), Off: 16}},
		},
	}
	if err := netlink.FilterAdd(filter); err != nil {
		return fmt.Errorf("pod-local path: keep answers to %s on %s: %w", podSide, tap.Attrs().Name, err)
	}
	return nil
}

type portMatch struct {
	proto byte
	port  uint16
}

// addPodLocalRules queues the two tables of the pod-local path on conn.
func addPodLocalRules(conn *nftables.Conn, tapName string, tapIndex uint32, podIP net.IP, ports []portMatch) {
	tables := podLocalTables(tapName)
	ip, netdev := conn.AddTable(tables[0]), conn.AddTable(tables[1])
	accept := nftables.ChainPolicyAccept

	output := conn.AddChain(&nftables.Chain{Name: "output", Table: ip, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityNATDest, Policy: &accept})
	conn.AddRule(&nftables.Rule{Table: ip, Chain: output, Exprs: concat(
		loadIP(ipDst), eq(podIP),
		dnatTo(guestAlias),
	)})
	for _, p := range ports {
		conn.AddRule(&nftables.Rule{Table: ip, Chain: output, Exprs: concat(
			loadIP(ipDst), eq(localhost),
			[]expr.Any{&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}}, eq([]byte{p.proto}),
			[]expr.Any{&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2}},
			eq(binaryutil.BigEndian.PutUint16(p.port)),
			dnatTo(guestAlias),
		)})
	}

	postrouting := conn.AddChain(&nftables.Chain{Name: "postrouting", Table: ip, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource, Policy: &accept})
	toGuest := concat(
		[]expr.Any{&expr.Meta{Key: expr.MetaKeyOIF, Register: 1}}, eq(binaryutil.NativeEndian.PutUint32(tapIndex)),
		loadIP(ipDst), eq(guestAlias),
	)
	conn.AddRule(&nftables.Rule{Table: ip, Chain: postrouting, Exprs: concat(toGuest,
		[]expr.Any{
			&expr.Immediate{Register: 1, Data: podSide},
			&expr.NAT{Type: expr.NATTypeSourceNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1},
		})})

	// After source NAT (priority 100), a filter chain writes the pod IP
	// back as the destination; conntrack keeps the translated tuple.
	guestAddress := conn.AddChain(&nftables.Chain{Name: "guest-address", Table: ip, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityRef(200), Policy: &accept})
	conn.AddRule(&nftables.Rule{Table: ip, Chain: guestAddress, Exprs: concat(toGuest, storeIP(ipDst, podIP))})

	// The guest's answers, kept in the namespace by the tap's filter:
	// from the pod IP to podSide, with the gateway's MAC.
	ingress := conn.AddChain(&nftables.Chain{Name: "guest-answers", Table: netdev, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookIngress, Priority: nftables.ChainPriorityFilter, Policy: &accept, Device: tapName})
	conn.AddRule(&nftables.Rule{Table: netdev, Chain: ingress, Exprs: concat(
		[]expr.Any{&expr.Meta{Key: expr.MetaKeyPROTOCOL, Register: 1}}, eq(binaryutil.BigEndian.PutUint16(unix.ETH_P_IP)),
		loadIP(ipDst), eq(podSide),
		loadIP(ipSrc), eq(podIP),
		storeIP(ipSrc, guestAlias),
		[]expr.Any{
			&expr.Immediate{Register: 1, Data: []byte{unix.PACKET_HOST}},
			&expr.Meta{Key: expr.MetaKeyPKTTYPE, SourceRegister: true, Register: 1},
		},
	)})
}

// Offsets of the addresses in the IPv4 header.
const (
	ipSrc = 12
	ipDst = 16
)

func concat(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func loadIP(offset uint32) []expr.Any {
	return []expr.Any{&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4}}
}

func eq(data []byte) []expr.Any {
	return []expr.Any{&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: data}}
}

func dnatTo(addr net.IP) []expr.Any {
	return []expr.Any{
		&expr.Immediate{Register: 1, Data: addr},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1},
	}
}

// storeIP rewrites an address, with the IPv4 header checksum and the
// TCP/UDP pseudo-header checksum (offloaded checksums included).
func storeIP(offset uint32, addr net.IP) []expr.Any {
	return []expr.Any{
		&expr.Immediate{Register: 1, Data: addr},
		&expr.Payload{OperationType: expr.PayloadWrite, SourceRegister: 1, Base: expr.PayloadBaseNetworkHeader,
			Offset: offset, Len: 4, CsumType: expr.CsumTypeInet, CsumOffset: 10, CsumFlags: unix.NFT_PAYLOAD_L4CSUM_PSEUDOHDR},
	}
}

// RemovePodLocal removes the pod-local tables of the guest behind tap in
// the namespace open at nsFd; the rest of the path goes with the tap.
// Tables that are not there are fine.
func RemovePodLocal(nsFd int, tap string) error {
	conn, err := nftables.New(nftables.WithNetNSFd(nsFd))
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	return removeTables(conn, tap)
}

// removeTables deletes the tables named after tap that exist: a batch
// with a missing one would fail whole.
func removeTables(conn *nftables.Conn, tap string) error {
	var errs []error
	for _, want := range podLocalTables(tap) {
		tables, err := conn.ListTablesOfFamily(want.Family)
		if err != nil {
			errs = append(errs, fmt.Errorf("list nftables tables: %w", err))
			continue
		}
		for _, t := range tables {
			if t.Name == want.Name {
				conn.DelTable(t)
			}
		}
	}
	if err := conn.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
		errs = append(errs, fmt.Errorf("delete nftables tables %s: %w", tap, err))
	}
	return errors.Join(errs...)
}
