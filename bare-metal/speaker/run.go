package speaker

import (
	"context"
	"errors"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/klog/v2"

	"github.com/heraldlb/herald/bare-metal/api/v1alpha1"
)

// ErrCRDMissing means the apiserver does not serve herald's CRDs: the
// speaker cannot know what to announce.
var ErrCRDMissing = errors.New("herald's CRDs are not installed (apply charts/herald/crds)")

// Run announces until ctx ends, then hands every address over (drains)
// within DrainTimeout and leaves the membership.
func (s *Speaker) Run(ctx context.Context) error {
	logger := klog.FromContext(ctx).WithValues("node", s.cfg.NodeName)
	ctx = klog.NewContext(ctx, logger)
	if err := s.checkCRDs(); err != nil {
		return err
	}
	// The caches outlive ctx by the drain: handing over needs them.
	cacheCtx, stopCaches := context.WithCancel(context.WithoutCancel(ctx))
	defer stopCaches()
	s.cache.start(cacheCtx)
	logger.Info("Waiting for informer caches")
	if !s.cache.waitForSync(ctx) {
		return ctx.Err()
	}
	var err error
	if s.membership, err = s.deps.StartMembership(s.requestSync, s.onMessage); err != nil {
		return fmt.Errorf("speaker: %w", err)
	}
	if s.l2, err = s.deps.NewL2(s.gate); err != nil {
		_ = s.membership.Leave(time.Second)
		return fmt.Errorf("speaker: %w", err)
	}
	go s.writer.run(cacheCtx)
	s.ready.Store(true)
	logger.Info("Announcing", "fenceSilenceTimeout", s.cfg.Fence.SilenceTimeout, "settle", s.cfg.Fence.Settle)
	s.loop(ctx, func() bool { return ctx.Err() != nil })

	s.drain(klog.NewContext(cacheCtx, logger))
	return nil
}

// checkCRDs fails fast, with the fix in the message, when the CRDs are
// absent: otherwise the informers would retry forever, silently.
func (s *Speaker) checkCRDs() error {
	gv := v1alpha1.SchemeGroupVersion.String()
	resources, err := s.deps.Client.Discovery().ServerResourcesForGroupVersion(gv)
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("speaker: discovering %s: %w", gv, err)
	}
	served := map[string]bool{}
	if resources != nil {
		for _, r := range resources.APIResources {
			served[r.Name] = true
		}
	}
	for _, r := range []string{adResource.Resource, poolResource.Resource} {
		if !served[r] {
			return fmt.Errorf("speaker: %w: %s.%s is not served", ErrCRDMissing, r, v1alpha1.GroupName)
		}
	}
	return nil
}

// loop syncs on every change, notice and deadline until done says stop.
func (s *Speaker) loop(ctx context.Context, done func() bool) {
	fence := s.clock.NewTicker(fenceTick)
	defer fence.Stop()
	wake := s.clock.NewTimer(time.Hour)
	defer wake.Stop()
	next := s.sync(ctx)
	for !done() {
		if !next.IsZero() {
			resetTimer(wake, next.Sub(s.clock.Now()))
		}
		select {
		case <-ctx.Done():
		case <-s.trigger:
		case n := <-s.notices:
			for _, a := range n.addrs {
				s.planner.TookOver(a, n.from, n.at)
			}
		case <-wake.C():
		case <-fence.C():
			if !s.fenceChanged(ctx) {
				continue
			}
		}
		next = s.sync(ctx)
	}
}

func resetTimer(t interface {
	Stop() bool
	Reset(time.Duration) bool
	C() <-chan time.Time
}, d time.Duration) {
	if !t.Stop() {
		select {
		case <-t.C():
		default:
		}
	}
	t.Reset(max(d, 0))
}

// drain hands every address over: the agent says it is draining, the
// other agents elect new owners, each new owner announces and sends its
// takeover notice, and this node stops answering each address as its
// notice arrives. Then it leaves the membership.
func (s *Speaker) drain(ctx context.Context) {
	logger := klog.FromContext(ctx)
	ctx, cancel := context.WithTimeout(ctx, s.cfg.DrainTimeout)
	defer cancel()
	if err := s.membership.SetDraining(true, time.Second); err != nil {
		logger.Error(err, "Announcing the drain failed; addresses move when this agent leaves")
	}
	start := s.clock.Now()
	s.loop(ctx, func() bool { return ctx.Err() != nil || !s.planner.Holds() })
	logger.Info("Handed over", "took", s.clock.Since(start), "complete", !s.planner.Holds())
	if err := s.l2.Close(); err != nil {
		logger.Error(err, "Closing the Layer 2 responders")
	}
	if err := s.membership.Leave(time.Second); err != nil {
		logger.Error(err, "Leaving the membership")
	}
}
