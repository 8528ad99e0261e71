package scale

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/heraldlb/herald/e2e/labkit"
)

// saveHeapProfile fetches herald-ccm's /debug/pprof/heap from its secure
// port, authenticated with the cluster-admin token (the controller manager
// delegates authentication and authorization to the apiserver).
func saveHeapProfile(t *testing.T, port int, token, path string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	url := fmt.Sprintf("https://127.0.0.1:%d/debug/pprof/heap", port)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	// herald-ccm serves a self-signed certificate of its own making.
	client := &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // loopback, test only
	resp, err := client.Do(req)
	if err != nil {
		t.Errorf("heap profile: %v", err)
		return
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("heap profile: status %d, %v: %.200s", resp.StatusCode, err, data)
		return
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("herald-ccm heap profile: %s (go tool pprof -sample_index=inuse_space %s)", path, path)
}

// saveAgentHeap fetches herald-agent's /debug/pprof/heap (served with
// --profiling on its metrics address) from inside its namespace, after a
// collection: the live heap, not the one of the last cycle, which may have
// run in the middle of a sync.
func saveAgentHeap(t testing.TB, p *proxy, addr, path string) {
	t.Helper()
	resp, err := labkit.HTTPClient(p.node.Netns, time.Minute).Get("http://" + addr + "/debug/pprof/heap?gc=1")
	if err != nil {
		t.Errorf("herald-agent heap profile: %v", err)
		return
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("herald-agent heap profile: status %d, %v: %.200s", resp.StatusCode, err, data)
		return
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("herald-agent heap profile: %s (go tool pprof -sample_index=inuse_space %s)", path, path)
}

// heapGoalAfterGC has herald-agent collect its garbage (a heap profile
// with gc=1 does) and returns the runtime's next heap goal, from its
// metrics: the live data times 1+GOGC/100.
func heapGoalAfterGC(p *proxy, addr string) (float64, error) {
	client := labkit.HTTPClient(p.node.Netns, time.Minute)
	resp, err := client.Get("http://" + addr + "/debug/pprof/heap?gc=1")
	if err != nil {
		return 0, fmt.Errorf("forcing a collection: %w", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return metricValue(client, "http://"+addr+"/metrics", "go_memstats_next_gc_bytes")
}
