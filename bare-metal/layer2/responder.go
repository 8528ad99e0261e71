package layer2

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mdlayher/packet"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
)

const (
	// readBufferSize holds any frame up to a 9000-byte jumbo MTU; the
	// questions answered are a few dozen bytes.
	readBufferSize = 9216 + ethHeaderLen
	// readRetryDelay paces reads after a socket error that is not the
	// socket's end, so a broken interface cannot spin a CPU.
	readRetryDelay = time.Second
)

// protocol is what differs between ARP and NDP.
type protocol struct {
	family string
	answer func(frame []byte, hw net.HardwareAddr, owns func(netip.Addr) bool) decision
	// announce returns the gratuitous frames for vip.
	announce func(hw net.HardwareAddr, vip netip.Addr) []outFrame
}

var (
	arpProtocol = protocol{family: familyIPv4, answer: answerARP, announce: gratuitousARP}
	ndpProtocol = protocol{family: familyIPv6, answer: answerNDP,
		announce: func(hw net.HardwareAddr, vip netip.Addr) []outFrame {
			return []outFrame{unsolicitedNA(hw, vip)}
		}}
)

// responder answers one address family on one interface. It owns the
// socket, the goroutine that reads it and the set of VIPs it answers for.
//
// Every send, reply or gratuitous, happens under mu's read lock after
// checking that the VIP is still owned and the gate open; set and close
// change the owned set under the write lock. So once set returns, no frame
// for a VIP it removed is being sent or will be.
type responder struct {
	protocol
	iface  string
	hw     net.HardwareAddr
	conn   net.PacketConn
	groups NDPConn // the same conn, for IPv6; nil for IPv4
	gate   Gate
	clock  clock.Clock
	logger klog.Logger
	m      responderMetrics

	mu    sync.RWMutex
	owned map[netip.Addr]struct{}
	// joined are the solicited-node groups joined on the interface.
	joined map[netip.Addr]bool

	closing atomic.Bool
	// broken is set when serve ended on its own (the socket was closed
	// under it): the next Set replaces the responder.
	broken atomic.Bool
	done   chan struct{}
}

// responderMetrics are the metrics children of one responder, resolved
// once instead of per frame.
type responderMetrics struct {
	gratuitous, replies                      prometheus.Counter
	fencedReply, fencedGratuitous            prometheus.Counter
	ignored                                  [numVerdicts]prometheus.Counter
	readErrs, writeErrs, joinErrs, leaveErrs prometheus.Counter
	announced                                prometheus.Gauge
	deleteAnnounced                          func()
}

func newResponderMetrics(m *metrics, iface, family string) responderMetrics {
	rm := responderMetrics{
		gratuitous:       m.gratuitous.WithLabelValues(family),
		replies:          m.replies.WithLabelValues(family),
		fencedReply:      m.fenced.WithLabelValues(family, "reply"),
		fencedGratuitous: m.fenced.WithLabelValues(family, "gratuitous"),
		readErrs:         m.errors.WithLabelValues(iface, opRead),
		writeErrs:        m.errors.WithLabelValues(iface, opWrite),
		joinErrs:         m.errors.WithLabelValues(iface, opJoin),
		leaveErrs:        m.errors.WithLabelValues(iface, opLeave),
		announced:        m.announced.WithLabelValues(iface, family),
		deleteAnnounced:  func() { m.announced.DeleteLabelValues(iface, family) },
	}
	for v := range numVerdicts {
		if v != answered {
			rm.ignored[v] = m.ignored.WithLabelValues(family, v.String())
		}
	}
	return rm
}

// set makes the owned set exactly vips and returns what changed. For IPv6
// it joins the solicited-node groups of the owned VIPs and leaves the rest;
// a group it could not join is an error, but its VIPs stay owned: they are
// announced and unicast solicitations are answered, and the next set tries
// the join again.
func (r *responder) set(vips []netip.Addr) (gained, lost []netip.Addr, errs []error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	want := make(map[netip.Addr]struct{}, len(vips))
	for _, v := range vips {
		want[v] = struct{}{}
		if _, ok := r.owned[v]; !ok {
			gained = append(gained, v)
		}
	}
	for v := range r.owned {
		if _, ok := want[v]; !ok {
			lost = append(lost, v)
		}
	}
	r.owned = want
	r.m.announced.Set(float64(len(want)))
	if r.groups != nil {
		errs = r.syncGroupsLocked()
	}
	slices.SortFunc(gained, netip.Addr.Compare)
	slices.SortFunc(lost, netip.Addr.Compare)
	return gained, lost, errs
}

