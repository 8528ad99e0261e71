package aws

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/prometheus/client_golang/prometheus"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	cloudprovider "k8s.io/cloud-provider"

	"github.com/heraldlb/herald/aws/api"
	"github.com/heraldlb/herald/aws/awsfake"
	"github.com/heraldlb/herald/aws/build"
	"github.com/heraldlb/herald/provider"
	"github.com/heraldlb/herald/provider/service"
)

func newBackend(t *testing.T, services ...*v1.Service) (*Backend, *awsfake.Server, *record.FakeRecorder) {
	t.Helper()
	fake := awsfake.New()
	url := fake.Start()
	t.Cleanup(fake.Close)
	fake.AddSecurityGroup("nodes", map[string]string{build.ClusterTagKey("prod"): "owned"})
	fake.AddInstance(awsfake.Instance{ID: "i-a", Zone: "eu-west-1a", PrivateIP: "10.0.0.5", PrivateDNS: "ip-10-0-0-5.eu-west-1.compute.internal", PublicIP: "203.0.113.5"})
	cfg := &Config{ClusterName: "prod", Endpoints: Endpoints{ELBv2: url, EC2: url}}
	apiCfg := cfg.APIConfig("eu-west-1")
	apiCfg.MaxBackoff = 10 * time.Millisecond
	apiCfg.Credentials = credentials.NewStaticCredentialsProvider("AKIDFAKE", "secret", "")
	clients, err := api.New(context.Background(), apiCfg)
	if err != nil {
		t.Fatal(err)
	}
	b := New(cfg, "eu-west-1", fake.VPCID(), clients, Options{GCInterval: time.Hour})
	indexer := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	for _, s := range services {
		if err := indexer.Add(s); err != nil {
			t.Fatal(err)
		}
	}
	recorder := record.NewFakeRecorder(10)
	b.env = provider.Env{Services: corelisters.NewServiceLister(indexer), Recorder: recorder}
	return b, fake, recorder
}

func testService(annotations map[string]string) *v1.Service {
	return &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: "front", UID: "u1", Annotations: annotations},
		Spec: v1.ServiceSpec{Type: v1.ServiceTypeLoadBalancer,
			Ports: []v1.ServicePort{{Name: "http", Protocol: v1.ProtocolTCP, Port: 80, NodePort: 30080}}},
	}
}

func awsNode() *v1.Node {
	return &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n"}, Spec: v1.NodeSpec{ProviderID: "aws:///eu-west-1a/i-a"}}
}

func TestInvalidAnnotationMakesNoAWSCall(t *testing.T) {
	svc := testService(map[string]string{build.AnnotationScheme: "public"})
	b, fake, _ := newBackend(t, svc)
	lb, err := service.Build(svc, []*v1.Node{awsNode()})
	if err != nil {
		t.Fatal(err)
	}
	_, err = b.Ensure(context.Background(), lb)
	var ae *service.AnnotationError
	if !errors.As(err, &ae) || ae.Annotation != build.AnnotationScheme {
		t.Fatalf("Ensure error = %v, want an AnnotationError naming %s", err, build.AnnotationScheme)
	}
	if n := len(fake.Calls()); n != 0 {
		t.Fatalf("an invalid annotation cost %d AWS calls, want none", n)
	}
}

func TestEnsureReportsHostnameAndWarnsAboutUnknownAnnotations(t *testing.T) {
	svc := testService(map[string]string{service.AnnotationSourceRanges: "", "service.beta.kubernetes.io/aws-load-balancer-backend-protocol": "http"})
	b, _, recorder := newBackend(t, svc)
	lb, err := service.Build(svc, []*v1.Node{awsNode()})
	if err != nil {
		t.Fatal(err)
	}
	result, err := b.Ensure(context.Background(), lb)
	if err != nil {
		t.Fatal(err)
	}
	status := result.Status
	if len(status.Ingress) != 1 || !strings.HasSuffix(status.Ingress[0].Hostname, ".elb.eu-west-1.amazonaws.com") {
		t.Fatalf("status = %+v", status)
	}
	select {
	case e := <-recorder.Events:
		if !strings.Contains(e, "Warning "+ReasonUnknownAnnotation) || !strings.Contains(e, "aws-load-balancer-backend-protocol") {
			t.Fatalf("event %q does not name the unknown annotation", e)
		}
	default:
		t.Fatal("no event about the unknown annotation")
	}
	got, ok, err := b.Get(context.Background(), lb.Ref())
	if err != nil || !ok || got.Ingress[0].Hostname != status.Ingress[0].Hostname {
		t.Fatalf("Get = %+v, %v, %v", got, ok, err)
	}
	if err := b.Delete(context.Background(), lb.Ref()); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := b.Get(context.Background(), lb.Ref()); ok {
		t.Fatal("load balancer still there after Delete")
	}
}

func TestInstancesV2(t *testing.T) {
	b, fake, _ := newBackend(t)
	instances, ok := b.InstancesV2()
	if !ok {
		t.Fatal("the aws backend offers no InstancesV2")
	}
	ctx := context.Background()
	md, err := instances.InstanceMetadata(ctx, awsNode())
	if err != nil {
		t.Fatal(err)
	}
	if md.ProviderID != "aws:///eu-west-1a/i-a" || md.Zone != "eu-west-1a" || md.Region != "eu-west-1" || md.InstanceType == "" {
		t.Errorf("metadata = %+v", md)
	}
	want := map[v1.NodeAddressType]string{v1.NodeInternalIP: "10.0.0.5", v1.NodeExternalIP: "203.0.113.5",
		v1.NodeInternalDNS: "ip-10-0-0-5.eu-west-1.compute.internal", v1.NodeHostName: "ip-10-0-0-5.eu-west-1.compute.internal"}
	for _, a := range md.NodeAddresses {
		if want[a.Type] == a.Address {
			delete(want, a.Type)
		}
	}
	if len(want) > 0 {
		t.Errorf("addresses %+v lack %v", md.NodeAddresses, want)
	}
	byName := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "i-a"}}
	for _, tt := range []struct {
		state            string
		exists, shutdown bool
	}{{"running", true, false}, {"stopped", true, true}, {"terminated", false, false}, {"gone", false, false}} {
		fake.SetInstanceState("i-a", tt.state)
		exists, err := instances.InstanceExists(ctx, byName)
		if err != nil || exists != tt.exists {
			t.Errorf("%s: InstanceExists = %v, %v; want %v", tt.state, exists, err, tt.exists)
		}
		shutdown, err := instances.InstanceShutdown(ctx, byName)
		if err != nil || shutdown != tt.shutdown {
			t.Errorf("%s: InstanceShutdown = %v, %v; want %v", tt.state, shutdown, err, tt.shutdown)
		}
	}
	if _, err := instances.InstanceMetadata(ctx, byName); !errors.Is(err, cloudprovider.InstanceNotFound) {
		t.Errorf("metadata of a gone instance: %v, want InstanceNotFound", err)
	}
	if _, err := instances.InstanceExists(ctx, &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "worker-1"}}); !errors.Is(err, ErrNoProviderID) {
		t.Errorf("node without provider ID: %v", err)
	}
}

func TestProviderOffersTheBackendsInstances(t *testing.T) {
	b, _, _ := newBackend(t)
	p, err := provider.New(b, service.Selection{}, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := p.InstancesV2(); !ok {
		t.Fatal("provider hides the aws backend's InstancesV2")
	}
}
