// Package layer2 makes a VIP reachable on a LAN: it answers ARP (IPv4)
// and Neighbor Discovery (IPv6) for the VIPs this node owns, only on the
// interfaces it is told, and announces each VIP it gains with a burst of
// gratuitous frames. Which node owns which VIP is decided elsewhere
// (bare-metal/election); this package is fed plain interface names and
// netip addresses through Announcer.Set.
//
// # Why herald answers, not the kernel
//
// A VIP is on no interface: herald's data plane accepts traffic to it with
// DNAT in prerouting, so the kernel does not consider it a local address
// and answers no ARP request or Neighbor Solicitation for it. Putting VIPs
// on an interface would make the kernel answer, but for every VIP on every
// interface (arp_ignore=0 answers for any local address), at once on
// assignment and with nothing to hold it back when the node is cut off from
// its peers. Answering in userspace lets herald answer exactly what it
// owns, where it was told, and only while the fence (Gate) is open. For the
// same reason the kernel's proxy ARP/NDP must stay off on announcing
// interfaces.
//
// # What is answered
//
// ARP: requests addressed to this host (broadcast, or unicast to the
// interface's address as clients refreshing their cache send them) whose
// target is an owned VIP, including RFC 5227 probes from 0.0.0.0 (arping
// -D): the reply goes unicast to the asker's ARP sender address. NDP:
// Neighbor Solicitations valid per RFC 4861 §7.1.1 (hop limit 255, code 0,
// checksum) for an owned VIP get a solicited, overriding advertisement with
// the target link-layer address, unicast to the asker; duplicate address
// detection probes (source ::) get an unsolicited one to all nodes. Never
// answered: our own frames (the socket sees outgoing traffic too; they are
// recognised by their Ethernet or link-layer source), ARP replies, other
// hosts' gratuitous ARP (counted as a "conflict" when it claims a VIP owned
// here, which is expected only for a moment during a handover), questions
// about other addresses or on other interfaces, and malformed frames, which
// are counted (herald_l2_frames_ignored_total) and logged at V(4).
//
// Both families are read at the link layer, from packet sockets (ListenARP,
// ListenNDP), rather than ARP from a packet socket and NDP from an ICMPv6
// socket as MetalLB does. A neighbour confirming its cache entry
// (Neighbor Unreachability Detection) sends its solicitation unicast to the
// VIP; since the VIP is not local, the kernel routes that packet instead of
// delivering it, so an ICMPv6 socket never sees it and the neighbour drops
// the entry every so often (metallb/metallb#2920). A packet socket also
// needs no address on the interface (an ICMPv6 socket binds to its
// link-local one, which fails while that address is tentative or absent,
// metallb/metallb#248, #1680), and shows the Ethernet source that identifies our
// own frames. A kernel filter keeps the IPv6 socket to Neighbor
// Solicitations, and the socket joins each owned VIP's solicited-node
// group through IPv6, so the NIC accepts the multicast solicitations and
// snooping switches, seeing the MLD reports, forward them.
//
// # Why gratuitous bursts
//
// Clients keep a VIP's old hardware address until their cache entry
// expires: 44-49 s measured here after the owner died, versus about 12 ms
// after a gratuitous frame. So a gained VIP is announced at once, and again
// at the offsets of Options.Burst (by default 0, 200 ms, 700 ms,
// 1.5 s). The repeats cover a frame lost while a switch relearns the port,
// and clients that cached the previous owner's reply during a
// make-before-break handover, when both nodes answer for a moment; the last
// comes after Linux's neighbour locktime (1 s), within which an ordinary
// reply does not replace a fresh entry. Each IPv4 announcement is two
// frames, since devices differ in which they honour: an RFC 5227 ARP
// announcement (a request) and a gratuitous reply whose target hardware
// address is the sender's, the form Linux lets override even within
// locktime. IPv6 gets an unsolicited advertisement with the Override flag
// to ff02::1. OnAnnounced reports each burst's first frame on the wire, for
// the handover protocol; Gratuitous starts a new burst for VIPs already
// announced.
//
// # Why a synchronous gate
//
// Fencing requires that a node cut off from its peers stops speaking for
// its VIPs before any other node may take them over. If stopping went
// through Set, its timing would add the speaker's whole reaction (noticing,
// recomputing, calling Set) to the bound. Instead the Announcer calls the
// Gate right before every reply and every gratuitous frame, so a node
// stops within one frame of its gate closing, however busy the rest of the
// agent is, and speaks again the moment it reopens, without waiting for a
// Set; fenced sends are counted (herald_l2_sends_fenced_total). A gratuitous
// slot that meets a closed gate is skipped, not postponed: on reopening the
// speaker decides whether to call Gratuitous.
//
// # Guarantees
//
// When Set returns, nothing more is sent for a VIP it removed: every send
// checks ownership and the gate under a lock that Set holds while changing
// ownership. Sockets are per interface and family, opened on the first VIP
// and closed with the last, so an IPv4-only interface never needs IPv6. A
// failing interface (missing, not Ethernet, socket refused) fails alone,
// reported as an *InterfaceError; the next Set retries it, and reopens an
// interface that was recreated under the same name or changed its hardware
// address. Close ends every goroutine before returning.
package layer2
