package layer2

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	testingclock "k8s.io/utils/clock/testing"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// armedAt is one report of the sending goroutine going back to waiting.
type armedAt struct {
	wait    time.Duration
	pending bool
}

// env is an Announcer over a fake network and a fake clock.
type env struct {
	a         *Announcer
	net       *fakeNet
	clock     *testingclock.FakeClock
	armed     chan armedAt
	gate      *atomic.Bool
	announced chan burstKey
}

func newEnv(t *testing.T, tweak func(*Options)) *env {
	t.Helper()
	e := &env{net: newFakeNet(), clock: testingclock.NewFakeClock(t0), armed: make(chan armedAt, 10000),
		gate: &atomic.Bool{}, announced: make(chan burstKey, 1000)}
	e.gate.Store(true)
	opts := e.net.options()
	opts.Clock = e.clock
	opts.Gate = e.gate.Load
	opts.Registerer = prometheus.NewRegistry()
	opts.OnAnnounced = func(iface string, vip netip.Addr) { e.announced <- burstKey{iface: iface, vip: vip} }
	opts.armed = func(wait time.Duration, pending bool) {
		select {
		case e.armed <- armedAt{wait, pending}:
		default: // only TestConcurrentSet wakes it this often, and does not look
		}
	}
	if tweak != nil {
		tweak(&opts)
	}
	a, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := a.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	e.a = a
	return e
}

func (e *env) set(t *testing.T, want map[string][]netip.Addr) {
	t.Helper()
	if err := e.a.Set(context.Background(), want); err != nil {
		t.Fatalf("Set(%v): %v", want, err)
	}
}

// waitArmed waits until the sending goroutine waits as wanted: after
// sending everything due. Extra wake-ups (every Set wakes it) are skipped.
func (e *env) waitArmed(t *testing.T, want armedAt) {
	t.Helper()
	deadline := time.After(waitFor)
	for {
		select {
		case got := <-e.armed:
			if got == want || (!want.pending && !got.pending) {
				return
			}
		case <-deadline:
			t.Fatalf("sending goroutine never waited %+v", want)
		}
	}
}

// step advances the fake clock once the sending goroutine waits for d.
func (e *env) step(t *testing.T, d time.Duration) {
	t.Helper()
	e.waitArmed(t, armedAt{d, true})
	e.clock.Step(d)
}

func counter(t *testing.T, c prometheus.Collector) float64 {
	t.Helper()
	return testutil.ToFloat64(c)
}

// expectReply injects a request for vip on conn and returns the answer.
// Because a responder handles frames in order, a reply to this request
// also proves that every frame injected before it was answered or
// ignored: it is how the tests see "no reply" without waiting.
func expectARPReply(t *testing.T, conn *fakeConn, vip netip.Addr) parsedARP {
	t.Helper()
	conn.inject(t, arpRequest(t, vip))
	got := parseARP(t, conn.next(t))
	if got.Operation != arp.OperationReply || got.SenderIP != vip {
		t.Fatalf("answer to a request for %v: %+v", vip, got.Packet)
	}
	return got
}

func expectNA(t *testing.T, conn *fakeConn, vip netip.Addr) parsedNA {
	t.Helper()
	conn.inject(t, nsFrame(t, nsSpec{target: vip, sll: clientMAC}))
	got := parseNA(t, conn.next(t))
	if got.na.TargetAddress != vip || !got.na.Solicited {
		t.Fatalf("answer to a solicitation for %v: %+v", vip, got.na)
	}
	return got
}

// expectSilent checks that nothing was sent on conn so far.
func expectSilent(t *testing.T, conn *fakeConn, what string) {
	t.Helper()
	select {
	case f := <-conn.out:
		t.Fatalf("%s: sent a frame to %v: % x", what, f.dst, f.frame)
	default:
	}
}

// drain reads and discards n frames (a gratuitous burst's first sends).
func drain(t *testing.T, conn *fakeConn, n int) {
	t.Helper()
	for range n {
		conn.next(t)
	}
}

