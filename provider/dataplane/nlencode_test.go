package dataplane

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"sigs.k8s.io/knftables"
)

func concat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func hostU32(n uint32) []byte { return binary.NativeEndian.AppendUint32(nil, n) }

var (
	frontend4  = []byte{192, 0, 2, 1}
	ep4Addr    = []byte{192, 0, 2, 71}
	frontend6  = []byte{0x20, 0x01, 0x0d, 0xb8, 15: 1}
	tcpPadded  = []byte{6, 0, 0, 0}
	port80Pad  = []byte{0, 80, 0, 0}
	port8080Pd = []byte{0x1f, 0x90, 0, 0}
)

func TestEncodeElements(t *testing.T) {
	r := newRuleset()
	addSkeleton(r, Options{})
	layoutFor := func(name string) layout {
		typeOf, flags, _ := containerType(r, name)
		l, err := layoutOf(typeOf, flags)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return l
	}
	for _, tc := range []struct {
		name      string
		container string
		el        Element
		want      []nftables.SetElement
	}{{
		name: "endpoint map: concatenation padded to registers, numgen index in host order", container: "ep4",
		el: Element{Key: []string{"192.0.2.1", "tcp", "80", "2"}, Value: []string{"192.0.2.71", "8080"}},
		want: []nftables.SetElement{{
			Key: concat(frontend4, tcpPadded, port80Pad, hostU32(2)),
			Val: concat(ep4Addr, port8080Pd),
		}},
	}, {
		name: "IPv6 verdict map with comment", container: "svcmore6",
		el: Element{Key: []string{"2001:db8::1", "udp", "53"}, Value: []string{"goto pick6-3"}, Comment: "ns/dns:53"},
		want: []nftables.SetElement{{
			Key:         concat(frontend6, []byte{17, 0, 0, 0}, []byte{0, 53, 0, 0}),
			VerdictData: &expr.Verdict{Kind: expr.VerdictGoto, Chain: "pick6-3"},
			Comment:     "ns/dns:53",
		}},
	}, {
		name: "NodePort map keyed by protocol and port only", container: "npmore4",
		el: Element{Key: []string{"sctp", "30000"}, Value: []string{"drop"}},
		want: []nftables.SetElement{{
			Key:         concat([]byte{132, 0, 0, 0}, []byte{0x75, 0x30, 0, 0}),
			VerdictData: &expr.Verdict{Kind: expr.VerdictDrop},
		}},
	}, {
		name: "single address set: no padding", container: "nodeport-ips4",
		el:   Element{Key: []string{"192.0.2.1"}},
		want: []nftables.SetElement{{Key: frontend4}},
	}, {
		name: "rbtree interval: start, and end one past the range", container: "podcidrs4",
		el: Element{Key: []string{"10.0.0.0/8"}},
		want: []nftables.SetElement{
			{Key: []byte{10, 0, 0, 0}},
			{Key: []byte{11, 0, 0, 0}, IntervalEnd: true},
		},
	}, {
		name: "rbtree interval reaching the end of the address space has no end", container: "podcidrs4",
		el:   Element{Key: []string{"0.0.0.0/0"}},
		want: []nftables.SetElement{{Key: []byte{0, 0, 0, 0}}},
	}, {
		name: "concatenated interval: key and inclusive key end", container: "fwallow4",
		el: Element{Key: []string{"192.0.2.1", "tcp", "80", "203.0.113.0/25"}},
		want: []nftables.SetElement{{
			Key:    concat(frontend4, tcpPadded, port80Pad, []byte{203, 0, 113, 0}),
			KeyEnd: concat(frontend4, tcpPadded, port80Pad, []byte{203, 0, 113, 127}),
		}},
	}, {
		name: "concatenated interval with a single address", container: "fwallow4",
		el: Element{Key: []string{"192.0.2.1", "tcp", "80", "203.0.113.9"}},
		want: []nftables.SetElement{{
			Key:    concat(frontend4, tcpPadded, port80Pad, []byte{203, 0, 113, 9}),
			KeyEnd: concat(frontend4, tcpPadded, port80Pad, []byte{203, 0, 113, 9}),
		}},
	}, {
		name: "hairpin pairs", container: "hairpin6",
		el:   Element{Key: []string{"2001:db8::1", "2001:db8::1"}},
		want: []nftables.SetElement{{Key: concat(frontend6, frontend6)}},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := encodeElements(layoutFor(tc.container), []Element{tc.el})
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %s\nwant %s", showElements(got), showElements(tc.want))
			}
		})
	}
}

