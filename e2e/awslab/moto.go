// Package awslab runs the AWS stand-ins of the end-to-end tests: moto_server
// (an independent AWS emulator, for differential tests), the metadata mock
// (amazon-ec2-metadata-mock, for IMDSv2) and helpers around herald's own
// in-process fake. Processes are started and stopped by PID through
// e2e/cluster, and die with the test binary.
package awslab

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/heraldlb/herald/e2e/cluster"
)

// Moto is a running moto_server.
type Moto struct {
	URL  string
	proc *cluster.Process
}

// inCI mirrors the harness rule: in CI a tier that cannot run fails.
func inCI() bool { return os.Getenv("CI") == "true" }

// StartMoto runs moto_server on a free loopback port until the test ends.
// Without moto_server the test is skipped, with the reason; in CI it fails.
func StartMoto(t *testing.T) *Moto {
	t.Helper()
	binary, err := exec.LookPath("moto_server")
	if err != nil {
		if inCI() {
			t.Fatalf("moto_server not found (pip install 'moto[server]==5.2.1'): %v", err)
		}
		t.Skipf("moto_server not found (pip install 'moto[server]==5.2.1'); skipping the differential test against moto")
	}
	port := cluster.FreePort(t)
	p, err := cluster.StartProcess("moto_server", filepath.Join(t.TempDir(), "moto.log"), binary,
		"-H", "127.0.0.1", "-p", fmt.Sprint(port))
	if err != nil {
		t.Fatal(err)
	}
	p.StopAtCleanup(t, 40)
	m := &Moto{URL: fmt.Sprintf("http://127.0.0.1:%d", port), proc: p}
	err = wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 60*time.Second, true,
		func(ctx context.Context) (bool, error) {
			if exitErr := p.ExitedErr(); exitErr != nil {
				return false, exitErr
			}
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, m.URL+"/moto-api/", nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return false, nil //nolint:nilerr // not listening yet
			}
			resp.Body.Close()
			return resp.StatusCode < 500, nil
		})
	if err != nil {
		t.Fatalf("moto_server did not come up: %v\n%s", err, p.LogTail(20))
	}
	return m
}

// Reset empties moto (POST /moto-api/reset).
func (m *Moto) Reset(t *testing.T) {
	t.Helper()
	resp, err := http.Post(m.URL+"/moto-api/reset", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("moto reset: %s", resp.Status)
	}
}

// EC2 sends an EC2 Query request and returns the response body. moto does
// not check signatures; the Authorization header only tells it the
// service and region. The tests use it to set up what herald does not
// create (instances, tags on the default subnets).
func (m *Moto) EC2(t *testing.T, region string, params url.Values) string {
	t.Helper()
	params.Set("Version", "2016-11-15")
	req, err := http.NewRequest(http.MethodPost, m.URL+"/", strings.NewReader(params.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=AKIDTEST/20250101/"+region+"/ec2/aws4_request, SignedHeaders=host, Signature=0")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("moto %s: %s\n%s", params.Get("Action"), resp.Status, body)
	}
	return string(body)
}

// XMLValues returns the text of every <tag> element in an XML body, in order.
func XMLValues(body, tag string) []string {
	re := regexp.MustCompile("<" + regexp.QuoteMeta(tag) + ">([^<]*)</" + regexp.QuoteMeta(tag) + ">")
	var out []string
	for _, m := range re.FindAllStringSubmatch(body, -1) {
		out = append(out, m[1])
	}
	return out
}