func TestAnswersOnlyOwnedVIPsOnTheirInterface(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.Burst = []time.Duration{} })
	e.set(t, map[string][]netip.Addr{"eth0": {vipA, vip6A}, "eth1": {vipB}})
	eth0, eth1 := e.net.conn(t, "eth0", familyIPv4), e.net.conn(t, "eth1", familyIPv4)
	ndp0 := e.net.conn(t, "eth0", familyIPv6)

	eth0.inject(t, arpRequest(t, vipB)) // owned, but on eth1
	eth0.inject(t, arpRequest(t, vipC)) // owned nowhere
	eth0.inject(t, arpFrameOf(t, mac0, ethernet.Broadcast, arp.OperationRequest, mac0, vipA, zeroMAC, vipA))
	got := expectARPReply(t, eth0, vipA)
	if got.ethDst.String() != clientMAC.String() || got.SenderHardwareAddr.String() != mac0.String() ||
		got.TargetIP != clientIP {
		t.Errorf("reply on eth0: %+v to %v", got.Packet, got.ethDst)
	}
	eth1.inject(t, arpRequest(t, vipA)) // owned, but on eth0
	if got := expectARPReply(t, eth1, vipB); got.SenderHardwareAddr.String() != mac1.String() {
		t.Errorf("reply on eth1 carries %v, want eth1's %v", got.SenderHardwareAddr, mac1)
	}

	ndp0.inject(t, nsFrame(t, nsSpec{target: vip6B, sll: clientMAC}))
	ndp0.inject(t, nsFrame(t, nsSpec{ethSrc: mac0, target: vip6A, sll: mac0}))
	if got := expectNA(t, ndp0, vip6A); got.targetLL.String() != mac0.String() || got.dst != clientIP6 {
		t.Errorf("advertisement on eth0: %+v to %v", got.na, got.dst)
	}
	if n := e.net.openCount("eth1", familyIPv6); n != 0 {
		t.Errorf("NDP socket opened on eth1, which has no IPv6 VIP")
	}

	// A reader takes a frame only after handling the one before, so these
	// make sure the replies above were counted.
	for _, c := range []*fakeConn{eth0, eth1, ndp0} {
		c.inject(t, []byte{1})
	}
	m := e.a.m
	for _, c := range []struct {
		name string
		c    prometheus.Collector
		want float64
	}{
		{"IPv4 replies", m.replies.WithLabelValues(familyIPv4), 2},
		{"IPv6 replies", m.replies.WithLabelValues(familyIPv6), 1},
		{"IPv4 not owned", m.ignored.WithLabelValues(familyIPv4, "not_owned"), 3},
		{"IPv4 own", m.ignored.WithLabelValues(familyIPv4, "own"), 1},
		{"IPv6 not owned", m.ignored.WithLabelValues(familyIPv6, "not_owned"), 1},
		{"IPv6 own", m.ignored.WithLabelValues(familyIPv6, "own"), 1},
		{"announced on eth0", m.announced.WithLabelValues("eth0", familyIPv4), 1},
	} {
		if got := counter(t, c.c); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

// TestGratuitousBurstOnGain steps a fake clock through the default burst
// and checks each send's frames and timing.
func TestGratuitousBurstOnGain(t *testing.T) {
	e := newEnv(t, nil)
	e.set(t, map[string][]netip.Addr{"eth0": {vipA, vip6A}})
	arp0, ndp0 := e.net.conn(t, "eth0", familyIPv4), e.net.conn(t, "eth0", familyIPv6)
	for i, offset := range defaultBurst {
		if i > 0 {
			e.step(t, offset-defaultBurst[i-1])
		}
		req, rep := parseARP(t, arp0.next(t)), parseARP(t, arp0.next(t))
		if req.Operation != arp.OperationRequest || rep.Operation != arp.OperationReply ||
			req.SenderIP != vipA || req.TargetIP != vipA || rep.SenderIP != vipA || rep.TargetIP != vipA ||
			req.SenderHardwareAddr.String() != mac0.String() || rep.TargetHardwareAddr.String() != mac0.String() ||
			req.ethDst.String() != ethernet.Broadcast.String() || rep.ethDst.String() != ethernet.Broadcast.String() {
			t.Fatalf("send %d: gratuitous ARP %+v to %v and %+v to %v", i, req.Packet, req.ethDst, rep.Packet, rep.ethDst)
		}
		na := parseNA(t, ndp0.next(t))
		if na.na.Solicited || !na.na.Override || na.na.TargetAddress != vip6A || na.dst != allNodes ||
			na.targetLL.String() != mac0.String() {
			t.Fatalf("send %d: advertisement %+v to %v", i, na.na, na.dst)
		}
		if got := e.clock.Since(t0); got != offset {
			t.Fatalf("send %d at %v, want %v", i, got, offset)
		}
	}
	e.waitArmed(t, armedAt{pending: false})
	expectSilent(t, arp0, "after the burst")
	expectSilent(t, ndp0, "after the burst")

	var announced []burstKey
	for range 2 {
		announced = append(announced, <-e.announced)
	}
	slices.SortFunc(announced, compareKeys)
	if want := []burstKey{{"eth0", vipA}, {"eth0", vip6A}}; !slices.Equal(announced, want) {
		t.Errorf("OnAnnounced %v, want %v once each", announced, want)
	}
	if len(e.announced) != 0 {
		t.Errorf("OnAnnounced called more than once per gain")
	}
	if got := counter(t, e.a.m.gratuitous.WithLabelValues(familyIPv4)); got != 8 {
		t.Errorf("IPv4 gratuitous frames counted: %v, want 8", got)
	}

	// A VIP already announced gets no new burst from Set; Gratuitous
	// starts one.
	e.set(t, map[string][]netip.Addr{"eth0": {vipA, vip6A}})
	e.waitArmed(t, armedAt{pending: false})
	expectSilent(t, arp0, "Set without a change")
	if n := e.a.Gratuitous(vipA, vipC); n != 1 {
		t.Errorf("Gratuitous started %d bursts, want 1", n)
	}
	drain(t, arp0, 2)
	expectSilent(t, ndp0, "Gratuitous for an IPv4 VIP")
}

// TestLossStopsAnswersAndBurst: once Set returns without a VIP, nothing is
// sent for it, not even the rest of its burst.
func TestLossStopsAnswersAndBurst(t *testing.T) {
	e := newEnv(t, nil)
	e.set(t, map[string][]netip.Addr{"eth0": {vipA, vipB, vip6A, vip6B}})
	arp0, ndp0 := e.net.conn(t, "eth0", familyIPv4), e.net.conn(t, "eth0", familyIPv6)
	drain(t, arp0, 4)
	drain(t, ndp0, 2)
	e.waitArmed(t, armedAt{200 * time.Millisecond, true})

	e.set(t, map[string][]netip.Addr{"eth0": {vipB, vip6B}})
	e.step(t, 200*time.Millisecond)
	for range 2 {
		if got := parseARP(t, arp0.next(t)); got.SenderIP != vipB {
			t.Fatalf("burst frame for %v after it was lost", got.SenderIP)
		}
	}
	if got := parseNA(t, ndp0.next(t)); got.na.TargetAddress != vip6B {
		t.Fatalf("burst frame for %v after it was lost", got.na.TargetAddress)
	}
	arp0.inject(t, arpRequest(t, vipA))
	expectARPReply(t, arp0, vipB)
	ndp0.inject(t, nsFrame(t, nsSpec{target: vip6A, sll: clientMAC}))
	expectNA(t, ndp0, vip6B)
}

// TestGateClosedSendsNothing: with the fence closed nothing goes out,
// neither replies nor gratuitous frames; reopened, answers resume without
// a new Set.
func TestGateClosedSendsNothing(t *testing.T) {
	e := newEnv(t, nil)
	e.gate.Store(false)
	e.set(t, map[string][]netip.Addr{"eth0": {vipA, vip6A}})
	arp0, ndp0 := e.net.conn(t, "eth0", familyIPv4), e.net.conn(t, "eth0", familyIPv6)
	e.step(t, 200*time.Millisecond) // the first send was due at 0 and fenced
	// Waiting again means the send due at 200 ms met the closed gate too.
	e.waitArmed(t, armedAt{500 * time.Millisecond, true})
	arp0.inject(t, arpRequest(t, vipA))
	ndp0.inject(t, nsFrame(t, nsSpec{target: vip6A, sll: clientMAC}))
	// A reader takes the next frame only once it handled the last: these
	// make sure the requests above met the closed gate.
	arp0.inject(t, arpRequest(t, vipC))
	ndp0.inject(t, nsFrame(t, nsSpec{target: vip6B, sll: clientMAC}))

	e.gate.Store(true)
	// The frames injected while closed were read before these: had they
	// been answered, their replies would come first.
	expectARPReply(t, arp0, vipA)
	expectNA(t, ndp0, vip6A)
	m := e.a.m
	if got := counter(t, m.fenced.WithLabelValues(familyIPv4, "gratuitous")); got != 2 {
		t.Errorf("fenced IPv4 gratuitous sends: %v, want 2", got)
	}
	if got := counter(t, m.fenced.WithLabelValues(familyIPv4, "reply")); got != 1 {
		t.Errorf("fenced IPv4 replies: %v, want 1", got)
	}
	if got := counter(t, m.fenced.WithLabelValues(familyIPv6, "reply")); got != 1 {
		t.Errorf("fenced IPv6 replies: %v, want 1", got)
	}
	if len(e.announced) != 0 {
		t.Errorf("OnAnnounced while fenced")
	}
	// The burst goes on once the gate opens, and that first frame on the
	// wire is what OnAnnounced reports.
	e.clock.Step(500 * time.Millisecond)
	drain(t, arp0, 2)
	drain(t, ndp0, 1)
	if k := <-e.announced; k.iface != "eth0" {
		t.Errorf("OnAnnounced %v", k)
	}
}

// TestSolicitedNodeGroups: the NDP socket joins each owned VIP's group
// (one join for VIPs sharing a group) and leaves it with the last one.
func TestSolicitedNodeGroups(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.Burst = []time.Duration{} })
	// vip6A and shared end in the same 24 bits: one group.
	shared := netip.MustParseAddr("2001:db8:1::200")
	e.set(t, map[string][]netip.Addr{"eth0": {vip6A, shared, vip6B}})
	c := e.net.conn(t, "eth0", familyIPv6)
	ga, gb := solicitedNodeOf(vip6A), solicitedNodeOf(vip6B)
	if got := c.joined(); !slices.Equal(got, []netip.Addr{ga, gb}) {
		t.Fatalf("joined %v, want %v", got, []netip.Addr{ga, gb})
	}
	e.set(t, map[string][]netip.Addr{"eth0": {shared, vip6B}})
	if got := c.joined(); !slices.Equal(got, []netip.Addr{ga, gb}) {
		t.Fatalf("after losing one VIP of a shared group: joined %v", got)
	}
	e.set(t, map[string][]netip.Addr{"eth0": {vip6B}})
	if got := c.joined(); !slices.Equal(got, []netip.Addr{gb}) {
		t.Fatalf("after losing the group's last VIP: joined %v, want %v", got, []netip.Addr{gb})
	}
	if len(c.joins) != 2 || len(c.leaves) != 1 {
		t.Errorf("joins %v, leaves %v: want two joins and one leave", c.joins, c.leaves)
	}

	// A failed join is reported, the VIP is still announced (a unicast
	// solicitation is answered), and the next Set joins.
	c.setJoinErr(errors.New("no buffer space"))
	err := e.a.Set(context.Background(), map[string][]netip.Addr{"eth0": {vip6A, vip6B}})
	var ie *InterfaceError
	if !errors.As(err, &ie) || !errors.Is(err, ErrJoinGroup) || ie.Interface != "eth0" ||
		!slices.Equal(ie.VIPs, []netip.Addr{vip6A}) {
		t.Fatalf("Set with a failing join: %v", err)
	}
	c.inject(t, nsFrame(t, nsSpec{target: vip6A, dst: vip6A, ethDst: mac0}))
	if got := parseNA(t, c.next(t)); got.na.TargetAddress != vip6A {
		t.Fatalf("answer %+v", got.na)
	}
	c.setJoinErr(nil)
	e.set(t, map[string][]netip.Addr{"eth0": {vip6A, vip6B}})
	if got := c.joined(); !slices.Equal(got, []netip.Addr{ga, gb}) {
		t.Fatalf("retried join: joined %v", got)
	}
}

