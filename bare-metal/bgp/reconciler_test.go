package bgp

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"testing"
)

// fakeRouter records the calls a Reconciler makes and holds the state a
// real router would; fail makes the named operation fail.
type fakeRouter struct {
	calls []string
	peers map[string]PeerConfig
	paths Table
	fail  map[string]error
}

func newFakeRouter() *fakeRouter {
	return &fakeRouter{peers: map[string]PeerConfig{}, paths: Table{}, fail: map[string]error{}}
}

func (f *fakeRouter) record(call string) error {
	f.calls = append(f.calls, call)
	return f.fail[call]
}

func (f *fakeRouter) AddPeer(_ context.Context, p PeerConfig) error {
	if err := f.record("add " + p.Name); err != nil {
		return err
	}
	f.peers[p.Name] = p
	return nil
}

func (f *fakeRouter) UpdatePeer(_ context.Context, p PeerConfig) error {
	if err := f.record("update " + p.Name); err != nil {
		return err
	}
	f.peers[p.Name] = p
	return nil
}

func (f *fakeRouter) RemovePeer(_ context.Context, name string) error {
	if err := f.record("remove " + name); err != nil {
		return err
	}
	delete(f.peers, name)
	delete(f.paths, name)
	return nil
}

func (f *fakeRouter) Advertise(_ context.Context, peer string, prefix netip.Prefix, attrs Attributes) error {
	if err := f.record(fmt.Sprintf("advertise %s %s", peer, prefix)); err != nil {
		return err
	}
	if _, ok := f.peers[peer]; !ok {
		return ErrUnknownPeer
	}
	if f.paths[peer] == nil {
		f.paths[peer] = map[netip.Prefix]Attributes{}
	}
	f.paths[peer][prefix] = attrs
	return nil
}

func (f *fakeRouter) Withdraw(_ context.Context, peer string, prefix netip.Prefix) error {
	if err := f.record(fmt.Sprintf("withdraw %s %s", peer, prefix)); err != nil {
		return err
	}
	delete(f.paths[peer], prefix)
	return nil
}

func (f *fakeRouter) Flush(context.Context) error { return f.record("flush") }
func (f *fakeRouter) Peers() []PeerStatus         { return nil }
func (f *fakeRouter) Close(context.Context) error { return f.record("close") }

var _ Router = (*fakeRouter)(nil)

func TestReconcilerAppliesOnlyChanges(t *testing.T) {
	ctx := context.Background()
	f := newFakeRouter()
	r := NewReconciler(f)
	a, b := peer("a", "192.0.2.1"), peer("b", "192.0.2.2")

	steps := []struct {
		name    string
		peers   []PeerConfig
		desired Table
		calls   []string
	}{
		{"first sync", []PeerConfig{a, b}, table("a 198.51.100.200/32", "b 198.51.100.200/32"),
			[]string{"add a", "add b", "advertise a 198.51.100.200/32", "advertise b 198.51.100.200/32", "flush"}},
		{"again: nothing to do but flush", []PeerConfig{a, b}, table("a 198.51.100.200/32", "b 198.51.100.200/32"),
			[]string{"flush"}},
		{"a second Service", []PeerConfig{a, b}, table("a 198.51.100.200/32", "b 198.51.100.200/32", "a 198.51.100.201/32", "b 198.51.100.201/32"),
			[]string{"advertise a 198.51.100.201/32", "advertise b 198.51.100.201/32", "flush"}},
		{"peer b removed: its paths go with its session", []PeerConfig{a}, table("a 198.51.100.200/32", "a 198.51.100.201/32", "b 198.51.100.200/32"),
			[]string{"remove b", "flush"}},
		{"paths to an unknown peer are not attempted", []PeerConfig{a}, table("a 198.51.100.200/32", "c 198.51.100.201/32"),
			[]string{"withdraw a 198.51.100.201/32", "flush"}},
	}
	for _, s := range steps {
		f.calls = nil
		if err := r.Reconcile(ctx, s.peers, s.desired); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if !slices.Equal(f.calls, s.calls) {
			t.Errorf("%s: calls\n got %q\nwant %q", s.name, f.calls, s.calls)
		}
	}
	if got := r.Advertised("a"); got != 1 {
		t.Errorf("Advertised(a) = %d, want 1", got)
	}
}

// A failed step is retried by the next Reconcile while the others stick:
// the reconciler records only what the router accepted.
func TestReconcilerRetriesWhatFailed(t *testing.T) {
	ctx := context.Background()
	f := newFakeRouter()
	r := NewReconciler(f)
	a, b := peer("a", "192.0.2.1"), peer("b", "192.0.2.2")
	boom := errors.New("boom")
	f.fail["add b"] = boom
	f.fail["advertise a 198.51.100.201/32"] = boom
	desired := table("a 198.51.100.200/32", "a 198.51.100.201/32", "b 198.51.100.200/32")

	err := r.Reconcile(ctx, []PeerConfig{a, b}, desired)
	if !errors.Is(err, boom) {
		t.Fatalf("Reconcile error = %v, want the router's", err)
	}
	if got := r.Announced(); !equalTables(got, table("a 198.51.100.200/32")) {
		t.Fatalf("after failures, announced = %v", got)
	}
	clear(f.fail)
	f.calls = nil
	if err := r.Reconcile(ctx, []PeerConfig{a, b}, desired); err != nil {
		t.Fatal(err)
	}
	want := []string{"add b", "advertise a 198.51.100.201/32", "advertise b 198.51.100.200/32", "flush"}
	if !slices.Equal(f.calls, want) {
		t.Errorf("retry calls\n got %q\nwant %q", f.calls, want)
	}
	if !equalTables(f.paths, desired) {
		t.Errorf("router holds %v, want %v", f.paths, desired)
	}
}

func TestReconcilerWithdrawAllKeepsSessions(t *testing.T) {
	ctx := context.Background()
	f := newFakeRouter()
	r := NewReconciler(f)
	if err := r.Reconcile(ctx, []PeerConfig{peer("a", "192.0.2.1")}, table("a 198.51.100.200/32", "a 2001:db8:f::200/128")); err != nil {
		t.Fatal(err)
	}
	f.calls = nil
	if err := r.WithdrawAll(ctx); err != nil {
		t.Fatal(err)
	}
	want := []string{"withdraw a 198.51.100.200/32", "withdraw a 2001:db8:f::200/128", "flush"}
	if !slices.Equal(f.calls, want) {
		t.Errorf("WithdrawAll calls %q, want %q", f.calls, want)
	}
	if len(f.peers) != 1 || r.Advertised("a") != 0 {
		t.Errorf("after WithdrawAll: peers %v, advertised %d; want the session kept and nothing advertised", f.peers, r.Advertised("a"))
	}
}

func equalTables(a, b Table) bool {
	count := func(t Table) int {
		n := 0
		for _, paths := range t {
			n += len(paths)
		}
		return n
	}
	if count(a) != count(b) {
		return false
	}
	for peer, paths := range a {
		for prefix, attrs := range paths {
			if got, ok := b[peer][prefix]; !ok || got != attrs {
				return false
			}
		}
	}
	return true
}
