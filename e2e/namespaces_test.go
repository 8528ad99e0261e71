package e2e

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	baremetal "github.com/heraldlb/herald/bare-metal"
	"github.com/heraldlb/herald/bare-metal/api/v1alpha1"
)

// A pool whose serviceAllocation.namespaceSelectors picks Namespaces by
// label serves Services in matching Namespaces only. Relabelling a
// Namespace changes where its new Services may allocate (and gives its
// waiting Services an address at once if they may now have one), never the
// addresses its Services already have.
func TestPoolNamespaceSelector(t *testing.T) {
	c, client, pools := startPoolLab(t)
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": v1alpha1.SchemeGroupVersion.String(), "kind": "IPAddressPool",
		"metadata": map[string]any{"name": "blue-team"},
		"spec": map[string]any{
			"addresses": []any{"198.51.100.32/29"},
			"serviceAllocation": map[string]any{"namespaceSelectors": []any{
				map[string]any{"matchLabels": map[string]any{"team": "blue"}},
			}},
		},
	}}
	if _, err := pools.Create(context.Background(), obj, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	m := startCCM(t, c, "backend: bare-metal\n")
	createLabelledNamespace(t, client, "blue", map[string]string{"team": "blue"})
	createNamespace(t, client, "plain")

	createService(t, client, newService("blue", "web", v1.ServiceTypeLoadBalancer, nil))
	web := waitForService(t, client, "blue", "web", "has an ingress IP", hasIngress)
	if ip := ingressIPs(web)[0]; !strings.HasPrefix(ip, "198.51.100.3") {
		t.Fatalf("blue/web got %s, want an address of pool blue-team", ip)
	}

	createService(t, client, newService("plain", "web", v1.ServiceTypeLoadBalancer, nil))
	message := waitForEvent(t, client, "plain", "web", v1.EventTypeWarning, baremetal.ReasonAllocationFailed)
	if !strings.Contains(message, "namespace") || !strings.Contains(message, "blue-team") {
		t.Errorf("AllocationFailed message %q does not explain the namespace selector", message)
	}
	waitForService(t, client, "plain", "web", "has a False condition and no address", func(s *v1.Service) bool {
		c := meta.FindStatusCondition(s.Status.Conditions, baremetal.ConditionAddressAllocated)
		return c != nil && c.Status == metav1.ConditionFalse && !hasIngress(s)
	})

	// The blue team becomes the green team: blue/web keeps its address,
	// new Services of the namespace get none from blue-team. The CCM's
	// Namespace and Service informers are independent, so a Service created
	// right after the relabel could be seen first: the witness, waiting for
	// green-team, which only green Namespaces may use, gets its address once
	// the CCM has seen the new labels.
	green := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": v1alpha1.SchemeGroupVersion.String(), "kind": "IPAddressPool",
		"metadata": map[string]any{"name": "green-team"},
		"spec": map[string]any{
			"addresses":  []any{"198.51.100.48/30"},
			"autoAssign": false,
			"serviceAllocation": map[string]any{"namespaceSelectors": []any{
				map[string]any{"matchLabels": map[string]any{"team": "green"}},
			}},
		},
	}}
	if _, err := pools.Create(context.Background(), green, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	createService(t, client, newService("blue", "witness", v1.ServiceTypeLoadBalancer, inPool("green-team")))
	waitForEvent(t, client, "blue", "witness", v1.EventTypeWarning, baremetal.ReasonAllocationFailed)
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"labels": map[string]any{"team": "green"}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.CoreV1().Namespaces().Patch(context.Background(), "blue", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	waitForService(t, client, "blue", "witness", "has an address of green-team: the CCM saw the new labels", hasIngress)
	createService(t, client, newService("blue", "api", v1.ServiceTypeLoadBalancer, nil))
	waitForEvent(t, client, "blue", "api", v1.EventTypeWarning, baremetal.ReasonAllocationFailed)
	still, err := client.CoreV1().Services("blue").Get(context.Background(), "web", metav1.GetOptions{})
	if err != nil || !slices.Equal(ingressIPs(still), ingressIPs(web)) {
		t.Errorf("blue/web changed after its Namespace was relabelled: %v %v", err, still.Status.LoadBalancer)
	}
	m.requireRunning(t)
}

func createLabelledNamespace(t testing.TB, client kubernetes.Interface, name string, labels map[string]string) {
	t.Helper()
	if _, err := client.CoreV1().Namespaces().Create(context.Background(),
		&v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}