// TestInterfaceErrors: an interface that cannot be used fails alone, with
// an error naming it, and a later Set retries it.
func TestInterfaceErrors(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.Burst = []time.Duration{0} })
	errOpen := errors.New("operation not permitted")
	e.net.set(func(n *fakeNet) { n.openErr["eth1"] = errOpen })
	err := e.a.Set(context.Background(), map[string][]netip.Addr{
		"eth0": {vipA, netip.MustParseAddr("224.0.0.1")},
		"eth1": {vipB},
		"eth9": {vipC},
		"tun0": {vip6A},
	})
	failed := map[string]error{}
	var joined interface{ Unwrap() []error }
	if !errors.As(err, &joined) {
		t.Fatalf("Set: %v, want joined errors", err)
	}
	for _, err := range joined.Unwrap() {
		var ie *InterfaceError
		if !errors.As(err, &ie) {
			t.Fatalf("error %v is not an *InterfaceError", err)
		}
		failed[ie.Interface] = ie.Err
	}
	for iface, want := range map[string]error{"eth0": ErrInvalidVIP, "eth1": errOpen, "eth9": errNoSuchInterface,
		"tun0": ErrNotEthernet} {
		if !errors.Is(failed[iface], want) {
			t.Errorf("%s: error %v, want %v", iface, failed[iface], want)
		}
	}
	if !strings.Contains(err.Error(), "eth9") {
		t.Errorf("error text %q does not name eth9", err)
	}
	arp0 := e.net.conn(t, "eth0", familyIPv4)
	drain(t, arp0, 2)
	expectARPReply(t, arp0, vipA)
	if _, ok := e.a.HardwareAddr("eth1"); ok {
		t.Errorf("eth1 reported in use")
	}

	e.net.set(func(n *fakeNet) {
		delete(n.openErr, "eth1")
		n.ifaces["eth9"] = &net.Interface{Index: 9, Name: "eth9", HardwareAddr: net.HardwareAddr{2, 0, 0, 0, 0, 9}}
	})
	e.set(t, map[string][]netip.Addr{"eth0": {vipA}, "eth1": {vipB}, "eth9": {vipC}})
	for iface, vip := range map[string]netip.Addr{"eth1": vipB, "eth9": vipC} {
		c := e.net.conn(t, iface, familyIPv4)
		if got := parseARP(t, c.next(t)); got.SenderIP != vip {
			t.Errorf("%s: first frame after retry is for %v, want a gratuitous one for %v", iface, got.SenderIP, vip)
		}
	}
	if hw, ok := e.a.HardwareAddr("eth9"); !ok || hw.String() != "02:00:00:00:00:09" {
		t.Errorf("HardwareAddr(eth9) = %v, %v", hw, ok)
	}
}

