package speaker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/utils/ptr"

	"github.com/heraldlb/herald/bare-metal/api/v1alpha1"
)

// Field managers of what BGP writes. Service conditions and the Valid
// condition of BGP objects are written by one agent at a time (the
// elected reporter) under one manager; a BGPPeer's per-node status
// entries are each written by their node, under a manager of its own, so
// that applying one node's entry leaves the others' alone.
const (
	FieldManagerBGP       = "herald-agent-bgp"
	fieldManagerMaxLength = 128
)

// nodeFieldManager is the field manager of node's status entries.
func nodeFieldManager(node string) string {
	m := FieldManagerBGP + "/" + node
	if len(m) <= fieldManagerMaxLength {
		return m
	}
	sum := sha256.Sum256([]byte(node))
	return FieldManagerBGP + "/" + hex.EncodeToString(sum[:16])
}

// statusKey names one status write: an object and the manager writing it.
type statusKey struct {
	resource schema.GroupVersionResource
	kind     string
	name     string
	manager  string
}

// statusPatch is what a manager wants in an object's status.
type statusPatch struct {
	status map[string]any
	// upToDate reports whether the object already shows it (checked on the
	// informer's copy right before writing, so a late duplicate is
	// skipped).
	upToDate func() bool
	// onWritten runs after a successful write (events).
	onWritten func()
}

// statusApplier applies status patches with server-side apply, through a
// writeQueue.
type statusApplier struct {
	dyn   dynamic.Interface
	queue *writeQueue[statusKey, statusPatch]
}

func newStatusApplier(dyn dynamic.Interface) *statusApplier {
	a := &statusApplier{dyn: dyn}
	a.queue = newWriteQueue("herald-bgp-status", a.write)
	return a
}

// set asks for p on key after delay, unless the object shows it already.
func (a *statusApplier) set(key statusKey, p statusPatch, delay time.Duration) {
	if !p.upToDate() {
		a.queue.set(key, p, delay)
	}
}

func (a *statusApplier) run(ctx context.Context) { a.queue.run(ctx) }

// write applies p unless the object shows it by now.
func (a *statusApplier) write(ctx context.Context, key statusKey, p statusPatch) error {
	if p.upToDate() {
		return nil
	}
	if err := a.apply(ctx, key, p); err != nil {
		return err
	}
	if p.onWritten != nil {
		p.onWritten()
	}
	return nil
}

func (a *statusApplier) apply(ctx context.Context, key statusKey, p statusPatch) error {
	body, err := json.Marshal(map[string]any{
		"apiVersion": v1alpha1.SchemeGroupVersion.String(), "kind": key.kind,
		"metadata": map[string]any{"name": key.name}, "status": p.status,
	})
	if err != nil {
		return err
	}
	_, err = a.dyn.Resource(key.resource).Patch(ctx, key.name, types.ApplyPatchType, body,
		metav1.PatchOptions{FieldManager: key.manager, Force: ptr.To(true)}, "status")
	if apierrors.IsNotFound(err) {
		return nil // deleted meanwhile
	}
	if err != nil {
		return fmt.Errorf("%s %s: %w", key.kind, key.name, err)
	}
	return nil
}

// nodeEntry is this node's entry in a BGPPeer's status.nodes.
type nodeEntry struct {
	SessionState       string      `json:"sessionState"`
	BFDState           string      `json:"bfdState,omitempty"`
	AdvertisedPrefixes int32       `json:"advertisedPrefixes,omitempty"`
	LastTransitionTime metav1.Time `json:"lastTransitionTime,omitzero"`
	Message            string      `json:"message,omitempty"`
}

func (e nodeEntry) sameAs(s v1alpha1.BGPPeerNodeStatus) bool {
	return e.SessionState == s.SessionState && e.BFDState == s.BFDState && e.AdvertisedPrefixes == s.AdvertisedPrefixes &&
		e.Message == s.Message
}

func (e nodeEntry) status(node string) map[string]any {
	m := map[string]any{"node": node, "sessionState": e.SessionState}
	if e.BFDState != "" {
		m["bfdState"] = e.BFDState
	}
	if e.AdvertisedPrefixes > 0 {
		m["advertisedPrefixes"] = e.AdvertisedPrefixes
	}
	if !e.LastTransitionTime.IsZero() {
		m["lastTransitionTime"] = e.LastTransitionTime.UTC().Format(time.RFC3339)
	}
	if e.Message != "" {
		m["message"] = e.Message
	}
	return m
}

// conditionStatus is a Valid condition as a status patch.
func conditionStatus(c metav1.Condition) map[string]any {
	return map[string]any{"conditions": []any{map[string]any{
		"type": c.Type, "status": string(c.Status), "reason": c.Reason, "message": c.Message,
		"observedGeneration": c.ObservedGeneration, "lastTransitionTime": c.LastTransitionTime.UTC().Format(time.RFC3339),
	}}}
}
