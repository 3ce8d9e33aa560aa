package controlplane

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/email"
	"github.com/tenantplane/tenantplane/password"
	"github.com/tenantplane/tenantplane/provisioner"
	"github.com/tenantplane/tenantplane/tenant"
	"github.com/tenantplane/tenantplane/web"
)

// signupRequest is the body of POST /api/v1/tenants.
type signupRequest struct {
	Slug          string `json:"slug"`
	Name          string `json:"name"`
	AdminEmail    string `json:"admin_email"`
	AdminPassword string `json:"admin_password"`
	Isolation     string `json:"isolation"`
}

// maxIdempotencyKey is the longest Idempotency-Key accepted.
const maxIdempotencyKey = 200

var errShuttingDown = apperr.New(apperr.Unavailable, "shutting_down", "the control plane is shutting down; retry in a moment")

// signup registers a tenant and provisions it in the background, answering 201 when it
// is active within SignupWait, 202 while it is still provisioning, and 503
// (provisioning_failed) when provisioning failed.
func (s *Server) signup(c *gin.Context) error {
	if err := s.signupThrottle.check(c, c.ClientIP(), "signup"); err != nil {
		return err
	}
	key, err := idempotencyKey(c)
	if err != nil {
		return err
	}
	raw, err := readBody(c)
	if err != nil {
		return err
	}
	if key != "" {
		return s.idempotentSignup(c, key, raw)
	}
	status, t, _, err := s.createTenant(c, raw)
	if err != nil {
		return err
	}
	body, err := json.Marshal(public(t))
	if err != nil {
		return fmt.Errorf("encoding tenant: %w", err)
	}
	writeAnswer(c, status, body, false)
	return nil
}

// createTenant runs a signup: validate, hash the admin password, register, provision in
// the background and wait. It returns the HTTP status and the tenant, or an error, and
// whether a tenant was registered (the request changed the registry).
func (s *Server) createTenant(c *gin.Context, raw []byte) (int, *tenant.Tenant, bool, error) {
	ctx := c.Request.Context()
	c.Request.Body = io.NopCloser(bytes.NewReader(raw))
	c.Request.ContentLength = int64(len(raw))
	var req signupRequest
	if err := web.DecodeJSON(c, &req, maxBody); err != nil {
		return 0, nil, false, err
	}
	if err := validateSignup(&req); err != nil {
		return 0, nil, false, err
	}
	if s.bg.Stopping() {
		return 0, nil, false, errShuttingDown
	}
	// A taken slug is refused before the costly hashing; Register checks again.
	if _, err := s.store.Get(ctx, req.Slug); err == nil {
		return 0, nil, false, apperr.New(apperr.Conflict, "slug_taken", "a tenant with this slug already exists")
	} else if !errors.Is(err, apperr.ErrNotFound) {
		return 0, nil, false, fmt.Errorf("checking slug: %w", err)
	}
	hash, err := s.hasher.Hash(ctx, req.AdminPassword)
	if err != nil {
		return 0, nil, false, fmt.Errorf("hashing admin password: %w", err)
	}
	t, err := s.prov.Register(ctx, provisioner.CreateRequest{
		Slug:              req.Slug,
		Name:              req.Name,
		Isolation:         tenant.Isolation(req.Isolation),
		AdminEmail:        req.AdminEmail,
		AdminPasswordHash: hash,
		Actor:             "signup",
	})
	if err != nil {
		return 0, nil, false, err
	}
	// The background run outlives this handler, which reassigns t below: it keeps its
	// own copy of the id.
	id := t.ID
	got, err := s.awaitProvisioning(ctx, id, func(bg context.Context) (*tenant.Tenant, error) {
		return s.prov.Provision(bg, id)
	})
	if err != nil {
		// The tenant is registered and stays in provisioning: the next Start or an
		// operator's retry finishes it. The client polls the status endpoint.
		s.log.Error("provisioning after signup", "tenant", t.Slug, "error", err)
	}
	if got != nil {
		t = got
	}
	switch t.Status {
	case tenant.StatusProvisioning:
		return http.StatusAccepted, t, true, nil
	case tenant.StatusFailed:
		return 0, t, true, provisioningFailed(t)
	}
	return http.StatusCreated, t, true, nil
}

