package search

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tenantplane/tenantplane/dataplane/pool"
	"github.com/tenantplane/tenantplane/lifecycle"
	"github.com/tenantplane/tenantplane/tenant"
)

// TestIndexerStartsOnceAndStopsInBoundedTime checks the indexer's lifecycle without a
// cluster: a second Start is refused while it runs, and Stop returns within its
// timeout even when a sweep is stuck in a call that ignores cancellation.
func TestIndexerStartsOnceAndStopsInBoundedTime(t *testing.T) {
	t.Parallel()
	o, err := NewOpenSearch(OpenSearchConfig{Addresses: []string{"http://127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(o.Close)
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	ix, err := NewIndexer(IndexerConfig{
		Search: o,
		Tenants: TenantSourceFunc(func(context.Context) ([]*tenant.Tenant, error) {
			select {
			case entered <- struct{}{}:
			default:
			}
			<-release // stuck, deaf to its context
			return nil, nil
		}),
		Tx: TransactorFunc(func(context.Context, *tenant.Tenant, func(pool.DB) error) error {
			return errors.New("not used")
		}),
		StopTimeout: 50 * time.Millisecond,
		Logger:      testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := ix.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := ix.Start(ctx); !errors.Is(err, lifecycle.ErrStarted) {
		t.Fatalf("second Start = %v, want lifecycle.ErrStarted", err)
	}
	select {
	case <-entered:
	case <-time.After(time.Minute):
		t.Fatal("the indexer never swept")
	}
	stopped := make(chan struct{})
	go func() {
		ix.Stop()
		ix.Stop() // a second Stop is harmless
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(time.Minute):
		t.Fatal("Stop did not return while a sweep was stuck")
	}
	if err := ix.Start(ctx); err != nil {
		t.Fatalf("Start after Stop = %v, want a restart", err)
	}
	ix.Stop()
}
