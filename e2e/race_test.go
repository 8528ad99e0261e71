package e2e

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/heraldlb/herald/bare-metal/claims"
	"github.com/heraldlb/herald/provider/service"
)

var racePool = configWithPool("shared", "198.51.100.0/24")

// claimSelector selects herald's address claims.
var claimSelector = networkingv1.LabelManagedBy + "=" + claims.Manager

// Two herald-ccm instances running at once (a rolling update, a lost
// lease) race on 100 Services created at once. Both allocate lowest-first
// from the same pool, so they collide on many addresses; the claims
// decide. The test checks that they did collide (herald_address_claims_lost_total
// of both), that no List of the Services ever shows one address twice,
// that every Service ends with one address claimed for it, and that
// deleting the Services leaves no claim behind.
func TestTwoInstancesRacingNeverDuplicateAnAddress(t *testing.T) {
	// Half the Services name herald's class. Both instances serve those;
	// the first also serves the others, which the second, with
	// --load-balancer-class-only, leaves alone. Allocating at once,
	// lowest-first, for Services the other does not serve, they pick the
	// same addresses; on the classed ones they race for the same Services.
	c, client, first := startLab(t, racePool, "--concurrent-service-syncs=20")
	second := startCCM(t, c, racePool, "--concurrent-service-syncs=20", "--load-balancer-class-only")
	first.waitServices(t, "service-lb-controller", 0, 0) // the controllers run
	first.waitServices(t, "herald-class-controller", 0, 0)
	second.waitServices(t, "herald-class-controller", 0, 0)
	createNamespace(t, client, "race")
	const services = 100
	began := time.Now()
	var wg sync.WaitGroup
	for i := range services {
		wg.Go(func() {
			svc := newService("race", fmt.Sprintf("svc-%03d", i), v1.ServiceTypeLoadBalancer, nil)
			if i%2 == 1 {
				svc.Spec.LoadBalancerClass = new(service.Class)
			}
			if _, err := client.CoreV1().Services("race").Create(context.Background(), svc, metav1.CreateOptions{}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()

	// Poll until every Service has had the same address for three lists
	// in a row; every list must be free of duplicates.
	var final, last map[string]string
	snapshots, stable := 0, 0
	err := wait.PollUntilContextTimeout(context.Background(), 500*time.Millisecond, 3*time.Minute, true,
		func(ctx context.Context) (bool, error) {
			byService, err := listAddresses(ctx, client, "race")
			if err != nil {
				return false, nil //nolint:nilerr // keep polling through transient errors
			}
			snapshots, last = snapshots+1, byService
			if dups := duplicates(byService); len(dups) > 0 {
				return false, fmt.Errorf("one address shown by several Services: %v", dups)
			}
			if len(byService) < services || !sameMap(byService, final) {
				final, stable = byService, 0
				return false, nil
			}
			stable++
			return stable >= 3, nil
		})
	if err != nil {
		t.Fatalf("after %d lists: %v; %d of %d Services have an address", snapshots, err, len(last), services)
	}
	t.Logf("%d Services got distinct addresses from two racing instances in %v (%d lists, no duplicates)",
		services, time.Since(began).Round(time.Millisecond), snapshots)

	list, err := client.NetworkingV1().IPAddresses().List(context.Background(), metav1.ListOptions{LabelSelector: claimSelector})
	if err != nil {
		t.Fatal(err)
	}
	claimed := map[string]string{}
	for _, obj := range list.Items {
		claimed[obj.Name] = obj.Annotations[claims.AnnotationHolders]
	}
	for name, ip := range final {
		if !strings.Contains(claimed[ip], `"race/`+name+`"`) {
			t.Errorf("%s shows %s, but the claim of %s lists %q", name, ip, ip, claimed[ip])
		}
	}
	lost := 0.0
	for _, m := range []*ccm{first, second} {
		n, _ := gauge(m.scrape(t), "herald_address_claims_lost_total", nil)
		lost += n
	}
	if lost == 0 {
		t.Fatalf("the two instances never contended for an address: the test proves nothing")
	}
	t.Logf("%d claims for %d Services; the instances lost %v claim races and allocated again", len(list.Items), services, lost)

	deleted := time.Now()
	for name := range final {
		wg.Go(func() {
			if err := client.CoreV1().Services("race").Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	left := 0
	err = wait.PollUntilContextTimeout(context.Background(), 500*time.Millisecond, 3*time.Minute, true,
		func(ctx context.Context) (bool, error) {
			svcs, err := client.CoreV1().Services("race").List(ctx, metav1.ListOptions{})
			if err != nil {
				return false, nil //nolint:nilerr // keep polling through transient errors
			}
			claims, err := client.NetworkingV1().IPAddresses().List(ctx, metav1.ListOptions{LabelSelector: claimSelector})
			if err != nil {
				return false, nil //nolint:nilerr // keep polling through transient errors
			}
			left = len(claims.Items)
			return len(svcs.Items) == 0 && left == 0, nil
		})
	if err != nil {
		t.Fatalf("%d claims left %v after the Services were deleted", left, time.Since(deleted).Round(time.Second))
	}
	t.Logf("Services and their claims gone %v after the deletion", time.Since(deleted).Round(time.Millisecond))
	first.requireRunning(t)
	second.requireRunning(t)
}

// listAddresses maps each Service of namespace showing addresses to them,
// joined; one List is one consistent snapshot.
func listAddresses(ctx context.Context, client kubernetes.Interface, namespace string) (map[string]string, error) {
	list, err := client.CoreV1().Services(namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for i := range list.Items {
		if ips := ingressIPs(&list.Items[i]); len(ips) > 0 {
			out[list.Items[i].Name] = strings.Join(ips, ",")
		}
	}
	return out, nil
}

// duplicates lists the addresses shown by more than one Service.
func duplicates(byService map[string]string) []string {
	holders := map[string][]string{}
	for name, ips := range byService {
		for ip := range strings.SplitSeq(ips, ",") {
			holders[ip] = append(holders[ip], name)
		}
	}
	var dups []string
	for ip, names := range holders {
		if len(names) > 1 {
			sort.Strings(names)
			dups = append(dups, ip+" "+strings.Join(names, "+"))
		}
	}
	return dups
}

func sameMap(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
