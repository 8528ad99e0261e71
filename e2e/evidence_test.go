package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	baremetal "github.com/heraldlb/herald/bare-metal"
	"github.com/heraldlb/herald/bare-metal/api/v1alpha1"
	"github.com/heraldlb/herald/bare-metal/claims"
	"github.com/heraldlb/herald/e2e/cluster"
	"github.com/heraldlb/herald/provider/service"
)

// End-to-end evidence for what the README claims of addresses: IPv6-only
// and dual-stack Services, specific addresses by annotation and by
// spec.loadBalancerIP, and sharing, each shown in status and in the
// address claims, and herald-ccm's /metrics agreeing with kubectl.

func withFamilies(svc *v1.Service, policy v1.IPFamilyPolicy, families ...v1.IPFamily) *v1.Service {
	svc.Spec.IPFamilyPolicy = &policy
	svc.Spec.IPFamilies = families
	return svc
}

// claimHolders maps each claimed address to the Services holding it.
func claimHolders(t testing.TB, client kubernetes.Interface) map[string][]string {
	t.Helper()
	list, err := client.NetworkingV1().IPAddresses().List(context.Background(), metav1.ListOptions{LabelSelector: claimSelector})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for _, obj := range list.Items {
		holders, err := claims.HolderIndex(&obj)
		if err != nil {
			t.Fatal(err)
		}
		out[obj.Name] = holders
	}
	return out
}

func family(ip string) v1.IPFamily {
	if netip.MustParseAddr(ip).Is4() {
		return v1.IPv4Protocol
	}
	return v1.IPv6Protocol
}

func TestAddressFamiliesSpecificAddressesAndSharing(t *testing.T) {
	c, client, pools := startPoolLab(t)
	createPool(t, pools, "dual", "198.51.100.16/28", "2001:db8:100::/120")
	m := startCCM(t, c, "backend: bare-metal\n")
	createNamespace(t, client, "ev")

	type want struct {
		svc      *v1.Service
		families []v1.IPFamily
		ips      []string // exact addresses, when the Service asks for them
	}
	legacy := newService("ev", "legacy-ip", v1.ServiceTypeLoadBalancer, nil)
	legacy.Spec.LoadBalancerIP = "198.51.100.25"
	cases := []want{
		{svc: withFamilies(newService("ev", "v6-only", v1.ServiceTypeLoadBalancer, nil), v1.IPFamilyPolicySingleStack, v1.IPv6Protocol),
			families: []v1.IPFamily{v1.IPv6Protocol}},
		{svc: withFamilies(newService("ev", "dual", v1.ServiceTypeLoadBalancer, nil), v1.IPFamilyPolicyRequireDualStack, v1.IPv6Protocol, v1.IPv4Protocol),
			families: []v1.IPFamily{v1.IPv6Protocol, v1.IPv4Protocol}},
		{svc: withFamilies(newService("ev", "dual-specific", v1.ServiceTypeLoadBalancer,
			map[string]string{service.AnnotationLoadBalancerIPs: "198.51.100.20,2001:db8:100::20"}),
			v1.IPFamilyPolicyRequireDualStack, v1.IPv4Protocol, v1.IPv6Protocol),
			families: []v1.IPFamily{v1.IPv4Protocol, v1.IPv6Protocol}, ips: []string{"198.51.100.20", "2001:db8:100::20"}},
		{svc: legacy, families: []v1.IPFamily{v1.IPv4Protocol}, ips: []string{"198.51.100.25"}},
	}
	for _, tc := range cases {
		createService(t, client, tc.svc)
	}
	for _, tc := range cases {
		name := tc.svc.Name
		got := waitForService(t, client, "ev", name, "has an address per family", func(s *v1.Service) bool {
			return len(s.Status.LoadBalancer.Ingress) == len(tc.families)
		})
		ips := ingressIPs(got)
		for i, ip := range ips {
			if family(ip) != tc.families[i] {
				t.Errorf("%s shows %v, want families %v in that order", name, ips, tc.families)
			}
		}
		if tc.ips != nil && !slices.Equal(ips, tc.ips) {
			t.Errorf("%s shows %v, want the addresses it asked for, %v", name, ips, tc.ips)
		}
		if got.Annotations[v1alpha1.AnnotationAllocatedFromPool] != "dual" {
			t.Errorf("%s: annotations %v, want the pool dual recorded", name, got.Annotations)
		}
		held := claimHolders(t, client)
		for _, ip := range ips {
			if !slices.Equal(held[ip], []string{"ev/" + name}) {
				t.Errorf("%s shows %s, whose claim names %v", name, ip, held[ip])
			}
		}
	}
	testSharing(t, client)
	testMetricsAgreeWithKubectl(t, c, m)
	m.requireRunning(t)
}