// provisioningFailed is the client's view of a failed provisioning: the step that failed,
// never the internal detail (which the registry and the logs keep).
func provisioningFailed(t *tenant.Tenant) error {
	step, _, _ := strings.Cut(strings.TrimPrefix(t.LastError, "step "), ":")
	if step == "" || strings.ContainsAny(step, " \n") {
		step = "unknown"
	}
	return apperr.New(apperr.Unavailable, "provisioning_failed",
		"provisioning tenant %q failed at step %s; the platform operators can retry it", t.Slug, step)
}

// validateSignup checks the request fields, normalising the name and isolation.
func validateSignup(r *signupRequest) error {
	if err := tenant.ValidateSlug(r.Slug); err != nil {
		return err
	}
	r.Name = strings.TrimSpace(r.Name)
	if err := tenant.ValidateName(r.Name); err != nil {
		return err
	}
	r.AdminEmail = strings.TrimSpace(r.AdminEmail)
	if err := email.Validate(r.AdminEmail); err != nil {
		return err
	}
	if err := password.Validate(r.AdminPassword, r.AdminEmail); err != nil {
		return err
	}
	iso, err := tenant.ParseIsolation(r.Isolation)
	if err != nil {
		return apperr.New(apperr.Invalid, "invalid_isolation", "isolation must be %q or %q, not %q",
			tenant.IsolationSchema, tenant.IsolationDatabase, r.Isolation)
	}
	r.Isolation = string(iso)
	return nil
}

// outcome is the result of a background provisioning run.
type outcome struct {
	t   *tenant.Tenant
	err error
}

// awaitProvisioning runs fn, a provisioning run of the tenant with the id, in the
// background and waits up to SignupWait for the tenant to leave provisioning. It
// returns the tenant as last seen (nil if never read) and the error fn returned in
// time, if any. A run cancelled by Stop, or still going when the wait ends, is not an
// error: the tenant is returned in provisioning.
func (s *Server) awaitProvisioning(ctx context.Context, id string, fn func(context.Context) (*tenant.Tenant, error)) (*tenant.Tenant, error) {
	res := make(chan outcome, 1)
	if !s.bg.Go(func(bg context.Context) {
		select {
		case s.provSlots <- struct{}{}:
		case <-bg.Done():
			res <- outcome{nil, bg.Err()}
			return
		}
		defer func() { <-s.provSlots }()
		t, err := fn(bg)
		if err != nil && bg.Err() == nil && apperr.KindOf(err) == apperr.Internal {
			s.log.Error("provisioning run failed", "tenant_id", id, "error", err)
		}
		res <- outcome{t, err}
	}) {
		return s.latest(ctx, id), nil
	}
	timer := time.NewTimer(s.cfg.SignupWait)
	defer timer.Stop()
	var poll <-chan time.Time
	for {
		select {
		case o := <-res:
			if o.err != nil {
				if errors.Is(o.err, context.Canceled) || s.bg.Context().Err() != nil {
					return s.latest(ctx, id), nil
				}
				return nil, o.err
			}
			if o.t != nil && o.t.Status != tenant.StatusProvisioning {
				return o.t, nil
			}
			// Another process holds the tenant's provisioning lock: watch the registry.
			ticker := time.NewTicker(100 * time.Millisecond)
			defer ticker.Stop()
			poll = ticker.C
		case <-poll:
			if t := s.latest(ctx, id); t != nil && t.Status != tenant.StatusProvisioning {
				return t, nil
			}
		case <-timer.C:
			return s.latest(ctx, id), nil
		case <-ctx.Done():
			return s.latest(ctx, id), nil
		}
	}
}

// latest reads the tenant with the id, nil when it cannot.
func (s *Server) latest(ctx context.Context, id string) *tenant.Tenant {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	t, err := s.store.GetByID(ctx, id)
	if err != nil {
		s.log.Warn("reading tenant", "tenant_id", id, "error", err)
		return nil
	}
	return t
}

// statusLocation is the polling URL of a tenant still being provisioned.
func statusLocation(slug string) string { return "/api/v1/tenants/" + slug + "/status" }

