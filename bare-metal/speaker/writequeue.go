package speaker

import (
	"context"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
)

// writeQueue writes to the apiserver off the sync loop (a slow or failing
// apiserver must never delay an announcement): the latest wish per key,
// retried with backoff until write succeeds.
type writeQueue[K comparable, V any] struct {
	name  string
	write func(ctx context.Context, key K, value V) error
	queue workqueue.TypedRateLimitingInterface[K]

	mu      sync.Mutex
	desired map[K]V
}

func newWriteQueue[K comparable, V any](name string, write func(context.Context, K, V) error) *writeQueue[K, V] {
	return &writeQueue[K, V]{name: name, write: write, desired: map[K]V{},
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[K](100*time.Millisecond, 30*time.Second),
			workqueue.TypedRateLimitingQueueConfig[K]{Name: name})}
}

// set asks for value at key, after delay.
func (q *writeQueue[K, V]) set(key K, value V, delay time.Duration) {
	q.mu.Lock()
	q.desired[key] = value
	q.mu.Unlock()
	if delay > 0 {
		q.queue.AddAfter(key, delay)
		return
	}
	q.queue.Add(key)
}

func (q *writeQueue[K, V]) run(ctx context.Context) {
	go func() {
		<-ctx.Done()
		q.queue.ShutDown()
	}()
	wait.UntilWithContext(ctx, func(ctx context.Context) {
		for q.next(ctx) {
		}
	}, time.Second)
}

func (q *writeQueue[K, V]) next(ctx context.Context) bool {
	key, quit := q.queue.Get()
	if quit {
		return false
	}
	defer q.queue.Done(key)
	q.mu.Lock()
	value := q.desired[key]
	q.mu.Unlock()
	if err := q.write(ctx, key, value); err != nil {
		klog.FromContext(ctx).V(2).Info("Writing to the apiserver failed; retrying", "queue", q.name, "key", key, "err", err)
		q.queue.AddRateLimited(key)
		return true
	}
	q.queue.Forget(key)
	return true
}
