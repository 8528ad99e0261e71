// Package membership tells each herald-agent which other agents are alive,
// fast enough for sub-second failover, with hashicorp/memberlist: SWIM
// failure detection with the Lifeguard refinements, the library MetalLB's
// speaker uses too. Nothing about it touches the apiserver: liveness costs
// no write per address or per node.
//
// memberlist's LAN defaults detect a dead node in about five seconds; herald
// probes ten times faster (see DefaultConfig) and takes from it the two
// signals the fence of package election needs: when this node last heard
// from a peer (an ack to its probes, or a heartbeat), and which members are
// alive, suspect, dead or gone on purpose. Member metadata carries one flag, draining, so that a
// shutting-down agent can hand its addresses over before it leaves.
package membership

import (
	"errors"
	"fmt"
	"log"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/heraldlb/herald/bare-metal/election"
)

// DefaultPort is memberlist's, as in MetalLB.
const DefaultPort = 7946

// Config is what an agent sets.
type Config struct {
	// NodeName is this node's name: the Kubernetes Node name, which every
	// agent also uses to identify candidates.
	NodeName string
	// BindAddr is the address to listen on (UDP and TCP); unset: all.
	BindAddr netip.Addr
	// Port is the UDP and TCP port, the same on every node.
	Port int
	// AdvertiseAddr is the address peers reach this node at: its node
	// address on the network the agents share.
	AdvertiseAddr netip.Addr
	// SecretKey encrypts and authenticates the agents' traffic (16, 24 or
	// 32 bytes, AES); nil sends it in clear and accepts anyone's.
	SecretKey []byte
	// Timing of the failure detector; see election's package doc.
	ProbeInterval  time.Duration
	ProbeTimeout   time.Duration
	SuspicionMult  int
	GossipInterval time.Duration
	// OnChange is called, without blocking, when a member joins, leaves,
	// dies or changes its metadata.
	OnChange func()
	// OnMessage receives the payload of Send/Broadcast messages from other
	// agents. It must not block: memberlist calls it from its receive loop.
	OnMessage func(from string, payload []byte)
	// LogOutput receives memberlist's own log lines.
	LogOutput *LogWriter
}

// DefaultConfig returns the timing herald uses: a node that dies is
// declared dead 0.4-0.8 s later in small clusters (probe interval plus the
// suspicion timeout, which confirmations from other members shorten).
func DefaultConfig() Config {
	return Config{Port: DefaultPort, ProbeInterval: 100 * time.Millisecond, ProbeTimeout: 50 * time.Millisecond,
		SuspicionMult: 3, GossipInterval: 50 * time.Millisecond}
}

// suspicionMaxTimeoutMult caps the suspicion timeout at twice its minimum
// (memberlist's LAN default is 6): without confirmations, as in a
// two-node cluster, failover still ends within a second.
const suspicionMaxTimeoutMult = 2

// DeadAfter is the earliest time after a node is cut off at which any
// member may declare it dead: a failed probe is turned into suspicion one
// probe interval after it was sent, and suspicion lasts at least
// SuspicionMult intervals (more in clusters of ten nodes or more).
func (c Config) DeadAfter() time.Duration {
	return c.ProbeInterval * time.Duration(1+c.SuspicionMult)
}

// Validate reports settings memberlist cannot honour.
func (c Config) Validate() error {
	var errs []error
	if c.NodeName == "" {
		errs = append(errs, errors.New("node name is required"))
	}
	if c.Port < 1 || c.Port > 65535 {
		errs = append(errs, fmt.Errorf("port %d is not in 1-65535", c.Port))
	}
	if !c.AdvertiseAddr.IsValid() {
		errs = append(errs, errors.New("advertise address is required"))
	}
	switch len(c.SecretKey) {
	case 0, 16, 24, 32:
	default:
		errs = append(errs, fmt.Errorf("secret key has %d bytes; want 16, 24 or 32", len(c.SecretKey)))
	}
	if c.ProbeTimeout <= 0 || c.ProbeTimeout >= c.ProbeInterval {
		errs = append(errs, fmt.Errorf("probe timeout %v must be positive and shorter than the probe interval %v", c.ProbeTimeout, c.ProbeInterval))
	}
	if c.SuspicionMult < 1 {
		errs = append(errs, fmt.Errorf("suspicion multiplier %d must be at least 1", c.SuspicionMult))
	}
	if c.GossipInterval <= 0 {
		errs = append(errs, fmt.Errorf("gossip interval %v must be positive", c.GossipInterval))
	}
	return errors.Join(errs...)
}

