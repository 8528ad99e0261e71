package layer2

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
)

// Gate is the fence. The Announcer calls it synchronously before every
// reply and every gratuitous frame; false means this node must not speak
// for any VIP right now (it may be cut off from its peers, who may already
// have taken its VIPs over). It runs on the hot path of every answer, so it
// should be an atomic load, and must not call the Announcer.
type Gate func() bool

// Options configure an Announcer. Everything is optional.
type Options struct {
	// OpenARP and OpenNDP open an interface's sockets; nil means ListenARP
	// and ListenNDP. Each family is opened on its first VIP on the
	// interface, so an IPv4-only interface never needs IPv6, nor the
	// reverse.
	OpenARP func(ifi *net.Interface) (net.PacketConn, error)
	OpenNDP func(ifi *net.Interface) (NDPConn, error)
	// InterfaceByName finds an interface; nil means net.InterfaceByName.
	InterfaceByName func(name string) (*net.Interface, error)
	// Gate is the fence; nil means always open.
	Gate Gate
	// Clock paces gratuitous bursts; nil means the real clock.
	Clock clock.Clock
	// Burst is when a gained VIP's gratuitous frames go out, as offsets
	// from the gain, ascending; nil means 0, 200 ms, 700 ms and 1.5 s (see
	// the package doc), empty means none.
	Burst []time.Duration
	// OnAnnounced, when set, is told when the first gratuitous frame of a
	// burst for vip on iface is on the wire (the new owner's "I have
	// spoken" in a handover). It runs on the Announcer's sending goroutine
	// with no lock held: it may call Set, but a slow callback delays
	// later bursts.
	OnAnnounced func(iface string, vip netip.Addr)
	// Registerer receives the herald_l2_* metrics; nil registers none.
	Registerer prometheus.Registerer
	// Logger logs; the zero value means klog.Background().
	Logger klog.Logger

	// armed, in tests, is told each time the sending goroutine goes back to
	// waiting, and for how long (pending false: until woken), so tests can
	// step a fake clock without races.
	armed func(wait time.Duration, pending bool)
}

// Errors Set wraps in an InterfaceError, and Close's own.
var (
	// ErrInvalidVIP: not a unicast IP address without a zone.
	ErrInvalidVIP = errors.New("not a unicast IP address")
	// ErrNotEthernet: the interface has no 6-byte hardware address (it is
	// a tunnel, a loopback, …), so ARP and NDP do not run on it.
	ErrNotEthernet = errors.New("not an Ethernet interface")
	// ErrJoinGroup: the VIPs are announced and unicast solicitations
	// answered, but the solicited-node group could not be joined, so
	// multicast solicitations may not arrive. The next Set retries.
	ErrJoinGroup = errors.New("joining solicited-node group")
	// ErrClosed: the Announcer was closed.
	ErrClosed = errors.New("layer2 announcer closed")
)

// InterfaceError reports wanted VIPs that are not, or only partly (see
// ErrJoinGroup), announced on one interface. Set returns one for each such
// failure, joined with errors.Join: errors.As finds the first, and
// `interface{ Unwrap() []error }` lists them all.
type InterfaceError struct {
	Interface string
	// VIPs are the wanted addresses affected.
	VIPs []netip.Addr
	Err  error
}

func (e *InterfaceError) Error() string {
	vips := make([]string, len(e.VIPs))
	for i, v := range e.VIPs {
		vips[i] = v.String()
	}
	return fmt.Sprintf("interface %s (VIPs %s): %v", e.Interface, strings.Join(vips, ", "), e.Err)
}

func (e *InterfaceError) Unwrap() error { return e.Err }

// Announcer answers ARP and NDP for the VIPs it is told to, on the
// interfaces it is told to, and announces each gained VIP with a burst of
// gratuitous frames. Create it with New; it is safe for concurrent use.
type Announcer struct {
	opts   Options
	m      *metrics
	logger klog.Logger

	mu     sync.Mutex
	links  map[string]*link
	bursts *bursts
	closed bool

	wake chan struct{}
	stop chan struct{}
	wg   sync.WaitGroup
}

