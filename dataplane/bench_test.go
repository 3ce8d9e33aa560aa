package dataplane

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"

	"github.com/tenantplane/tenantplane/tenant"
)

// BenchmarkBlogGet serves GET /api/v1/blogs/{id} in process (no network): the
// dataplane's own cost per request, database round trip included, in each pool mode.
func BenchmarkBlogGet(b *testing.B) {
	for _, mode := range []tenant.PoolMode{tenant.PoolShared, tenant.PoolDedicated} {
		b.Run(string(mode), func(b *testing.B) {
			e := setup(b, func(c *Config) { c.PoolMode = mode })
			e.newTenants("bench")
			tok, _ := e.loginAdmin("bench")
			id := e.createBlog("bench", tok, "benchmark")
			path := "/api/v1/blogs/" + strconv.FormatInt(id, 10)
			b.ReportAllocs()
			b.SetParallelism(8) // like concurrent clients: the pool, not the benchmark, is the limit
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					r := httptest.NewRequest("GET", path, nil)
					r.Host = host("bench")
					r.Header.Set("Authorization", "Bearer "+tok)
					w := httptest.NewRecorder()
					e.h.ServeHTTP(w, r)
					if w.Code != http.StatusOK {
						b.Fatalf("status %d", w.Code)
					}
				}
			})
		})
	}
}
