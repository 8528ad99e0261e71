package layer2

import (
	"net"
	"net/netip"
)

// verdict is what a responder decided about one received frame. Everything
// but answered is a reason to stay silent, and a label of
// herald_l2_frames_ignored_total.
type verdict uint8

const (
	answered verdict = iota
	// ignoredOwn: a frame this host sent (the socket sees outgoing frames).
	ignoredOwn
	// ignoredNotRequest: an ARP reply, or an ICMPv6 message other than a
	// Neighbor Solicitation.
	ignoredNotRequest
	// ignoredNotForUs: addressed to another host (Ethernet destination, or
	// an IPv6 destination that is neither the target nor its
	// solicited-node group).
	ignoredNotForUs
	// ignoredAnnouncement: another host's gratuitous ARP, which asks
	// nothing.
	ignoredAnnouncement
	// ignoredConflict: another host's gratuitous ARP for a VIP announced
	// here: two hosts claim it (expected for a moment during a handover).
	ignoredConflict
	// ignoredNotOwned: a question about an address not announced on this
	// interface.
	ignoredNotOwned
	// ignoredMalformed: truncated, inconsistent or invalid per RFC 826 /
	// RFC 4861 §7.1.1 (hop limit, checksum, code, DAD form).
	ignoredMalformed
	numVerdicts
)

func (v verdict) String() string {
	switch v {
	case answered:
		return "answered"
	case ignoredOwn:
		return "own"
	case ignoredNotRequest:
		return "not_request"
	case ignoredNotForUs:
		return "not_for_us"
	case ignoredAnnouncement:
		return "announcement"
	case ignoredConflict:
		return "conflict"
	case ignoredNotOwned:
		return "not_owned"
	case ignoredMalformed:
		return "malformed"
	}
	return "unknown"
}

// decision is a responder's answer to one frame: a verdict, the address
// asked about (when the frame got that far), and for answered frames the
// reply to send.
type decision struct {
	verdict verdict
	vip     netip.Addr
	// peer is the asker's hardware address, for logs.
	peer  net.HardwareAddr
	reply outFrame
}

// outFrame is a whole Ethernet frame and the hardware address it is sent
// to (the socket address a packet socket wants beside the frame).
type outFrame struct {
	dst   net.HardwareAddr
	frame []byte
}

func ignore(v verdict) decision { return decision{verdict: v} }

// unicastMAC reports whether hw can be the address of one host: the asker
// of a question must have one, or the answer would be broadcast.
func unicastMAC(hw net.HardwareAddr) bool {
	if len(hw) != 6 || hw[0]&1 != 0 {
		return false
	}
	for _, b := range hw {
		if b != 0 {
			return true
		}
	}
	return false
}