// TestSocketsFollowVIPs: a family's socket opens with its first VIP on an
// interface and closes with its last; an interface recreated under the same
// name is reopened and its VIPs announced again.
func TestSocketsFollowVIPs(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.Burst = []time.Duration{0} })
	e.set(t, map[string][]netip.Addr{"eth0": {vipA}})
	if n := e.net.openCount("eth0", familyIPv6); n != 0 {
		t.Fatalf("IPv6 socket opened for an IPv4 VIP")
	}
	arp0 := e.net.conn(t, "eth0", familyIPv4)
	e.set(t, map[string][]netip.Addr{"eth0": {vipA, vip6A}})
	ndp0 := e.net.conn(t, "eth0", familyIPv6)
	e.set(t, map[string][]netip.Addr{"eth0": {vip6A}})
	if !arp0.isClosed() || ndp0.isClosed() {
		t.Fatalf("after the last IPv4 VIP left: ARP closed %v, NDP closed %v", arp0.isClosed(), ndp0.isClosed())
	}
	drain(t, ndp0, 1)

	e.net.set(func(n *fakeNet) { n.ifaces["eth0"].Index = 20 }) // deleted and created again
	e.set(t, map[string][]netip.Addr{"eth0": {vip6A}})
	if !ndp0.isClosed() || e.net.openCount("eth0", familyIPv6) != 2 {
		t.Fatalf("recreated interface: old socket closed %v, opened %d times", ndp0.isClosed(),
			e.net.openCount("eth0", familyIPv6))
	}
	if got := parseNA(t, e.net.conn(t, "eth0", familyIPv6).next(t)); got.na.TargetAddress != vip6A {
		t.Errorf("no new announcement on the recreated interface: %+v", got.na)
	}

	e.set(t, nil)
	if c := e.net.conn(t, "eth0", familyIPv6); !c.isClosed() {
		t.Errorf("socket left open with no VIP")
	}
	if _, ok := e.a.HardwareAddr("eth0"); ok {
		t.Errorf("eth0 still reported in use")
	}
}