// syncGroupsLocked joins the solicited-node group of every owned VIP and
// leaves the groups no owned VIP needs. Without the join, a solicitation
// sent to the group never reaches the socket: the NIC filters it.
func (r *responder) syncGroupsLocked() []error {
	need := map[netip.Addr][]netip.Addr{}
	for v := range r.owned {
		g := solicitedNode(v)
		need[g] = append(need[g], v)
	}
	var errs []error
	for _, g := range slices.SortedFunc(maps.Keys(need), netip.Addr.Compare) {
		if r.joined[g] {
			continue
		}
		if err := r.groups.JoinGroup(g); err != nil {
			r.m.joinErrs.Inc()
			vips := need[g]
			slices.SortFunc(vips, netip.Addr.Compare)
			errs = append(errs, &InterfaceError{Interface: r.iface, VIPs: vips,
				Err: fmt.Errorf("%w %s: %w", ErrJoinGroup, g, err)})
			continue
		}
		r.joined[g] = true
	}
	for g := range r.joined {
		if _, ok := need[g]; ok {
			continue
		}
		if err := r.groups.LeaveGroup(g); err != nil {
			// Harmless but for the wasted wake-ups; retried next set.
			r.m.leaveErrs.Inc()
			r.logger.Error(err, "Leaving a solicited-node group failed", "group", g)
			continue
		}
		delete(r.joined, g)
	}
	return errs
}

// owns reports whether vip is answered for; callers hold mu.
func (r *responder) ownsLocked(vip netip.Addr) bool {
	_, ok := r.owned[vip]
	return ok
}

func (r *responder) owns(vip netip.Addr) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.ownsLocked(vip)
}

// serve reads and answers frames until close.
func (r *responder) serve() {
	buf := make([]byte, readBufferSize)
	for {
		n, _, err := r.conn.ReadFrom(buf)
		if err != nil {
			if r.closing.Load() {
				return
			}
			if errors.Is(err, net.ErrClosed) {
				r.broken.Store(true)
				r.m.readErrs.Inc()
				r.logger.Error(err, "Responder socket closed under it; the next Set reopens it")
				return
			}
			r.m.readErrs.Inc()
			r.logger.Error(err, "Reading frames failed; retrying", "after", readRetryDelay)
			select {
			case <-r.done:
				return
			case <-r.clock.After(readRetryDelay):
			}
			continue
		}
		r.handle(buf[:n])
	}
}

// handle answers one frame, if it asks about an owned VIP and the gate is
// open.
func (r *responder) handle(frame []byte) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	d := r.answer(frame, r.hw, r.ownsLocked)
	switch {
	case d.verdict == ignoredConflict:
		r.m.ignored[d.verdict].Inc()
		r.logger.V(2).Info("Another host announces a VIP this node answers for", "vip", d.vip, "peer", d.peer)
		return
	case d.verdict != answered:
		r.m.ignored[d.verdict].Inc()
		r.logger.V(4).Info("Ignored frame", "reason", d.verdict, "vip", d.vip, "peer", d.peer)
		return
	case !r.gate():
		r.m.fencedReply.Inc()
		r.logger.V(4).Info("Fenced: not answering", "vip", d.vip, "peer", d.peer)
		return
	}
	if err := r.write(d.reply); err != nil {
		r.m.writeErrs.Inc()
		r.logger.V(2).Info("Sending a reply failed", "vip", d.vip, "peer", d.peer, "err", err)
		return
	}
	r.m.replies.Inc()
	r.logger.V(5).Info("Answered", "vip", d.vip, "peer", d.peer)
}

// announce sends vip's gratuitous frames, if vip is still owned and the
// gate open, and reports whether any went out.
func (r *responder) announce(vip netip.Addr) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if !r.ownsLocked(vip) {
		return false
	}
	if !r.gate() {
		r.m.fencedGratuitous.Inc()
		r.logger.V(4).Info("Fenced: not announcing", "vip", vip)
		return false
	}
	sent := false
	for _, f := range r.protocol.announce(r.hw, vip) {
		if err := r.write(f); err != nil {
			r.m.writeErrs.Inc()
			r.logger.Error(err, "Sending a gratuitous frame failed", "vip", vip)
			continue
		}
		r.m.gratuitous.Inc()
		sent = true
	}
	return sent
}

func (r *responder) write(f outFrame) error {
	_, err := r.conn.WriteTo(f.frame, &packet.Addr{HardwareAddr: f.dst})
	return err
}

// close stops answering, closes the socket (which leaves every group) and
// returns the VIPs that were owned. The serve goroutine ends on its own.
func (r *responder) close() (lost []netip.Addr, err error) {
	r.closing.Store(true)
	close(r.done)
	r.mu.Lock()
	lost = slices.SortedFunc(maps.Keys(r.owned), netip.Addr.Compare)
	r.owned = nil
	r.m.deleteAnnounced()
	r.mu.Unlock()
	if err := r.conn.Close(); err != nil && !errors.Is(err, net.ErrClosed) { // closed already if broken
		return lost, err
	}
	return lost, nil
}
