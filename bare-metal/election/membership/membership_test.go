package membership

import (
	"bytes"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"

	"github.com/heraldlb/herald/bare-metal/election"
)

// These tests run real memberlist instances over loopback, each on its own
// 127.0.0.x address and one shared port, as agents on separate nodes do.

type inbox struct {
	mu   sync.Mutex
	msgs []string
}

func (b *inbox) add(from string, payload []byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.msgs = append(b.msgs, from+":"+string(payload))
}

func (b *inbox) has(msg string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, m := range b.msgs {
		if m == msg {
			return true
		}
	}
	return false
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func startMember(t *testing.T, name string, ip netip.Addr, port int, key []byte, box *inbox) *Membership {
	t.Helper()
	cfg := DefaultConfig()
	cfg.NodeName, cfg.BindAddr, cfg.AdvertiseAddr, cfg.Port, cfg.SecretKey = name, ip, ip, port, key
	cfg.OnMessage = box.add
	cfg.LogOutput = &LogWriter{Logger: testLogger(t)}
	m, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Shutdown() })
	return m
}

// eventually polls cond until it holds or timeout passes: the library runs
// on its own timers, so the facts are awaited, not slept for.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("%s: not within %v", what, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(start)
}

func stateOf(m *Membership, name string) election.MemberState { return m.Members()[name].State }

func TestMembershipDetectsDeathLeaveAndDraining(t *testing.T) {
	port := freePort(t)
	key := bytes.Repeat([]byte{7}, 32)
	ips := []netip.Addr{netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.3"), netip.MustParseAddr("127.0.0.4")}
	boxes := []*inbox{{}, {}, {}}
	var ms []*Membership
	for i, ip := range ips {
		ms = append(ms, startMember(t, []string{"n1", "n2", "n3"}[i], ip, port, key, boxes[i]))
	}
	if n, err := ms[0].Join(ips[1:]); err != nil || n != 2 {
		t.Fatalf("Join = %d, %v", n, err)
	}
	eventually(t, 5*time.Second, "all three see each other alive", func() bool {
		for _, m := range ms {
			for _, name := range []string{"n1", "n2", "n3"} {
				if stateOf(m, name) != election.MemberAlive {
					return false
				}
			}
		}
		return true
	})
	eventually(t, 2*time.Second, "n1 hears its peers", func() bool { return time.Since(ms[0].LastHeard()) < 100*time.Millisecond })
	if h := ms[0].Health(); h.Peers != 2 {
		t.Errorf("Health().Peers = %d, want 2", h.Peers)
	}

	if err := ms[1].Broadcast([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Second, "n1 and n3 receive n2's broadcast", func() bool {
		return boxes[0].has("n2:hello") && boxes[2].has("n2:hello")
	})

	// A crash: n3 stops answering without a word. n1 keeps hearing n2 all
	// along (the fence's freshness must not trip on a dead neighbour), and
	// declares n3 dead.
	if err := ms[2].Shutdown(); err != nil {
		t.Fatal(err)
	}
	var worstSilence time.Duration
	took := eventually(t, 3*time.Second, "n1 declares n3 dead", func() bool {
		worstSilence = max(worstSilence, time.Since(ms[0].LastHeard()))
		return stateOf(ms[0], "n3") == election.MemberDead
	})
	// 250 ms is the fence's default silence timeout.
	if worstSilence > 250*time.Millisecond {
		t.Errorf("n1 heard nothing for %v while n3 was dying", worstSilence)
	}
	t.Logf("n3 declared dead %v after it stopped", took)
	// DeadAfter is the earliest possible moment; a death noticed sooner
	// would void the fence's guarantee.
	if cfg := DefaultConfig(); took < cfg.DeadAfter()-cfg.ProbeInterval {
		t.Errorf("n3 declared dead after %v, before the bound %v allows", took, cfg.DeadAfter())
	}

	if err := ms[1].SetDraining(true, time.Second); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Second, "n1 sees n2 draining", func() bool { return ms[0].Members()["n2"].Draining })

	// A planned departure is told apart from a crash.
	if err := ms[1].Leave(time.Second); err != nil {
		t.Fatal(err)
	}
	eventually(t, 3*time.Second, "n1 sees n2 left", func() bool { return stateOf(ms[0], "n2") == election.MemberLeft })
	if h := ms[0].Health(); h.Peers != 0 {
		t.Errorf("Health().Peers = %d after both peers went, want 0", h.Peers)
	}
}

// Agents with different keys never form one cluster: a pod on the network
// cannot join and vote.
func TestMembershipRejectsWrongKey(t *testing.T) {
	port := freePort(t)
	a := startMember(t, "n1", netip.MustParseAddr("127.0.0.2"), port, bytes.Repeat([]byte{1}, 16), &inbox{})
	startMember(t, "intruder", netip.MustParseAddr("127.0.0.3"), port, bytes.Repeat([]byte{2}, 16), &inbox{})
	if n, err := a.Join([]netip.Addr{netip.MustParseAddr("127.0.0.3")}); err == nil || n != 0 {
		t.Fatalf("Join with a foreign key = %d, %v; want an error", n, err)
	}
	if _, ok := a.Members()["intruder"]; ok {
		t.Fatal("intruder became a member")
	}
}

func TestEnvelope(t *testing.T) {
	from, payload, err := openEnvelope(envelope("node-a", []byte("x")))
	if err != nil || from != "node-a" || string(payload) != "x" {
		t.Fatalf("round trip = %q %q %v", from, payload, err)
	}
	for _, bad := range [][]byte{nil, {1}, {2, 0}, {1, 5, 'a'}} {
		if _, _, err := openEnvelope(bad); err == nil {
			t.Errorf("openEnvelope(%v) accepted", bad)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	ok := DefaultConfig()
	ok.NodeName, ok.AdvertiseAddr = "n1", netip.MustParseAddr("192.0.2.1")
	if err := ok.Validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
	for name, mutate := range map[string]func(*Config){
		"no name":            func(c *Config) { c.NodeName = "" },
		"no advertise":       func(c *Config) { c.AdvertiseAddr = netip.Addr{} },
		"port 0":             func(c *Config) { c.Port = 0 },
		"key of 5 bytes":     func(c *Config) { c.SecretKey = []byte("short") },
		"timeout > interval": func(c *Config) { c.ProbeTimeout = time.Second },
		"multiplier 0":       func(c *Config) { c.SuspicionMult = 0 },
	} {
		c := ok
		mutate(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// testLogger logs to t until the test's cleanups are done. memberlist's
// timers may still fire a probe, and log its failure, after Shutdown
// returned, and logging through t after the test has completed panics; the
// lock makes sure no line is in flight when the test ends.
func testLogger(t *testing.T) logr.Logger {
	var mu sync.Mutex
	done := false
	t.Cleanup(func() { // registered first: runs after the members' Shutdown
		mu.Lock()
		defer mu.Unlock()
		done = true
	})
	return funcr.New(func(prefix, args string) {
		mu.Lock()
		defer mu.Unlock()
		if !done {
			t.Log(prefix, args)
		}
	}, funcr.Options{Verbosity: 1})
}
