package awslab

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/heraldlb/herald/e2e/cluster"
)

// IMDSMockModule is amazon-ec2-metadata-mock, AWS's own IMDS simulator.
const (
	IMDSMockModule  = "github.com/aws/amazon-ec2-metadata-mock"
	IMDSMockVersion = "v1.13.0"
)

// StartIMDSMock installs the metadata mock from the Go module proxy into a
// temporary GOBIN and runs it, IMDSv2 only, on a free loopback port until
// the test ends. It returns the endpoint.
func StartIMDSMock(t *testing.T) string {
	t.Helper()
	gobin := cluster.GoInstall(t, IMDSMockModule+"/cmd/ec2-metadata-mock@"+IMDSMockVersion)
	port := cluster.FreePort(t)
	p, err := cluster.StartProcess("ec2-metadata-mock", filepath.Join(t.TempDir(), "imds.log"),
		filepath.Join(gobin, "ec2-metadata-mock"), "--hostname", "127.0.0.1", "--port", fmt.Sprint(port), "--imdsv2")
	if err != nil {
		t.Fatal(err)
	}
	p.StopAtCleanup(t, 20)
	endpoint := fmt.Sprintf("http://127.0.0.1:%d", port)
	err = wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, 30*time.Second, true,
		func(ctx context.Context) (bool, error) {
			if exitErr := p.ExitedErr(); exitErr != nil {
				return false, exitErr
			}
			req, _ := http.NewRequestWithContext(ctx, http.MethodPut, endpoint+"/latest/api/token", nil)
			req.Header.Set("X-aws-ec2-metadata-token-ttl-seconds", "60")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return false, nil //nolint:nilerr // not listening yet
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK, nil
		})
	if err != nil {
		t.Fatalf("ec2-metadata-mock did not come up: %v\n%s", err, p.LogTail(20))
	}
	return endpoint
}
