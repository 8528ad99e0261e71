package speaker

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
)

// Interfaces finds the interface to announce an address on when no
// advertisement names one.
type Interfaces interface {
	// Default returns the interface holding a node address in the same
	// subnet as addr, else the one with the default route of addr's family.
	Default(addr netip.Addr) (string, error)
}

// ErrNoInterface means no interface fits the default rule for an address.
var ErrNoInterface = errors.New("no interface has an address in the subnet or a default route")

// HostInterfaces reads this host's interfaces and routing tables. It reads
// /proc rather than netlink: it runs once per sync for a handful of
// addresses and needs nothing else.
type HostInterfaces struct {
	// ProcNet is /proc/net unless set (tests).
	ProcNet string
}

// Default implements Interfaces.
func (h HostInterfaces) Default(addr netip.Addr) (string, error) {
	ifaces, err := net.Interfaces()
	if err != nil {
		return "", fmt.Errorf("listing interfaces: %w", err)
	}
	for _, ifi := range ifaces {
		if ifi.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, err := ifi.Addrs()
		if err != nil {
			continue // gone since it was listed
		}
		for _, a := range addrs {
			if p, ok := a.(*net.IPNet); ok && prefixOf(p).Contains(addr) {
				return ifi.Name, nil
			}
		}
	}
	procNet := h.ProcNet
	if procNet == "" {
		procNet = "/proc/net"
	}
	name, err := defaultRouteInterface(procNet, addr.Is4())
	if err != nil {
		return "", fmt.Errorf("%s: %w", addr, err)
	}
	return name, nil
}

func prefixOf(n *net.IPNet) netip.Prefix {
	a, _ := netip.AddrFromSlice(n.IP)
	ones, _ := n.Mask.Size()
	if a.Is4In6() && ones > 32 {
		ones -= 96
	}
	return netip.PrefixFrom(a.Unmap(), ones)
}

// defaultRouteInterface returns the interface of the main table's default
// route of one family, from /proc/net/route or /proc/net/ipv6_route.
func defaultRouteInterface(procNet string, ipv4 bool) (string, error) {
	file, parse := "route", parseRoute4
	if !ipv4 {
		file, parse = "ipv6_route", parseRoute6
	}
	f, err := os.Open(procNet + "/" + file)
	if err != nil {
		return "", err
	}
	defer f.Close()
	lines := bufio.NewScanner(f)
	for lines.Scan() {
		if name, ok := parse(strings.Fields(lines.Text())); ok {
			return name, nil
		}
	}
	if err := lines.Err(); err != nil {
		return "", err
	}
	return "", ErrNoInterface
}

// parseRoute4 reads a /proc/net/route line: Iface Destination Gateway
// Flags RefCnt Use Metric Mask ...; the default route has destination and
// mask 0 and the up flag.
func parseRoute4(f []string) (string, bool) {
	const flagUp = 0x1
	if len(f) < 8 || f[1] != "00000000" || f[7] != "00000000" {
		return "", false
	}
	flags, err := strconv.ParseUint(f[3], 16, 32)
	if err != nil || flags&flagUp == 0 {
		return "", false
	}
	return f[0], true
}

// parseRoute6 reads a /proc/net/ipv6_route line: dst dst_len src src_len
// next_hop metric refcnt use flags iface; the default route is ::/0.
// Unreachable routes (on lo, as the kernel installs) are skipped.
func parseRoute6(f []string) (string, bool) {
	if len(f) < 10 || f[0] != strings.Repeat("0", 32) || f[1] != "00" || f[9] == "lo" {
		return "", false
	}
	return f[9], true
}
