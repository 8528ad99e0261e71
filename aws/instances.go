package aws

import (
	"context"
	"errors"
	"fmt"
	"strings"

	v1 "k8s.io/api/core/v1"
	cloudprovider "k8s.io/cloud-provider"

	"github.com/heraldlb/herald/aws/api"
	"github.com/heraldlb/herald/aws/build"
)

// Instances answers the cloud node controllers from EC2: provider IDs
// aws:///<zone>/<instance-id>, addresses, zone and region labels, and
// whether an instance still exists or is shut down.
type Instances struct {
	ec2    api.EC2
	region string
}

var _ cloudprovider.InstancesV2 = (*Instances)(nil)

// ErrNoProviderID is returned for a node whose instance herald cannot tell.
var ErrNoProviderID = errors.New("node has no AWS provider ID (kubelet --provider-id=aws:///<zone>/<instance-id>) and its name is not an instance ID")

func instanceID(node *v1.Node) (string, error) {
	if node.Spec.ProviderID != "" {
		_, id, err := build.ParseProviderID(node.Spec.ProviderID)
		return id, err
	}
	if strings.HasPrefix(node.Name, "i-") {
		return node.Name, nil // kubelets that name nodes by instance ID
	}
	return "", ErrNoProviderID
}

func (i *Instances) instance(ctx context.Context, node *v1.Node) (*api.Instance, error) {
	id, err := instanceID(node)
	if err != nil {
		return nil, err
	}
	found, err := i.ec2.Instances(ctx, []string{id})
	if err != nil {
		return nil, fmt.Errorf("describing instance %s: %w", id, err)
	}
	for _, in := range found {
		if in.ID == id {
			return &in, nil
		}
	}
	return nil, nil
}

// InstanceExists is false for an instance EC2 no longer knows or has
// terminated: the node lifecycle controller then deletes the Node.
func (i *Instances) InstanceExists(ctx context.Context, node *v1.Node) (bool, error) {
	in, err := i.instance(ctx, node)
	if err != nil {
		return false, err
	}
	return in != nil && in.State != "terminated", nil
}

// InstanceShutdown is true for a stopped (or stopping) instance, so its
// Node is tainted rather than deleted.
func (i *Instances) InstanceShutdown(ctx context.Context, node *v1.Node) (bool, error) {
	in, err := i.instance(ctx, node)
	if err != nil || in == nil {
		return false, err
	}
	return in.State == "stopped" || in.State == "stopping" || in.State == "shutting-down", nil
}

// InstanceMetadata returns the provider ID, type, addresses and topology.
func (i *Instances) InstanceMetadata(ctx context.Context, node *v1.Node) (*cloudprovider.InstanceMetadata, error) {
	in, err := i.instance(ctx, node)
	if err != nil {
		return nil, err
	}
	if in == nil {
		return nil, cloudprovider.InstanceNotFound
	}
	md := &cloudprovider.InstanceMetadata{ProviderID: build.ProviderID(in.Zone, in.ID), InstanceType: in.Type,
		Zone: in.Zone, Region: i.region}
	add := func(t v1.NodeAddressType, a string) {
		if a != "" {
			md.NodeAddresses = append(md.NodeAddresses, v1.NodeAddress{Type: t, Address: a})
		}
	}
	add(v1.NodeInternalIP, in.PrivateIP)
	add(v1.NodeExternalIP, in.PublicIP)
	add(v1.NodeInternalDNS, in.PrivateDNS)
	add(v1.NodeHostName, in.PrivateDNS)
	add(v1.NodeExternalDNS, in.PublicDNS)
	return md, nil
}