// Membership is this agent's membership.
type Membership struct {
	cfg  Config
	list *memberlist.Memberlist

	lastHeard atomic.Int64 // unix nanoseconds: last ack to our probes, or heartbeat
	draining  atomic.Bool
	stop      chan struct{}
	stopped   sync.Once

	mu      sync.Mutex
	members map[string]election.Member
}

// Start joins nobody yet: it listens and probes whoever Join brings in.
func Start(cfg Config) (*Membership, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("membership: %w", err)
	}
	m := &Membership{cfg: cfg, members: map[string]election.Member{cfg.NodeName: {State: election.MemberAlive}},
		stop: make(chan struct{})}
	mc := memberlist.DefaultLANConfig()
	mc.Name = cfg.NodeName
	switch {
	case cfg.BindAddr.IsValid():
		mc.BindAddr = cfg.BindAddr.String()
	case cfg.AdvertiseAddr.Is6():
		// memberlist's default, 0.0.0.0, would not receive what IPv6 peers
		// send to the advertised address.
		mc.BindAddr = "::"
	}
	mc.BindPort, mc.AdvertisePort = cfg.Port, cfg.Port
	mc.AdvertiseAddr = cfg.AdvertiseAddr.String()
	mc.SecretKey = cfg.SecretKey
	mc.ProbeInterval, mc.ProbeTimeout = cfg.ProbeInterval, cfg.ProbeTimeout
	mc.SuspicionMult, mc.SuspicionMaxTimeoutMult = cfg.SuspicionMult, suspicionMaxTimeoutMult
	mc.GossipInterval = cfg.GossipInterval
	// A LAN: a join that takes a second has failed.
	mc.TCPTimeout = time.Second
	// A node that comes back with a new address (a re-created VM) may take
	// its name back once it has been dead this long.
	mc.DeadNodeReclaimTime = 10 * time.Second
	mc.Delegate = (*delegate)(m)
	mc.Events = (*events)(m)
	mc.Ping = (*pings)(m)
	if cfg.LogOutput != nil {
		// No timestamp or prefix: the writer's logger adds its own.
		mc.Logger = log.New(cfg.LogOutput, "", 0)
	}
	list, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("membership: listening on port %d: %w", cfg.Port, err)
	}
	m.list = list
	go m.heartbeats()
	return m, nil
}

// Heartbeats: every agent tells a few random peers it is there twice per
// probe interval. They are what the fence's freshness rule hears: acks to
// one's own probes alone are not enough, since a node may probe a dead
// peer twice in a row and go without an ack for three intervals.
const (
	heartbeatFanOut = 3
	heartbeatMsg    = 0 // the payload's first byte; takeover payloads are JSON
)

func (m *Membership) heartbeats() {
	tick := time.NewTicker(m.cfg.ProbeInterval / 2)
	defer tick.Stop()
	msg := envelope(m.cfg.NodeName, []byte{heartbeatMsg})
	for {
		select {
		case <-m.stop:
			return
		case <-tick.C:
		}
		peers := m.list.Members()
		rand.Shuffle(len(peers), func(i, j int) { peers[i], peers[j] = peers[j], peers[i] })
		sent := 0
		for _, n := range peers {
			if sent == heartbeatFanOut {
				break
			}
			if n.Name != m.cfg.NodeName {
				_ = m.list.SendBestEffort(n, msg) // a lost heartbeat is what the next one is for
				sent++
			}
		}
	}
}

func (m *Membership) heard() { m.lastHeard.Store(time.Now().UnixNano()) }

// Join contacts the agents at addrs (IP addresses; the port is the
// configured one) and merges their view; it returns how many answered.
func (m *Membership) Join(addrs []netip.Addr) (int, error) {
	hosts := make([]string, 0, len(addrs))
	for _, a := range addrs {
		hosts = append(hosts, net.JoinHostPort(a.String(), strconv.Itoa(m.cfg.Port)))
	}
	n, err := m.list.Join(hosts)
	if n > 0 {
		// Partial success is success: the rest were down or not agents.
		return n, nil
	}
	return 0, err
}

// Members returns every agent this node has heard of, itself included.
func (m *Membership) Members() map[string]election.Member {
	alive := m.list.Members()
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]election.Member, len(m.members))
	for name, mem := range m.members {
		out[name] = mem
	}
	for _, n := range alive {
		mem := out[n.Name]
		mem.State = election.MemberAlive
		if n.State == memberlist.StateSuspect {
			mem.State = election.MemberSuspect
		}
		out[n.Name] = mem
	}
	return out
}

