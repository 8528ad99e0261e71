package layer2

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
	"github.com/mdlayher/packet"
)

// Addresses of the tests: documentation ranges only.
var (
	mac0      = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x01} // eth0, this node
	mac1      = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x02} // eth1, this node
	clientMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 0xaa}
	clientIP  = netip.MustParseAddr("192.0.2.100")
	clientIP6 = netip.MustParseAddr("2001:db8::100")
	vipA      = netip.MustParseAddr("192.0.2.200")
	vipB      = netip.MustParseAddr("192.0.2.201")
	vipC      = netip.MustParseAddr("192.0.2.202")
	vip6A     = netip.MustParseAddr("2001:db8::200")
	vip6B     = netip.MustParseAddr("2001:db8::201")
)

// waitFor bounds every wait of the tests; nothing sleeps.
const waitFor = 10 * time.Second

// sentFrame is a frame a responder wrote.
type sentFrame struct {
	dst   net.HardwareAddr
	frame []byte
}

// fakeConn stands in for a packet socket (and, for IPv6, the membership
// socket): frames the test injects are read, frames written are recorded.
type fakeConn struct {
	in     chan []byte
	out    chan sentFrame
	closed chan struct{}
	once   sync.Once
	// broken, once closed, makes reads fail as if the socket had been
	// closed by someone else.
	broken chan struct{}

	mu      sync.Mutex
	groups  map[netip.Addr]bool
	joins   []netip.Addr
	leaves  []netip.Addr
	joinErr error
}

func newFakeConn() *fakeConn {
	return &fakeConn{in: make(chan []byte), out: make(chan sentFrame, 1000), closed: make(chan struct{}),
		broken: make(chan struct{}), groups: map[netip.Addr]bool{}}
}

func (c *fakeConn) ReadFrom(b []byte) (int, net.Addr, error) {
	select {
	case f := <-c.in:
		return copy(b, f), &packet.Addr{}, nil
	case <-c.closed:
		return 0, nil, net.ErrClosed
	case <-c.broken:
		return 0, nil, net.ErrClosed
	}
}

func (c *fakeConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	select {
	case <-c.closed:
		return 0, net.ErrClosed
	default:
	}
	pa, ok := addr.(*packet.Addr)
	if !ok {
		return 0, fmt.Errorf("fake conn: address %T is not *packet.Addr", addr)
	}
	c.out <- sentFrame{dst: slices.Clone(pa.HardwareAddr), frame: slices.Clone(b)}
	return len(b), nil
}

func (c *fakeConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}

func (c *fakeConn) isClosed() bool {
	select {
	case <-c.closed:
		return true
	default:
		return false
	}
}

func (c *fakeConn) JoinGroup(g netip.Addr) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.joinErr != nil {
		return c.joinErr
	}
	c.groups[g] = true
	c.joins = append(c.joins, g)
	return nil
}

func (c *fakeConn) LeaveGroup(g netip.Addr) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.groups, g)
	c.leaves = append(c.leaves, g)
	return nil
}

func (c *fakeConn) setJoinErr(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.joinErr = err
}

func (c *fakeConn) joined() []netip.Addr {
	c.mu.Lock()
	defer c.mu.Unlock()
	var gs []netip.Addr
	for g := range c.groups {
		gs = append(gs, g)
	}
	slices.SortFunc(gs, netip.Addr.Compare)
	return gs
}

func (c *fakeConn) LocalAddr() net.Addr              { return &packet.Addr{} }
func (c *fakeConn) SetDeadline(time.Time) error      { return nil }
func (c *fakeConn) SetReadDeadline(time.Time) error  { return nil }
func (c *fakeConn) SetWriteDeadline(time.Time) error { return nil }

// inject hands a frame to the responder reading c.
func (c *fakeConn) inject(t *testing.T, frame []byte) {
	t.Helper()
	select {
	case c.in <- frame:
	case <-time.After(waitFor):
		t.Fatal("no responder read the injected frame")
	}
}

// next returns the next frame written to c.
func (c *fakeConn) next(t *testing.T) sentFrame {
	t.Helper()
	select {
	case f := <-c.out:
		return f
	case <-time.After(waitFor):
		t.Fatal("no frame was sent")
	}
	return sentFrame{}
}

// fakeNet is the host's interfaces and the sockets opened on them.
type fakeNet struct {
	mu      sync.Mutex
	ifaces  map[string]*net.Interface
	openErr map[string]error // by interface name
	conns   map[string]*fakeConn
	opened  map[string]int // by "name/family"
}

