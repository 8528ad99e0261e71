package netlab

import (
	"errors"
	"io"
	"net"
	"sync"
)

// Forward makes addr (host:port) of the host's own network reachable at the
// same address inside ns, by relaying TCP connections through the test
// process. It serves the apiserver, which listens on the host's 127.0.0.1,
// to agents inside node namespaces: their kubeconfig stays the one the
// harness wrote (same address, same certificate), and the host's network is
// not touched at all, so parallel labs cannot collide on host addresses.
// The relay stops when the lab is torn down.
func (l *Lab) Forward(ns *Netns, addr string) {
	l.t.Helper()
	ln, err := ns.Listen("tcp", addr)
	if err != nil {
		l.t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns = map[net.Conn]bool{}
		wg    sync.WaitGroup
	)
	track := func(c net.Conn, add bool) {
		mu.Lock()
		defer mu.Unlock()
		if add {
			conns[c] = true
		} else {
			delete(conns, c)
		}
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			in, err := ln.Accept()
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err != nil {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				relay(in, addr, track)
			}()
		}
	}()
	l.OnCleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
}

func relay(in net.Conn, addr string, track func(net.Conn, bool)) {
	track(in, true)
	defer func() { track(in, false); in.Close() }()
	out, err := net.Dial("tcp", addr)
	if err != nil {
		return
	}
	track(out, true)
	defer func() { track(out, false); out.Close() }()
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(out, in)             // ends when either side closes
		_ = out.(*net.TCPConn).CloseWrite() // pass the EOF on; the other copy still runs
		close(done)
	}()
	_, _ = io.Copy(in, out)
	_ = in.(*net.TCPConn).CloseWrite() // same, the other way
	<-done
}