// writeAnswer writes a signup answer body as is, so a replay is byte-for-byte the first
// answer. A 202 carries the polling URL in Location.
func writeAnswer(c *gin.Context, status int, body []byte, replayed bool) {
	if status == http.StatusAccepted {
		var t struct {
			Slug string `json:"slug"`
		}
		if json.Unmarshal(body, &t) == nil && t.Slug != "" {
			c.Header("Location", statusLocation(t.Slug))
		}
	}
	if replayed {
		c.Header("Idempotent-Replayed", "true")
	}
	c.Data(status, "application/json; charset=utf-8", body)
}

// idempotencyKey returns the request's Idempotency-Key header ("" when absent), or an
// Invalid error when it is too long or not printable ASCII.
func idempotencyKey(c *gin.Context) (string, error) {
	key := c.GetHeader("Idempotency-Key")
	if key == "" {
		return "", nil
	}
	if len(key) > maxIdempotencyKey {
		return "", apperr.New(apperr.Invalid, "invalid_idempotency_key", "Idempotency-Key must be at most %d characters", maxIdempotencyKey)
	}
	for i := 0; i < len(key); i++ {
		if key[i] < 0x21 || key[i] > 0x7e {
			return "", apperr.New(apperr.Invalid, "invalid_idempotency_key", "Idempotency-Key must be printable ASCII without spaces")
		}
	}
	return key, nil
}

// readBody reads the whole request body, up to maxBody bytes.
func readBody(c *gin.Context) ([]byte, error) {
	if c.Request.ContentLength > maxBody {
		return nil, apperr.New(apperr.TooLarge, "body_too_large", "request body is larger than %d bytes", maxBody)
	}
	raw, err := io.ReadAll(http.MaxBytesReader(c.Writer, c.Request.Body, maxBody))
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return nil, apperr.New(apperr.TooLarge, "body_too_large", "request body is larger than %d bytes", maxBody)
	}
	if err != nil {
		return nil, web.BodyReadError(err)
	}
	return raw, nil
}

// requestHash fingerprints a signup body for its idempotency key. The key salts the
// hash so that equal bodies under different keys leave unrelated fingerprints.
func requestHash(key string, body []byte) string {
	h := sha256.New()
	h.Write([]byte(key))
	h.Write([]byte{0})
	h.Write(body)
	return hex.EncodeToString(h.Sum(nil))
}

// idempotentSignup runs a signup under an Idempotency-Key. A placeholder row reserves the
// key first, so of concurrent requests with one key exactly one runs the signup; the
// others wait for its answer and replay it. The same key with another body is refused
// (422 idempotency_key_reused).
func (s *Server) idempotentSignup(c *gin.Context, key string, raw []byte) error {
	ctx := c.Request.Context()
	hash := requestHash(key, raw)
	deadline := s.now().Add(s.cfg.SignupWait + 10*time.Second)
	for {
		reserved, err := s.platform.ReserveKey(ctx, key, hash)
		if err != nil {
			return err
		}
		if reserved {
			return s.runReserved(c, key, raw)
		}
		done, err := s.replay(c, key, hash, deadline)
		if done || err != nil {
			return err
		}
		// The request holding the key gave it up: try to reserve it again.
	}
}

// runReserved runs the signup for a reserved key and records its answer. An answer that
// changed nothing and may succeed later (a 5xx before registration) frees the key
// instead, so that a retry with it runs again.
func (s *Server) runReserved(c *gin.Context, key string, raw []byte) error {
	bg, cancel := context.WithTimeout(context.WithoutCancel(c.Request.Context()), 10*time.Second)
	defer cancel()
	status, t, registered, err := s.createTenant(c, raw)
	var body []byte
	if err != nil {
		st, code, msg := web.Status(err)
		if st >= 500 && !registered {
			if ferr := s.platform.FreeKey(bg, key); ferr != nil {
				s.log.Error("freeing idempotency key", "error", ferr)
			}
			return err
		}
		if st == http.StatusInternalServerError {
			s.log.Error("signup failed", "request_id", web.RequestID(c), "error", err)
		}
		status = st
		body, err = json.Marshal(web.ErrorBody{Error: web.ErrorDetail{Code: code, Message: msg}})
	} else {
		body, err = json.Marshal(public(t))
	}
	if err != nil {
		return fmt.Errorf("encoding answer: %w", err)
	}
	if err := s.platform.RecordAnswer(bg, key, status, body); err != nil {
		s.log.Error("recording idempotent answer", "error", err)
		_ = s.platform.FreeKey(bg, key)
	}
	writeAnswer(c, status, body, false)
	return nil
}

