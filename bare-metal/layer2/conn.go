package layer2

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/mdlayher/packet"
	"golang.org/x/net/bpf"
	"golang.org/x/net/ipv6"
)

// NDPConn is the NDP responder's link: whole Ethernet frames carrying IPv6
// in and out (net.PacketConn, addresses are *packet.Addr), plus the IPv6
// multicast memberships that make the NIC, and switches that snoop MLD,
// deliver the solicitations for a VIP.
type NDPConn interface {
	net.PacketConn
	// JoinGroup and LeaveGroup join and leave an IPv6 multicast group on
	// the conn's interface.
	JoinGroup(group netip.Addr) error
	LeaveGroup(group netip.Addr) error
}

// ListenARP opens the ARP responder's socket on ifi: a packet socket that
// reads and writes whole Ethernet frames of EtherType ARP. It needs
// CAP_NET_RAW, and no IPv4 address on ifi (unlike arp.Dial): a VIP may be
// announced on an interface that has none.
func ListenARP(ifi *net.Interface) (net.PacketConn, error) {
	c, err := packet.Listen(ifi, packet.Raw, etherTypeARP, nil)
	if err != nil {
		return nil, fmt.Errorf("open ARP socket on %s: %w", ifi.Name, err)
	}
	return c, nil
}

// ListenNDP opens the NDP responder's socket on ifi: a packet socket for
// IPv6 frames whose kernel filter passes only Neighbor Solicitations, and a
// UDP socket that holds the solicited-node group memberships (joining
// through IPv6, not just the Ethernet address, sends the MLD reports that
// snooping switches need). It needs CAP_NET_RAW and IPv6 on ifi, but no
// address there: unlike an ICMPv6 socket it binds to none.
func ListenNDP(ifi *net.Interface) (NDPConn, error) {
	filter, err := solicitationFilter()
	if err != nil {
		return nil, err
	}
	// The filter is attached before the socket is bound, so not one other
	// frame is queued on it.
	c, err := packet.Listen(ifi, packet.Raw, etherTypeIPv6, &packet.Config{Filter: filter})
	if err != nil {
		return nil, fmt.Errorf("open NDP socket on %s: %w", ifi.Name, err)
	}
	udp, err := net.ListenPacket("udp6", "[::]:0")
	if err != nil {
		return nil, errors.Join(fmt.Errorf("open multicast membership socket for %s: %w", ifi.Name, err), c.Close())
	}
	return &ndpConn{Conn: c, groups: ipv6.NewPacketConn(udp), ifi: ifi}, nil
}

type ndpConn struct {
	*packet.Conn
	groups *ipv6.PacketConn
	ifi    *net.Interface
}

func (c *ndpConn) JoinGroup(group netip.Addr) error {
	return c.groups.JoinGroup(c.ifi, &net.UDPAddr{IP: group.AsSlice()})
}

func (c *ndpConn) LeaveGroup(group netip.Addr) error {
	return c.groups.LeaveGroup(c.ifi, &net.UDPAddr{IP: group.AsSlice()})
}

// Close closes both sockets; closing the UDP one leaves every group.
func (c *ndpConn) Close() error {
	return errors.Join(c.Conn.Close(), c.groups.Close())
}

// solicitationFilter is a classic BPF program that accepts IPv6 frames
// carrying ICMPv6 Neighbor Solicitations (no extension headers, as NDP
// sends them) and drops the rest, so the responder is not woken for every
// IPv6 packet on the link. answerNDP checks everything again: the filter is
// only a shortcut.
func solicitationFilter() ([]bpf.RawInstruction, error) {
	const (
		offEtherType  = 12
		offNextHeader = ethHeaderLen + 6
		offICMPType   = ethHeaderLen + ipv6HeaderLen
		snapLen       = 1 << 16
	)
	prog, err := bpf.Assemble([]bpf.Instruction{
		bpf.LoadAbsolute{Off: offEtherType, Size: 2},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: uint32(etherTypeIPv6), SkipTrue: 5},
		bpf.LoadAbsolute{Off: offNextHeader, Size: 1},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: protocolICMPv6, SkipTrue: 3},
		bpf.LoadAbsolute{Off: offICMPType, Size: 1},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: uint32(ipv6.ICMPTypeNeighborSolicitation), SkipTrue: 1},
		bpf.RetConstant{Val: snapLen},
		bpf.RetConstant{Val: 0},
	})
	if err != nil {
		return nil, fmt.Errorf("assemble the NDP socket filter: %w", err)
	}
	return prog, nil
}
