// Package netipx is net/netip arithmetic that both provider and bare-metal
// need. It is pure (★ in ARCHITECTURE.md: the standard library only), so
// the pure packages may import it, and it lives outside both trees, which
// must not import each other.
package netipx

import "net/netip"

// LastAddr is the highest address in p: p's address with every host bit
// set. An IPv4-mapped IPv6 prefix gives an IPv4-mapped address. An invalid
// p gives the zero Addr.
func LastAddr(p netip.Prefix) netip.Addr {
	if !p.IsValid() {
		return netip.Addr{}
	}
	a := p.Masked().Addr()
	if a.Is4() {
		b := a.As4()
		setHostBits(b[:], p.Bits())
		return netip.AddrFrom4(b)
	}
	b := a.As16()
	setHostBits(b[:], p.Bits())
	return netip.AddrFrom16(b)
}

func setHostBits(b []byte, prefixBits int) {
	for i := range b {
		switch {
		case (i+1)*8 <= prefixBits:
		case i*8 >= prefixBits:
			b[i] = 0xff
		default:
			b[i] |= 0xff >> (prefixBits - i*8)
		}
	}
}
