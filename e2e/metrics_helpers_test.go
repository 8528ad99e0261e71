package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"k8s.io/apimachinery/pkg/util/wait"
)

// scrape reads herald-ccm's /metrics, waiting until it answers.
func (m *ccm) scrape(t testing.TB) map[string]*dto.MetricFamily {
	t.Helper()
	if m.metricsURL == "" {
		t.Fatal("herald-ccm was started without a metrics port")
	}
	// herald-ccm serves a self-signed certificate of its own making.
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // loopback, test only
	var families map[string]*dto.MetricFamily
	var last error
	err := wait.PollUntilContextTimeout(context.Background(), 200*time.Millisecond, waitTimeout, true,
		func(context.Context) (bool, error) {
			if err := m.ExitedErr(); err != nil {
				return false, err
			}
			families, last = m.get(client)
			return last == nil, nil
		})
	if err != nil {
		t.Fatalf("scraping %s: %v (last: %v)", m.metricsURL, err, last)
	}
	return families
}

func (m *ccm) get(client *http.Client) (map[string]*dto.MetricFamily, error) {
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, m.metricsURL, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+m.token)
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
		return nil, fmt.Errorf("status %d: %s", resp.StatusCode, body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	return parser.TextToMetricFamilies(resp.Body)
}

// gauge returns the value of the gauge or counter name whose labels
// include want.
func gauge(families map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	family, ok := families[name]
	if !ok {
		return 0, false
	}
	for _, metric := range family.GetMetric() {
		labels := map[string]string{}
		for _, l := range metric.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		matches := true
		for k, v := range want {
			matches = matches && labels[k] == v
		}
		if matches {
			if c := metric.GetCounter(); c != nil {
				return c.GetValue(), true
			}
			return metric.GetGauge().GetValue(), true
		}
	}
	return 0, false
}

// waitForGauge polls /metrics until the gauge has the value.
func (m *ccm) waitForGauge(t testing.TB, name string, labels map[string]string, want float64) {
	t.Helper()
	var got float64
	var ok bool
	err := wait.PollUntilContextTimeout(context.Background(), 200*time.Millisecond, waitTimeout, true,
		func(context.Context) (bool, error) {
			got, ok = gauge(m.scrape(t), name, labels)
			return ok && got == want, nil
		})
	if err != nil {
		t.Fatalf("%s%s = %v (present: %v), want %v", name, formatLabels(labels), got, ok, want)
	}
}

func formatLabels(labels map[string]string) string {
	var parts []string
	for k, v := range labels {
		parts = append(parts, k+"="+strconv.Quote(v))
	}
	return "{" + strings.Join(parts, ",") + "}"
}

// waitServices waits until a controller of herald-ccm reports ready and
// pending Services as given (herald_services): each Service it serves has
// been synced since it started, in whatever order it took them.
func (m *ccm) waitServices(t testing.TB, controller string, ready, pending int) {
	t.Helper()
	m.waitForGauge(t, "herald_services", map[string]string{"controller": controller, "state": "pending"}, float64(pending))
	m.waitForGauge(t, "herald_services", map[string]string{"controller": controller, "state": "ready"}, float64(ready))
	m.waitForGauge(t, "herald_services", map[string]string{"controller": controller, "state": "pending"}, float64(pending))
}

// waitQueuesDrained waits until the work queues of controllers are empty
// and idle: every event their informers delivered before has been handled.
func (m *ccm) waitQueuesDrained(t testing.TB, controllers ...string) {
	t.Helper()
	for _, name := range controllers {
		m.waitForGauge(t, "workqueue_depth", map[string]string{"name": name}, 0)
		m.waitForGauge(t, "workqueue_unfinished_work_seconds", map[string]string{"name": name}, 0)
	}
}
