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

// Run announces until ctx ends, then stops every protocol gracefully
// (Layer 2 hands its addresses over, BGP withdraws them) within
// DrainTimeout.
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
	for i, a := range s.announcers {
		if err := a.start(cacheCtx); err != nil {
			for _, started := range s.announcers[:i] {
				started.close(cacheCtx)
			}
			return fmt.Errorf("speaker: %w", err)
		}
	}
	s.ready.Store(true)
	logger.Info("Announcing", "protocols", len(s.announcers))
	s.loop(ctx, func() bool { return ctx.Err() != nil })

	s.drain(klog.NewContext(cacheCtx, logger))
	return nil
}

// checkCRDs fails fast, with the fix in the message, when the CRDs the
// enabled protocols watch are absent: otherwise the informers would retry
// forever, silently.
func (s *Speaker) checkCRDs() error {
	gv := v1alpha1.SchemeGroupVersion.String()
	resources, err := s.deps.Source.ServerResourcesForGroupVersion(gv)
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("speaker: discovering %s: %w", gv, err)
	}
	served := map[string]bool{}
	if resources != nil {
		for _, r := range resources.APIResources {
			served[r.Name] = true
		}
	}
	for _, r := range s.cache.resources() {
		if !served[r.Resource] {
			return fmt.Errorf("speaker: %w: %s.%s is not served", ErrCRDMissing, r.Resource, v1alpha1.GroupName)
		}
	}
	return nil
}

// loop syncs on every change, poll request and deadline until done says
// stop.
func (s *Speaker) loop(ctx context.Context, done func() bool) {
	poll := s.clock.NewTicker(pollInterval)
	defer poll.Stop()
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
		case <-wake.C():
		case <-poll.C():
			if !s.pollAll(ctx) {
				continue
			}
		}
		next = s.sync(ctx)
	}
}

func (s *Speaker) pollAll(ctx context.Context) bool {
	want := false
	for _, a := range s.announcers {
		want = a.poll(ctx) || want // every announcer gets polled
	}
	return want
}

// sync reads the caches once and syncs every announcer from that view.
func (s *Speaker) sync(ctx context.Context) time.Time {
	w, err := s.cache.world(s.cfg.NodeName, s.cfg.ClassOnly)
	if err != nil {
		klog.FromContext(ctx).Error(err, "Reading the informer caches failed")
		return s.clock.Now().Add(time.Second)
	}
	var next time.Time
	for _, a := range s.announcers {
		next = earliest(next, a.sync(ctx, w))
	}
	return next
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

// drain stops every protocol gracefully, together, within DrainTimeout:
// the loop keeps syncing while they hand over or withdraw, then each is
// closed.
func (s *Speaker) drain(ctx context.Context) {
	logger := klog.FromContext(ctx)
	ctx, cancel := context.WithTimeout(ctx, s.cfg.DrainTimeout)
	defer cancel()
	for _, a := range s.announcers {
		a.startDrain(ctx)
	}
	start := s.clock.Now()
	s.loop(ctx, func() bool { return ctx.Err() != nil || s.allDrained() })
	logger.Info("Drained", "took", s.clock.Since(start), "complete", s.allDrained())
	for _, a := range s.announcers {
		a.close(context.WithoutCancel(ctx))
	}
}

func (s *Speaker) allDrained() bool {
	for _, a := range s.announcers {
		if !a.drained() {
			return false
		}
	}
	return true
}

func earliest(a, b time.Time) time.Time {
	switch {
	case a.IsZero():
		return b
	case b.IsZero() || a.Before(b):
		return a
	}
	return b
}
