package e2e

import (
	"context"
	"reflect"
	"slices"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/heraldlb/herald/bare-metal/api/v1alpha1"
	"github.com/heraldlb/herald/e2e/cluster"
	"github.com/heraldlb/herald/e2e/labkit"
)

// bgpPasswordSecret is the one Secret the BGP mode's values list in
// agent.bgp.passwordSecrets; bgpUnlistedSecret exists but is not listed.
const bgpPasswordSecret, bgpUnlistedSecret = "bgp-password", "bgp-unlisted"

// bgpSecretRules are the BGP mode's Role in the release's namespace: the
// listed password Secrets, by name, and nothing else.
func bgpSecretRules() []rbacv1.PolicyRule {
	return []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"},
		ResourceNames: []string{bgpPasswordSecret}, Verbs: []string{"get"}}}
}

// checkBGPSecretRole: with BGP, the agent may get exactly the listed
// password Secrets in the release's namespace; without, no such Role.
func checkBGPSecretRole(t *testing.T, client kubernetes.Interface, mode agentMode) {
	t.Helper()
	name := agentName + "-bgp-secrets"
	role, err := client.RbacV1().Roles(chartNamespace).Get(context.Background(), name, metav1.GetOptions{})
	switch {
	case !mode.bgp && err == nil:
		t.Errorf("Role %s exists without BGP: the agent may read Secrets it has no use for", name)
	case !mode.bgp:
	case err != nil:
		t.Errorf("Role %s: %v", name, err)
	case !reflect.DeepEqual(role.Rules, bgpSecretRules()):
		t.Errorf("Role %s grants\n%+v\nwant exactly\n%+v", name, role.Rules, bgpSecretRules())
	}
}

// checkChartBGP gives the agent two BGPPeers with passwords (no router
// answers: the sessions stay down): the one whose Secret the values list
// becomes Valid and gets this node's session in its status; the other's
// Secret exists but is not listed, so the Role keeps it from the agent and
// the peer says why. Status, Secrets and conditions all go through the
// chart's RBAC.
func checkChartBGP(t *testing.T, c *cluster.Cluster, client kubernetes.Interface, nodeName string) {
	t.Helper()
	ctx := context.Background()
	for _, name := range []string{bgpPasswordSecret, bgpUnlistedSecret} {
		secret := &v1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name}, StringData: map[string]string{"password": "s3cret"}}
		if _, err := client.CoreV1().Secrets(chartNamespace).Create(ctx, secret, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	dyn := dynamic.NewForConfigOrDie(c.Config)
	peer := func(address, secret string) map[string]any {
		return map[string]any{"peerAddress": address, "peerASN": int64(64500), "localASN": int64(64512),
			"passwordSecret": map[string]any{"name": secret}}
	}
	labkit.CreateObject(t, dyn, labkit.BGPPeerGVR, "BGPPeer", "listed", peer("192.0.2.1", bgpPasswordSecret))
	labkit.CreateObject(t, dyn, labkit.BGPPeerGVR, "BGPPeer", "unlisted", peer("192.0.2.2", bgpUnlistedSecret))
	labkit.CreateObject(t, dyn, labkit.BGPAdGVR, "BGPAdvertisement", "chart", map[string]any{"ipAddressPools": []any{"default"}})

	readPeer := func(name string) *v1alpha1.BGPPeer {
		u, err := dyn.Resource(labkit.BGPPeerGVR).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var p v1alpha1.BGPPeer
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &p); err != nil {
			t.Fatal(err)
		}
		return &p
	}
	var last *v1alpha1.BGPPeer
	waitFor(t, time.Minute, "BGPPeer listed: Valid with node "+nodeName+"'s session", func() bool {
		last = readPeer("listed")
		valid := meta.FindStatusCondition(last.Status.Conditions, v1alpha1.ConditionValid)
		return valid != nil && valid.Status == metav1.ConditionTrue &&
			slices.ContainsFunc(last.Status.Nodes, func(n v1alpha1.BGPPeerNodeStatus) bool { return n.Node == nodeName })
	})
	waitFor(t, time.Minute, "BGPPeer unlisted: Valid=False, "+v1alpha1.ReasonSecretForbidden, func() bool {
		last = readPeer("unlisted")
		valid := meta.FindStatusCondition(last.Status.Conditions, v1alpha1.ConditionValid)
		return valid != nil && valid.Status == metav1.ConditionFalse && valid.Reason == v1alpha1.ReasonSecretForbidden
	})
}
