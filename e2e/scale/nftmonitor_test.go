package scale

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// nftMonitor listens to a network namespace's nftables change notifications
// (the multicast group `nft monitor` reads), which the kernel sends when a
// transaction commits: the moment a rule or element takes effect. It tells
// when the first notification carrying some bytes (an endpoint's address,
// as herald's element values and kube-proxy's DNAT rules both hold it)
// arrived, whatever program made the change.
type nftMonitor struct {
	conn *netlink.Conn

	mu      sync.Mutex
	waiters []*nftWaiter
	lost    int // ENOBUFS: the socket overflowed and notifications were lost
	done    chan struct{}
}

type nftWaiter struct {
	needle []byte
	seen   chan time.Time
}

// errMonitorClosed is returned by wait when the monitor stopped first.
var errMonitorClosed = errors.New("nftables monitor closed")

// newNFTMonitor subscribes to the nftables notifications of the namespace
// /run/netns/<netns>.
func newNFTMonitor(netns string) (*nftMonitor, error) {
	f, err := os.Open("/run/netns/" + netns)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: int(f.Fd())})
	if err != nil {
		return nil, fmt.Errorf("netlink in %s: %w", netns, err)
	}
	// A full sync's notifications would overflow the default buffer; the
	// monitor is meant for small changes, but must not lose them to an
	// earlier burst.
	if raw, err := c.SyscallConn(); err == nil {
		_ = raw.Control(func(fd uintptr) {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 64<<20)
		})
	}
	if err := c.JoinGroup(unix.NFNLGRP_NFTABLES); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("join nftables group in %s: %w", netns, err)
	}
	m := &nftMonitor{conn: c, done: make(chan struct{})}
	go m.read()
	return m, nil
}

func (m *nftMonitor) read() {
	defer close(m.done)
	for {
		msgs, err := m.conn.Receive()
		now := time.Now()
		if errors.Is(err, unix.ENOBUFS) {
			m.mu.Lock()
			m.lost++
			m.mu.Unlock()
			continue
		}
		if err != nil {
			return // closed
		}
		m.mu.Lock()
		kept := m.waiters[:0]
		for _, w := range m.waiters {
			if containsAny(msgs, w.needle) {
				w.seen <- now
				continue
			}
			kept = append(kept, w)
		}
		m.waiters = kept
		m.mu.Unlock()
	}
}

func containsAny(msgs []netlink.Message, needle []byte) bool {
	for _, msg := range msgs {
		if bytes.Contains(msg.Data, needle) {
			return true
		}
	}
	return false
}

// expect registers interest in needle before the change that writes it is
// made, so that a fast kernel cannot notify before anyone listens.
func (m *nftMonitor) expect(needle []byte) *nftWaiter {
	w := &nftWaiter{needle: needle, seen: make(chan time.Time, 1)}
	m.mu.Lock()
	m.waiters = append(m.waiters, w)
	m.mu.Unlock()
	return w
}

// wait returns when the kernel notified a change holding w's needle.
func (m *nftMonitor) wait(w *nftWaiter, timeout time.Duration) (time.Time, error) {
	select {
	case at := <-w.seen:
		return at, nil
	case <-m.done:
		return time.Time{}, errMonitorClosed
	case <-time.After(timeout):
		return time.Time{}, fmt.Errorf("no nftables notification with %x within %v (%d overflows)", w.needle, timeout, m.overflows())
	}
}

func (m *nftMonitor) overflows() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lost
}

func (m *nftMonitor) close() {
	_ = m.conn.Close()
	<-m.done
}
