package speaker

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
)

// secretTimeout bounds one read of a password Secret.
const secretTimeout = 5 * time.Second

// secretCache holds the password Secrets BGPPeers reference. herald-agent
// may only get the Secrets it is told about (the chart's RBAC names them),
// so it cannot watch them: it reads a Secret when a peer first references
// it, then again every refresh, and asks for a sync when one changed
// (a rotated password).
type secretCache struct {
	client    dynamic.Interface
	namespace string
	refresh   time.Duration
	clock     clock.WithTicker
	changed   func()

	mu      sync.Mutex
	entries map[string]secretEntry
}

type secretEntry struct {
	data    map[string][]byte
	err     error
	fetched time.Time
}

func newSecretCache(client dynamic.Interface, namespace string, refresh time.Duration, clk clock.WithTicker, changed func()) *secretCache {
	return &secretCache{client: client, namespace: namespace, refresh: refresh, clock: clk, changed: changed,
		entries: map[string]secretEntry{}}
}

// ensure reads the Secrets among names never read yet (the first sync that
// references a Secret waits for it, so that no peer is reported invalid
// for a Secret that is merely not read yet) and forgets the others.
func (c *secretCache) ensure(ctx context.Context, names []string) {
	c.mu.Lock()
	var missing []string
	for _, n := range names {
		if _, ok := c.entries[n]; !ok {
			missing = append(missing, n)
		}
	}
	for n := range c.entries {
		if !slices.Contains(names, n) {
			delete(c.entries, n)
		}
	}
	c.mu.Unlock()
	for _, n := range missing {
		e := c.read(ctx, n)
		c.mu.Lock()
		c.entries[n] = e
		c.mu.Unlock()
	}
}

func (c *secretCache) read(ctx context.Context, name string) secretEntry {
	ctx, cancel := context.WithTimeout(ctx, secretTimeout)
	defer cancel()
	s, err := c.get(ctx, name)
	e := secretEntry{fetched: c.clock.Now()}
	switch {
	case apierrors.IsNotFound(err):
		e.err = fmt.Errorf("%w in namespace %s", ErrSecretNotFound, c.namespace)
	case apierrors.IsForbidden(err):
		e.err = fmt.Errorf("%w: add it to the chart's agent.bgp.passwordSecrets", ErrSecretForbidden)
	case err != nil:
		e.err = err
	default:
		e.data = s.Data
	}
	return e
}

var secretsResource = v1.SchemeGroupVersion.WithResource("secrets")

func (c *secretCache) get(ctx context.Context, name string) (*v1.Secret, error) {
	u, err := c.client.Resource(secretsResource).Namespace(c.namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	s := &v1.Secret{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, s); err != nil {
		return nil, fmt.Errorf("secret %s: %w", name, err)
	}
	return s, nil
}

// password returns a Secret's key, as last read.
func (c *secretCache) password(name, key string) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[name]
	switch {
	case !ok:
		return "", fmt.Errorf("%w (not read yet)", ErrSecretNotFound)
	case e.err != nil:
		return "", e.err
	}
	v, ok := e.data[key]
	if !ok {
		return "", fmt.Errorf("%w %q", ErrSecretKeyMissing, key)
	}
	return string(v), nil
}

// run re-reads every referenced Secret each refresh until ctx ends.
func (c *secretCache) run(ctx context.Context) {
	t := c.clock.NewTicker(c.refresh)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
		c.mu.Lock()
		names := slices.Collect(maps.Keys(c.entries))
		c.mu.Unlock()
		changed := false
		for _, n := range names {
			e := c.read(ctx, n)
			c.mu.Lock()
			old, still := c.entries[n]
			if still {
				changed = changed || !sameSecret(old, e)
				c.entries[n] = e
			}
			c.mu.Unlock()
		}
		if changed {
			klog.FromContext(ctx).V(2).Info("A BGP password Secret changed")
			c.changed()
		}
	}
}

func sameSecret(a, b secretEntry) bool {
	if (a.err == nil) != (b.err == nil) || a.err != nil && a.err.Error() != b.err.Error() {
		return false
	}
	return maps.EqualFunc(a.data, b.data, slices.Equal)
}
