package dataplane

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

var podCIDR4 = netip.MustParsePrefix("192.0.2.96/27")

// localModes are kube-proxy's --detect-local-mode values as the agent turns
// them into a LocalDetector (NodeCIDR is ClusterCIDR with the Node's
// ranges), with the interface this node's pods' packets come in through.
var localModes = []struct {
	name     string
	local    LocalDetector
	podIface string
}{
	{"ClusterCIDR", LocalDetector{PodCIDRs: []netip.Prefix{podCIDR4}}, defaultPodIface},
	{"BridgeInterface", LocalDetector{Interface: "cbr0"}, "cbr0"},
	{"InterfaceNamePrefix", LocalDetector{Interface: "veth", InterfacePrefix: true}, "veth1a2b3c"},
}

func TestTraceLocalDetection(t *testing.T) {
	const client, pod, host = "203.0.113.50", "192.0.2.99", "192.0.2.10"
	etpNodePort := nodeIP4.String()
	remote := []string{"192.0.2.102:8080"}
	detected := []struct {
		name string
		p    packet
		want traceResult
	}{
		{"pod to ClusterIP keeps its address", packet{pod, "198.51.100.1", "tcp", 80, localPod}, dnat(false, both...)},
		{"off-node to ClusterIP is masqueraded", packet{client, "198.51.100.1", "tcp", 80, offNode}, dnat(true, both...)},
		{"host to ClusterIP is masqueraded", packet{host, "198.51.100.1", "tcp", 80, hostProc}, dnat(true, both...)},
		{"pod to ETP Local LB IP gets every endpoint", packet{pod, "203.0.113.9", "tcp", 80, localPod}, dnat(false, both...)},
		{"pod to ETP Local NodePort gets every endpoint", packet{pod, etpNodePort, "tcp", 30009, localPod}, dnat(false, both...)},
		{"off-node to ETP Local LB IP stays local", packet{client, "203.0.113.9", "tcp", 80, offNode}, dnat(false, local...)},
		{"pod to ETP Local LB IP without local endpoint", packet{pod, "203.0.113.10", "tcp", 80, localPod}, dnat(false, remote...)},
		{"pod to ETP Local NodePort without local endpoint", packet{pod, etpNodePort, "tcp", 30010, localPod}, dnat(false, remote...)},
		{"off-node to ETP Local LB IP without local endpoint drops", packet{client, "203.0.113.10", "tcp", 80, offNode}, traceResult{verdict: "drop"}},
		{"off-node to ETP Cluster LB IP is masqueraded", packet{"198.51.100.200", "203.0.113.3", "tcp", 80, offNode}, dnat(true, both...)},
	}
	for _, m := range localModes {
		t.Run(m.name, func(t *testing.T) {
			_, tr := buildTraced(t, testNode, Options{Local: m.local})
			tr.podIface = m.podIface
			for _, c := range detected {
				tr.t = t
				if got := tr.trace(c.p); !sameTrace(got, c.want) {
					t.Errorf("%s: %+v:\n got %+v\nwant %+v", c.name, c.p, got, c.want)
				}
			}
		})
	}

	// Nothing detected: ClusterIP traffic is never masqueraded, and the
	// Local policy holds for pods too (kube-proxy's no-op detector).
	_, tr := buildTraced(t, testNode, Options{})
	for _, c := range []struct {
		name string
		p    packet
		want traceResult
	}{
		{"off-node to ClusterIP", packet{client, "198.51.100.1", "tcp", 80, offNode}, dnat(false, both...)},
		{"pod to ETP Local LB IP", packet{pod, "203.0.113.9", "tcp", 80, localPod}, dnat(false, local...)},
		{"pod to ETP Local LB IP without local endpoint", packet{pod, "203.0.113.10", "tcp", 80, localPod}, traceResult{verdict: "drop"}},
	} {
		tr.t = t
		if got := tr.trace(c.p); !sameTrace(got, c.want) {
			t.Errorf("no detection, %s: got %+v want %+v", c.name, got, c.want)
		}
	}
}

// TestTraceLocalDetectionMisses covers packets from pods that the chosen
// mode does not recognise: they are treated as any other source.
func TestTraceLocalDetectionMisses(t *testing.T) {
	const pod = "192.0.2.99"
	for _, c := range []struct {
		name     string
		local    LocalDetector
		podIface string
	}{
		{"bridge name is not a prefix", LocalDetector{Interface: "cbr0"}, "cbr01"},
		{"other bridge", LocalDetector{Interface: "cbr0"}, "docker0"},
		{"other prefix", LocalDetector{Interface: "veth", InterfacePrefix: true}, "cali12345"},
		{"source outside the pod ranges", LocalDetector{PodCIDRs: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}}, defaultPodIface},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, tr := buildTraced(t, testNode, Options{Local: c.local})
			tr.podIface = c.podIface
			if got, want := tr.trace(packet{pod, "198.51.100.1", "tcp", 80, localPod}), dnat(true, both...); !sameTrace(got, want) {
				t.Errorf("ClusterIP: got %+v want %+v", got, want)
			}
			if got := tr.trace(packet{pod, "203.0.113.10", "tcp", 80, localPod}); got.verdict != "drop" {
				t.Errorf("ETP Local LB IP without local endpoint: got %+v, want drop", got)
			}
		})
	}
}

