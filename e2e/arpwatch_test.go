package e2e

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/mdlayher/arp"

	"github.com/heraldlb/herald/e2e/netlab"
)

// arpWatch asks for an address with ARP requests at a steady pace from a
// client's LAN interface and records every reply: who answers, and when,
// as the client's network sees it. It is how the tests prove that two
// nodes never answer for one address at once.
type arpWatch struct {
	client *arp.Client
	vip    netip.Addr
	every  time.Duration
	done   chan struct{}
	wg     sync.WaitGroup

	mu      sync.Mutex
	sent    []time.Time // request send times
	replies []arpReply
}

type arpReply struct {
	at      time.Time
	mac     string
	request int // the last request sent before the reply came
}

// watchARP starts asking for vip from ns's eth0 every interval until the
// test ends or stop is called.
func watchARP(t testing.TB, ns *netlab.Netns, vip netip.Addr, every time.Duration) *arpWatch {
	t.Helper()
	w := &arpWatch{vip: vip, every: every, done: make(chan struct{})}
	err := ns.Do(func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		w.client, err = arp.Dial(ifi)
		return err
	})
	if err != nil {
		t.Fatalf("ARP watch: %v", err)
	}
	w.wg.Add(2)
	go w.read()
	go w.ask()
	t.Cleanup(w.stop)
	return w
}

func (w *arpWatch) ask() {
	defer w.wg.Done()
	tick := time.NewTicker(w.every)
	defer tick.Stop()
	for {
		w.mu.Lock()
		w.sent = append(w.sent, time.Now())
		w.mu.Unlock()
		_ = w.client.Request(w.vip) // a failed send is a gap, which the checks tolerate
		select {
		case <-w.done:
			return
		case <-tick.C:
		}
	}
}

func (w *arpWatch) read() {
	defer w.wg.Done()
	for {
		_ = w.client.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		p, _, err := w.client.Read()
		select {
		case <-w.done:
			return
		default:
		}
		if errors.Is(err, os.ErrDeadlineExceeded) || err != nil {
			continue
		}
		if p.Operation != arp.OperationReply || p.SenderIP != w.vip {
			continue
		}
		w.mu.Lock()
		w.replies = append(w.replies, arpReply{at: time.Now(), mac: p.SenderHardwareAddr.String(), request: len(w.sent) - 1})
		w.mu.Unlock()
	}
}

func (w *arpWatch) stop() {
	select {
	case <-w.done:
		return
	default:
	}
	close(w.done)
	w.wg.Wait()
	w.client.Close()
}

// snapshot returns the replies so far.
func (w *arpWatch) snapshot() []arpReply {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]arpReply(nil), w.replies...)
}

// lastFrom returns when mac last answered, and whether it ever did.
func (w *arpWatch) lastFrom(mac string) (time.Time, bool) {
	var last time.Time
	for _, r := range w.snapshot() {
		if r.mac == mac {
			last = r.at
		}
	}
	return last, !last.IsZero()
}

// firstFromOtherThan returns the first reply after since by another MAC.
func (w *arpWatch) firstFromOtherThan(mac string, since time.Time) (arpReply, bool) {
	for _, r := range w.snapshot() {
		if r.mac != mac && r.at.After(since) {
			return r, true
		}
	}
	return arpReply{}, false
}

// splitBrain reports the first moment two hardware addresses answered for
// the address at once: replies of two MACs to one request, or a MAC that
// answers again after another one had taken over.
func (w *arpWatch) splitBrain() error {
	replies := w.snapshot()
	byRequest := map[int]string{}
	var current string
	retired := map[string]bool{}
	for _, r := range replies {
		if other, ok := byRequest[r.request]; ok && other != r.mac {
			return fmt.Errorf("at %s request %d was answered by both %s and %s", r.at.Format(time.StampMicro), r.request, other, r.mac)
		}
		byRequest[r.request] = r.mac
		if r.mac != current {
			if retired[r.mac] {
				return fmt.Errorf("at %s %s answered again after %s had taken over", r.at.Format(time.StampMicro), r.mac, current)
			}
			if current != "" {
				retired[current] = true
			}
			current = r.mac
		}
	}
	return nil
}

// unanswered returns the send times of the requests that got no reply
// within window; requests sent less than window before the last one are
// not judged.
func (w *arpWatch) unanswered(window time.Duration) []time.Time {
	w.mu.Lock()
	sent := append([]time.Time(nil), w.sent...)
	w.mu.Unlock()
	replies := w.snapshot()
	if len(sent) == 0 {
		return nil
	}
	end := sent[len(sent)-1].Add(-window)
	var out []time.Time
	j := 0
	for _, at := range sent {
		if at.After(end) {
			break
		}
		for j < len(replies) && replies[j].at.Before(at) {
			j++
		}
		if j == len(replies) || replies[j].at.Sub(at) > window {
			out = append(out, at)
		}
	}
	return out
}