func newFakeNet() *fakeNet {
	return &fakeNet{
		ifaces: map[string]*net.Interface{
			"eth0": {Index: 2, Name: "eth0", HardwareAddr: mac0, MTU: 1500},
			"eth1": {Index: 3, Name: "eth1", HardwareAddr: mac1, MTU: 1500},
			"tun0": {Index: 4, Name: "tun0", MTU: 1500},
		},
		openErr: map[string]error{},
		conns:   map[string]*fakeConn{},
		opened:  map[string]int{},
	}
}

var errNoSuchInterface = errors.New("no such network interface")

func (n *fakeNet) interfaceByName(name string) (*net.Interface, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	ifi, ok := n.ifaces[name]
	if !ok {
		return nil, errNoSuchInterface
	}
	c := *ifi
	return &c, nil
}

func (n *fakeNet) open(ifi *net.Interface, family string) (*fakeConn, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.openErr[ifi.Name]; err != nil {
		return nil, err
	}
	c := newFakeConn()
	key := ifi.Name + "/" + family
	n.conns[key] = c
	n.opened[key]++
	return c, nil
}

// conn returns the socket last opened for iface and family.
func (n *fakeNet) conn(t *testing.T, iface, family string) *fakeConn {
	t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	c, ok := n.conns[iface+"/"+family]
	if !ok {
		t.Fatalf("no %s socket was opened on %s", family, iface)
	}
	return c
}

func (n *fakeNet) openCount(iface, family string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.opened[iface+"/"+family]
}

func (n *fakeNet) set(f func(n *fakeNet)) {
	n.mu.Lock()
	defer n.mu.Unlock()
	f(n)
}

func (n *fakeNet) options() Options {
	return Options{
		InterfaceByName: n.interfaceByName,
		OpenARP: func(ifi *net.Interface) (net.PacketConn, error) {
			return n.open(ifi, familyIPv4)
		},
		OpenNDP: func(ifi *net.Interface) (NDPConn, error) {
			return n.open(ifi, familyIPv6)
		},
	}
}

// arpFrameOf builds an ARP frame as another host would send it.
func arpFrameOf(t testing.TB, ethSrc, ethDst net.HardwareAddr, op arp.Operation, sha net.HardwareAddr,
	spa netip.Addr, tha net.HardwareAddr, tpa netip.Addr) []byte {
	t.Helper()
	p := arp.Packet{HardwareType: 1, ProtocolType: uint16(ethernet.EtherTypeIPv4), HardwareAddrLength: 6,
		IPLength: 4, Operation: op, SenderHardwareAddr: sha, SenderIP: spa, TargetHardwareAddr: tha, TargetIP: tpa}
	pb, err := p.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	f := ethernet.Frame{Destination: ethDst, Source: ethSrc, EtherType: ethernet.EtherTypeARP, Payload: pb}
	b, err := f.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// arpRequest is a client's broadcast request for target.
func arpRequest(t testing.TB, target netip.Addr) []byte {
	return arpFrameOf(t, clientMAC, ethernet.Broadcast, arp.OperationRequest, clientMAC, clientIP, zeroMAC, target)
}

// parsedARP is a sent ARP frame, decoded independently of the code under
// test.
type parsedARP struct {
	ethDst, ethSrc net.HardwareAddr
	arp.Packet
}

func parseARP(t *testing.T, f sentFrame) parsedARP {
	t.Helper()
	var eth ethernet.Frame
	if err := eth.UnmarshalBinary(f.frame); err != nil {
		t.Fatalf("sent frame: %v", err)
	}
	if eth.EtherType != ethernet.EtherTypeARP || !slices.Equal(eth.Destination, f.dst) {
		t.Fatalf("sent frame: EtherType %v to %v, socket address %v", eth.EtherType, eth.Destination, f.dst)
	}
	var p arp.Packet
	if err := p.UnmarshalBinary(eth.Payload); err != nil {
		t.Fatalf("sent ARP packet: %v", err)
	}
	return parsedARP{ethDst: eth.Destination, ethSrc: eth.Source, Packet: p}
}

// nsSpec describes a Neighbor Solicitation for nsFrame; zero fields take
// a client's defaults.
type nsSpec struct {
	ethSrc, ethDst net.HardwareAddr
	src, dst       netip.Addr
	target         netip.Addr
	sll            net.HardwareAddr // source link-layer option; nil: none
	hopLimit       int
	badChecksum    bool
}

// nsFrame builds a solicitation for target from the client to its
// solicited-node group, as a host resolving target sends it.
func nsFrame(t testing.TB, s nsSpec) []byte {
	t.Helper()
	if s.ethSrc == nil {
		s.ethSrc = clientMAC
	}
	if !s.src.IsValid() {
		s.src = clientIP6
	}
	if !s.dst.IsValid() {
		s.dst = solicitedNodeOf(s.target)
	}
	if s.ethDst == nil {
		g := s.dst.As16()
		s.ethDst = net.HardwareAddr{0x33, 0x33, g[12], g[13], g[14], g[15]}
	}
	if s.hopLimit == 0 {
		s.hopLimit = 255
	}
	ns := &ndp.NeighborSolicitation{TargetAddress: s.target}
	if s.sll != nil {
		ns.Options = []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: s.sll}}
	}
	msg, err := ndp.MarshalMessageChecksum(ns, s.src, s.dst)
	if err != nil {
		t.Fatal(err)
	}
	if s.badChecksum {
		msg[2] ^= 0xff
	}
	return ipv6FrameOf(t, s.ethSrc, s.ethDst, s.src, s.dst, s.hopLimit, msg)
}

