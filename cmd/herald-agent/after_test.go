package main

import (
	"context"
	"testing"
)

// TestAfterHoldsAnnouncingUntilForwarding: the speaker must not start (join
// the membership, open BGP sessions) before the node forwards, and a
// shutdown while it waits ends it quietly.
func TestAfterHoldsAnnouncingUntilForwarding(t *testing.T) {
	ready := make(chan struct{})
	started := 0
	run := func(context.Context) error {
		select {
		case <-ready:
		default:
			t.Error("the speaker started before forwarding was ready")
		}
		started++
		return nil
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := after(ready, "the first sync", run)(ctx); err != nil {
		t.Errorf("shut down while waiting: %v, want nil", err)
	}
	if started != 0 {
		t.Fatal("the speaker started although forwarding never became ready")
	}

	done := make(chan error, 1)
	go func() { done <- after(ready, "the first sync", run)(context.Background()) }()
	close(ready)
	if err := <-done; err != nil || started != 1 {
		t.Fatalf("once forwarding was ready: err %v, started %d times, want nil, 1", err, started)
	}

	if err := after(nil, "nothing", run)(context.Background()); err != nil || started != 2 {
		t.Errorf("without forwarding the speaker must start at once: err %v, started %d times", err, started)
	}
}
