// Package agent is herald-agent's runtime on a node: it watches Services,
// EndpointSlices and its own Node, keeps the herald nftables table in line
// with them through provider/dataplane, serves healthCheckNodePorts for
// Services with externalTrafficPolicy Local, and reports readiness,
// liveness and metrics.
//
// Every informer event asks a Runner for a sync; the Runner bounds how often
// syncs run (a burst, then one per min interval) and runs one at least every
// sync period. A sync builds the whole desired ruleset from the informer
// caches and lets the dataplane Applier send only what changed (a partial
// sync). It is full, rewriting the table in one atomic transaction, the
// first time, after any failure (the Applier no longer knows what the
// kernel holds) and every FullSyncPeriod, to repair changes made behind
// herald's back. With Deps.Reloader, a full sync whose chains and rules the
// kernel still holds as written rewrites only the elements, over netlink
// (mode "reload" in the metrics), and keeps ClientIP affinity choices; if
// the Reloader is a dataplane.SkeletonWriter, any other full sync rewrites
// the whole table over netlink (mode "rewrite") and nft is only a fallback.
// A full sync that writes the table forgets ClientIP choices.
//
// Restarts do not disturb traffic: stopping the agent leaves the table in
// place, and the next agent's first full sync replaces it atomically.
// Established connections live in conntrack, which neither touches. After
// each sync the agent deletes only the UDP conntrack entries that the sync
// made wrong (dataplane.StaleUDPFlows), over netlink as kube-proxy does: a
// UDP flow has no end, and would otherwise keep following a removed
// endpoint.
//
// Everything outside the process is injected (Kubernetes client, knftables,
// Prometheus registerer, clock, listener factory), so unit tests run on
// fakes without root, real ports or sleeps.
package agent
