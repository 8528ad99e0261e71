package dataplane

import (
	"context"
	"fmt"

	"sigs.k8s.io/knftables"
)

// DeleteTable removes the herald table and everything in it, in one atomic
// transaction. The table is added before it is deleted so that the
// transaction succeeds when there is no table: cleanup is idempotent.
// Deleting the table does not touch conntrack, so established connections
// keep their NAT until they end.
func DeleteTable(ctx context.Context, nft knftables.Interface) error {
	tx := nft.NewTransaction()
	tx.Add(&knftables.Table{})
	tx.Delete(&knftables.Table{})
	if err := nft.Run(ctx, tx); err != nil {
		return fmt.Errorf("%w: delete table %s %s: %w", ErrApply, TableFamily, TableName, err)
	}
	return nil
}