// TestBrokenSocketReopened: a socket that fails under the responder is
// replaced by the next Set, and its VIPs announced again.
func TestBrokenSocketReopened(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.Burst = []time.Duration{0} })
	e.set(t, map[string][]netip.Addr{"eth0": {vipA}})
	old := e.net.conn(t, "eth0", familyIPv4)
	drain(t, old, 2)
	waitGoroutines(t, 2) // the reader and the sender
	close(old.broken)
	waitGoroutines(t, 1) // the reader gave up
	e.set(t, map[string][]netip.Addr{"eth0": {vipA}})
	if n := e.net.openCount("eth0", familyIPv4); n != 2 {
		t.Fatalf("socket opened %d times, want a second time after it broke", n)
	}
	c := e.net.conn(t, "eth0", familyIPv4)
	if got := parseARP(t, c.next(t)); got.SenderIP != vipA || got.ethDst.String() != ethernet.Broadcast.String() {
		t.Errorf("first frame on the new socket: %+v, want a gratuitous one for %v", got.Packet, vipA)
	}
	drain(t, c, 1)
	expectARPReply(t, c, vipA)
}

// TestConcurrentSet runs Sets from several goroutines while frames are
// answered (for go test -race), then checks that the last Set wins.
func TestConcurrentSet(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.Clock = nil; o.Burst = []time.Duration{0, time.Millisecond} })
	e.set(t, map[string][]netip.Addr{"eth0": {vipA}})
	arp0 := e.net.conn(t, "eth0", familyIPv4)
	stop := make(chan struct{})
	var readers sync.WaitGroup
	readers.Go(func() { // keep the output flowing
		for {
			select {
			case <-arp0.out:
			case <-stop:
				return
			}
		}
	})
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for j := range 50 {
				vips := []netip.Addr{vipA}
				if (i+j)%2 == 0 {
					vips = append(vips, vipB, vip6A)
				}
				if err := e.a.Set(context.Background(), map[string][]netip.Addr{"eth0": vips}); err != nil {
					t.Error(err)
				}
				e.a.Gratuitous(vipB)
			}
		})
		wg.Go(func() {
			for range 50 {
				arp0.in <- arpRequest(t, vipB)
			}
		})
	}
	wg.Wait()
	close(stop)
	readers.Wait()
	e.set(t, map[string][]netip.Addr{"eth0": {vipA}})
	// Once the reader takes this frame it has handled every earlier one,
	// and their replies are in the channel: drop them.
	arp0.inject(t, []byte{1})
	for len(arp0.out) > 0 {
		<-arp0.out
	}
	arp0.inject(t, arpRequest(t, vipB))
	arp0.inject(t, arpRequest(t, vipA))
	for {
		f := parseARP(t, arp0.next(t))
		if f.SenderIP == vipA && f.ethDst.String() == ethernet.Broadcast.String() {
			continue // vipA's gratuitous frames may still be going out
		}
		if f.SenderIP != vipA || f.Operation != arp.OperationReply || f.ethDst.String() != clientMAC.String() {
			t.Fatalf("after the last Set: %+v to %v, want only a reply for %v", f.Packet, f.ethDst, vipA)
		}
		return
	}
}

