package ipam

import (
	"encoding/binary"
	"fmt"
	"math/big"
	"math/bits"
	"net/netip"
	"strings"

	"github.com/heraldlb/herald/internal/netipx"
)

// Family is an address family. The values are the strings of core/v1
// IPFamily so callers convert with a plain type conversion.
type Family string

// The two address families.
const (
	IPv4 Family = "IPv4"
	IPv6 Family = "IPv6"
)

// FamilyOf returns the family of a valid address.
func FamilyOf(a netip.Addr) Family {
	if a.Is4() {
		return IPv4
	}
	return IPv6
}

// Range is an inclusive address range of one family.
type Range struct{ First, Last netip.Addr }

// ParseRange parses "192.0.2.0/28", "192.0.2.10-192.0.2.20",
// "2001:db8::/120" or "2001:db8::1-2001:db8::ff". Errors wrap ErrInvalidRange.
func ParseRange(s string) (Range, error) {
	in := strings.TrimSpace(s)
	if in == "" {
		return Range{}, fmt.Errorf("%w: empty string, want a CIDR (192.0.2.0/28) or first-last (192.0.2.10-192.0.2.20)", ErrInvalidRange)
	}
	if strings.Contains(in, "/") {
		return parseCIDR(in)
	}
	first, last, ok := strings.Cut(in, "-")
	if !ok {
		return Range{}, fmt.Errorf("%w: %q is neither a CIDR nor a first-last range (a single address is written %s/32 or %s/128)", ErrInvalidRange, s, in, in)
	}
	f, err := parseRangeAddr(strings.TrimSpace(first), s)
	if err != nil {
		return Range{}, err
	}
	l, err := parseRangeAddr(strings.TrimSpace(last), s)
	if err != nil {
		return Range{}, err
	}
	r := Range{First: f, Last: l}
	if err := r.validate(); err != nil {
		return Range{}, fmt.Errorf("%q: %w", s, err)
	}
	return r, nil
}

func parseCIDR(in string) (Range, error) {
	p, err := netip.ParsePrefix(in)
	if err != nil {
		return Range{}, fmt.Errorf("%w: %q is not a valid CIDR: %w", ErrInvalidRange, in, err)
	}
	if p.Addr().Is4In6() {
		return Range{}, fmt.Errorf("%w: %q uses an IPv4-mapped IPv6 address; write the IPv4 form", ErrInvalidRange, in)
	}
	if m := p.Masked(); m != p {
		return Range{}, fmt.Errorf("%w: %q has host bits set (did you mean %s?)", ErrInvalidRange, in, m)
	}
	return Range{First: p.Addr(), Last: netipx.LastAddr(p)}, nil
}

func parseRangeAddr(part, whole string) (netip.Addr, error) {
	a, err := netip.ParseAddr(part)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%w: %q: %q is not an IP address", ErrInvalidRange, whole, part)
	}
	return a, nil
}

// validate checks the invariants every Range inside the allocator relies on;
// pools built from Go values (not ParseRange) go through it too.
func (r Range) validate() error {
	switch {
	case !r.First.IsValid() || !r.Last.IsValid():
		return fmt.Errorf("%w: range %s has an unset address", ErrInvalidRange, r)
	case r.First.Zone() != "" || r.Last.Zone() != "":
		return fmt.Errorf("%w: range %s has an IPv6 zone; zones are not allowed in pools", ErrInvalidRange, r)
	case r.First.Is4In6() || r.Last.Is4In6():
		return fmt.Errorf("%w: range %s uses an IPv4-mapped IPv6 address; write the IPv4 form", ErrInvalidRange, r)
	case r.First.Is4() != r.Last.Is4():
		return fmt.Errorf("%w: range %s mixes IPv4 and IPv6", ErrInvalidRange, r)
	case r.Last.Less(r.First):
		return fmt.Errorf("%w: range %s ends before it starts", ErrInvalidRange, r)
	}
	return nil
}

// Family returns the family of the range.
func (r Range) Family() Family { return FamilyOf(r.First) }

// Contains reports whether a lies in r. Zoned addresses never do: pools
// hold global addresses only.
func (r Range) Contains(a netip.Addr) bool {
	if !a.IsValid() || a.Zone() != "" || a.Is4() != r.First.Is4() {
		return false
	}
	return r.First.Compare(a) <= 0 && a.Compare(r.Last) <= 0
}

