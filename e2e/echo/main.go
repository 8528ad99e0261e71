// Command echo is the backend "pod" of the network tier: it answers every
// HTTP request on TCP, and every UDP datagram, with one line
// "<name> <client ip:port>", so a test sees which pod it reached and which
// source address the pod saw (kept, or masqueraded by the node).
package main

import (
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	name := flag.String("name", "", "name to answer with (required)")
	addr := flag.String("listen", ":8080", "TCP (HTTP) and UDP address")
	flag.Parse()
	if *name == "" {
		fmt.Fprintln(os.Stderr, "echo: --name is required")
		os.Exit(2)
	}
	// Both sockets are bound before anything is served, so a test that sees
	// one answer knows that the other protocol is ready too.
	tcp, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	udp, err := net.ListenPacket("udp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	go serveUDP(udp, *name)
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "%s %s\n", *name, r.RemoteAddr)
		}),
		ReadHeaderTimeout: 5 * time.Second,
	}
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
		<-sig
		_ = srv.Close() // exit now; tests stop pods only at their end
	}()
	if err := srv.Serve(tcp); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatal(err)
	}
}

func serveUDP(conn net.PacketConn, name string) {
	buf := make([]byte, 2048)
	for {
		_, from, err := conn.ReadFrom(buf)
		if err != nil {
			log.Printf("udp: %v", err)
			return
		}
		if _, err := fmt.Fprintf(writerTo{conn, from}, "%s %s\n", name, from); err != nil {
			log.Printf("udp reply to %s: %v", from, err)
		}
	}
}

// writerTo sends each Write as one datagram to addr.
type writerTo struct {
	conn net.PacketConn
	addr net.Addr
}

func (w writerTo) Write(p []byte) (int, error) { return w.conn.WriteTo(p, w.addr) }
