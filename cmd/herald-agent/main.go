// Command herald-agent is herald's node agent, run as a DaemonSet: it keeps
// the node's nftables table (ClusterIP, NodePort, LoadBalancer and external
// IP forwarding) in line with the cluster and serves healthCheckNodePorts.
//
// Exit codes: 0 on SIGTERM/SIGINT or after --cleanup, 2 for invalid flags,
// 1 for any other failure. On a normal stop the nftables table is left in
// place so that traffic keeps flowing while the agent restarts; only
// --cleanup removes it.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/pflag"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/record"
	"k8s.io/component-base/version"
	"k8s.io/klog/v2"
	"sigs.k8s.io/knftables"

	"github.com/heraldlb/herald/internal/kubeclient"
	"github.com/heraldlb/herald/provider/agent"
	"github.com/heraldlb/herald/provider/dataplane"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, newNFT, true)
	stop()
	klog.Flush()
	os.Exit(code)
}

func newNFT() (knftables.Interface, error) {
	return knftables.New(dataplane.TableFamily, dataplane.TableName)
}

// run is main without the process: tests pass their own arguments, outputs
// and knftables.
// batch says nft runs the nft binary against the host's kernel, so full
// syncs may fold elements (dataplane.BatchElements) and reload them over
// netlink (dataplane.ReloadElements).
func run(ctx context.Context, args []string, stdout, stderr io.Writer, nft func() (knftables.Interface, error), batch bool) int {
	var o options
	fs := newFlagSet(&o)
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "herald-agent: %v\n", err)
		return 2
	}
	o.gcPercentSet = fs.Changed("gc-percent")
	if o.printVersion {
		// Stamped at build time as herald-ccm's is (-X
		// k8s.io/component-base/version.gitVersion=...; make images), and
		// on stdout as herald-ccm's, for scripts: $(herald-agent --version).
		fmt.Fprintf(stdout, "herald-agent %s\n", version.Get().GitVersion)
		return 0
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "herald-agent: unexpected arguments %q\n", fs.Args())
		return 2
	}
	if err := o.validate(); err != nil {
		fmt.Fprintf(stderr, "herald-agent: %v\n", err)
		return 2
	}
	ctx = klog.NewContext(ctx, klog.Background())
	if err := start(ctx, &o, nft, batch); err != nil {
		klog.FromContext(ctx).Error(err, "herald-agent failed")
		return 1
	}
	return 0
}

