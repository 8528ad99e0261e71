package api

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
)

// Identity is what the instance metadata service says about the machine
// herald runs on.
type Identity struct {
	Region, Zone, InstanceID, VPCID string
}

// DiscoverIdentity asks the instance metadata service (IMDSv2: a session
// token first, then the reads) for the region, zone, instance and VPC.
// endpoint overrides the link-local default (for tests).
func DiscoverIdentity(ctx context.Context, endpoint string) (Identity, error) {
	// No fallback to IMDSv1: without a session token, any process able
	// to make the node send a GET could read what IMDS knows.
	client := imds.New(imds.Options{Endpoint: endpoint, EnableFallback: aws.FalseTernary})
	doc, err := client.GetInstanceIdentityDocument(ctx, &imds.GetInstanceIdentityDocumentInput{})
	if err != nil {
		return Identity{}, fmt.Errorf("reading the instance identity document: %w", err)
	}
	id := Identity{Region: doc.Region, Zone: doc.AvailabilityZone, InstanceID: doc.InstanceID}
	mac, err := metadata(ctx, client, "mac")
	if err != nil {
		return id, err
	}
	if id.VPCID, err = metadata(ctx, client, "network/interfaces/macs/"+mac+"/vpc-id"); err != nil {
		return id, err
	}
	return id, nil
}

func metadata(ctx context.Context, client *imds.Client, path string) (string, error) {
	out, err := client.GetMetadata(ctx, &imds.GetMetadataInput{Path: path})
	if err != nil {
		return "", fmt.Errorf("reading metadata %s: %w", path, err)
	}
	defer out.Content.Close()
	b, err := io.ReadAll(out.Content)
	if err != nil {
		return "", fmt.Errorf("reading metadata %s: %w", path, err)
	}
	return strings.TrimSpace(string(b)), nil
}
