package dataplane

import (
	"context"
	"testing"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"sigs.k8s.io/knftables"
)

func TestDeleteTableIsIdempotent(t *testing.T) {
	ctx := context.Background()
	fake := knftables.NewFake(TableFamily, TableName)
	// absent table
	if err := DeleteTable(ctx, fake); err != nil {
		t.Fatalf("delete of an absent table: %v", err)
	}
	syncOK(t, NewApplier(fake), Build([]*v1.Service{webService()},
		[]*discoveryv1.EndpointSlice{webSlice(ep{"192.0.2.101", thisNode, ready})}, testNode, Options{}))
	if err := DeleteTable(ctx, fake); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if d := fake.Dump(); d != "" {
		t.Errorf("table left behind:\n%s", d)
	}
}