// link is one interface in use: its identity when opened and a responder
// per family with VIPs on it.
type link struct {
	ifi      *net.Interface
	arp, ndp *responder
}

func (l *link) responder(family string) **responder {
	if family == familyIPv4 {
		return &l.arp
	}
	return &l.ndp
}

// New returns a running Announcer that announces nothing yet.
func New(opts Options) (*Announcer, error) {
	if opts.Burst == nil {
		opts.Burst = defaultBurst
	}
	for i, d := range opts.Burst {
		if d < 0 || (i > 0 && d < opts.Burst[i-1]) {
			return nil, fmt.Errorf("layer2: burst offsets %v must be non-negative and ascending", opts.Burst)
		}
	}
	if opts.OpenARP == nil {
		opts.OpenARP = ListenARP
	}
	if opts.OpenNDP == nil {
		opts.OpenNDP = ListenNDP
	}
	if opts.InterfaceByName == nil {
		opts.InterfaceByName = net.InterfaceByName
	}
	if opts.Gate == nil {
		opts.Gate = func() bool { return true }
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	if opts.Logger.GetSink() == nil {
		opts.Logger = klog.Background()
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	a := &Announcer{
		opts:   opts,
		m:      m,
		logger: opts.Logger.WithName("layer2"),
		links:  map[string]*link{},
		bursts: newBursts(opts.Burst),
		wake:   make(chan struct{}, 1),
		stop:   make(chan struct{}),
	}
	a.wg.Go(a.sendLoop)
	return a, nil
}

// Set makes the announced set exactly want: interface name → VIPs, both
// families mixed. VIPs gained start a gratuitous burst. VIPs lost are not
// answered or announced once Set returns (a burst in progress stops).
// Sockets are opened on an interface's first VIP of a family and closed
// with its last. An interface that is missing, not Ethernet, changed
// identity and cannot be reopened, or cannot be opened fails alone: Set
// applies the rest and returns an *InterfaceError for it; a later Set
// retries. An interface that was deleted and recreated under the same name,
// or got a new hardware address, is reopened and its VIPs announced again.
// ctx carries the logger.
func (a *Announcer) Set(ctx context.Context, want map[string][]netip.Addr) error {
	logger := klog.FromContext(ctx)
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return ErrClosed
	}
	names := slices.Sorted(maps.Keys(want))
	for name := range a.links {
		if _, ok := want[name]; !ok {
			names = append(names, name)
		}
	}
	var errs []error
	for _, name := range names {
		errs = append(errs, a.setLink(logger.WithValues("interface", name), name, want[name])...)
	}
	a.kick()
	return errors.Join(errs...)
}

// setLink applies one interface's wanted VIPs.
func (a *Announcer) setLink(logger klog.Logger, name string, vips []netip.Addr) []error {
	v4, v6, errs := splitVIPs(name, vips)
	l := a.links[name]
	if len(v4)+len(v6) == 0 {
		if l != nil {
			errs = append(errs, a.closeLink(logger, name, l)...)
		}
		return errs
	}
	ifi, err := a.lookup(name)
	if err != nil {
		a.m.errors.WithLabelValues(name, opLookup).Inc()
		if l != nil {
			errs = append(errs, a.closeLink(logger, name, l)...)
		}
		return append(errs, &InterfaceError{Interface: name, VIPs: append(v4, v6...), Err: err})
	}
	if l != nil && (l.ifi.Index != ifi.Index || !bytes.Equal(l.ifi.HardwareAddr, ifi.HardwareAddr)) {
		logger.Info("Interface changed identity; reopening", "index", ifi.Index, "hardwareAddr", ifi.HardwareAddr)
		errs = append(errs, a.closeLink(logger, name, l)...)
		l = nil
	}
	if l == nil {
		l = &link{ifi: ifi}
		a.links[name] = l
	}
	errs = append(errs, a.setFamily(logger, l, arpProtocol, v4)...)
	errs = append(errs, a.setFamily(logger, l, ndpProtocol, v6)...)
	if l.arp == nil && l.ndp == nil {
		delete(a.links, name)
	}
	return errs
}

// lookup finds an Ethernet interface by name.
func (a *Announcer) lookup(name string) (*net.Interface, error) {
	ifi, err := a.opts.InterfaceByName(name)
	if err != nil {
		return nil, fmt.Errorf("look up: %w", err)
	}
	if len(ifi.HardwareAddr) != 6 {
		return nil, fmt.Errorf("%w: hardware address %q", ErrNotEthernet, ifi.HardwareAddr)
	}
	return ifi, nil
}

// setFamily applies one family's VIPs on l, opening or closing its
// responder as needed.
func (a *Announcer) setFamily(logger klog.Logger, l *link, p protocol, vips []netip.Addr) []error {
	slot := l.responder(p.family)
	logger = logger.WithValues("family", p.family)
	var errs []error
	if *slot != nil && (len(vips) == 0 || (*slot).broken.Load()) {
		lost, err := (*slot).close()
		*slot = nil
		a.lost(logger, l.ifi.Name, lost)
		if err != nil {
			errs = append(errs, &InterfaceError{Interface: l.ifi.Name, Err: fmt.Errorf("close %s socket: %w", p.family, err)})
		}
	}
	if len(vips) == 0 {
		return errs
	}
	if *slot == nil {
		r, err := a.open(logger, l.ifi, p)
		if err != nil {
			a.m.errors.WithLabelValues(l.ifi.Name, opOpen).Inc()
			return append(errs, &InterfaceError{Interface: l.ifi.Name, VIPs: vips,
				Err: fmt.Errorf("open %s responder: %w", p.family, err)})
		}
		*slot = r
	}
	gained, lost, joinErrs := (*slot).set(vips)
	a.lost(logger, l.ifi.Name, lost)
	now := a.opts.Clock.Now()
	for _, v := range gained {
		logger.V(2).Info("Announcing", "vip", v)
		a.bursts.start(burstKey{iface: l.ifi.Name, vip: v}, now)
	}
	return append(errs, joinErrs...)
}

func (a *Announcer) lost(logger klog.Logger, iface string, lost []netip.Addr) {
	for _, v := range lost {
		logger.V(2).Info("No longer announcing", "vip", v)
		a.bursts.stop(burstKey{iface: iface, vip: v})
	}
}

// open starts a responder for p on ifi.
func (a *Announcer) open(logger klog.Logger, ifi *net.Interface, p protocol) (*responder, error) {
	r := &responder{
		protocol: p,
		iface:    ifi.Name,
		hw:       slices.Clone(ifi.HardwareAddr),
		gate:     a.opts.Gate,
		clock:    a.opts.Clock,
		logger:   a.logger.WithValues("interface", ifi.Name, "family", p.family),
		m:        newResponderMetrics(a.m, ifi.Name, p.family),
		owned:    map[netip.Addr]struct{}{},
		joined:   map[netip.Addr]bool{},
		done:     make(chan struct{}),
	}
	if p.family == familyIPv4 {
		c, err := a.opts.OpenARP(ifi)
		if err != nil {
			return nil, err
		}
		r.conn = c
	} else {
		c, err := a.opts.OpenNDP(ifi)
		if err != nil {
			return nil, err
		}
		r.conn, r.groups = c, c
	}
	logger.V(2).Info("Opened responder", "hardwareAddr", r.hw)
	a.wg.Go(r.serve)
	return r, nil
}

// closeLink closes every responder of an interface and forgets it.
func (a *Announcer) closeLink(logger klog.Logger, name string, l *link) []error {
	var errs []error
	for _, p := range []protocol{arpProtocol, ndpProtocol} {
		errs = append(errs, a.setFamily(logger, l, p, nil)...)
	}
	delete(a.links, name)
	return errs
}

// splitVIPs validates an interface's VIPs and splits them by family,
// without duplicates.
func splitVIPs(iface string, vips []netip.Addr) (v4, v6 []netip.Addr, errs []error) {
	seen := make(map[netip.Addr]bool, len(vips))
	for _, v := range vips {
		v = v.Unmap()
		if !v.IsValid() || v.Zone() != "" || v.IsUnspecified() || v.IsMulticast() || v.IsLoopback() ||
			v == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
			errs = append(errs, &InterfaceError{Interface: iface, VIPs: []netip.Addr{v},
				Err: fmt.Errorf("%w: %q", ErrInvalidVIP, v)})
			continue
		}
		if seen[v] {
			continue
		}
		seen[v] = true
		if v.Is4() {
			v4 = append(v4, v)
		} else {
			v6 = append(v6, v)
		}
	}
	return v4, v6, errs
}

