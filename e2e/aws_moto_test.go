package e2e

import (
	"context"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/heraldlb/herald/aws/api"
	"github.com/heraldlb/herald/aws/build"
	"github.com/heraldlb/herald/e2e/awslab"
	"github.com/heraldlb/herald/e2e/cluster"
)

const motoRegion = "us-east-1"

// motoWorld is what the test sets up in moto before herald runs: the
// default VPC with its subnets tagged for load balancers, a node security
// group, and instances for the nodes.
type motoWorld struct {
	moto    *awslab.Moto
	vpcID   string
	subnet  string
	clients *api.Clients
}

func setUpMoto(t *testing.T) *motoWorld {
	t.Helper()
	m := awslab.StartMoto(t)
	m.Reset(t)
	w := &motoWorld{moto: m}
	vpcs := m.EC2(t, motoRegion, url.Values{"Action": {"DescribeVpcs"}, "Filter.1.Name": {"isDefault"}, "Filter.1.Value.1": {"true"}})
	if ids := awslab.XMLValues(vpcs, "vpcId"); len(ids) > 0 {
		w.vpcID = ids[0]
	} else {
		t.Fatalf("moto has no default VPC:\n%s", vpcs)
	}
	subnets := awslab.XMLValues(m.EC2(t, motoRegion, url.Values{"Action": {"DescribeSubnets"},
		"Filter.1.Name": {"vpc-id"}, "Filter.1.Value.1": {w.vpcID}}), "subnetId")
	tag := url.Values{"Action": {"CreateTags"}, "Tag.1.Key": {"kubernetes.io/role/elb"}, "Tag.1.Value": {"1"}}
	for i, s := range subnets {
		tag.Set("ResourceId."+strconv.Itoa(i+1), s)
	}
	m.EC2(t, motoRegion, tag)
	w.subnet = subnets[0]
	m.EC2(t, motoRegion, url.Values{"Action": {"CreateSecurityGroup"}, "GroupName": {"nodes"}, "GroupDescription": {"nodes"},
		"VpcId": {w.vpcID}, "TagSpecification.1.ResourceType": {"security-group"},
		"TagSpecification.1.Tag.1.Key": {build.ClusterTagKey(awsCluster)}, "TagSpecification.1.Tag.1.Value": {"owned"}})
	var err error
	w.clients, err = api.New(context.Background(), api.Config{Region: motoRegion, ELBv2Endpoint: m.URL, EC2Endpoint: m.URL,
		ELBv2Rate: api.Rate{QPS: 100, Burst: 100}, EC2Rate: api.Rate{QPS: 100, Burst: 100}, MaxAttempts: 3,
		Credentials: credentials.NewStaticCredentialsProvider("AKIDHERALDTEST", "test", "")})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// runInstances starts instances in moto and creates their Nodes.
func (w *motoWorld) addNodes(t *testing.T, client kubernetes.Interface, names ...string) {
	t.Helper()
	ami := awslab.XMLValues(w.moto.EC2(t, motoRegion, url.Values{"Action": {"DescribeImages"}, "Owner.1": {"amazon"}}), "imageId")
	body := w.moto.EC2(t, motoRegion, url.Values{"Action": {"RunInstances"}, "ImageId": {ami[0]}, "InstanceType": {"t3.micro"},
		"MinCount": {strconv.Itoa(len(names))}, "MaxCount": {strconv.Itoa(len(names))}, "SubnetId": {w.subnet}})
	ids, zones := awslab.XMLValues(body, "instanceId"), awslab.XMLValues(body, "availabilityZone")
	if len(ids) != len(names) || len(zones) < len(names) {
		t.Fatalf("RunInstances: ids %v zones %v", ids, zones)
	}
	for i, name := range names {
		node, err := client.CoreV1().Nodes().Create(context.Background(), &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: v1.NodeSpec{ProviderID: build.ProviderID(zones[i], ids[i])}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		node.Status.Conditions = []v1.NodeCondition{{Type: v1.NodeReady, Status: v1.ConditionTrue,
			LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now(), Reason: "KubeletReady"}}
		if _, err := client.CoreV1().Nodes().UpdateStatus(context.Background(), node, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

// owned lists, as moto reports them, everything tagged as this cluster's
// herald, and every node-group rule it made.
// frontendTag returns a tag of the Service's own security group (the
// cluster's not backend group); the test has one Service.
func (w *motoWorld) frontendTag(t *testing.T, key string) string {
	t.Helper()
	groups, err := w.clients.EC2.SecurityGroups(context.Background(), nil, api.Filter{Name: "tag:" + build.TagCluster, Values: []string{awsCluster}})
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range groups {
		if g.Tags[build.TagRole] != build.RoleBackend {
			return g.Tags[key]
		}
	}
	return ""
}

func (w *motoWorld) owned(t *testing.T) (lbs []api.LoadBalancer, tgs []api.TargetGroup, left []string) {
	t.Helper()
	cache := api.NewCache(w.clients.ELB, w.clients.EC2, time.Minute, time.Now)
	ctx := context.Background()
	allLBs, err := cache.LoadBalancers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, lb := range allLBs {
		if lb.Tags[build.TagCluster] == awsCluster {
			lbs = append(lbs, lb)
			left = append(left, "loadbalancer "+lb.Name)
		}
	}
	allTGs, err := cache.TargetGroups(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, tg := range allTGs {
		if tg.Tags[build.TagCluster] == awsCluster {
			tgs = append(tgs, tg)
			left = append(left, "targetgroup "+tg.Name)
		}
	}
	groups, err := w.clients.EC2.SecurityGroups(ctx, nil, api.Filter{Name: "vpc-id", Values: []string{w.vpcID}})
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range groups {
		if g.Tags[build.TagCluster] == awsCluster {
			left = append(left, "securitygroup "+g.ID)
		}
		for _, r := range g.Ingress {
			if strings.HasPrefix(r.Description, "herald.dev/") {
				left = append(left, "rule "+g.ID+" "+strconv.Itoa(int(r.FromPort)))
			}
		}
	}
	return lbs, tgs, left
}

// TestAWSAgainstMoto runs the create/update/delete suite against moto, an
// emulator written independently of herald's fake.
func TestAWSAgainstMoto(t *testing.T) {
	w := setUpMoto(t)
	prefetchBinaries()
	c := cluster.StartForTest(t, cluster.Options{})
	client := kubernetes.NewForConfigOrDie(c.Config)
	w.addNodes(t, client, "node-a", "node-b")
	m := startAWSCCM(t, c, awsCloudConfig(w.moto.URL, motoRegion, w.vpcID, ""))
	createNamespace(t, client, "web")
	createService(t, client, newService("web", "front", v1.ServiceTypeLoadBalancer, nil))
	svc := waitForService(t, client, "web", "front", "has an NLB hostname", func(s *v1.Service) bool {
		return len(s.Status.LoadBalancer.Ingress) == 1 && s.Status.LoadBalancer.Ingress[0].Hostname != ""
	})
	lbs, tgs, _ := w.owned(t)
	if len(lbs) != 1 || lbs[0].DNSName != svc.Status.LoadBalancer.Ingress[0].Hostname || len(tgs) != 1 {
		t.Fatalf("moto holds %d load balancers, %d target groups; status %v", len(lbs), len(tgs), svc.Status.LoadBalancer.Ingress)
	}
	targets := func() []string {
		_, tgs, _ := w.owned(t)
		var out []string
		for _, tg := range tgs {
			health, err := w.clients.ELB.TargetHealth(context.Background(), tg.ARN)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, strconv.Itoa(len(health)))
		}
		slices.Sort(out)
		return out
	}
	waitFor(t, waitTimeout, "both nodes registered", func() bool { return slices.Equal(targets(), []string{"2"}) })

	updateService(t, client, "web", "front", func(s *v1.Service) {
		s.Spec.Ports = append(s.Spec.Ports, v1.ServicePort{Name: "https", Protocol: v1.ProtocolTCP, Port: 443})
		s.Annotations = map[string]string{build.AnnotationAdditionalTags: "team=web"}
	})
	waitFor(t, waitTimeout, "a second port and the extra tag in moto, the frontend group's included", func() bool {
		lbs, tgs, _ := w.owned(t)
		return len(tgs) == 2 && len(lbs) == 1 && lbs[0].Tags["team"] == "web" && w.frontendTag(t, "team") == "web"
	})
	w.addNodes(t, client, "node-c")
	waitFor(t, waitTimeout, "node-c registered in both target groups", func() bool { return slices.Equal(targets(), []string{"3", "3"}) })

	if err := client.CoreV1().Services("web").Delete(context.Background(), "front", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitForServiceAbsent(t, client, "web", "front")
	if _, _, left := w.owned(t); len(left) > 0 {
		t.Errorf("left in moto after delete: %v", left)
	}
	m.requireRunning(t)
}
