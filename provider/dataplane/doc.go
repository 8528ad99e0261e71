// Package dataplane turns Services and EndpointSlices into the nftables
// ruleset that forwards ClusterIP, NodePort, LoadBalancer and external-IP
// traffic on a node, and applies it through nft (knftables) or over netlink.
//
// Build is pure (stdlib, k8s.io/api, knftables types): it returns a Ruleset,
// plain data for one table, inet "herald", that herald owns alone. Applier
// writes it: a full sync replaces the table's content in one atomic
// transaction; a partial sync sends only the element adds and deletes (and
// chains added or gone) since the last successful sync. Any failed transaction makes the next sync full,
// because after a failure we no longer know what the kernel holds.
//
// Rules of existing chains never change in a partial sync; chains come
// and go. Pick chains for 1 to PrecreatedPickChains endpoints exist up
// front; a Service reaching a larger endpoint count for the first time, or
// a new affinity timeout, adds a chain. Over netlink (SkeletonWriter) that
// is a partial sync: the new chain, its rule and the element changes in
// one batch. Through nft it costs a full sync, because nft 1.0.6 (Debian
// 12) refuses a rule that names an existing map whose data type is
// "address . th dport" (the dnat maps): such rules are written by nft only
// together with their maps.
//
// # Why the ruleset looks the way it does
//
// A chain per service (and per endpoint, as kube-proxy's nftables mode has)
// makes the kernel re-validate objects in proportion to the Services, which
// at 10k Services is far too slow to apply (docs/benchmarks.md has the
// figures behind this package's choices). Sync cost has to depend on what
// changed, and the number of objects the kernel re-validates must not grow
// with Services. So herald has no per-service or per-endpoint chains at all. Every Service lives as elements of a few large
// sets and maps, and the only chains that depend on data are one "pick" chain per
// endpoint count in use (pick4-3 picks one of three) and one affinity chain
// per distinct ClientIP timeout: dozens, whatever the number of Services.
//
// A new connection to a Service with N endpoints costs N+2 hash lookups
// after the affinity map's:
//
//	services: daddr . proto . dport in svc4         -> goto pick4  (np4: proto . dport for NodePorts)
//	pick4:    daddr . proto . dport in svc4-1 ... svc4-N -> goto pick4-N
//	pick4-N:  dnat to ep4[daddr . proto . dport . numgen random mod N]
//
// numgen's modulus must be a constant, which is the only reason pick chains
// exist; nftables cannot look up a map inside a concatenation, which is why
// the endpoint map is keyed by the frontend itself rather than by a group id
// (the alternative, a group id carried in the packet mark, would claim mark
// bits that CNIs and policy routing use). The price is that an endpoint is
// listed once per frontend (ClusterIP, each LB IP, external IP, NodePort);
// frontends of one port often need different endpoint lists anyway, since
// externalTrafficPolicy and internalTrafficPolicy scope them differently.
// Endpoints are sorted, so index i names the same endpoint on every sync and
// a change touches only the elements that moved.
//
// Each address-keyed container exists twice, "4" and "6": an nftables key has
// one fixed type, and one inet table serves both families.
//
// # Why no element names a chain
//
// Which pick chain serves a frontend changes with every endpoint count
// change, yet it is not a verdict in a map element (svc4[frontend] = goto
// pick4-3, as herald had): the frontend is an element of a plain set per
// count (svc4-3), and a static rule of the pick4 chain holds the verdict.
// Linux (net/netfilter/nf_tables_api.c, 6.x) marks a table
// NFT_VALIDATE_NEED in nft_add_set_elem whenever an added element's data is
// a jump or goto verdict, and at commit nf_tables_validate then runs
// nft_chain_validate over every base chain, in which nft_lookup_validate
// (nft_lookup.c) walks every element of every verdict map a rule looks up
// and validates its target chain. One endpoint added thus cost a walk of
// all Services' elements: 3.3 ms of apply at 10k Services against 0.9 ms
// at 1k; without verdict elements 1.1 ms against 0.8 ms
// (BenchmarkRealPartialSyncOneService*, docs/benchmarks.md). Masquerade
// (masq4, masqpod4: goto masq-unless-pod4) and blocking (block4, plus
// blockdrop4 for drop instead of reject) are sets for the same reason.
// Two kinds of element still name chains, in verdict maps the rules look
// up last: a frontend with more than PrecreatedPickChains endpoints
// (svcmore4, to a pick chain made on first use) and the affinity maps
// (affsvc4: goto affrec4-T, one chain per timeout in use). A set and a
// precreated chain for the default timeout would avoid those too, but nft
// 1.0.6 fails an assertion on the IPv6 affrec rule ("dreg < ctx->reg_low":
// its key and value overflow nft's registers), so precreating it would
// break every full sync through nft, where today only a Service with IPv6
// ClientIP affinity does. An affinity element changes only when its
// Service gains or loses affinity or all its endpoints, and the walk it
// causes covers only these maps.
//
// The price is rules: the pick chains' set lookups, PrecreatedPickChains
// per family and kind, evaluated for a connection's first packet only and
// stopping at its endpoint count; BenchmarkRealNewConnection* finds no
// difference from one verdict map lookup within its noise.
//
// # Sync cost
//
// nft spends a full sync mostly parsing and evaluating element text in
// userspace, in proportion to the elements (three per endpoint and
// frontend, so tens of thousands at 10k Services; BenchmarkReal* measures
// it against the kernel). Written as one "add element" command per
// elementBatch elements, nft 1.0.6 parses them markedly faster than one
// command per element, as knftables writes them, so the applier folds them
// when it drives the nft binary (knftables.Fake and wrappers get one element
// per command). Even folded, that parsing is the floor of a full sync
// through nft.
//
// So a sync skips nft when it can (ReloadElements), and with a
// SkeletonWriter (NetlinkReloader is one) always. Most full syncs are the
// periodic resync or a restarted agent's first sync, and find the chains,
// rules and set definitions that were written last time: only elements can
// have drifted. The applier then sends, in one netlink batch (atomic like
// an nft transaction), a flush of every static set and map and all their
// elements, encoded in Go byte for byte as nft would
// (TestRealReloadWritesWhatNftWrites compares nft's listing of both).
// Whether the kernel holds the skeleton desired needs is read from the
// table itself: after each sync that writes the skeleton the applier
// stamps it (one element of the "stamp" set) with a digest of the skeleton
// it wrote and a fingerprint of the kernel's chain, rule and set dumps
// (without use counters and element counts). Equal digest and fingerprint
// prove the skeleton is desired's and nobody changed it since, whatever the
// process remembers. Dynamic maps (ClientIP affinity) are not flushed, so
// remembered choices survive a reload and an agent restart; stale ones are
// purged as after a partial sync.
//
// A full sync that needs the skeleton written (no table yet, a different
// skeleton, tampering, a failed reload) does not go through nft's parser
// either: Rewrite sends one batch that deletes the table and writes it
// anew, skeleton and elements, as nft's full transaction would. The
// skeleton is rule text (Build stays plain data that nft and knftables.Fake
// read), so the encoder compiles the part of nft's grammar herald writes
// (nlrule.go) into the expressions nft 1.0.6 sends for it: same registers,
// same implicit "meta nfproto" matches before ip/ip6 payloads, anonymous
// sets with nft's element layout and folding (a one-prefix set is a
// comparison, ranges merge), set declarations with nft's "typeof" userdata.
// Writing Go structures for the rules instead would have reshaped Ruleset,
// which the Builder and every test read as text. The acceptance test is
// the kernel's: TestRealSkeletonOverNetlinkListsAsNft writes every skeleton
// variant both ways and requires equal "nft list table" output and equal
// kernel dumps of chains, rules and sets. Anything the encoder does not know
// is ErrEncode, never a guess: the applier logs it and uses nft, which stays
// the fallback. (nft 1.0.6 aborts on the IPv6 affinity record rule, whose
// key and data need 15 of the 16 registers; the encoder writes it.)
//
// A partial sync must not cost what a full one does. Starting nft costs
// more CPU than the few element changes of a typical partial sync, so with
// ReloadElements a partial sync sends its element deletes and adds over
// netlink too, in one batch, and with a SkeletonWriter also the chains it
// adds (first) and deletes (last, once no verdict names them). The rest is
// Go, so the agent uses a Builder, which recomputes only Services whose
// objects changed and tells the applier which element keys to diff, where
// Build plus a diff of every element costs in proportion to all Services.
// Its Rulesets share element maps that the next Build updates in place;
// copying them instead cost more than the rest of such a sync.
//
// Masquerade is decided in postrouting from conntrack's original tuple (ct
// original daddr/proto-dst) looked up in masq4/masqnp4, not from a packet
// mark set earlier: herald needs no mark bits, so it cannot collide with a
// CNI's. External frontends under externalTrafficPolicy Cluster are
// masqueraded (the endpoint may be on another node and must reply through
// this one); under Local they are not, and only local endpoints are used.
// ClusterIP traffic is masqueraded when Options.MasqueradeAll is set, or when
// Options.Local does not recognise it as a pod's (by source range or input
// interface, kube-proxy's --detect-local-mode). A pod reaching an external
// frontend of a Local policy Service is sent, unmasqueraded, to every
// endpoint, as kube-proxy does: the services chain looks such packets up
// first in podsvc4/podnp4, whose own pick chains pick from podep4/podnpep4;
// nftables cannot make one map lookup depend on the source, so the second
// list needs maps (and pick chains) of its own. Hairpin traffic (a pod reaching
// itself through a Service) is matched by a set of (ip . ip) pairs, since
// nftables cannot compare two packet fields.
//
// ClientIP affinity needs the chosen endpoint remembered, but nftables cannot
// store the result of a map lookup from the packet path. So the choice is
// recorded after NAT: a filter chain at priority dstnat+10 sees the packet
// already rewritten to the endpoint and writes aff4[saddr . original
// frontend] = endpoint with the Service's timeout; the services chain looks
// aff4 up before the random pick. Those entries are not desired state, so
// after a partial sync the applier purges the ones pointing at endpoints that
// went away (otherwise a client would follow a dead pod until the timeout).
// A full sync through nft recreates the table and so forgets them all; a
// reload keeps them.
//
// Traffic to a frontend with no usable endpoint is not DNATed and reaches
// the block chain at priority filter in input, forward and output: reject
// (TCP reset, ICMP unreachable otherwise) when there is no endpoint at all,
// drop when only a Local traffic policy excludes the remote ones. reject is
// not allowed in prerouting on older kernels, hence the filter hooks. The
// same chain rejects new connections to an address in the cluster's
// ServiceCIDRs that no Service port took (an unallocated ClusterIP, or a
// port its Service lacks): kube-proxy rejects the latter and drops the
// former; a reset at once serves a client better than a timeout.
// loadBalancerSourceRanges are checked before DNAT (priority dstnat-10)
// against one interval set of (frontend . source range) elements.
//
// Usable endpoints are the ready ones in scope; if none is ready, those that
// are serving while terminating, so the last pods of a rollout keep serving.
package dataplane
