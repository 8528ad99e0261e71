package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/labels"
)

// A scenario is a sequence of steps on one allocator; each step states what
// it expects, so a failure points at the first step that went wrong.
type scenario struct {
	name  string
	pools []Pool
	steps []step
}

type step struct {
	do   func(t *testing.T, a *Allocator) ([]netip.Addr, string, error)
	desc string
	want []string // expected addresses, in order
	pool string   // expected pool, if set
	err  error    // expected sentinel
}

func runScenarios(t *testing.T, scenarios []scenario) {
	t.Helper()
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			a, err := New(sc.pools)
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			for i, st := range sc.steps {
				ips, pool, err := st.do(t, a)
				where := fmt.Sprintf("step %d (%s)", i, st.desc)
				if st.err != nil {
					if !errors.Is(err, st.err) {
						t.Fatalf("%s: error %v, want %v", where, err, st.err)
					}
					continue
				}
				if err != nil {
					t.Fatalf("%s: unexpected error: %v", where, err)
				}
				if got := addrStrings(ips); !slices.Equal(got, st.want) {
					t.Fatalf("%s: got %v, want %v", where, got, st.want)
				}
				if st.pool != "" && pool != st.pool {
					t.Fatalf("%s: pool %q, want %q", where, pool, st.pool)
				}
			}
		})
	}
}

func addrStrings(ips []netip.Addr) []string {
	out := []string{}
	for _, ip := range ips {
		out = append(out, ip.String())
	}
	return out
}

func addrs(s ...string) []netip.Addr {
	var out []netip.Addr
	for _, x := range s {
		out = append(out, netip.MustParseAddr(x))
	}
	return out
}

func ranges(s ...string) []Range {
	var out []Range
	for _, x := range s {
		r, err := ParseRange(x)
		if err != nil {
			panic(err)
		}
		out = append(out, r)
	}
	return out
}

// pool returns an auto-assigning pool; tests tweak the fields they need.
func pool(name string, rs ...string) Pool {
	return Pool{Name: name, Ranges: ranges(rs...), AutoAssign: true}
}

func with(p Pool, f func(*Pool)) Pool { f(&p); return p }

type labelsSelector = labels.Selector

func sel(s string) labels.Selector {
	x, err := labels.Parse(s)
	if err != nil {
		panic(err)
	}
	return x
}

type opt func(*Request)

// req builds a request for "ns/name", IPv4 unless told otherwise.
func req(service string, opts ...opt) Request {
	ns, _, _ := strings.Cut(service, "/")
	r := Request{Service: service, Namespace: ns, Families: []Family{IPv4}}
	for _, o := range opts {
		o(&r)
	}
	return r
}

func fams(f ...Family) opt    { return func(r *Request) { r.Families = f } }
func requireAll() opt         { return func(r *Request) { r.RequireAllFamilies = true } }
func wantIPs(s ...string) opt { return func(r *Request) { r.IPs = addrs(s...) } }
func fromPool(p string) opt   { return func(r *Request) { r.Pool = p } }
func key(k string) opt        { return func(r *Request) { r.SharingKey = k } }
func nsLabels(l string) opt   { return func(r *Request) { r.NamespaceLabels = labelMap(l) } }
func svcLabels(l string) opt  { return func(r *Request) { r.ServiceLabels = labelMap(l) } }
func local(backend string) opt {
	return func(r *Request) { r.LocalTrafficPolicy, r.BackendKey = true, backend }
}
func backend(b string) opt   { return func(r *Request) { r.BackendKey = b } }
func ports(ps ...string) opt { return func(r *Request) { r.Ports = parsePorts(ps) } }
func families46() opt        { return fams(IPv4, IPv6) }
func labelMap(l string) labels.Set {
	m, err := labels.ConvertSelectorToLabelsMap(l)
	if err != nil {
		panic(err)
	}
	return m
}