var errKeyReused = apperr.New(apperr.Unprocessable, "idempotency_key_reused", "this Idempotency-Key was used with a different request body")

// replay answers with the recorded answer of key, waiting until deadline for a request
// still running with it. It reports done=false when the key is no longer reserved.
func (s *Server) replay(c *gin.Context, key, hash string, deadline time.Time) (bool, error) {
	ctx := c.Request.Context()
	for {
		a, err := s.platform.KeyAnswer(ctx, key)
		if errors.Is(err, apperr.ErrNotFound) {
			return false, nil
		}
		if err != nil {
			return true, err
		}
		if a.RequestHash != hash {
			return true, errKeyReused
		}
		if a.Status != 0 {
			writeAnswer(c, a.Status, a.Body, true)
			return true, nil
		}
		if s.now().After(deadline) {
			c.Header("Retry-After", "1")
			return true, apperr.New(apperr.Conflict, "idempotency_key_in_progress", "a request with this Idempotency-Key is still being processed; retry shortly")
		}
		select {
		case <-ctx.Done():
			return true, fmt.Errorf("waiting for idempotent answer: %w", ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// cleanIdempotencyKeys deletes expired idempotency keys, and placeholders abandoned by a
// stopped process, now and then every few minutes until ctx ends.
func (s *Server) cleanIdempotencyKeys(ctx context.Context) {
	every := min(s.cfg.IdempotencyTTL/4, 10*time.Minute)
	abandoned := max(10*time.Minute, 2*s.cfg.SignupWait+time.Minute)
	ticker := time.NewTicker(every)
	defer ticker.Stop()
	for {
		if _, err := s.platform.DeleteExpiredKeys(ctx, s.cfg.IdempotencyTTL, abandoned); err != nil && ctx.Err() == nil {
			s.log.Warn("deleting expired idempotency keys", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

// publicTenant is what anyone may learn of a tenant: the answer of the anonymous signup
// and of the signup status endpoint. It never carries where or how the tenant is stored
// (schema, role, shard, search index) nor provisioning detail beyond a public message;
// the platform-token routes answer the full tenant.Tenant.
type publicTenant struct {
	Slug      string        `json:"slug"`
	Name      string        `json:"name"`
	Status    tenant.Status `json:"status"`
	Message   string        `json:"message"`
	CreatedAt time.Time     `json:"created_at"`
}

// public returns the public view of t.
func public(t *tenant.Tenant) publicTenant {
	return publicTenant{Slug: t.Slug, Name: t.Name, Status: t.Status, Message: statusMessages[t.Status], CreatedAt: t.CreatedAt}
}

var statusMessages = map[tenant.Status]string{
	tenant.StatusProvisioning:    "the tenant is being provisioned",
	tenant.StatusActive:          "the tenant is ready",
	tenant.StatusSuspended:       "the tenant is suspended",
	tenant.StatusPendingDeletion: "the tenant is scheduled for deletion",
	tenant.StatusFailed:          "provisioning failed; the platform operators can retry it",
}

// signupStatus answers the public status of a tenant, for signup polling.
func (s *Server) signupStatus(c *gin.Context) error {
	t, err := s.tenantBySlug(c)
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, public(t))
	return nil
}

// tenantBySlug returns the live tenant named by the :slug path parameter, NotFound for
// anything that cannot be a slug.
func (s *Server) tenantBySlug(c *gin.Context) (*tenant.Tenant, error) {
	slug := c.Param("slug")
	if tenant.ValidateSlug(slug) != nil {
		return nil, apperr.New(apperr.NotFound, "tenant_not_found", "tenant not found")
	}
	return s.store.Get(c.Request.Context(), slug)
}
