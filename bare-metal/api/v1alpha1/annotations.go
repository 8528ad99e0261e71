package v1alpha1

// AnnotationAllocatedFromPool records on a Service the pool its addresses
// came from (MetalLB users know metallb.io/ip-allocated-from-pool).
// herald-ccm writes it before status.loadBalancer shows the addresses and
// moves it with them; herald-agent reads it to pick the advertisements that
// cover a VIP, so both binaries share this one name.
const AnnotationAllocatedFromPool = "herald.dev/ip-allocated-from-pool"