func ipv6FrameOf(t testing.TB, ethSrc, ethDst net.HardwareAddr, src, dst netip.Addr, hopLimit int, msg []byte) []byte {
	t.Helper()
	ip := make([]byte, 40)
	ip[0] = 0x60
	binary.BigEndian.PutUint16(ip[4:6], uint16(len(msg)))
	ip[6] = 58
	ip[7] = byte(hopLimit)
	s, d := src.As16(), dst.As16()
	copy(ip[8:24], s[:])
	copy(ip[24:40], d[:])
	f := ethernet.Frame{Destination: ethDst, Source: ethSrc, EtherType: ethernet.EtherTypeIPv6, Payload: append(ip, msg...)}
	b, err := f.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func solicitedNodeOf(ip netip.Addr) netip.Addr {
	g, err := ndp.SolicitedNodeMulticast(ip)
	if err != nil {
		panic(err)
	}
	return g
}

// parsedNA is a sent Neighbor Advertisement, decoded independently of the
// code under test.
type parsedNA struct {
	ethDst, ethSrc net.HardwareAddr
	src, dst       netip.Addr
	hopLimit       int
	na             *ndp.NeighborAdvertisement
	targetLL       net.HardwareAddr
}

func parseNA(t *testing.T, f sentFrame) parsedNA {
	t.Helper()
	var eth ethernet.Frame
	if err := eth.UnmarshalBinary(f.frame); err != nil {
		t.Fatalf("sent frame: %v", err)
	}
	if eth.EtherType != ethernet.EtherTypeIPv6 || !slices.Equal(eth.Destination, f.dst) || len(eth.Payload) < 40 {
		t.Fatalf("sent frame: EtherType %v to %v (socket address %v), %d bytes", eth.EtherType, eth.Destination,
			f.dst, len(eth.Payload))
	}
	ip := eth.Payload
	n := int(binary.BigEndian.Uint16(ip[4:6]))
	if ip[0]>>4 != 6 || ip[6] != 58 || 40+n > len(ip) {
		t.Fatalf("sent frame: not an ICMPv6 packet: % x", ip[:40])
	}
	p := parsedNA{ethDst: eth.Destination, ethSrc: eth.Source, hopLimit: int(ip[7]),
		src: netip.AddrFrom16([16]byte(ip[8:24])), dst: netip.AddrFrom16([16]byte(ip[24:40]))}
	msg := ip[40 : 40+n]
	// Recompute the checksum with ndp's own marshalling: a wrong one makes
	// every receiving kernel drop the advertisement.
	m, err := ndp.ParseMessage(msg)
	if err != nil {
		t.Fatalf("sent ICMPv6 message: %v", err)
	}
	want, err := ndp.MarshalMessageChecksum(m, p.src, p.dst)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(want[2:4], msg[2:4]) {
		t.Fatalf("sent ICMPv6 checksum % x, want % x", msg[2:4], want[2:4])
	}
	na, ok := m.(*ndp.NeighborAdvertisement)
	if !ok {
		t.Fatalf("sent %T, want a Neighbor Advertisement", m)
	}
	p.na = na
	for _, o := range na.Options {
		if lla, ok := o.(*ndp.LinkLayerAddress); ok && lla.Direction == ndp.Target {
			p.targetLL = lla.Addr
		}
	}
	return p
}
