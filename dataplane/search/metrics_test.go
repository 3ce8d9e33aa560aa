package search

import (
	"net/http/httptest"
	"regexp"
	"strconv"
	"testing"

	"github.com/tenantplane/tenantplane/metrics"
)

func TestIndexerRecordsOutboxLag(t *testing.T) {
	t.Parallel()
	e := setupOpenSearch(t, strategies[0])
	d := e.newTenant(t, "lag")
	e.indexer.Stop()
	reg := metrics.New()
	e.indexer.metrics = reg
	lag := func() float64 {
		t.Helper()
		rec := httptest.NewRecorder()
		reg.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		m := regexp.MustCompile(`(?m)^tenantplane_search_outbox_lag_seconds (\S+)$`).FindStringSubmatch(rec.Body.String())
		if m == nil {
			t.Fatalf("no outbox lag in:\n%s", rec.Body.String())
		}
		v, err := strconv.ParseFloat(m[1], 64)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	d.create(t, "Pending", "Waits in the outbox.")
	if err := e.indexer.sweep(e.ctx); err != nil {
		t.Fatal(err)
	}
	if got := lag(); got <= 0 {
		t.Errorf("lag after a sweep that found an event = %v, want > 0", got)
	}
	if err := e.indexer.sweep(e.ctx); err != nil {
		t.Fatal(err)
	}
	if got := lag(); got != 0 {
		t.Errorf("lag after a sweep of an empty outbox = %v, want 0", got)
	}
}
