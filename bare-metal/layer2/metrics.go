package layer2

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// The two address families, as metric label values (spelled as
// Kubernetes spells IP families).
const (
	familyIPv4 = "IPv4"
	familyIPv6 = "IPv6"
)

// Operations that can fail, as values of the op label of
// herald_l2_responder_errors_total.
const (
	opLookup = "lookup" // finding the interface
	opOpen   = "open"   // opening a socket
	opRead   = "read"
	opWrite  = "write"
	opJoin   = "join" // joining a solicited-node group
	opLeave  = "leave"
)

// metrics are the responder's Prometheus metrics, registered on the
// Registerer the caller owns (each Announcer, and each test, has its own).
type metrics struct {
	gratuitous *prometheus.CounterVec
	replies    *prometheus.CounterVec
	fenced     *prometheus.CounterVec
	ignored    *prometheus.CounterVec
	errors     *prometheus.CounterVec
	announced  *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		gratuitous: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_l2_gratuitous_sent_total",
			Help: "Gratuitous ARP frames and unsolicited Neighbor Advertisements sent, by IP family.",
		}, []string{"family"}),
		replies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_l2_replies_sent_total",
			Help: "ARP replies and solicited Neighbor Advertisements sent for announced VIPs, by IP family.",
		}, []string{"family"}),
		fenced: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_l2_sends_fenced_total",
			Help: "Replies and gratuitous frames not sent because the fence was closed, by IP family and kind (reply, gratuitous).",
		}, []string{"family", "kind"}),
		ignored: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_l2_frames_ignored_total",
			Help: "Received ARP/NDP frames not answered, by IP family and reason " +
				"(own, not_request, not_for_us, announcement, conflict, not_owned, malformed).",
		}, []string{"family", "reason"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_l2_responder_errors_total",
			Help: "Failed responder operations, by interface and operation (lookup, open, read, write, join, leave).",
		}, []string{"interface", "op"}),
		announced: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "herald_l2_announced_vips",
			Help: "VIPs this node answers for, by interface and IP family.",
		}, []string{"interface", "family"}),
	}
	if reg == nil {
		return m, nil
	}
	var errs []error
	for _, c := range []prometheus.Collector{m.gratuitous, m.replies, m.fenced, m.ignored, m.errors, m.announced} {
		errs = append(errs, reg.Register(c))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("register layer2 metrics: %w", err)
	}
	return m, nil
}