func TestEncodeRejectsWhatItCannotWrite(t *testing.T) {
	for _, tc := range []struct {
		name   string
		typeOf string
		flags  []knftables.SetFlag
		el     Element
	}{
		{"unknown typeof expression", "ip daddr . tcp dport", nil, Element{Key: []string{"192.0.2.1", "80"}}},
		{"IPv6 address in an IPv4 field", "ip daddr", nil, Element{Key: []string{"2001:db8::1"}}},
		{"too few key fields", "ip daddr . meta l4proto . th dport : verdict", nil, Element{Key: []string{"192.0.2.1", "tcp"}, Value: []string{"drop"}}},
		{"port out of range", "meta l4proto . th dport : verdict", nil, Element{Key: []string{"tcp", "70000"}, Value: []string{"drop"}}},
		{"unknown protocol", "meta l4proto . th dport : verdict", nil, Element{Key: []string{"icmp", "80"}, Value: []string{"drop"}}},
		{"goto without chain", "meta l4proto . th dport : verdict", nil, Element{Key: []string{"tcp", "80"}, Value: []string{"goto"}}},
		{"unknown verdict", "meta l4proto . th dport : verdict", nil, Element{Key: []string{"tcp", "80"}, Value: []string{"reject"}}},
		{"bad prefix", "ip saddr", []knftables.SetFlag{knftables.IntervalFlag}, Element{Key: []string{"10.0.0.0/33"}}},
		{"value fields", "ip daddr : ip daddr . th dport", nil, Element{Key: []string{"192.0.2.1"}, Value: []string{"192.0.2.2"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := layoutOf(tc.typeOf, tc.flags)
			if err == nil {
				_, err = encodeElements(l, []Element{tc.el})
			}
			if !errors.Is(err, ErrEncode) {
				t.Fatalf("want ErrEncode, got %v", err)
			}
		})
	}
}

// Every static container the builder declares must be encodable, or full
// syncs would silently always take the slow path.
func TestEveryContainerHasALayout(t *testing.T) {
	r := newRuleset()
	addSkeleton(r, Options{})
	for _, name := range containerNames(r) {
		typeOf, flags, _ := containerType(r, name)
		if _, err := layoutOf(typeOf, flags); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestChunksFitOneNetlinkAttribute(t *testing.T) {
	svcs, sl := scaleCluster(3000)
	r := Build(svcs, sl, testNode, Options{})
	typeOf, flags, _ := containerType(r, "ep6")
	l, _ := layoutOf(typeOf, flags)
	var els []Element
	for _, k := range sortedKeys(r.Elements["ep6"]) {
		els = append(els, r.Elements["ep6"][k])
	}
	enc, err := encodeElements(l, els)
	if err != nil {
		t.Fatal(err)
	}
	chunks, _ := chunkElements(enc)
	if len(chunks) < 2 {
		t.Fatalf("%d elements in %d chunk(s): the test does not exercise splitting", len(enc), len(chunks))
	}
	var joined []nftables.SetElement
	for _, c := range chunks {
		n := 4 // the list attribute's own header
		for _, e := range c {
			n += encodedSize(e)
		}
		if n > 0xffff {
			t.Errorf("chunk of %d elements encodes to %d bytes, over a netlink attribute's 65535", len(c), n)
		}
		joined = append(joined, c...)
	}
	if !slices.EqualFunc(joined, enc, func(a, b nftables.SetElement) bool { return bytes.Equal(a.Key, b.Key) }) {
		t.Error("chunks lose or reorder elements")
	}
}

func showElements(els []nftables.SetElement) string {
	var b bytes.Buffer
	for _, e := range els {
		fmt.Fprintf(&b, "{key %x end %x val %x interval-end %t comment %q", e.Key, e.KeyEnd, e.Val, e.IntervalEnd, e.Comment)
		if e.VerdictData != nil {
			fmt.Fprintf(&b, " verdict %d %s", e.VerdictData.Kind, e.VerdictData.Chain)
		}
		b.WriteString("} ")
	}
	return b.String()
}
