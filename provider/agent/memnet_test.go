package agent

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"sync"
)

// memNet is an in-memory network for the health check servers: listeners
// are registered by address and clients dial them over net.Pipe, so unit
// tests open no ports.
type memNet struct {
	mu        sync.Mutex
	listeners map[string]*memListener
	busy      map[string]bool // addresses whose Listen fails
}

func newMemNet() *memNet {
	return &memNet{listeners: map[string]*memListener{}, busy: map[string]bool{}}
}

func (m *memNet) listen(network, addr string) (net.Listener, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.busy[addr] || m.listeners[addr] != nil {
		return nil, fmt.Errorf("listen %s %s: address already in use", network, addr)
	}
	l := &memListener{net: m, addr: addr, conns: make(chan net.Conn), done: make(chan struct{})}
	m.listeners[addr] = l
	return l, nil
}

func (m *memNet) setBusy(addr string, busy bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.busy[addr] = busy
}

func (m *memNet) open(addr string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.listeners[addr] != nil
}

// client returns an HTTP client whose connections go to m's listeners.
func (m *memNet) client() *http.Client {
	return &http.Client{Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			m.mu.Lock()
			l := m.listeners[addr]
			m.mu.Unlock()
			if l == nil {
				return nil, fmt.Errorf("dial %s: connection refused", addr)
			}
			server, client := net.Pipe()
			select {
			case l.conns <- server:
				return client, nil
			case <-l.done:
				return nil, fmt.Errorf("dial %s: connection refused", addr)
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		},
	}}
}

type memListener struct {
	net   *memNet
	addr  string
	conns chan net.Conn
	once  sync.Once
	done  chan struct{}
}

func (l *memListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *memListener) Close() error {
	l.once.Do(func() {
		close(l.done)
		l.net.mu.Lock()
		delete(l.net.listeners, l.addr)
		l.net.mu.Unlock()
	})
	return nil
}

func (l *memListener) Addr() net.Addr { return memAddr(l.addr) }

type memAddr string

func (a memAddr) Network() string { return "mem" }
func (a memAddr) String() string  { return string(a) }
