package service

import (
	"errors"
	"net/netip"
	"slices"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func lbService(mutate func(*v1.Service)) *v1.Service {
	svc := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: "front", UID: "0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9"},
		Spec: v1.ServiceSpec{
			Type:       v1.ServiceTypeLoadBalancer,
			IPFamilies: []v1.IPFamily{v1.IPv4Protocol},
			Ports:      []v1.ServicePort{{Name: "http", Protocol: v1.ProtocolTCP, Port: 80, NodePort: 30080}},
		},
	}
	if mutate != nil {
		mutate(svc)
	}
	return svc
}

func annotate(kv ...string) func(*v1.Service) {
	return func(svc *v1.Service) {
		svc.Annotations = map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			svc.Annotations[kv[i]] = kv[i+1]
		}
	}
}

func TestBuildRequestedIPs(t *testing.T) {
	dual := func(svc *v1.Service) { svc.Spec.IPFamilies = []v1.IPFamily{v1.IPv4Protocol, v1.IPv6Protocol} }
	tests := []struct {
		name    string
		mutate  func(*v1.Service)
		want    []string
		wantErr error
	}{
		{name: "none", want: nil},
		{name: "legacy field", mutate: func(s *v1.Service) { s.Spec.LoadBalancerIP = "192.0.2.7" }, want: []string{"192.0.2.7"}},
		{name: "legacy field garbage", mutate: func(s *v1.Service) { s.Spec.LoadBalancerIP = "nope" }, wantErr: ErrInvalidSpec},
		{name: "annotation", mutate: annotate(AnnotationLoadBalancerIPs, "192.0.2.9"), want: []string{"192.0.2.9"}},
		{name: "metallb alias", mutate: annotate(metalLBLoadBalancerIPs, "192.0.2.9"), want: []string{"192.0.2.9"}},
		{name: "both spellings agree", mutate: annotate(AnnotationLoadBalancerIPs, "192.0.2.9", metalLBLoadBalancerIPs, " 192.0.2.9"), want: []string{"192.0.2.9"}},
		{name: "both spellings disagree", mutate: annotate(AnnotationLoadBalancerIPs, "192.0.2.9", metalLBLoadBalancerIPs, "192.0.2.10"), wantErr: ErrInvalidAnnotation},
		{name: "dual stack pair", mutate: func(s *v1.Service) { dual(s); annotate(AnnotationLoadBalancerIPs, "192.0.2.9, 2001:db8::9")(s) }, want: []string{"192.0.2.9", "2001:db8::9"}},
		{name: "two of one family", mutate: func(s *v1.Service) { dual(s); annotate(AnnotationLoadBalancerIPs, "192.0.2.9,192.0.2.10")(s) }, wantErr: ErrInvalidAnnotation},
		{name: "family the service lacks", mutate: annotate(AnnotationLoadBalancerIPs, "2001:db8::9"), wantErr: ErrInvalidSpec},
		{name: "garbage in list", mutate: annotate(AnnotationLoadBalancerIPs, "192.0.2.9,x"), wantErr: ErrInvalidAnnotation},
		{name: "empty annotation", mutate: annotate(AnnotationLoadBalancerIPs, " "), wantErr: ErrInvalidAnnotation},
		{name: "zone rejected", mutate: func(s *v1.Service) { dual(s); annotate(AnnotationLoadBalancerIPs, "fe80::1%eth0")(s) }, wantErr: ErrInvalidAnnotation},
		{name: "annotation and legacy field", mutate: func(s *v1.Service) {
			annotate(AnnotationLoadBalancerIPs, "192.0.2.9")(s)
			s.Spec.LoadBalancerIP = "192.0.2.9"
		}, wantErr: ErrInvalidAnnotation},
		{name: "mapped v4 normalised", mutate: annotate(AnnotationLoadBalancerIPs, "::ffff:192.0.2.9"), want: []string{"192.0.2.9"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lb, err := Build(lbService(tt.mutate), nil)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Build() error = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Build() error = %v", err)
			}
			var got []string
			for _, ip := range lb.RequestedIPs {
				got = append(got, ip.String())
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("RequestedIPs = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestBuildAnnotationErrorNamesTheAnnotation(t *testing.T) {
	_, err := Build(lbService(annotate(AnnotationLoadBalancerIPs, "192.0.2.300")), nil)
	var ae *AnnotationError
	if !errors.As(err, &ae) {
		t.Fatalf("error %v is not an *AnnotationError", err)
	}
	if ae.Annotation != AnnotationLoadBalancerIPs || ae.Value != "192.0.2.300" {
		t.Fatalf("AnnotationError = %+v, want the annotation and its value", ae)
	}
}

func TestBuildPoolSharingAndSourceRanges(t *testing.T) {
	tests := []struct {
		name       string
		mutate     func(*v1.Service)
		wantPool   string
		wantKey    string
		wantRanges []string
		wantErr    error
	}{
		{name: "pool", mutate: annotate(AnnotationAddressPool, "gold"), wantPool: "gold"},
		{name: "pool via metallb", mutate: annotate(metalLBAddressPool, "gold"), wantPool: "gold"},
		{name: "pool conflict", mutate: annotate(AnnotationAddressPool, "gold", metalLBAddressPool, "silver"), wantErr: ErrInvalidAnnotation},
		{name: "sharing key", mutate: annotate(metalLBAllowSharedIP, "dns"), wantKey: "dns"},
		{name: "spec ranges masked", mutate: func(s *v1.Service) { s.Spec.LoadBalancerSourceRanges = []string{"192.0.2.7/24", "2001:db8::/32"} },
			wantRanges: []string{"192.0.2.0/24", "2001:db8::/32"}},
		{name: "annotation ranges", mutate: annotate(AnnotationSourceRanges, "198.51.100.0/24, 203.0.113.0/25"),
			wantRanges: []string{"198.51.100.0/24", "203.0.113.0/25"}},
		{name: "annotation ranges garbage", mutate: annotate(AnnotationSourceRanges, "198.51.100.0/24,nope"), wantErr: ErrInvalidAnnotation},
		{name: "spec wins over annotation", mutate: func(s *v1.Service) {
			annotate(AnnotationSourceRanges, "nope")(s)
			s.Spec.LoadBalancerSourceRanges = []string{"203.0.113.0/24"}
		}, wantRanges: []string{"203.0.113.0/24"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lb, err := Build(lbService(tt.mutate), nil)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Build() error = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Build() error = %v", err)
			}
			if lb.Pool != tt.wantPool || lb.SharingKey != tt.wantKey {
				t.Fatalf("pool, key = %q, %q; want %q, %q", lb.Pool, lb.SharingKey, tt.wantPool, tt.wantKey)
			}
			var ranges []string
			for _, p := range lb.SourceRanges {
				ranges = append(ranges, p.String())
			}
			if !slices.Equal(ranges, tt.wantRanges) {
				t.Fatalf("SourceRanges = %v, want %v", ranges, tt.wantRanges)
			}
		})
	}
}

func TestBuildCopiesSpecAndNodes(t *testing.T) {
	policy := v1.IPFamilyPolicyPreferDualStack
	svc := lbService(func(s *v1.Service) {
		s.Spec.IPFamilyPolicy = &policy
		s.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyLocal
		s.Spec.HealthCheckNodePort = 32000
		s.Spec.Ports = append(s.Spec.Ports, v1.ServicePort{Name: "dns", Protocol: v1.ProtocolUDP, Port: 53, NodePort: 30053})
	})
	nodes := []*v1.Node{
		{ObjectMeta: metav1.ObjectMeta{Name: "node-b"}, Status: v1.NodeStatus{Addresses: []v1.NodeAddress{
			{Type: v1.NodeHostName, Address: "node-b"},
			{Type: v1.NodeInternalIP, Address: "192.0.2.12"},
		}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "node-a", Labels: map[string]string{"zone": "a"}}, Spec: v1.NodeSpec{ProviderID: "aws:///a/i-1"}, Status: v1.NodeStatus{Addresses: []v1.NodeAddress{
			{Type: v1.NodeInternalIP, Address: "192.0.2.11"},
			{Type: v1.NodeExternalIP, Address: "2001:db8::11"},
		}}},
	}
	lb, err := Build(svc, nodes)
	if err != nil {
		t.Fatal(err)
	}
	if lb.Name != "a0a1b2c3d4e5f60718293a4b5c6d7e8f" || lb.Key() != "web/front" {
		t.Errorf("Name, Key = %q, %q", lb.Name, lb.Key())
	}
	if lb.IPFamilyPolicy != policy || lb.ExternalTrafficPolicy != v1.ServiceExternalTrafficPolicyLocal || lb.HealthCheckNodePort != 32000 {
		t.Errorf("policy fields not copied: %+v", lb)
	}
	wantPorts := []Port{{Name: "http", Protocol: v1.ProtocolTCP, Port: 80, NodePort: 30080}, {Name: "dns", Protocol: v1.ProtocolUDP, Port: 53, NodePort: 30053}}
	if !slices.Equal(lb.Ports, wantPorts) {
		t.Errorf("Ports = %+v, want %+v", lb.Ports, wantPorts)
	}
	if len(lb.Nodes()) != 2 || lb.Nodes()[0].Name != "node-a" ||
		!slices.Equal(lb.Nodes()[0].Addresses, []netip.Addr{netip.MustParseAddr("192.0.2.11"), netip.MustParseAddr("2001:db8::11")}) ||
		!slices.Equal(lb.Nodes()[1].Addresses, []netip.Addr{netip.MustParseAddr("192.0.2.12")}) ||
		lb.Nodes()[0].ProviderID != "aws:///a/i-1" || lb.Nodes()[0].Labels["zone"] != "a" {
		t.Errorf("Nodes = %+v", lb.Nodes())
	}
}

func TestNodeAddresses(t *testing.T) {
	addr := func(typ v1.NodeAddressType, a string) v1.NodeAddress { return v1.NodeAddress{Type: typ, Address: a} }
	for _, tc := range []struct {
		name  string
		addrs []v1.NodeAddress
		want  []string
	}{
		{"none", nil, nil},
		{"internal and external, status order", []v1.NodeAddress{addr(v1.NodeExternalIP, "203.0.113.5"),
			addr(v1.NodeInternalIP, "192.0.2.11"), addr(v1.NodeInternalIP, "2001:db8::11")},
			[]string{"203.0.113.5", "192.0.2.11", "2001:db8::11"}},
		{"hostnames and DNS names skipped", []v1.NodeAddress{addr(v1.NodeHostName, "node-a"),
			addr(v1.NodeInternalDNS, "node-a.example"), addr(v1.NodeInternalIP, "192.0.2.11")}, []string{"192.0.2.11"}},
		{"unparsable skipped", []v1.NodeAddress{addr(v1.NodeInternalIP, "192.0.2.300"), addr(v1.NodeInternalIP, "192.0.2.11")},
			[]string{"192.0.2.11"}},
		{"IPv4-mapped as IPv4, each once", []v1.NodeAddress{addr(v1.NodeInternalIP, "::ffff:192.0.2.11"),
			addr(v1.NodeExternalIP, "192.0.2.11"), addr(v1.NodeInternalIP, "192.0.2.11")}, []string{"192.0.2.11"}},
	} {
		var want []netip.Addr
		for _, a := range tc.want {
			want = append(want, netip.MustParseAddr(a))
		}
		n := &v1.Node{Status: v1.NodeStatus{Addresses: tc.addrs}}
		if got := NodeAddresses(n); !slices.Equal(got, want) {
			t.Errorf("%s: NodeAddresses = %v, want %v", tc.name, got, want)
		}
	}
}

func TestSelectionWants(t *testing.T) {
	class := func(c string) func(*v1.Service) { return func(s *v1.Service) { s.Spec.LoadBalancerClass = &c } }
	tests := []struct {
		name      string
		svc       *v1.Service
		classOnly bool
		want      bool
	}{
		{"no class", lbService(nil), false, true},
		{"no class, class-only mode", lbService(nil), true, false},
		{"our class", lbService(class(Class)), true, true},
		{"foreign class", lbService(class("example.com/other")), false, false},
		{"cluster ip", lbService(func(s *v1.Service) { s.Spec.Type = v1.ServiceTypeClusterIP }), false, false},
		{"node port", lbService(func(s *v1.Service) { s.Spec.Type = v1.ServiceTypeNodePort }), false, false},
	}
	for _, tt := range tests {
		if got := (Selection{ClassOnly: tt.classOnly}).Wants(tt.svc); got != tt.want {
			t.Errorf("%s: Wants() = %v, want %v", tt.name, got, tt.want)
		}
	}
}
