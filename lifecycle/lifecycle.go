// Package lifecycle runs the background work of the platform's long-lived components
// (servers, listeners, indexers, fan-out receivers) the same way everywhere: a component
// starts once and stops once, Stop is bounded, and goroutines started after Stop are
// refused rather than leaked. Retry is the one reconnect-with-backoff loop.
package lifecycle

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"
)

// ErrStarted is returned by Start when the group was already started or stopped.
var ErrStarted = errors.New("already started or stopped")

// Group is the background work of one component. The zero value is ready: call Start,
// then Go for each goroutine, then Stop (or Drain) once.
type Group struct {
	// mu guards started, stopped, ctx and cancel, and orders wg.Add before Stop's Wait.
	mu      sync.Mutex
	started bool
	stopped bool
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// Start begins the group's life under ctx: the context the goroutines receive is ctx,
// cancelled by Stop. It returns ErrStarted when the group was already started or stopped.
func (g *Group) Start(ctx context.Context) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.started || g.stopped {
		return ErrStarted
	}
	g.started = true
	g.ctx, g.cancel = context.WithCancel(ctx)
	return nil
}

// Context returns the group's context: cancelled by Stop, and context.Background before
// Start. Work that outlives a request (a hijacked WebSocket) lives in it.
func (g *Group) Context() context.Context {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ctx == nil {
		return context.Background()
	}
	return g.ctx
}

// Go runs fn in a goroutine that Stop waits for, with the group's context. It reports
// false, running nothing, before Start and once Stop has begun.
func (g *Group) Go(fn func(ctx context.Context)) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.started || g.stopped {
		return false
	}
	g.wg.Add(1)
	ctx := g.ctx
	go func() {
		defer g.wg.Done()
		fn(ctx)
	}()
	return true
}

// Stopping reports whether Stop or Drain has begun.
func (g *Group) Stopping() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.stopped
}

// Stop cancels the group's context and waits for its goroutines, at most timeout (no
// bound when timeout is 0). It reports whether they all ended. A second Stop only waits.
func (g *Group) Stop(timeout time.Duration) bool {
	g.markStopped()
	g.cancelCtx()
	return g.wait(timeout)
}

// Drain lets the goroutines finish on their own for up to grace, then cancels the
// group's context and waits at most timeout more. It reports whether they all ended.
func (g *Group) Drain(grace, timeout time.Duration) bool {
	g.markStopped()
	if g.wait(grace) {
		g.cancelCtx()
		return true
	}
	g.cancelCtx()
	return g.wait(timeout)
}

func (g *Group) markStopped() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.stopped = true
}

func (g *Group) cancelCtx() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.cancel != nil {
		g.cancel()
	}
}

func (g *Group) wait(timeout time.Duration) bool {
	done := make(chan struct{})
	go func() {
		g.wg.Wait()
		close(done)
	}()
	if timeout <= 0 {
		<-done
		return true
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}

// Backoff is how Retry paces its attempts: the first pause is Min, each failure doubles
// it up to Max. Zero values mean 100 ms and 5 s.
type Backoff struct {
	Min, Max time.Duration
}

// Retry calls fn until ctx ends. When fn returns an error it is logged (at warn, with
// what and the pause) and fn is called again after a pause that grows from b.Min to
// b.Max; an attempt that ran longer than b.Max before failing, or returned nil, starts
// the pauses over. Retry returns when ctx ends.
func Retry(ctx context.Context, log *slog.Logger, what string, b Backoff, fn func(ctx context.Context) error) {
	lo, hi := b.Min, b.Max
	if lo <= 0 {
		lo = 100 * time.Millisecond
	}
	if hi < lo {
		hi = max(lo, 5*time.Second)
	}
	pause := lo
	for ctx.Err() == nil {
		began := time.Now()
		err := fn(ctx)
		if ctx.Err() != nil {
			return
		}
		if err == nil || time.Since(began) > hi {
			pause = lo
		}
		if err != nil && log != nil {
			log.Warn(what+" failed; retrying", "error", err, "retry_in", pause.String())
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if err != nil {
			pause = min(pause*2, hi)
		}
	}
}