// Services with one sharing key and distinct ports share an address and
// its one claim; one whose port clashes is refused.
func testSharing(t *testing.T, client kubernetes.Interface) {
	t.Helper()
	shared := func(name string, port int32) *v1.Service {
		svc := newService("ev", name, v1.ServiceTypeLoadBalancer, map[string]string{
			service.AnnotationAllowSharedIP: "front", service.AnnotationLoadBalancerIPs: "198.51.100.30"})
		svc.Spec.Ports[0].Port = port
		return svc
	}
	createService(t, client, shared("web", 80))
	createService(t, client, shared("tls", 443))
	for _, name := range []string{"web", "tls"} {
		got := waitForService(t, client, "ev", name, "shows the shared address", hasIngress)
		if ips := ingressIPs(got); !slices.Equal(ips, []string{"198.51.100.30"}) {
			t.Errorf("%s shows %v, want the shared 198.51.100.30", name, ips)
		}
	}
	holders := claimHolders(t, client)["198.51.100.30"]
	slices.Sort(holders)
	if !slices.Equal(holders, []string{"ev/tls", "ev/web"}) {
		t.Errorf("the claim of 198.51.100.30 names %v, want both Services", holders)
	}
	createService(t, client, shared("clash", 80))
	message := waitForEvent(t, client, "ev", "clash", v1.EventTypeWarning, baremetal.ReasonAllocationFailed)
	if !strings.Contains(message, "TCP/80") {
		t.Errorf("AllocationFailed message %q does not name the clashing port", message)
	}
}

// /metrics, scraped with a token allowed only to get /metrics (the
// README's recipe), agrees with what kubectl shows: addresses in use per
// family, the pool's status, and the Services counted ready.
func testMetricsAgreeWithKubectl(t *testing.T, c *cluster.Cluster, m *ccm) {
	t.Helper()
	kubectl(t, c, "create", "clusterrole", "herald-metrics", "--verb=get", "--non-resource-url=/metrics")
	kubectl(t, c, "-n", "ev", "create", "serviceaccount", "metrics")
	kubectl(t, c, "create", "clusterrolebinding", "herald-metrics", "--clusterrole=herald-metrics", "--serviceaccount=ev:metrics")
	m.token = strings.TrimSpace(kubectl(t, c, "-n", "ev", "create", "token", "metrics"))

	// The clashing Service stays pending; the six others are ready.
	m.waitServices(t, "service-lb-controller", 6, 1)
	families := m.scrape(t)
	shown := strings.Fields(kubectl(t, c, "-n", "ev", "get", "svc", "-o", "jsonpath={range .items[*]}{.status.loadBalancer.ingress[0].ip}{\" \"}{end}"))
	if len(shown) != 6 {
		t.Errorf("kubectl shows %d Services with an address (%v); herald_services counts 6 ready", len(shown), shown)
	}
	byFamily := map[v1.IPFamily]map[string]bool{v1.IPv4Protocol: {}, v1.IPv6Protocol: {}}
	for _, ip := range strings.Fields(kubectl(t, c, "-n", "ev", "get", "svc", "-o", "jsonpath={.items[*].status.loadBalancer.ingress[*].ip}")) {
		byFamily[family(ip)][ip] = true
	}
	for f, ips := range byFamily {
		got, ok := gauge(families, "herald_pool_addresses_in_use", map[string]string{"pool": "dual", "family": string(f)})
		if !ok || got != float64(len(ips)) {
			t.Errorf("herald_pool_addresses_in_use{family=%s} = %v (present %v); kubectl shows %d distinct addresses", f, got, ok, len(ips))
		}
		column := map[v1.IPFamily]string{v1.IPv4Protocol: "ipv4", v1.IPv6Protocol: "ipv6"}[f]
		inUse := kubectl(t, c, "get", "ipaddresspools", "dual", "-o", fmt.Sprintf("jsonpath={.status.%s.inUse}", column))
		if n, err := strconv.Atoi(inUse); err != nil || n != len(ips) {
			t.Errorf("kubectl get ipaddresspools dual: %s in use %q; the Services show %d", column, inUse, len(ips))
		}
	}
	if total, _ := gauge(families, "herald_pool_addresses_total", map[string]string{"pool": "dual", "family": "IPv6"}); total != 255 {
		t.Errorf("herald_pool_addresses_total{family=IPv6} = %v, want 255: a /120 without its Subnet-Router anycast address", total)
	}
}
