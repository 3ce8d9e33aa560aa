package dataplane

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantplane/tenantplane/dataplane/pool"
	"github.com/tenantplane/tenantplane/dataplane/tenantdb"
	"github.com/tenantplane/tenantplane/internal/pgtest"
	"github.com/tenantplane/tenantplane/password"
	"github.com/tenantplane/tenantplane/provisioner"
	"github.com/tenantplane/tenantplane/tenant"
	"github.com/tenantplane/tenantplane/token"
	"github.com/tenantplane/tenantplane/web"
)

func TestMain(m *testing.M) {
	gin.SetMode(gin.TestMode)
	m.Run()
}

const (
	base          = "tenants.test"
	adminPassword = "correct horse battery"
)

// cheap are argon2id parameters that keep tests fast; hashing bounds are tested apart.
var cheap = password.Params{Memory: 1024, Time: 1, Threads: 1, KeyLen: 32, SaltLen: 16}

// env is what a dataplane test needs: a control database with the registry, a
// provisioner to make tenants, and a started server.
type env struct {
	t      testing.TB
	dbURL  string
	db     *pgxpool.Pool
	store  *tenant.Store
	prov   *provisioner.Provisioner
	ring   *token.KeyRing
	issuer *token.Issuer
	hasher *password.Hasher
	srv    *Server
	h      http.Handler
}

// setup makes a fresh control database and a started server; cfg tweaks the server's
// configuration.
func setup(t testing.TB, cfg func(*Config)) *env {
	t.Helper()
	ctx := context.Background()
	dbURL := pgtest.NewDatabase(t, pgtest.URL(t))
	if _, err := provisioner.MigrateShared(ctx, dbURL); err != nil {
		t.Fatalf("migrating registry: %v", err)
	}
	db := pgtest.Pool(t, dbURL)
	store := tenant.NewStore(db)
	prov, err := provisioner.New(store, provisioner.Config{Shards: []provisioner.Shard{{Name: "main", URL: dbURL}}, Parallel: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(prov.Close)
	ring, err := token.ParseKeyRing("k1:" + strings.Repeat("s", 40))
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, dbURL: dbURL, db: db, store: store, prov: prov, ring: ring,
		issuer: token.NewIssuer(ring, token.Config{}), hasher: password.NewHasher(cheap, 4)}
	c := Config{
		Control:    db,
		BaseDomain: base,
		Shards:     map[string]string{"main": dbURL},
		Throttle:   testThrottle,
		Logger:     slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})),
	}
	if cfg != nil {
		cfg(&c)
	}
	e.srv, err = New(c, store, e.issuer, e.hasher)
	if err != nil {
		t.Fatal(err)
	}
	// A test-only route reporting who the tenant's connections are, in both kinds of
	// unit of work.
	e.srv.engine.GET("/test/whoami", web.Handle(e.srv.log, e.srv.tenantMiddleware), web.Handle(e.srv.log, whoami))
	if err := e.srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.srv.Stop)
	e.h = e.srv.Handler()
	return e
}

func whoami(c *gin.Context) error {
	sc, err := tenantdb.ScopeFrom(c.Request.Context())
	if err != nil {
		return err
	}
	ctx := c.Request.Context()
	var a whoAnswer
	if err := sc.Read(ctx, func(db pool.DB) error { return a.Read.of(ctx, db) }); err != nil {
		return err
	}
	if err := sc.Write(ctx, func(db pool.DB) error { return a.Write.of(ctx, db) }); err != nil {
		return err
	}
	c.JSON(http.StatusOK, a)
	return nil
}

// whoAnswer is what /test/whoami reports of the tenant's read and write.
type whoAnswer struct {
	Read  binding `json:"read"`
	Write binding `json:"write"`
}

// binding is who a unit of work ran as, and how many columns the tenant's blogs table
// had for it, read through a statement whose result shape is that table's (b.*).
type binding struct {
	User    string `json:"user"`
	Schema  string `json:"schema"`
	Columns int    `json:"columns"`
}

// is reports whether the unit of work ran as tn's role on tn's schema.
func (b binding) is(tn *tenant.Tenant) bool { return b.User == tn.DBRole && b.Schema == tn.SchemaName }

// who decodes an answer of /test/whoami; one that does not decode is the zero answer,
// which matches no tenant. It never stops the test, so the traffic's goroutines use it.
func (r resp) who() whoAnswer {
	var a whoAnswer
	_ = json.Unmarshal(r.raw, &a)
	return a
}

func (b *binding) of(ctx context.Context, db pool.DB) error {
	rows, err := db.Query(ctx, `SELECT current_user::text, current_schema()::text, b.* FROM (SELECT) AS one LEFT JOIN blogs b ON true LIMIT 1`)
	if err != nil {
		return err
	}
	defer rows.Close()
	b.Columns = len(rows.FieldDescriptions()) - 2
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			return err
		}
		b.User, _ = vals[0].(string)
		b.Schema, _ = vals[1].(string)
	}
	return rows.Err()
}

