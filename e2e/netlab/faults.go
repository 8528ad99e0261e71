package netlab

import (
	"fmt"
	"net"
	"strings"
)

// Faults the failover tests inject. Each acts on the bridge, never on a
// host's own interface: taking a host's interface down would delete its
// routes, which a powered-off machine's neighbours would not see happen.

// SetPortUp takes h's port on the bridge down or up: to everyone else on
// the LAN, h has lost power or its cable (and comes back).
func (l *Lab) SetPortUp(h *Host, up bool) error {
	state := "down"
	if up {
		state = "up"
	}
	_, err := run("ip", "-n", l.bridge.Name, "link", "set", "p-"+h.Short, state)
	return err
}

// Partition cuts h off from peers at the bridge while it still reaches
// every other host (clients): the failure fencing exists for. It returns
// a function that heals the partition.
func (l *Lab) Partition(h *Host, peers ...*Host) (heal func() error, err error) {
	table := "partition-" + h.Short
	var ports []string
	for _, p := range peers {
		ports = append(ports, `"p-`+p.Short+`"`)
	}
	set := "{ " + strings.Join(ports, ", ") + " }"
	script := fmt.Sprintf(`table bridge %[1]s {
	chain forward {
		type filter hook forward priority 0; policy accept;
		iifname "p-%[2]s" oifname %[3]s drop
		iifname %[3]s oifname "p-%[2]s" drop
	}
}
`, table, h.Short, set)
	if _, err := runStdin(script, "ip", "netns", "exec", l.bridge.Name, "nft", "-f", "-"); err != nil {
		return nil, err
	}
	return func() error {
		_, err := run("ip", "netns", "exec", l.bridge.Name, "nft", "delete", "table", "bridge", table)
		return err
	}, nil
}

// MAC returns the hardware address of h's LAN interface.
func (h *Host) MAC() (net.HardwareAddr, error) {
	var mac net.HardwareAddr
	err := h.Do(func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		mac = ifi.HardwareAddr
		return nil
	})
	return mac, err
}