func start(ctx context.Context, o *options, newNFT func() (knftables.Interface, error), batch bool) error {
	if o.cleanup {
		nft, err := newNFT()
		if err != nil {
			return fmt.Errorf("nftables: %w", err)
		}
		if err := dataplane.DeleteTable(ctx, nft); err != nil {
			return err
		}
		klog.FromContext(ctx).Info("Deleted the herald nftables table", "table", dataplane.TableName)
		return nil
	}
	applyMemoryLimit(klog.FromContext(ctx), o.memoryLimit)
	applyGCPercent(klog.FromContext(ctx), o.gcPercent, o.gcPercentSet)
	cfg, err := clientcmd.BuildConfigFromFlags("", o.kubeconfig)
	if err != nil {
		return fmt.Errorf("--kubeconfig=%q: %w", o.kubeconfig, err)
	}
	cfg.UserAgent = "herald-agent"
	// Protobuf, as kube-proxy asks for: at 10k Services the initial lists
	// decode in a fraction of JSON's memory and CPU. The dynamic client
	// (CRDs, JSON only) keeps cfg as it is.
	typed := rest.CopyConfig(cfg)
	typed.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
	typed.ContentType = runtime.ContentTypeProtobuf
	client, err := kubeclient.New(typed)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// One cache of Services and EndpointSlices for forwarding and
	// announcing alike.
	informers := agent.NewInformerFactory(client)
	events := sync.OnceValue(func() record.EventRecorder { return newEventRecorder(ctx, client, o.nodeName) })
	var parts []func(context.Context) error
	var health http.Handler
	var forwarding <-chan struct{}
	if o.forwarding {
		if o.noLocalDetection() {
			klog.FromContext(ctx).Info("No --cluster-cidr with --detect-local-mode=ClusterCIDR: no traffic is taken for pods'; " +
				"ClusterIP traffic is not masqueraded and pods get no exception to externalTrafficPolicy Local")
		}
		a, err := newForwarder(o, client, informers, reg, newNFT, batch, events)
		if err != nil {
			return err
		}
		parts, health, forwarding = append(parts, a.Run), a.HealthHandler(), a.Forwarding()
	}
	if o.announce.any() {
		sp, err := newSpeaker(ctx, o, cfg, client, informers, reg, events())
		if err != nil {
			return err
		}
		parts = append(parts, after(forwarding, "the first nftables sync", sp.Run))
		if health == nil {
			health = sp.HealthHandler()
		}
	}
	stopServers, err := serve(ctx, o, health, promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	if err != nil {
		return err
	}
	defer stopServers()
	return runAll(ctx, parts)
}

func newForwarder(o *options, client *kubeclient.Client, informers *kubeclient.Informers,
	reg prometheus.Registerer, newNFT func() (knftables.Interface, error), batch bool,
	events func() record.EventRecorder) (*agent.Agent, error) {
	nft, err := newNFT()
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	deps := agent.Deps{Source: client, NFT: nft, Registerer: reg, BatchElements: batch, Informers: informers,
		Conntrack: agent.NewNetlinkConntrack()}
	if batch {
		deps.Reloader = dataplane.NewNetlinkReloader(0)
	}
	cfg := o.agentConfig()
	if cfg.LocalFromNode {
		// Only to warn of a Node without pod ranges; other modes record
		// nothing, so they need no RBAC for Events.
		deps.Recorder = events()
	}
	return agent.New(cfg, deps)
}

// newEventRecorder records Events as herald-agent on this node; the
// forwarder and the speaker share it.
func newEventRecorder(ctx context.Context, client *kubeclient.Client, nodeName string) record.EventRecorder {
	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	broadcaster.StartStructuredLogging(3)
	broadcaster.StartRecordingToSink(client.EventSink())
	return broadcaster.NewRecorder(client.Scheme(), v1.EventSource{Component: "herald-agent", Host: nodeName})
}

// after runs run once ready is closed (at once if ready is nil). A node
// that announces a VIP before its own forwarding rules are in the kernel
// draws traffic it drops: the router's ECMP route or the client's ARP entry
// points at it, and nothing DNATs the VIP yet. So with forwarding on, the
// speaker joins the membership and opens BGP sessions only after the first
// sync; until then the other nodes keep the VIPs.
func after(ready <-chan struct{}, what string, run func(context.Context) error) func(context.Context) error {
	if ready == nil {
		return run
	}
	return func(ctx context.Context) error {
		logger := klog.FromContext(ctx)
		logger.Info("Announcing waits", "for", what)
		select {
		case <-ready:
		case <-ctx.Done():
			return nil
		}
		logger.Info("Announcing starts", "after", what)
		return run(ctx)
	}
}

// runAll runs the agent's parts until ctx ends or one fails; a failure
// stops the others, and every part gets to finish (the speaker hands its
// addresses over) before runAll returns.
func runAll(ctx context.Context, parts []func(context.Context) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, len(parts))
	for _, run := range parts {
		go func() {
			err := run(ctx)
			if err != nil {
				cancel()
			}
			errs <- err
		}()
	}
	var all []error
	for range parts {
		all = append(all, <-errs)
	}
	return errors.Join(all...)
}

// serve listens on the health and metrics addresses (one server when they
// are the same) before the agent starts, so that probes get an answer, a
// 503, while the caches fill. Listening up front turns a busy port into an
// error naming its flag. The returned function shuts the servers down.
func serve(ctx context.Context, o *options, health, metrics http.Handler) (func(), error) {
	type listener struct {
		flag, addr string
		mux        *http.ServeMux
	}
	var ls []*listener
	muxFor := func(flagName, addr string) *http.ServeMux {
		for _, l := range ls {
			if l.addr == addr {
				return l.mux
			}
		}
		l := &listener{flag: flagName, addr: addr, mux: http.NewServeMux()}
		ls = append(ls, l)
		return l.mux
	}
	if o.healthBindAddress != "" {
		m := muxFor("--health-bind-address", o.healthBindAddress)
		for _, p := range []string{"/readyz", "/livez", "/healthz"} {
			m.Handle(p, health)
		}
	}
	if o.metricsBindAddress != "" {
		m := muxFor("--metrics-bind-address", o.metricsBindAddress)
		m.Handle("/metrics", metrics)
		if o.profiling {
			m.HandleFunc("/debug/pprof/", pprof.Index)
			m.HandleFunc("/debug/pprof/profile", pprof.Profile)
			m.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
			m.HandleFunc("/debug/pprof/trace", pprof.Trace)
		}
	}

	var servers []*http.Server
	stop := func() {
		shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		for _, s := range servers {
			_ = s.Shutdown(shutdownCtx) // best effort on the way out
		}
	}
	logger := klog.FromContext(ctx)
	for _, l := range ls {
		nl, err := net.Listen("tcp", l.addr)
		if err != nil {
			stop()
			return nil, fmt.Errorf("%s=%q: %w", l.flag, l.addr, err)
		}
		s := &http.Server{Handler: l.mux, ReadHeaderTimeout: 5 * time.Second}
		servers = append(servers, s)
		go func() {
			if err := s.Serve(nl); err != nil && !errors.Is(err, http.ErrServerClosed) {
				logger.Error(err, "HTTP server stopped", "address", l.addr)
			}
		}()
		logger.Info("Serving", "address", nl.Addr().String(), "flag", l.flag)
	}
	return stop, nil
}
