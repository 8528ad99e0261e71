package dataplane

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"

	"k8s.io/klog/v2"
	"sigs.k8s.io/knftables"
)

// reload does a full sync by rewriting elements only, when the kernel holds
// the chains, rules and sets desired needs. It knows from the stamp: after
// each full sync that wrote the skeleton the applier records in the table a
// digest of the skeleton it wrote and a fingerprint of what the kernel then
// held. An equal digest and an unchanged fingerprint prove the skeleton is
// desired's and untouched since, whatever this process knows: a restarted
// agent or a sync after a failure (transactions are atomic, so a failed
// one changed nothing) can reload too. Otherwise the whole table is
// rewritten over netlink (rewrite). It reports false when it did nothing
// (the caller then syncs through nft); a failed reload or rewrite also
// reports false, since a netlink batch is atomic and leaves the table as
// it was.
func (a *Applier) reload(ctx context.Context, desired *Ruleset) (SyncResult, bool) {
	logger := klog.FromContext(ctx)
	stamp, err := a.reloader.Stamp(ctx)
	if errors.Is(err, ErrNoTable) {
		return a.create(ctx, desired)
	}
	if err != nil {
		// e.g. a table of an older layout, without the stamp set
		return a.rewrite(ctx, desired, "no skeleton stamp in the table", err)
	}
	digest, fingerprint, _ := strings.Cut(stamp, " ")
	if digest != skeletonDigest(desired) {
		return a.rewrite(ctx, desired, "the table's skeleton is not the desired one", nil)
	}
	fp, err := a.reloader.Fingerprint(ctx)
	if err != nil {
		return a.rewrite(ctx, desired, "cannot read the table's skeleton", err)
	}
	if fingerprint != stampHex(fp) {
		logger.Info("Chains, rules or sets of the herald table changed behind herald's back; rewriting the table")
		return a.rewrite(ctx, desired, "the table's skeleton changed behind herald's back", nil)
	}
	if err := a.reloadAll(ctx, desired); err != nil {
		return a.rewrite(ctx, desired, "cannot reload elements over netlink", err)
	}
	return SyncResult{Full: true, Reloaded: true, Operations: countElements(desired)}, true
}

// rewrite replaces the whole table over netlink in one transaction, when
// the reloader can write skeletons, and stamps it. Writing the skeleton
// and ~56k elements at 10k Services through nft's parser costs seconds;
// this costs a fraction. why says why elements alone would not do.
func (a *Applier) rewrite(ctx context.Context, desired *Ruleset, why string, cause error) (SyncResult, bool) {
	logger := klog.FromContext(ctx).WithValues("why", why)
	if cause != nil {
		logger = logger.WithValues("err", cause)
	}
	w := a.writer()
	if w == nil {
		logger.V(2).Info("Cannot reload elements only; syncing through nft")
		return SyncResult{}, false
	}
	if err := w.Rewrite(ctx, desired); err != nil {
		logger.Info("Cannot rewrite the nftables table over netlink; syncing through nft", "rewriteErr", err)
		return SyncResult{}, false
	}
	logger.V(2).Info("Rewrote the nftables table over netlink")
	// The table is new: no remembered ClientIP choice is left to purge.
	a.applied = desired
	a.stamp(ctx, desired)
	return SyncResult{Full: true, Rewritten: true, Operations: countElements(desired)}, true
}

// reloadAll replaces every element with desired's, which is then what the
// kernel holds.
func (a *Applier) reloadAll(ctx context.Context, desired *Ruleset) error {
	if err := a.reloader.Reload(ctx, desired); err != nil {
		return err
	}
	prev := a.applied
	a.applied = desired
	if affinityShrank(prev, desired) {
		a.purgeAffinity(ctx, desired)
	}
	return nil
}

func countElements(r *Ruleset) int {
	n := 0
	for _, els := range r.Elements {
		n += len(els)
	}
	return n
}

// create makes the table where there is none (a node's first sync after
// boot): in one netlink batch if the reloader can write skeletons, else in
// two steps: nft writes the skeleton with empty sets and maps,
// then the elements are reloaded over netlink. Not atomic, and it need not
// be: with no table there was no herald forwarding to keep, and until the
// elements arrive the empty maps forward nothing either. If the reload
// fails, the caller's full sync through nft rewrites the whole table.
func (a *Applier) create(ctx context.Context, desired *Ruleset) (SyncResult, bool) {
	if a.writer() != nil {
		return a.rewrite(ctx, desired, "no table", nil)
	}
	logger := klog.FromContext(ctx)
	skeleton := *desired
	skeleton.Elements = nil
	tx := a.nft.NewTransaction()
	fullTransaction(tx, &skeleton, a.batch)
	if err := a.nft.Run(ctx, tx); err != nil {
		logger.Info("Cannot create the nftables table's skeleton; syncing through nft", "err", err)
		return SyncResult{}, false
	}
	a.stamp(ctx, desired)
	if err := a.reloadAll(ctx, desired); err != nil {
		logger.Info("Cannot load elements over netlink into the new table; syncing through nft", "err", err)
		return SyncResult{}, false
	}
	return SyncResult{Full: true, Reloaded: true, Operations: tx.NumOperations() + countElements(desired)}, true
}

// stamp records in the table which skeleton was just written and how
// the kernel holds it. Without a stamp the next full sync writes the skeleton
// again, so a failure is only logged.
func (a *Applier) stamp(ctx context.Context, written *Ruleset) {
	logger := klog.FromContext(ctx)
	fp, err := a.reloader.Fingerprint(ctx)
	if err == nil {
		err = a.reloader.SetStamp(ctx, skeletonDigest(written)+" "+stampHex(fp))
	}
	if err != nil {
		logger.Info("Cannot stamp the nftables table; full syncs keep using nft", "err", err)
	}
}

// stampHex shortens a digest so that two fit an element comment (128 bytes).
func stampHex(sum []byte) string { return hex.EncodeToString(sum[:min(len(sum), 24)]) }

// skeletonDigest identifies r's chains, rules and set definitions: the nft
// text a full sync would write for them.
func skeletonDigest(r *Ruleset) string {
	skeleton := *r
	skeleton.Elements = nil
	tx := knftables.NewFake(TableFamily, TableName).NewTransaction()
	fullTransaction(tx, &skeleton, false)
	sum := sha256.Sum256([]byte(tx.String()))
	return stampHex(sum[:])
}

// changeOverNetlink sends a partial sync's element changes in one netlink
// batch: the same atomic transaction as through nft, without starting a
// process, which would cost most of a one-Service sync (docs/benchmarks.md).
func (a *Applier) changeOverNetlink(ctx context.Context, desired *Ruleset, changes []ElementChange) error {
	if len(changes) == 0 {
		return nil
	}
	return a.reloader.Change(ctx, desired, changes)
}
