package lifecycle

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

func TestGroupStartsOnceAndStopsItsGoroutines(t *testing.T) {
	t.Parallel()
	var g Group
	if g.Go(func(context.Context) {}) {
		t.Fatal("Go before Start ran its function")
	}
	if err := g.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := g.Start(context.Background()); !errors.Is(err, ErrStarted) {
		t.Fatalf("second Start = %v, want ErrStarted", err)
	}
	var ended atomic.Int32
	for range 3 {
		g.Go(func(ctx context.Context) { <-ctx.Done(); ended.Add(1) })
	}
	if !g.Stop(10 * time.Second) {
		t.Fatal("Stop timed out")
	}
	if ended.Load() != 3 {
		t.Fatalf("%d goroutines ended, want 3", ended.Load())
	}
	if g.Go(func(context.Context) {}) {
		t.Fatal("Go after Stop ran its function")
	}
	if err := g.Start(context.Background()); !errors.Is(err, ErrStarted) {
		t.Fatalf("Start after Stop = %v, want ErrStarted", err)
	}
}

func TestDrainLetsWorkFinishBeforeCancelling(t *testing.T) {
	t.Parallel()
	var g Group
	if err := g.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	var cancelled atomic.Bool
	g.Go(func(ctx context.Context) {
		select {
		case <-release:
		case <-ctx.Done():
			cancelled.Store(true)
		}
	})
	close(release)
	if !g.Drain(10*time.Second, time.Second) {
		t.Fatal("Drain timed out")
	}
	if cancelled.Load() {
		t.Fatal("work was cancelled although it finished within the grace")
	}
}

func TestDrainCancelsWorkThatOutlivesTheGrace(t *testing.T) {
	t.Parallel()
	var g Group
	if err := g.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	g.Go(func(ctx context.Context) { <-ctx.Done() })
	if !g.Drain(time.Millisecond, 10*time.Second) {
		t.Fatal("work did not end after cancellation")
	}
}

func TestRetryCallsAgainAfterFailuresUntilCancelled(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var calls atomic.Int32
	done := make(chan struct{})
	go func() {
		defer close(done)
		Retry(ctx, nil, "test", Backoff{Min: time.Millisecond, Max: 2 * time.Millisecond}, func(context.Context) error {
			if calls.Add(1) == 5 {
				cancel()
			}
			return errors.New("down")
		})
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Retry did not return after its context ended")
	}
	if calls.Load() != 5 {
		t.Fatalf("fn called %d times, want 5", calls.Load())
	}
}