// Health is what the fence needs, except Expected, which comes from
// Kubernetes: the caller fills it in along with Reachable.
func (m *Membership) Health() election.Health {
	return election.Health{LastHeard: m.LastHeard(), Peers: m.list.NumMembers() - 1}
}

// LastHeard is when this node last heard from a peer: an ack to one of its
// probes or a heartbeat.
func (m *Membership) LastHeard() time.Time {
	ns := m.lastHeard.Load()
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

// HealthScore is memberlist's awareness score: 0 when healthy, higher when
// this node's own probes fail in ways that suggest the fault is local.
func (m *Membership) HealthScore() int { return m.list.GetHealthScore() }

// SetDraining tells the other agents that this one hands its addresses
// over; it returns once the change was sent or timeout passed.
func (m *Membership) SetDraining(draining bool, timeout time.Duration) error {
	m.draining.Store(draining)
	m.mu.Lock()
	self := m.members[m.cfg.NodeName]
	self.Draining = draining
	m.members[m.cfg.NodeName] = self
	m.mu.Unlock()
	return m.list.UpdateNode(timeout)
}

// Broadcast sends payload to every other alive agent, best effort (UDP):
// callers repeat what matters.
func (m *Membership) Broadcast(payload []byte) error {
	msg := envelope(m.cfg.NodeName, payload)
	var errs []error
	for _, n := range m.list.Members() {
		if n.Name == m.cfg.NodeName {
			continue
		}
		if err := m.list.SendBestEffort(n, msg); err != nil {
			errs = append(errs, fmt.Errorf("to %s: %w", n.Name, err))
		}
	}
	return errors.Join(errs...)
}

// Leave tells the other agents this one leaves on purpose, waiting up to
// timeout for each message to go out, then stops. memberlist reports a
// leave and a death alike to the other members (its Node.State is stale in
// the event), so the draining flag goes out first: a member that vanishes
// while draining has left.
func (m *Membership) Leave(timeout time.Duration) error {
	var errs []error
	if !m.draining.Load() {
		errs = append(errs, m.SetDraining(true, timeout))
	}
	errs = append(errs, m.list.Leave(timeout), m.Shutdown())
	return errors.Join(errs...)
}

// Shutdown stops without a word, as a crash would.
func (m *Membership) Shutdown() error {
	m.stopped.Do(func() { close(m.stop) })
	return m.list.Shutdown()
}

func (m *Membership) changed() {
	if m.cfg.OnChange != nil {
		m.cfg.OnChange()
	}
}

// delegate carries the draining flag and herald's messages.
type delegate Membership

const metaDraining byte = 1

func (d *delegate) NodeMeta(int) []byte {
	if (*Membership)(d).draining.Load() {
		return []byte{metaDraining}
	}
	return []byte{0}
}

func draining(meta []byte) bool { return len(meta) > 0 && meta[0]&metaDraining != 0 }

func (d *delegate) NotifyMsg(msg []byte) {
	from, payload, err := openEnvelope(msg)
	if err != nil {
		return // from an incompatible agent; nothing to do with it
	}
	(*Membership)(d).heard()
	if len(payload) == 1 && payload[0] == heartbeatMsg || d.cfg.OnMessage == nil {
		return
	}
	d.cfg.OnMessage(from, payload)
}

func (d *delegate) GetBroadcasts(int, int) [][]byte { return nil }
func (d *delegate) LocalState(bool) []byte          { return nil }
func (d *delegate) MergeRemoteState([]byte, bool)   {}

// events keeps the states memberlist's Members does not report (dead and
// left) and the draining flags.
type events Membership

func (e *events) NotifyJoin(n *memberlist.Node)   { e.set(n, election.MemberAlive) }
func (e *events) NotifyUpdate(n *memberlist.Node) { e.set(n, election.MemberAlive) }
func (e *events) NotifyLeave(n *memberlist.Node) {
	state := election.MemberDead
	if draining(n.Meta) {
		state = election.MemberLeft
	}
	e.set(n, state)
}

func (e *events) set(n *memberlist.Node, state election.MemberState) {
	m := (*Membership)(e)
	m.mu.Lock()
	m.members[n.Name] = election.Member{State: state, Draining: draining(n.Meta)}
	m.mu.Unlock()
	m.changed()
}

// pings records acks to this node's own probes: the fence's freshness.
type pings Membership

func (p *pings) AckPayload() []byte { return nil }
func (p *pings) NotifyPingComplete(*memberlist.Node, time.Duration, []byte) {
	(*Membership)(p).heard()
}