// waitListening waits until the registry listener is connected.
func (e *env) waitListening() {
	e.t.Helper()
	for deadline := time.Now().Add(eventWait); time.Now().Before(deadline); {
		e.srv.res.mu.Lock()
		on := e.srv.res.listening
		e.srv.res.mu.Unlock()
		if on {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	e.t.Fatal("registry listener never connected")
}

// newTenants provisions active tenants (schema isolation) with an admin user
// admin@{slug}.example whose password is adminPassword.
func (e *env) newTenants(slugs ...string) []*tenant.Tenant {
	e.t.Helper()
	ctx := context.Background()
	hash, err := e.hasher.Hash(ctx, adminPassword)
	if err != nil {
		e.t.Fatal(err)
	}
	out := make([]*tenant.Tenant, len(slugs))
	errs := make([]error, len(slugs))
	var wg sync.WaitGroup
	for i, slug := range slugs {
		wg.Go(func() {
			reg, err := e.prov.Register(ctx, provisioner.CreateRequest{Slug: slug, AdminEmail: "admin@" + slug + ".example", AdminPasswordHash: hash})
			if err != nil {
				errs[i] = err
				return
			}
			t, err := e.prov.Provision(ctx, reg.ID)
			if err == nil && t.Status != tenant.StatusActive {
				err = fmt.Errorf("tenant %s is %s: %s", slug, t.Status, t.LastError)
			}
			out[i], errs[i] = t, err
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			e.t.Fatalf("provisioning: %v", err)
		}
	}
	return out
}

// req is one request to the dataplane.
type req struct {
	method, path string
	host         string // Host header; default none (127.0.0.1)
	tenant       string // X-Tenant header
	token        string // bearer token
	body         any    // JSON-encoded unless a string
	header       map[string]string
}

// resp is an answer.
type resp struct {
	status int
	raw    []byte
	header http.Header
}

func (r resp) json(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.raw, &m); err != nil {
		t.Fatalf("answer %d is not a JSON object: %q", r.status, r.raw)
	}
	return m
}

// code returns the error code of an error answer.
func (r resp) code() string {
	var b web.ErrorBody
	_ = json.Unmarshal(r.raw, &b)
	return b.Error.Code
}

func (e *env) do(r req) resp {
	return doOn(e.h, r)
}

func doOn(h http.Handler, r req) resp {
	var body io.Reader
	switch b := r.body.(type) {
	case nil:
	case string:
		body = strings.NewReader(b)
	case []byte:
		body = bytes.NewReader(b)
	default:
		j, _ := json.Marshal(b)
		body = bytes.NewReader(j)
	}
	hr := httptest.NewRequest(r.method, r.path, body)
	hr.Host = "127.0.0.1"
	if r.host != "" {
		hr.Host = r.host
	}
	if r.tenant != "" {
		hr.Header.Set("X-Tenant", r.tenant)
	}
	if r.token != "" {
		hr.Header.Set("Authorization", "Bearer "+r.token)
	}
	if body != nil {
		hr.Header.Set("Content-Type", "application/json")
	}
	for k, v := range r.header {
		hr.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, hr)
	return resp{status: w.Code, raw: w.Body.Bytes(), header: w.Header()}
}

func host(slug string) string { return slug + "." + base }

// login logs in at the tenant and returns the access and refresh tokens.
func (e *env) login(slug, email, pw string) (string, string) {
	e.t.Helper()
	r := e.do(req{method: "POST", path: "/api/v1/auth/token", host: host(slug), body: map[string]string{"email": email, "password": pw}})
	if r.status != http.StatusOK {
		e.t.Fatalf("login %s at %s: %d %s", email, slug, r.status, r.raw)
	}
	m := r.json(e.t)
	return m["access"].(string), m["refresh"].(string)
}

func (e *env) loginAdmin(slug string) (string, string) {
	return e.login(slug, "admin@"+slug+".example", adminPassword)
}

// mustDo runs a request and fails the test unless it answers want.
func (e *env) mustDo(r req, want int) resp {
	e.t.Helper()
	got := e.do(r)
	if got.status != want {
		e.t.Fatalf("%s %s: got %d %s, want %d", r.method, r.path, got.status, got.raw, want)
	}
	return got
}

// createUser makes a non-admin user at the tenant and returns its id.
func (e *env) createUser(slug, adminToken, email string) int64 {
	e.t.Helper()
	r := e.mustDo(req{method: "POST", path: "/api/v1/users", host: host(slug), token: adminToken,
		body: map[string]any{"email": email, "password": "user password 1"}}, http.StatusCreated)
	return int64(r.json(e.t)["id"].(float64))
}

// createBlog makes a blog at the tenant and returns its id.
func (e *env) createBlog(slug, tok, title string) int64 {
	e.t.Helper()
	r := e.mustDo(req{method: "POST", path: "/api/v1/blogs", host: host(slug), token: tok,
		body: map[string]any{"title": title, "description": "about " + title}}, http.StatusCreated)
	return int64(r.json(e.t)["id"].(float64))
}
