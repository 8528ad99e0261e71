package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"

	"github.com/heraldlb/herald/provider/dataplane"
)

// ListenFunc opens a listener: net.Listen in production, an in-memory one in
// unit tests so they need no real ports.
type ListenFunc func(network, address string) (net.Listener, error)

// healthCheckServers runs one HTTP server per Service that has
// externalTrafficPolicy Local and a healthCheckNodePort. Cloud load balancers
// probe it to learn which nodes have local endpoints: 200 with endpoints,
// 503 without, in the response shape of kube-proxy's service health server
// so that anything built against kube-proxy works unchanged.
type healthCheckServers struct {
	listen ListenFunc
	// proxyHealthy is folded into every answer: a node whose dataplane no
	// longer syncs should not attract new traffic.
	proxyHealthy func() bool
	metrics      *metrics

	mu       sync.RWMutex
	services map[types.NamespacedName]*hcService
}

type hcService struct {
	name      types.NamespacedName
	port      int32
	addrs     []string // listen hosts; "" means every address
	servers   []*http.Server
	listeners []net.Listener
	endpoints int // guarded by healthCheckServers.mu
}

func newHealthCheckServers(listen ListenFunc, proxyHealthy func() bool, m *metrics) *healthCheckServers {
	return &healthCheckServers{listen: listen, proxyHealthy: proxyHealthy, metrics: m,
		services: map[types.NamespacedName]*hcService{}}
}

// sync opens servers for new Services, closes those of Services that went
// away or moved, and updates the endpoint counts. hosts are the addresses to
// listen on ("" for all). A listener that fails to open is reported and
// retried at the next sync; the others are unaffected.
func (h *healthCheckServers) sync(ctx context.Context, want map[types.NamespacedName]dataplane.HealthCheck, hosts []string) error {
	logger := klog.FromContext(ctx)
	h.mu.Lock()
	defer h.mu.Unlock()
	for name, s := range h.services {
		w, ok := want[name]
		if ok && w.Port == s.port && slices.Equal(s.addrs, hosts) {
			continue
		}
		s.close()
		delete(h.services, name)
		logger.V(2).Info("Closed health check server", "service", name, "port", s.port)
	}
	var errs []error
	for name, w := range want {
		if s := h.services[name]; s != nil {
			s.endpoints = w.LocalEndpoints
			continue
		}
		if len(hosts) == 0 {
			continue
		}
		s := &hcService{name: name, port: w.Port, addrs: hosts, endpoints: w.LocalEndpoints}
		if err := h.open(ctx, s); err != nil {
			h.metrics.hcErrors.Inc()
			errs = append(errs, err)
			continue
		}
		h.services[name] = s
		logger.V(2).Info("Opened health check server", "service", name, "port", w.Port, "hosts", hosts)
	}
	h.metrics.hcServers.Set(float64(len(h.services)))
	return errors.Join(errs...)
}

// open starts s's servers, all or none.
func (h *healthCheckServers) open(ctx context.Context, s *hcService) error {
	logger := klog.FromContext(ctx).WithValues("service", s.name)
	for _, host := range s.addrs {
		addr := net.JoinHostPort(host, strconv.Itoa(int(s.port)))
		l, err := h.listen("tcp", addr)
		if err != nil {
			s.close()
			return fmt.Errorf("health check server for service %s on %s: %w", s.name, addr, err)
		}
		srv := &http.Server{Handler: hcHandler{hcs: h, name: s.name}, ReadHeaderTimeout: 5 * time.Second}
		s.servers = append(s.servers, srv)
		s.listeners = append(s.listeners, l)
		go func() {
			if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				logger.Error(err, "Health check server stopped", "address", addr)
			}
		}()
	}
	return nil
}

func (s *hcService) close() {
	for _, srv := range s.servers {
		_ = srv.Close() // nothing to do on error
	}
	// A server whose Serve goroutine has not started yet does not know its
	// listener: close them here so the port is free when close returns.
	for _, l := range s.listeners {
		_ = l.Close()
	}
	s.servers, s.listeners = nil, nil
}

// closeAll stops every server, for agent shutdown.
func (h *healthCheckServers) closeAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for name, s := range h.services {
		s.close()
		delete(h.services, name)
	}
	h.metrics.hcServers.Set(0)
}

// count returns the local endpoint count served for name, and whether a
// server is open for it.
func (h *healthCheckServers) count(name types.NamespacedName) (int, bool) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	s, ok := h.services[name]
	if !ok {
		return 0, false
	}
	return s.endpoints, true
}

type hcHandler struct {
	hcs  *healthCheckServers
	name types.NamespacedName
}

// hcResponse is kube-proxy's body, field for field and in the same order.
type hcResponse struct {
	Service struct {
		Namespace string `json:"namespace"`
		Name      string `json:"name"`
	} `json:"service"`
	LocalEndpoints      int  `json:"localEndpoints"`
	ServiceProxyHealthy bool `json:"serviceProxyHealthy"`
}

func (h hcHandler) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	// A request racing with the close of this server: answer as if there
	// were no endpoints, which is now true.
	count, _ := h.hcs.count(h.name)
	healthy := h.hcs.proxyHealthy()
	var body hcResponse
	body.Service.Namespace, body.Service.Name = h.name.Namespace, h.name.Name
	body.LocalEndpoints, body.ServiceProxyHealthy = count, healthy
	out, _ := json.MarshalIndent(body, "", "\t") // cannot fail on this type

	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("X-Load-Balancing-Endpoint-Weight", strconv.Itoa(count))
	if count > 0 && healthy {
		w.WriteHeader(http.StatusOK)
	} else {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_, _ = w.Write(out)
}
