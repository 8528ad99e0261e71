// Package bgp is herald-agent's BGP announcing, protocol side: the sessions
// a node opens (PeerConfig, from BGPPeer objects), the paths it advertises
// to each peer (Table, from BGPAdvertisement objects and the Services), and
// the smallest set of changes between what is advertised and what should be
// (Diff, DiffPeers), applied through a Router by a Reconciler. Everything
// here is pure; bgp/gobgp is the Router over an embedded GoBGP v4, and the
// only package that imports GoBGP.
//
// # Who advertises
//
// Unlike Layer 2, where one node answers for an address, every eligible node
// advertises every address it may serve, and the router spreads traffic over
// them (ECMP). Eligible means: an advertisement of the address's pool and
// one of its peers select the node; the node is Ready, not cordoned, not
// tainted out-of-service, not excluded from load balancers; and, with
// externalTrafficPolicy Local, it has a ready endpoint of the Service. So
// there is no election and no handover: a node's routes come and go with
// its own eligibility, and a Service's routes with the Service.
//
// # Liveness is the router's business
//
// The Layer 2 speaker needs the agents' membership (memberlist) because the
// network cannot tell it which node is alive: one node answers ARP, and the
// others must notice when it dies. With BGP the router itself holds a
// session with every node, and that session is the liveness signal: a dead
// node's session goes down when the hold timer expires (90 s by default),
// or within a few hundred milliseconds with BFD, and the router drops that
// node's routes, leaving the others. BGP therefore does not consult the
// membership, on purpose:
//
//   - it would add nothing: the router learns of a dead node from the node's
//     own session at least as fast as the agents would learn it from each
//     other, and no other node needs to act (there is nothing to take over);
//   - it would do harm: a node cut off from its peers but still reaching the
//     router and its clients serves traffic correctly, and withdrawing its
//     routes because the other agents cannot hear it would take capacity
//     away for nothing. There is no split brain to fence against: any
//     number of nodes may advertise one address at once.
//
// So an agent with only BGP on runs no memberlist at all, and with both
// protocols on, the membership's verdicts gate only Layer 2.
//
// # Shutting down
//
// On SIGTERM (a rolling update, a node shutting down) the agent withdraws
// every path while its sessions stay up, waits for the routers to act on
// the withdrawals, then closes the sessions with a Cease notification. The
// routers move the traffic to the other nodes before this one stops
// forwarding, instead of blackholing it until a timer expires. Graceful
// restart (RFC 4724), when a BGPPeer enables it, covers the opposite case:
// an agent that dies without withdrawing (SIGKILL, a crash) while the
// node's nftables data plane keeps forwarding; a router that supports it
// keeps the routes until the agent comes back or restartTime passes.
package bgp
