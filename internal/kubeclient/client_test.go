package kubeclient

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
)

// request is what the fake apiserver saw of one request.
type request struct {
	method, path, query, contentType, accept string
	body                                     []byte
}

// fakeAPIServer answers every request with status and body (JSON) and
// records the requests.
func fakeAPIServer(t *testing.T, status int, body any) (*Client, *[]request) {
	t.Helper()
	var seen []request
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		seen = append(seen, request{method: r.Method, path: r.URL.Path, query: r.URL.RawQuery,
			contentType: r.Header.Get("Content-Type"), accept: r.Header.Get("Accept"), body: b})
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(body)
	}))
	t.Cleanup(srv.Close)
	cfg := &rest.Config{Host: srv.URL}
	cfg.ContentType = runtime.ContentTypeProtobuf
	cfg.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c, &seen
}

func TestListSendsSelectorsAndContentTypes(t *testing.T) {
	list := v1.ServiceList{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceList"},
		Items: []v1.Service{{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "ns"}}}}
	c, seen := fakeAPIServer(t, http.StatusOK, list)
	lw := c.ListWatch(Services, func(o *metav1.ListOptions) { o.LabelSelector = "!a" })
	obj, err := cache.ToListerWithContext(lw).ListWithContext(context.Background(), metav1.ListOptions{ResourceVersion: "0"})
	if err != nil {
		t.Fatal(err)
	}
	got, ok := obj.(*v1.ServiceList)
	if !ok || len(got.Items) != 1 || got.Items[0].Name != "web" {
		t.Fatalf("listed %#v", obj)
	}
	r := (*seen)[0]
	if r.method != http.MethodGet || r.path != "/api/v1/services" {
		t.Errorf("request %s %s, want GET /api/v1/services", r.method, r.path)
	}
	if !strings.Contains(r.query, "labelSelector=%21a") || !strings.Contains(r.query, "resourceVersion=0") {
		t.Errorf("query %q lacks the selector or the resource version", r.query)
	}
	if !strings.HasPrefix(r.accept, runtime.ContentTypeProtobuf) {
		t.Errorf("Accept %q, want protobuf first", r.accept)
	}
}

func TestListPathsPerGroup(t *testing.T) {
	for _, tc := range []struct {
		r          Resource
		kind, path string
	}{
		{EndpointSlices, "EndpointSliceList", "/apis/discovery.k8s.io/v1/endpointslices"},
		{Nodes, "NodeList", "/api/v1/nodes"},
		{ServiceCIDRs, "ServiceCIDRList", "/apis/networking.k8s.io/v1/servicecidrs"},
	} {
		c, seen := fakeAPIServer(t, http.StatusOK, map[string]any{"apiVersion": tc.r.GroupVersionResource().GroupVersion().String(), "kind": tc.kind})
		obj, err := cache.ToListerWithContext(c.ListWatch(tc.r, nil)).ListWithContext(context.Background(), metav1.ListOptions{})
		if err != nil {
			t.Errorf("%s: %v", tc.r, err)
			continue
		}
		if len(*seen) != 1 || (*seen)[0].path != tc.path {
			t.Errorf("%s: requests %+v, want one to %s", tc.r, *seen, tc.path)
		}
		if reflect.TypeOf(obj) != reflect.TypeOf(tc.r.newList()) {
			t.Errorf("%s: listed a %T", tc.r, obj)
		}
	}
}

func TestServerResources(t *testing.T) {
	served := metav1.APIResourceList{GroupVersion: "networking.k8s.io/v1", APIResources: []metav1.APIResource{{Name: "servicecidrs"}}}
	c, seen := fakeAPIServer(t, http.StatusOK, served)
	got, err := c.ServerResourcesForGroupVersion("networking.k8s.io/v1")
	if err != nil || len(got.APIResources) != 1 || got.APIResources[0].Name != "servicecidrs" {
		t.Fatalf("resources %+v, %v", got, err)
	}
	if r := (*seen)[0]; r.path != "/apis/networking.k8s.io/v1" || r.accept != runtime.ContentTypeJSON {
		t.Errorf("request %s (Accept %q), want /apis/networking.k8s.io/v1 as JSON", r.path, r.accept)
	}

	notFound := metav1.Status{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Status"}, Status: metav1.StatusFailure,
		Reason: metav1.StatusReasonNotFound, Code: http.StatusNotFound}
	c, _ = fakeAPIServer(t, http.StatusNotFound, notFound)
	if _, err := c.ServerResourcesForGroupVersion("herald.dev/v1alpha1"); !apierrors.IsNotFound(err) {
		t.Errorf("error %v, want NotFound", err)
	}
}

func TestEventSinkWritesInTheEventsNamespace(t *testing.T) {
	ev := &v1.Event{ObjectMeta: metav1.ObjectMeta{Name: "e1", Namespace: "ns"}, Reason: "R"}
	c, seen := fakeAPIServer(t, http.StatusOK, ev)
	sink := c.EventSink()
	if _, err := sink.Create(ev); err != nil {
		t.Fatal(err)
	}
	if _, err := sink.Update(ev); err != nil {
		t.Fatal(err)
	}
	if _, err := sink.Patch(ev, []byte(`{"count":2}`)); err != nil {
		t.Fatal(err)
	}
	want := []struct{ method, path, contentType string }{
		{http.MethodPost, "/api/v1/namespaces/ns/events", runtime.ContentTypeProtobuf},
		{http.MethodPut, "/api/v1/namespaces/ns/events/e1", runtime.ContentTypeProtobuf},
		{http.MethodPatch, "/api/v1/namespaces/ns/events/e1", "application/strategic-merge-patch+json"},
	}
	if len(*seen) != len(want) {
		t.Fatalf("%d requests, want %d", len(*seen), len(want))
	}
	for i, w := range want {
		if r := (*seen)[i]; r.method != w.method || r.path != w.path || r.contentType != w.contentType {
			t.Errorf("request %d: %s %s (%s), want %s %s (%s)", i, r.method, r.path, r.contentType, w.method, w.path, w.contentType)
		}
	}
}

func TestNode(t *testing.T) {
	c, seen := fakeAPIServer(t, http.StatusOK, v1.Node{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Node"},
		ObjectMeta: metav1.ObjectMeta{Name: "n1"}})
	n, err := c.Node(context.Background(), "n1")
	if err != nil || n.Name != "n1" || (*seen)[0].path != "/api/v1/nodes/n1" {
		t.Fatalf("node %v, %v, requests %+v", n, err, *seen)
	}
}