// Gratuitous starts a new gratuitous burst for each of vips on every
// interface it is announced on (e.g. when this node takes over a VIP whose
// previous owner may still be cached by clients) and returns how many
// bursts it started: 0 means none of vips is announced.
func (a *Announcer) Gratuitous(vips ...netip.Addr) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.opts.Clock.Now()
	started := 0
	for name, l := range a.links {
		for _, v := range vips {
			v = v.Unmap()
			r := *l.responder(familyOf(v))
			if r != nil && r.owns(v) {
				a.bursts.start(burstKey{iface: name, vip: v}, now)
				started++
			}
		}
	}
	a.kick()
	return started
}

// HardwareAddr returns the hardware address VIPs are announced with on
// iface, and false when nothing is announced there.
func (a *Announcer) HardwareAddr(iface string) (net.HardwareAddr, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	l, ok := a.links[iface]
	if !ok {
		return nil, false
	}
	return slices.Clone(l.ifi.HardwareAddr), true
}

// Close stops answering and announcing, closes every socket and returns
// once every goroutine of the Announcer has ended. Set after Close returns
// ErrClosed.
func (a *Announcer) Close() error {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return nil
	}
	a.closed = true
	var errs []error
	for name, l := range a.links {
		errs = append(errs, a.closeLink(a.logger.WithValues("interface", name), name, l)...)
	}
	close(a.stop)
	a.mu.Unlock()
	a.wg.Wait()
	return errors.Join(errs...)
}

