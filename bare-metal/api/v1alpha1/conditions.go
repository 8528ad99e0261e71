package v1alpha1

import "math"

// Condition types of IPAddressPool.status.conditions.
const (
	// ConditionReady is True when the pool is valid and the allocator uses
	// it, False with a reason when it does not.
	ConditionReady = "Ready"
	// ConditionConflicting is True when some of the pool's addresses are
	// also in another pool; the message names the pool and the overlap.
	ConditionConflicting = "Conflicting"
	// ConditionValid is True when herald-agent can use a BGPPeer's or a
	// BGPAdvertisement's spec, False with a reason when it cannot (what
	// the CRD's own validation cannot catch).
	ConditionValid = "Valid"
)

// Reasons used with the condition types above.
const (
	ReasonValid            = "Valid"
	ReasonInvalidAddresses = "InvalidAddresses" // e.g. a range that ends before it starts
	ReasonOverlap          = "Overlap"
	ReasonNoOverlap        = "NoOverlap"
	// ReasonInvalidSelector: a label selector does not parse (an unknown
	// operator, say); the object is ignored as a whole.
	ReasonInvalidSelector = "InvalidSelector"
	// ReasonSecretNotFound, ReasonSecretKeyMissing, ReasonSecretForbidden:
	// a BGPPeer's password cannot be read; its sessions are not opened.
	ReasonSecretNotFound   = "SecretNotFound"
	ReasonSecretKeyMissing = "SecretKeyMissing"
	ReasonSecretForbidden  = "SecretForbidden"
)

// MaxCount is the value an AddressCounts field saturates at.
const MaxCount int64 = math.MaxInt64

// NewAddressCounts converts unsigned counts, such as the allocator's (which
// saturate at MaxUint64), into AddressCounts: Free is total-inUse (0 if
// inUse exceeds total) and every field saturates at MaxCount.
func NewAddressCounts(total, inUse uint64) AddressCounts {
	var free uint64
	if inUse < total {
		free = total - inUse
	}
	return AddressCounts{Total: saturate(total), InUse: saturate(inUse), Free: saturate(free)}
}

func saturate(n uint64) int64 {
	if n > uint64(MaxCount) {
		return MaxCount
	}
	return int64(n)
}

// AutoAssignEnabled reports whether the pool may be picked for a Service
// that does not name it: true unless autoAssign is explicitly false.
func (s *IPAddressPoolSpec) AutoAssignEnabled() bool {
	return s.AutoAssign == nil || *s.AutoAssign
}