// TestTraceLocalDetectionPerFamily: pod ranges detect in their own family
// only, an interface in both.
func TestTraceLocalDetectionPerFamily(t *testing.T) {
	offNode6 := packet{"2001:db8:7::1", "2001:db8:1::13", "tcp", 80, offNode}
	for _, c := range []struct {
		local    LocalDetector
		wantMasq bool
	}{
		{LocalDetector{PodCIDRs: []netip.Prefix{podCIDR4}}, false},
		{LocalDetector{PodCIDRs: []netip.Prefix{podCIDR4, netip.MustParsePrefix("2001:db8:3::/64")}}, true},
		{LocalDetector{Interface: "cbr0"}, true},
	} {
		_, tr := buildTraced(t, testNode, Options{Local: c.local})
		if got, want := tr.trace(offNode6), dnat(c.wantMasq, "[2001:db8:2::1]:8080"); !sameTrace(got, want) {
			t.Errorf("%+v: IPv6 off-node to ClusterIP: got %+v want %+v", c.local, got, want)
		}
	}
}

func sameTrace(got, want traceResult) bool {
	return got.verdict == want.verdict && slices.Equal(got.endpoints, want.endpoints) &&
		got.masquerade == want.masquerade && got.rejectTCPReset == want.rejectTCPReset &&
		slices.Equal(got.remembered, want.remembered)
}

// TestLocalDetectionRules pins the rules each mode writes: the only ones
// that depend on it, all static.
func TestLocalDetectionRules(t *testing.T) {
	v6 := netip.MustParsePrefix("2001:db8:3::/64")
	for _, c := range []struct {
		name  string
		local LocalDetector
		match [2]string // per family; "" detects nothing
	}{
		{"none", LocalDetector{}, [2]string{"", ""}},
		{"CIDRs of one family", LocalDetector{PodCIDRs: []netip.Prefix{podCIDR4}}, [2]string{"ip saddr @podcidrs4", ""}},
		{"CIDRs of both", LocalDetector{PodCIDRs: []netip.Prefix{podCIDR4, v6}}, [2]string{"ip saddr @podcidrs4", "ip6 saddr @podcidrs6"}},
		{"bridge", LocalDetector{Interface: "cbr0", PodCIDRs: []netip.Prefix{podCIDR4}}, [2]string{`iifname "cbr0"`, `iifname "cbr0"`}},
		{"prefix", LocalDetector{Interface: "veth", InterfacePrefix: true}, [2]string{`iifname "veth*"`, `iifname "veth*"`}},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := Build(nil, nil, testNode, Options{Local: c.local})
			var wantServices []string
			for i, f := range families {
				m := c.match[i]
				masq := r.Chains[f.masqUnlessPod()]
				if m == "" {
					if masq != nil {
						t.Errorf("%s exists without detection: %q", f.masqUnlessPod(), masq.Rules)
					}
					if r.Chains[f.podPickChain(1)] != nil || r.Chains[f.podNPPickChain(1)] != nil {
						t.Errorf("family %s: pod pick chains without detection", f.n)
					}
					continue
				}
				if want := []string{m + " return", "masquerade"}; masq == nil || !slices.Equal(masq.Rules, want) {
					t.Errorf("%s: got %+v want %q", f.masqUnlessPod(), masq, want)
				}
				wantServices = append(wantServices,
					m+" "+f.ip+" daddr . meta l4proto . th dport @podsvc"+f.n+" goto podpick"+f.n,
					m+" "+f.ip+" daddr @nodeport-ips"+f.n+" meta l4proto . th dport @podnp"+f.n+" goto podnppick"+f.n)
				for n, name := range map[int]string{1: f.podPickChain(1), PrecreatedPickChains: f.podNPPickChain(PrecreatedPickChains)} {
					if r.Chains[name] == nil {
						t.Errorf("pick chain %s for %d endpoints is not precreated", name, n)
					}
				}
			}
			var gotServices []string
			for _, rule := range r.Chains[chainServices].Rules {
				if strings.Contains(rule, "@pod") {
					gotServices = append(gotServices, rule)
				}
			}
			if !slices.Equal(gotServices, wantServices) {
				t.Errorf("services chain, pod rules:\n got %q\nwant %q", gotServices, wantServices)
			}
			if c.match[0] != "" {
				want := "meta l4proto { tcp, udp, sctp } dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 3 map @podep4"
				if got := r.Chains["podpick4-3"]; got == nil || !slices.Equal(got.Rules, []string{want}) {
					t.Errorf("podpick4-3: %+v, want %q", got, want)
				}
			}
			if c.local.Interface != "" && len(r.Elements["podcidrs4"]) > 0 {
				t.Errorf("interface mode writes pod ranges: %v", r.Elements["podcidrs4"])
			}
		})
	}
}

func TestValidInterfaceName(t *testing.T) {
	for _, ok := range []string{"cbr0", "veth", "cali", "lxc", "br-5e0f1c2d3a4b", "eth0.100", "a", "vlan@x", "tun+", "123456789012345"} {
		if err := ValidInterfaceName(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", ".", "..", "1234567890123456", "veth*", `a"b`, "a b", "a/b", "a:b", "tab\t", `a\b`, "ét"} {
		if err := ValidInterfaceName(bad); !errors.Is(err, ErrInterfaceName) {
			t.Errorf("%q: want ErrInterfaceName, got %v", bad, err)
		}
	}
}