func familyOf(v netip.Addr) string {
	if v.Is4() {
		return familyIPv4
	}
	return familyIPv6
}

// kick wakes the sending goroutine; it never blocks.
func (a *Announcer) kick() {
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// sendLoop sends the gratuitous frames as the bursts schedule them, until
// Close.
func (a *Announcer) sendLoop() {
	for {
		announced, at, pending := a.sendDue()
		for _, k := range announced {
			a.opts.OnAnnounced(k.iface, k.vip)
		}
		if !a.sleep(at, pending) {
			return
		}
	}
}

// sleep waits until at (forever unless pending), Set or Gratuitous wakes
// it, or Close; it returns false for Close. The wait is measured from the
// clock's time now, not from when sendDue looked: a frame that fell due in
// between goes out at once instead of a whole interval late.
func (a *Announcer) sleep(at time.Time, pending bool) bool {
	var fired <-chan time.Time
	var wait time.Duration
	if pending {
		if wait = at.Sub(a.opts.Clock.Now()); wait <= 0 {
			select {
			case <-a.stop:
				return false
			default:
				return true
			}
		}
		timer := a.opts.Clock.NewTimer(wait)
		defer timer.Stop()
		fired = timer.C()
	}
	if a.opts.armed != nil {
		a.opts.armed(wait, pending)
	}
	select {
	case <-a.stop:
		return false
	case <-a.wake:
	case <-fired:
	}
	return true
}

// sendDue sends what is due now and returns the bursts whose first frame
// went out (for OnAnnounced) and when to come back.
func (a *Announcer) sendDue() (announced []burstKey, at time.Time, pending bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.opts.Clock.Now()
	for _, k := range a.bursts.due(now) {
		l := a.links[k.iface]
		if l == nil {
			continue
		}
		r := *l.responder(familyOf(k.vip))
		if r != nil && r.announce(k.vip) && a.bursts.sent(k) && a.opts.OnAnnounced != nil {
			announced = append(announced, k)
		}
	}
	a.bursts.settle()
	wait, pending := a.bursts.next(now)
	return announced, now.Add(wait), pending
}
