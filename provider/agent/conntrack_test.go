package agent

import (
	"context"
	"net/netip"
	"reflect"
	"strings"
	"sync"
	"testing"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/heraldlb/herald/provider/dataplane"
)

func TestConntrackArgs(t *testing.T) {
	for _, tc := range []struct {
		flow dataplane.StaleFlow
		want string
	}{
		{
			flow: dataplane.StaleFlow{Dst: netip.MustParseAddr("203.0.113.53"), Port: 53,
				Endpoint: netip.MustParseAddrPort("198.51.100.2:5353")},
			want: "-D -f ipv4 -p udp --orig-dst 203.0.113.53 --orig-port-dst 53 --reply-src 198.51.100.2 --reply-port-src 5353",
		},
		{
			flow: dataplane.StaleFlow{Port: 30053},
			want: "-D -f ipv4 -p udp --orig-port-dst 30053",
		},
		{
			flow: dataplane.StaleFlow{IPv6: true, Dst: netip.MustParseAddr("2001:db8::53"), Port: 53},
			want: "-D -f ipv6 -p udp --orig-dst 2001:db8::53 --orig-port-dst 53",
		},
	} {
		if got := strings.Join(conntrackArgs(tc.flow), " "); got != tc.want {
			t.Errorf("conntrackArgs(%+v) = %q, want %q", tc.flow, got, tc.want)
		}
	}
}

// fakeConntrack records what the agent asks to delete.
type fakeConntrack struct {
	mu    sync.Mutex
	flows []dataplane.StaleFlow
}

func (f *fakeConntrack) DeleteUDP(_ context.Context, flows []dataplane.StaleFlow) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.flows = append(f.flows, flows...)
	return nil
}

func (f *fakeConntrack) take() []dataplane.StaleFlow {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := f.flows
	f.flows = nil
	return out
}

func TestAgentDeletesStaleUDPFlows(t *testing.T) {
	dns := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "dns"},
		Spec: v1.ServiceSpec{Type: v1.ServiceTypeClusterIP, ClusterIP: "198.51.100.53", ClusterIPs: []string{"198.51.100.53"},
			Ports: []v1.ServicePort{{Name: "dns", Protocol: v1.ProtocolUDP, Port: 53}}},
	}
	slice := func(addrs ...string) *discoveryv1.EndpointSlice {
		s := &discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "dns-1",
				Labels: map[string]string{discoveryv1.LabelServiceName: "dns"}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("dns"), Protocol: ptr.To(v1.ProtocolUDP), Port: ptr.To[int32](5353)}},
		}
		for _, a := range addrs {
			s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{Addresses: []string{a},
				Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}})
		}
		return s
	}
	h := newHarness(t, testNode(), dns, slice("192.0.2.101", "192.0.2.102"))
	h.run(t)
	h.waitFor(t, "add element inet herald ep4 { 198.51.100.53 . udp . 53 . 1 : 192.0.2.102 . 5353 }")
	if got := h.ct.take(); len(got) != 0 {
		t.Errorf("the first sync cannot know stale flows, deleted %+v", got)
	}

	if _, err := h.client.DiscoveryV1().EndpointSlices("ns").Update(context.Background(),
		slice("192.0.2.101"), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	want := []dataplane.StaleFlow{{Dst: netip.MustParseAddr("198.51.100.53"), Port: 53,
		Endpoint: netip.MustParseAddrPort("192.0.2.102:5353")}}
	for {
		r := recv(t, h.reports, "a sync after the endpoint removal")
		if r.err != nil {
			continue
		}
		if got := h.ct.take(); len(got) > 0 {
			if !reflect.DeepEqual(got, want) {
				t.Errorf("deleted %+v, want %+v", got, want)
			}
			return
		}
	}
}