// TestCloseStopsEverything: Close closes every socket, ends every
// goroutine the Announcer started, and later Sets fail.
func TestCloseStopsEverything(t *testing.T) {
	e := newEnv(t, nil)
	e.set(t, map[string][]netip.Addr{"eth0": {vipA, vip6A}, "eth1": {vipB}})
	conns := []*fakeConn{e.net.conn(t, "eth0", familyIPv4), e.net.conn(t, "eth0", familyIPv6),
		e.net.conn(t, "eth1", familyIPv4)}
	// Validate the count itself: 3 readers and the sender.
	waitGoroutines(t, 4)
	if err := e.a.Close(); err != nil {
		t.Fatal(err)
	}
	for i, c := range conns {
		if !c.isClosed() {
			t.Errorf("socket %d left open", i)
		}
	}
	// Close waits for its goroutines, so none may be left even for a
	// moment.
	if n := ourGoroutines(); n != 0 {
		t.Errorf("%d goroutines still running the Announcer's code after Close", n)
	}
	if err := e.a.Set(context.Background(), map[string][]netip.Addr{"eth0": {vipA}}); !errors.Is(err, ErrClosed) {
		t.Errorf("Set after Close: %v, want ErrClosed", err)
	}
	if err := e.a.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// waitGoroutines waits until n goroutines run the Announcer's loops: one
// just started may not have reached them yet, one ending may still be in
// them.
func waitGoroutines(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for ourGoroutines() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines running the Announcer's loops, want %d", ourGoroutines(), n)
		}
		runtime.Gosched()
	}
}

// ourGoroutines counts goroutines whose stack runs the Announcer's
// long-lived loops (goleak-style, without the dependency).
func ourGoroutines() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if strings.Contains(g, "layer2.(*responder).serve") || strings.Contains(g, "layer2.(*Announcer).sendLoop") {
			n++
		}
	}
	return n
}

func TestNewRejectsBadBurst(t *testing.T) {
	for _, burst := range [][]time.Duration{{-time.Second}, {time.Second, 0}} {
		if _, err := New(Options{Burst: burst}); err == nil {
			t.Errorf("New accepted burst %v", burst)
		}
	}
}
