package agent

import (
	"slices"
	"testing"

	"github.com/heraldlb/herald/internal/kubeclient"
	"github.com/heraldlb/herald/provider/dataplane"
)

func indexed(name, service, rv string) *cachedSlice {
	return &cachedSlice{ObjectMeta: kubeclient.ObjectMeta{Namespace: "ns", Name: name, ResourceVersion: rv},
		slice: dataplane.EndpointSlice{Namespace: "ns", Name: name, Service: service}}
}

// TestSliceIndex: a Service's slices are found after adds, updates (in
// place, or relabelled to another Service) and deletes; a Service left
// without slices leaves no entry.
func TestSliceIndex(t *testing.T) {
	x := newSliceIndex()
	names := func(svc string) []string {
		var out []string
		for _, s := range x.get("ns", svc) {
			out = append(out, s.Name+"@"+s.Service)
		}
		slices.Sort(out)
		return out
	}
	a1, b1 := indexed("web-a", "web", "1"), indexed("web-b", "web", "1")
	x.set(nil, a1)
	x.set(nil, b1)
	x.set(nil, indexed("orphan", "", "1")) // no Service: not indexed
	if got := names("web"); !slices.Equal(got, []string{"web-a@web", "web-b@web"}) {
		t.Fatalf("after adds: %v", got)
	}
	a2 := indexed("web-a", "web", "2")
	x.set(a1, a2)
	if got := x.get("ns", "web"); len(got) != 2 || !slices.Contains(got, &a2.slice) || slices.Contains(got, &a1.slice) {
		t.Errorf("an update left the old version or dropped the new: %v", got)
	}
	b2 := indexed("web-b", "api", "2")
	x.set(b1, b2)
	if got, api := names("web"), names("api"); !slices.Equal(got, []string{"web-a@web"}) || !slices.Equal(api, []string{"web-b@api"}) {
		t.Errorf("after relabelling web-b to api: web %v, api %v", got, api)
	}
	x.remove(a2)
	x.remove(b2)
	if len(x.bySvc) != 0 {
		t.Errorf("entries left after every slice was deleted: %v", x.bySvc)
	}
}
