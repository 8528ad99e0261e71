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
		gratuitous: counterVec("herald_l2_gratuitous_sent_total",
			"Gratuitous ARP frames and unsolicited Neighbor Advertisements sent, by IP family.", "family"),
		replies: counterVec("herald_l2_replies_sent_total",
			"ARP replies and solicited Neighbor Advertisements sent for announced VIPs, by IP family.", "family"),
		fenced: counterVec("herald_l2_sends_fenced_total",
			"Replies and gratuitous frames not sent because the fence was closed, by IP family and kind "+
				"(reply, gratuitous).", "family", "kind"),
		ignored: counterVec("herald_l2_frames_ignored_total",
			"Received ARP/NDP frames not answered, by IP family and reason "+
				"(own, not_request, not_for_us, announcement, conflict, not_owned, malformed).", "family", "reason"),
		errors: counterVec("herald_l2_responder_errors_total",
			"Failed responder operations, by interface and operation (lookup, open, read, write, join, leave).",
			"interface", "op"),
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

func counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
}
