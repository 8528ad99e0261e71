// Package election decides which node announces which load balancer
// address, and when a node must not announce anything at all. It is pure:
// the membership (who runs herald-agent, as seen by this node) and the
// clock come in as values.
//
// # Who announces
//
// The addresses of one Service are announced together, from one node; the
// election key is the smallest of them (Key), so a dual-stack Service moves
// as one and Services sharing an address agree on its owner. Candidates are
// the nodes an advertisement of the address's pool selects that are Ready,
// not cordoned, not tainted out-of-service, not labelled to be excluded
// from load balancers, whose herald-agent is alive and not draining and,
// for externalTrafficPolicy Local, that have a ready endpoint of the
// Service. The owner is the candidate with the highest rendezvous score
// (SHA-256 of node and key). Every agent computes it alone from what it
// sees, with no per-address coordination and no write to the apiserver;
// keys spread evenly, and a node joining or leaving moves only the keys it
// wins or held. Every decision carries a Reason.
//
// # Liveness
//
// Whether an agent is alive comes from the membership (hashicorp/memberlist,
// SWIM with Lifeguard, as in MetalLB's speaker), tuned for sub-second
// detection: with probe interval I, probe timeout T and suspicion
// multiplier M, a failed probe makes the prober suspect the node after I,
// and the suspicion becomes death after between M·I·max(1, log10 n) (with
// confirmations from other members) and SuspicionMaxTimeoutMult times that.
// With the defaults I = 100 ms, T = 50 ms, M = 3 and a few nodes, an
// owner that dies is replaced after 0.5-0.8 s, plus the ~12 ms its clients
// take to act on the new owner's gratuitous ARP or NA.
//
// # Fencing
//
// A node that is cut off from its peers but still reaches clients must stop
// answering before any peer can take its addresses over; otherwise two
// nodes answer ARP for one address and clients split between them. The
// fence (Fence) is closed, and the node answers nothing, unless both hold:
//
//  1. quorum: the node sees more than half of the nodes that should run an
//     announcing herald-agent alive, itself included. "Should" comes from
//     the Kubernetes Nodes (selected by an advertisement, Ready, not
//     excluded), minus agents that left on purpose. A minority partition
//     thus falls silent, and a node whose peers are truly dead resumes only
//     when Kubernetes marks them NotReady: with one or two nodes there is
//     no majority to tell a dead peer from a cut cable, and the apiserver
//     breaks the tie.
//  2. freshness: if the node has peers, it heard from one of them within F
//     (SilenceTimeout): an ack to one of its probes, or a heartbeat, which
//     every agent sends a few random peers twice per probe interval. A
//     single dead peer therefore does not silence its neighbours, as it
//     would if only acks counted (a node may probe the dead peer twice in
//     a row). This is checked when each frame is sent (Fence.Open), not on
//     a timer.
//
// Timing bound (the guarantee). Let a node O lose contact with all its
// peers at t0. The last packet it heard from them arrived no later than
// t0 + RTT/2, so rule 2 refuses every frame O would send after about
// t0 + F. A peer P can declare O dead only
// through a probe that failed, hence one sent after t0 - RTT; P suspects O
// a full probe interval I after sending it, and the suspicion lasts at
// least M·I·max(1, log10 n) ≥ M·I. No peer can therefore declare O dead,
// and none can start announcing O's addresses, before
//
//	t0 - RTT + I + M·I
//
// so the two never answer at once if F < (1+M)·I - RTT - δ, where δ covers
// the time between O's check and its frame leaving. With the defaults,
// F = 250 ms against 400 ms: 150 ms of margin for RTT and δ on a LAN. The
// heartbeats make F > 2·I ample: a connected node hears a peer every
// I/2, so only a stall of the node itself (the CPU starved for 200 ms) or
// a real cut closes the fence. FenceConfig.Validate enforces both bounds.
//
// A partition that cuts only the node's sending direction (it hears its
// peers, they do not hear it) is not caught by rule 2; it would also keep
// the node's ARP replies from the network in most real failures (a dead
// transmit path), and rule 1 does not help there. The tests inject
// two-way cuts.
//
// Once closed, the fence opens again only when both rules have held for
// S (Settle): a node rejoining after a partition first learns that its
// peers are alive (and that they took its addresses), instead of announcing
// on a stale view. The same applies at start.
//
// Partial partitions (a minority of two or more nodes that still reach each
// other) are caught by rule 1, at the moment the minority's membership
// declares the majority dead, which is about when the majority declares
// the minority dead: the bound above is proven only for a node cut off
// from all its peers, the failure the tests inject.
//
// # Handover
//
// A planned change of owner (the old owner cordoned, drained, tainted,
// excluded, shutting down, or a better candidate arriving) is make before
// break (Planner): the new owner announces, sends gratuitous ARP/NA and a
// takeover notice to the other members; the old owner keeps answering
// until that notice arrives or ReleaseTimeout passes. A draining agent
// leaves the membership only once it holds no address.
package election