// String prints the CIDR form when the range is exactly one prefix, so that
// ParseRange(r.String()) returns r.
func (r Range) String() string {
	if !r.First.IsValid() || !r.Last.IsValid() {
		return fmt.Sprintf("%v-%v", r.First, r.Last)
	}
	if p, ok := r.prefix(); ok {
		return p.String()
	}
	return r.First.String() + "-" + r.Last.String()
}

func (r Range) prefix() (netip.Prefix, bool) {
	if r.First.Zone() != "" || r.First.Is4() != r.Last.Is4() {
		return netip.Prefix{}, false
	}
	for b := 0; b <= r.First.BitLen(); b++ {
		p := netip.PrefixFrom(r.First, b)
		if p.Masked().Addr() == r.First && netipx.LastAddr(p) == r.Last {
			return p, true
		}
	}
	return netip.Prefix{}, false
}

func (r Range) overlap(o Range) (Range, bool) {
	if r.First.Is4() != o.First.Is4() {
		return Range{}, false
	}
	first, last := r.First, r.Last
	if first.Less(o.First) {
		first = o.First
	}
	if o.Last.Less(last) {
		last = o.Last
	}
	if last.Less(first) {
		return Range{}, false
	}
	return Range{First: first, Last: last}, true
}

// count returns the number of addresses in r; ::/0 has 2^128 of them.
func (r Range) count() *big.Int {
	f, l := r.First.As16(), r.Last.As16()
	n := new(big.Int).SetBytes(l[:])
	n.Sub(n, new(big.Int).SetBytes(f[:]))
	return n.Add(n, big.NewInt(1))
}

// size is count saturated to uint64: a single IPv6 /64 already has 2^64.
func (r Range) size() uint64 { return saturate(r.count()) }

func saturate(n *big.Int) uint64 {
	if n.IsUint64() {
		return n.Uint64()
	}
	if n.Sign() < 0 {
		return 0
	}
	return ^uint64(0)
}

// buggyCount counts the IPv4 addresses in r ending in .0 or .255.
func (r Range) buggyCount() uint64 {
	if !r.First.Is4() {
		return 0
	}
	f, l := r.First.As4(), r.Last.As4()
	upTo := func(n uint64) uint64 { return n/256 + 1 + (n+1)/256 }
	c := upTo(uint64(binary.BigEndian.Uint32(l[:])))
	if first := uint64(binary.BigEndian.Uint32(f[:])); first > 0 {
		c -= upTo(first - 1)
	}
	return c
}

// isBuggy reports IPv4 addresses ending in .0 or .255, which some consumer
// routers drop as broadcast (smurf protection).
func isBuggy(a netip.Addr) bool {
	if !a.Is4() {
		return false
	}
	b := a.As4()
	return b[3] == 0 || b[3] == 255
}

// isSubnetRouterAnycast reports IPv6 addresses whose interface identifier
// (the low 64 bits) is zero: the Subnet-Router anycast address of the /64
// they are in (RFC 4291 2.6.1; subnets on a link are /64s). Routers answer
// it, so a pool hands it out only to a Service that asks for it.
func isSubnetRouterAnycast(a netip.Addr) bool {
	if !a.Is6() || a.Is4In6() {
		return false
	}
	b := a.As16()
	return binary.BigEndian.Uint64(b[8:]) == 0
}

// anycastCount counts the Subnet-Router anycast addresses in r: one per
// /64 whose first address r holds.
func (r Range) anycastCount() *big.Int {
	if !r.First.Is6() {
		return new(big.Int)
	}
	f, l := r.First.As16(), r.Last.As16()
	first := new(big.Int).SetUint64(binary.BigEndian.Uint64(f[:8]))
	if binary.BigEndian.Uint64(f[8:]) != 0 {
		first.Add(first, big.NewInt(1)) // the /64 of First starts below it
	}
	n := new(big.Int).SetUint64(binary.BigEndian.Uint64(l[:8]))
	n.Sub(n, first)
	n.Add(n, big.NewInt(1))
	if n.Sign() < 0 {
		return new(big.Int)
	}
	return n
}

func satAdd(a, b uint64) uint64 {
	s, c := bits.Add64(a, b, 0)
	if c != 0 {
		return ^uint64(0)
	}
	return s
}
