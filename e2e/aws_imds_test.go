package e2e

import (
	"context"
	"net/http"
	"testing"

	"github.com/heraldlb/herald/aws/api"
	"github.com/heraldlb/herald/e2e/awslab"
)

// TestDiscoverIdentityOverIMDSv2 reads region, zone, instance and VPC from
// AWS's own metadata simulator running IMDSv2 only: herald must take a
// session token, and must not fall back to IMDSv1.
func TestDiscoverIdentityOverIMDSv2(t *testing.T) {
	endpoint := awslab.StartIMDSMock(t)
	// The mock refuses token-less (IMDSv1) reads, so a pass below proves v2.
	resp, err := http.Get(endpoint + "/latest/meta-data/instance-id")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("IMDSv1 read answered %s; the mock is not in IMDSv2-only mode", resp.Status)
	}
	id, err := api.DiscoverIdentity(context.Background(), endpoint)
	if err != nil {
		t.Fatal(err)
	}
	// The mock's documented defaults (pkg/config/defaults).
	want := api.Identity{Region: "us-east-1", Zone: "us-east-1f", InstanceID: "i-1234567890abcdef0", VPCID: "vpc-d295a6a7"}
	if id != want {
		t.Fatalf("identity = %+v, want %+v", id, want)
	}
}
