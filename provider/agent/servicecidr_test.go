package agent

import (
	"errors"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	fakediscovery "k8s.io/client-go/discovery/fake"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/heraldlb/herald/internal/kubeclient/kubeclienttest"
)

// The agent must start on clusters without ServiceCIDR objects (before
// Kubernetes 1.33): an informer on a resource the apiserver does not serve
// never syncs.
func TestServesServiceCIDRs(t *testing.T) {
	networking := func(names ...string) *metav1.APIResourceList {
		l := &metav1.APIResourceList{GroupVersion: "networking.k8s.io/v1"}
		for _, n := range names {
			l.APIResources = append(l.APIResources, metav1.APIResource{Name: n})
		}
		return l
	}
	for _, tc := range []struct {
		name      string
		resources []*metav1.APIResourceList
		failWith  error
		want      bool
	}{
		{name: "served", resources: []*metav1.APIResourceList{networking("ingresses", "servicecidrs")}, want: true},
		{name: "group version without servicecidrs", resources: []*metav1.APIResourceList{networking("ingresses", "networkpolicies")}},
		{name: "group version not found"},
		{name: "discovery failing: the informer retries", failWith: errors.New("connection refused"), want: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client := fake.NewClientset()
			disco, ok := client.Discovery().(*fakediscovery.FakeDiscovery)
			if !ok {
				t.Fatalf("discovery is %T", client.Discovery())
			}
			disco.Resources = tc.resources
			if tc.failWith != nil {
				client.PrependReactor("get", "resource", func(k8stesting.Action) (bool, runtime.Object, error) {
					return true, nil, tc.failWith
				})
			}
			if got := servesServiceCIDRs(kubeclienttest.Clientset{Interface: client}); got != tc.want {
				t.Errorf("servesServiceCIDRs = %v, want %v", got, tc.want)
			}
		})
	}
}