func parsePorts(ps []string) []Port {
	var out []Port
	for _, p := range ps {
		proto, n, _ := strings.Cut(p, "/")
		v, err := strconv.Atoi(n)
		if err != nil {
			panic(err)
		}
		out = append(out, Port{Protocol: proto, Port: int32(v)})
	}
	return out
}

func allocate(r Request, want ...string) step {
	return step{do: doAlloc(r), desc: "allocate " + r.Service, want: want}
}

func allocIn(r Request, pool string, want ...string) step {
	return step{do: doAlloc(r), desc: "allocate " + r.Service, want: want, pool: pool}
}

func allocErr(r Request, err error) step {
	return step{do: doAlloc(r), desc: "allocate " + r.Service + " fails", err: err}
}

func doAlloc(r Request) func(*testing.T, *Allocator) ([]netip.Addr, string, error) {
	return func(_ *testing.T, a *Allocator) ([]netip.Addr, string, error) {
		as, err := a.Allocate(r)
		return as.IPs, as.Pool, err
	}
}

func restore(r Request, ips ...string) step {
	return step{desc: "restore " + r.Service, want: ips, do: func(_ *testing.T, a *Allocator) ([]netip.Addr, string, error) {
		as, err := a.Restore(r, addrs(ips...))
		return as.IPs, as.Pool, err
	}}
}

func restoreErr(r Request, err error, ips ...string) step {
	s := restore(r, ips...)
	s.desc, s.want, s.err = s.desc+" fails", nil, err
	return s
}

func release(service string, want ...string) step {
	return step{desc: "release " + service, want: want, do: func(_ *testing.T, a *Allocator) ([]netip.Addr, string, error) {
		return a.Release(service), "", nil
	}}
}

// assigned checks what a service holds; no addresses means it holds nothing.
func assigned(service string, want ...string) step {
	return step{desc: "assigned " + service, want: want, do: func(t *testing.T, a *Allocator) ([]netip.Addr, string, error) {
		as, ok := a.Assigned(service)
		if ok != (len(want) > 0) {
			t.Fatalf("Assigned(%s) ok=%v, want %v", service, ok, len(want) > 0)
		}
		return as.IPs, as.Pool, nil
	}}
}

// setPools expects the given conflicts, written "owner>shadowed:range".
func setPools(pools []Pool, conflicts ...string) step {
	return step{desc: "set pools", do: func(_ *testing.T, a *Allocator) ([]netip.Addr, string, error) {
		cs, err := a.SetPools(pools)
		if err != nil {
			return nil, "", err
		}
		return nil, "", conflictsMatch(cs, conflicts)
	}}
}

func setPoolsErr(pools []Pool, err error) step {
	return step{desc: "set pools fails", err: err, do: func(_ *testing.T, a *Allocator) ([]netip.Addr, string, error) {
		_, e := a.SetPools(pools)
		return nil, "", e
	}}
}

var errMismatch = errors.New("mismatch")

func conflictsMatch(cs []Conflict, want []string) error {
	var got []string
	for _, c := range cs {
		got = append(got, c.Pool+">"+c.Shadowed+":"+c.Overlap.String())
	}
	if !slices.Equal(got, want) {
		return fmt.Errorf("%w: conflicts %v, want %v", errMismatch, got, want)
	}
	return nil
}

// usage checks one pool's counts for one family.
func usage(pool string, f Family, total, inUse uint64) step {
	return step{desc: fmt.Sprintf("usage %s %s", pool, f), do: func(t *testing.T, a *Allocator) ([]netip.Addr, string, error) {
		for _, u := range a.Usage() {
			if u.Name != pool {
				continue
			}
			for _, fu := range u.Families {
				if fu.Family == f {
					if fu.Total != total || fu.InUse != inUse {
						return nil, "", fmt.Errorf("%w: usage %s %s: total %d in use %d, want %d %d", errMismatch, pool, f, fu.Total, fu.InUse, total, inUse)
					}
					return nil, "", nil
				}
			}
		}
		return nil, "", fmt.Errorf("%w: no usage for %s %s in %+v", errMismatch, pool, f, a.Usage())
	}}
}
