package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// Sentinels for errors.Is. Messages of the wrapping errors name the pool,
// address and other services involved because they end up in Service
// events; not the Service itself, which the event is attached to (logs
// carry it as a key).
var (
	ErrInvalidRange      = errors.New("invalid address range")
	ErrInvalidPool       = errors.New("invalid address pool")
	ErrInvalidRequest    = errors.New("invalid allocation request")
	ErrUnknownPool       = errors.New("unknown address pool")
	ErrPoolExhausted     = errors.New("address pool exhausted")
	ErrNotInAnyPool      = errors.New("address not in any pool")
	ErrAddressInUse      = errors.New("address already in use")
	ErrFamilyUnavailable = errors.New("no eligible pool serves the address family")
	ErrSharingConflict   = errors.New("address sharing conflict")
	ErrPoolNotEligible   = errors.New("address pool not eligible for service")
)

// AddressError is returned when a specific address cannot be given to a
// service; Holders lists the services that keep it from being shared.
type AddressError struct {
	Err     error // one of the sentinels
	Service string
	Addr    netip.Addr
	Pool    string // pool owning Addr, "" if none
	Holders []string
	Reason  string
}

func (e *AddressError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%v: %s", e.Err, e.Addr)
	if e.Pool != "" {
		fmt.Fprintf(&b, " (pool %s)", e.Pool)
	}
	if len(e.Holders) > 0 {
		fmt.Fprintf(&b, " is held by %s", strings.Join(e.Holders, ", "))
	}
	if e.Reason != "" {
		b.WriteString(": " + e.Reason)
	}
	return b.String()
}

func (e *AddressError) Unwrap() error { return e.Err }

// PoolError is returned when no address could be found in a pool, or the
// pool cannot be used for the service at all.
type PoolError struct {
	Err     error // one of the sentinels
	Service string
	Pool    string // "" when the error is about every eligible pool
	Reason  string
}

func (e *PoolError) Error() string {
	var b strings.Builder
	b.WriteString(e.Err.Error())
	if e.Pool != "" {
		fmt.Fprintf(&b, ": pool %s", e.Pool)
	}
	if e.Reason != "" {
		b.WriteString(": " + e.Reason)
	}
	return b.String()
}

func (e *PoolError) Unwrap() error { return e.Err }
