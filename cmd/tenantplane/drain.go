package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/tenantplane/tenantplane/web"
)

// Shutdown defaults: the whole shutdown, from the signal to the exit, takes at most
// TENANTPLANE_SHUTDOWN_GRACE; the first TENANTPLANE_SHUTDOWN_DELAY of it the server
// keeps serving with /readyz failing, so load balancers stop sending requests before
// the listener closes.
const (
	defaultShutdownGrace = 10 * time.Second
	defaultShutdownDelay = 2 * time.Second
)

// drainer runs an HTTP server until its context ends, then shuts it down in bounded
// time: /readyz answers 503 at once, requests keep being served for the delay, then
// the listener closes and in-flight requests finish; whatever is still running when
// the grace ends is cut off.
type drainer struct {
	grace time.Duration // signal to exit, at most
	delay time.Duration // serving on with /readyz failing, before the listener closes
	log   *slog.Logger

	draining atomic.Bool
}

// newDrainer reads TENANTPLANE_SHUTDOWN_GRACE and TENANTPLANE_SHUTDOWN_DELAY ("0"
// turns the delay off). It returns a *configError for values that are not durations or
// a delay not shorter than the grace.
func newDrainer(get env, log *slog.Logger) (*drainer, error) {
	grace, err := positiveDuration(get, "TENANTPLANE_SHUTDOWN_GRACE", defaultShutdownGrace)
	if err != nil {
		return nil, err
	}
	delay := min(defaultShutdownDelay, grace/2)
	if v := get.first("TENANTPLANE_SHUTDOWN_DELAY"); v != "" {
		if delay, err = time.ParseDuration(v); err != nil || delay < 0 {
			return nil, &configError{"TENANTPLANE_SHUTDOWN_DELAY", fmt.Sprintf("must be a duration such as 0, 2s or 500ms, not %q", v)}
		}
	}
	if delay >= grace {
		return nil, &configError{"TENANTPLANE_SHUTDOWN_DELAY", fmt.Sprintf("%s must be shorter than TENANTPLANE_SHUTDOWN_GRACE (%s)", delay, grace)}
	}
	return &drainer{grace: grace, delay: delay, log: log}, nil
}

// handler answers /readyz with 503 "draining" once shutdown has begun and passes
// everything else to next.
func (d *drainer) handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/readyz" && d.draining.Load() {
			w.Header().Set("Content-Type", "application/json; charset=utf-8")
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusServiceUnavailable)
			_ = json.NewEncoder(w).Encode(web.ErrorBody{Error: web.ErrorDetail{Code: "draining", Message: "the server is shutting down"}})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// serve runs srv on ln until ctx ends, then drains it. It returns nil after a drain
// (also one cut short by the grace) and the server's error if serving fails.
func (d *drainer) serve(ctx context.Context, srv *http.Server, ln net.Listener) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serving: %w", err)
	case <-ctx.Done():
	}
	deadline := time.Now().Add(d.grace)
	d.draining.Store(true)
	// Answers from now on ask clients to reconnect, which takes them to other replicas.
	srv.SetKeepAlivesEnabled(false)
	d.log.Info("shutting down: /readyz fails, draining requests", "delay", d.delay.String(), "grace", d.grace.String())
	select {
	case <-time.After(d.delay):
	case err := <-errc:
		return fmt.Errorf("serving: %w", err)
	}
	shutdownCtx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	err := srv.Shutdown(shutdownCtx)
	if errors.Is(err, context.DeadlineExceeded) {
		d.log.Warn("shutdown grace over: closing the connections still busy", "grace", d.grace.String())
		_ = srv.Close()
		return nil
	}
	if err != nil {
		return fmt.Errorf("shutting down: %w", err)
	}
	d.log.Info("drained: every in-flight request answered")
	return nil
}
