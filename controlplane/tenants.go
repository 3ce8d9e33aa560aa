package controlplane

import (
	"context"
	"encoding/base64"
	"net/http"
	"regexp"
	"strconv"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/tenant"
	"github.com/tenantplane/tenantplane/web"
)

// List page sizes.
const (
	defaultPageSize = 50
	maxPageSize     = 100
)

// recentEvents is how many audit entries the tenant detail carries.
const recentEvents = 20

// page is the JSON shape of a list answer.
type page[T any] struct {
	Items      []T    `json:"items"`
	NextCursor string `json:"next_cursor"`
}

// cursorRE matches what a decoded cursor may hold: a slug.
var cursorRE = regexp.MustCompile(`^[a-z0-9-]{1,63}$`)

// listTenants answers a page of tenants ordered by slug: ?status= filters, ?limit= sizes
// the page (1 to 100, default 50) and ?cursor= continues after the previous page.
func (s *Server) listTenants(c *gin.Context) error {
	f := tenant.ListFilter{Limit: defaultPageSize}
	if v, ok := c.GetQuery("status"); ok {
		st, err := tenant.ParseStatus(v)
		if err != nil {
			return apperr.New(apperr.Invalid, "invalid_status", "%s", err.Error())
		}
		f.Status = st
	}
	if v, ok := c.GetQuery("limit"); ok {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxPageSize {
			return apperr.New(apperr.Invalid, "invalid_limit", "limit must be an integer between 1 and %d", maxPageSize)
		}
		f.Limit = n
	}
	if v, ok := c.GetQuery("cursor"); ok && v != "" {
		b, err := base64.RawURLEncoding.DecodeString(v)
		if err != nil || !cursorRE.Match(b) {
			return apperr.New(apperr.Invalid, "invalid_cursor", "cursor is not one this API returned")
		}
		f.After = string(b)
	}
	ts, next, err := s.store.List(c.Request.Context(), f)
	if err != nil {
		return err
	}
	out := page[*tenant.Tenant]{Items: ts}
	if out.Items == nil {
		out.Items = []*tenant.Tenant{}
	}
	if next != "" {
		out.NextCursor = base64.RawURLEncoding.EncodeToString([]byte(next))
	}
	c.JSON(http.StatusOK, out)
	return nil
}

// tenantDetail is a tenant with its custom domains and its latest audit entries.
type tenantDetail struct {
	*tenant.Tenant
	Domains []tenant.Domain `json:"domains"`
	Events  []tenant.Event  `json:"events"`
}

// getTenant answers a tenant with its domains and recent audit entries, newest first.
func (s *Server) getTenant(c *gin.Context) error {
	t, err := s.tenantBySlug(c)
	if err != nil {
		return err
	}
	ctx := c.Request.Context()
	domains, err := s.store.Domains(ctx, t.ID)
	if err != nil {
		return err
	}
	events, err := s.store.Events(ctx, t.ID)
	if err != nil {
		return err
	}
	recent := make([]tenant.Event, 0, min(len(events), recentEvents))
	for i := len(events) - 1; i >= 0 && len(recent) < recentEvents; i-- {
		recent = append(recent, events[i])
	}
	if domains == nil {
		domains = []tenant.Domain{}
	}
	c.JSON(http.StatusOK, tenantDetail{Tenant: t, Domains: domains, Events: recent})
	return nil
}

// planRE is the shape of a plan name.
var planRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// patchTenant changes a tenant's name, plan and/or status (active ⇄ suspended). Every
// field is checked before anything changes; a status the tenant already has is kept.
func (s *Server) patchTenant(c *gin.Context) error {
	var req struct {
		Name   *string `json:"name"`
		Plan   *string `json:"plan"`
		Status *string `json:"status"`
	}
	if err := web.DecodeJSON(c, &req, maxBody); err != nil {
		return err
	}
	if req.Name == nil && req.Plan == nil && req.Status == nil {
		return apperr.New(apperr.Invalid, "invalid", "nothing to change: give name, plan or status")
	}
	if req.Name != nil {
		name := strings.TrimSpace(*req.Name)
		if name == "" {
			return apperr.New(apperr.Invalid, "invalid_name", "name must not be empty")
		}
		if err := tenant.ValidateName(name); err != nil {
			return err
		}
		req.Name = &name
	}
	if req.Plan != nil && !planRE.MatchString(*req.Plan) {
		return apperr.New(apperr.Invalid, "invalid_plan", "plan must be 1-63 characters of a-z, 0-9, _ and -, starting with a letter or digit")
	}
	if req.Status != nil && *req.Status != string(tenant.StatusActive) && *req.Status != string(tenant.StatusSuspended) {
		return apperr.New(apperr.Invalid, "invalid_status", "status can be changed to %q or %q only", tenant.StatusActive, tenant.StatusSuspended)
	}
	t, err := s.tenantBySlug(c)
	if err != nil {
		return err
	}
	ctx := c.Request.Context()
	if req.Status != nil && string(t.Status) != *req.Status {
		if *req.Status == string(tenant.StatusSuspended) {
			t, err = s.prov.Suspend(ctx, t.Slug, actor(c))
		} else {
			t, err = s.prov.Resume(ctx, t.Slug, actor(c))
		}
		if err != nil {
			return err
		}
	}
	if req.Name != nil || req.Plan != nil {
		t, err = s.store.Update(ctx, t.Slug, tenant.Patch{Name: req.Name, Plan: req.Plan, Actor: actor(c)})
		if err != nil {
			return err
		}
	}
	c.JSON(http.StatusOK, t)
	return nil
}

// deleteTenant schedules a tenant for purge after DeleteGrace and answers 202 with it.
func (s *Server) deleteTenant(c *gin.Context) error {
	return s.transition(c, http.StatusAccepted, func(ctx context.Context, slug string) (*tenant.Tenant, error) {
		return s.prov.Delete(ctx, slug, actor(c), s.cfg.DeleteGrace)
	})
}

// restoreTenant brings back a tenant pending deletion within its grace period.
func (s *Server) restoreTenant(c *gin.Context) error {
	return s.transition(c, http.StatusOK, func(ctx context.Context, slug string) (*tenant.Tenant, error) {
		return s.prov.Restore(ctx, slug, actor(c))
	})
}

// suspendTenant stops serving an active tenant.
func (s *Server) suspendTenant(c *gin.Context) error {
	return s.transition(c, http.StatusOK, func(ctx context.Context, slug string) (*tenant.Tenant, error) {
		return s.prov.Suspend(ctx, slug, actor(c))
	})
}

// resumeTenant serves a suspended tenant again.
func (s *Server) resumeTenant(c *gin.Context) error {
	return s.transition(c, http.StatusOK, func(ctx context.Context, slug string) (*tenant.Tenant, error) {
		return s.prov.Resume(ctx, slug, actor(c))
	})
}

// transition runs a lifecycle change on the tenant named in the path and answers the
// tenant with status.
func (s *Server) transition(c *gin.Context, status int, fn func(context.Context, string) (*tenant.Tenant, error)) error {
	slug := c.Param("slug")
	if tenant.ValidateSlug(slug) != nil {
		return apperr.New(apperr.NotFound, "tenant_not_found", "tenant not found")
	}
	t, err := fn(c.Request.Context(), slug)
	if err != nil {
		return err
	}
	c.JSON(status, t)
	return nil
}

// retryTenant resumes provisioning of a failed or interrupted tenant in the background
// and waits up to SignupWait: 200 with the tenant (active, or failed again with its
// last_error) when it ended, 202 with Location while it is still provisioning.
func (s *Server) retryTenant(c *gin.Context) error {
	cur, err := s.tenantBySlug(c)
	if err != nil {
		return err
	}
	who := actor(c)
	t, err := s.awaitProvisioning(c.Request.Context(), cur.ID, func(bg context.Context) (*tenant.Tenant, error) {
		return s.prov.Retry(bg, cur.Slug, who)
	})
	if err != nil {
		return err
	}
	if t == nil {
		t = cur
	}
	if t.Status == tenant.StatusProvisioning {
		c.Header("Location", statusLocation(t.Slug))
		c.JSON(http.StatusAccepted, t)
		return nil
	}
	c.JSON(http.StatusOK, t)
	return nil
}

// listDomains answers the tenant's custom domains.
func (s *Server) listDomains(c *gin.Context) error {
	t, err := s.tenantBySlug(c)
	if err != nil {
		return err
	}
	ds, err := s.store.Domains(c.Request.Context(), t.ID)
	if err != nil {
		return err
	}
	if ds == nil {
		ds = []tenant.Domain{}
	}
	c.JSON(http.StatusOK, page[tenant.Domain]{Items: ds})
	return nil
}

// addDomain routes a custom domain to the tenant: 201 with it, 409 (domain_taken) when
// it is routed already, 400 for a bad hostname or one under the platform's base domain.
func (s *Server) addDomain(c *gin.Context) error {
	var req struct {
		Domain  string `json:"domain"`
		Primary bool   `json:"primary"`
	}
	if err := web.DecodeJSON(c, &req, maxBody); err != nil {
		return err
	}
	domain, err := normalizeDomain(req.Domain)
	if err != nil {
		return err
	}
	base := strings.ToLower(strings.TrimSuffix(s.cfg.BaseDomain, "."))
	if domain == base || strings.HasSuffix(domain, "."+base) {
		return apperr.New(apperr.Invalid, "reserved_domain", "%q is under the platform domain %q; tenants get {slug}.%s already", domain, base, base)
	}
	t, err := s.tenantBySlug(c)
	if err != nil {
		return err
	}
	d, err := s.store.AddDomain(c.Request.Context(), t.ID, domain, req.Primary)
	if err != nil {
		return err
	}
	if err := s.store.AddEvent(c.Request.Context(), t.ID, "add_domain", actor(c), domain); err != nil {
		s.log.Warn("recording domain in audit log", "error", err)
	}
	c.JSON(http.StatusCreated, d)
	return nil
}

// removeDomain stops routing a custom domain to the tenant: 204, or 404 when it was not
// routed there.
func (s *Server) removeDomain(c *gin.Context) error {
	t, err := s.tenantBySlug(c)
	if err != nil {
		return err
	}
	domain, err := normalizeDomain(c.Param("domain"))
	if err != nil {
		return apperr.NotFoundf("domain not found")
	}
	if err := s.store.RemoveDomain(c.Request.Context(), t.ID, domain); err != nil {
		return err
	}
	if err := s.store.AddEvent(c.Request.Context(), t.ID, "remove_domain", actor(c), domain); err != nil {
		s.log.Warn("recording domain in audit log", "error", err)
	}
	c.Status(http.StatusNoContent)
	return nil
}

// labelRE is one DNS label: letters, digits and inner dashes, 1 to 63 characters.
var labelRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// normalizeDomain lowercases a hostname, drops a trailing dot and checks it: ASCII
// (punycode for international names), at least two labels, a top-level label that is
// not all digits (no IP addresses), at most 253 characters.
func normalizeDomain(d string) (string, error) {
	d = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(d)), ".")
	bad := func(why string) error {
		return apperr.New(apperr.Invalid, "invalid_domain", "%q is not a valid domain name: %s", d, why)
	}
	if d == "" {
		return "", apperr.New(apperr.Invalid, "invalid_domain", "domain is required")
	}
	if len(d) > 253 {
		return "", bad("longer than 253 characters")
	}
	labels := strings.Split(d, ".")
	if len(labels) < 2 {
		return "", bad("it needs at least two labels, like example.com")
	}
	for _, l := range labels {
		if !labelRE.MatchString(l) {
			return "", bad("each label must be 1-63 characters of a-z, 0-9 and inner dashes (use punycode for international names)")
		}
	}
	if strings.Trim(labels[len(labels)-1], "0123456789") == "" {
		return "", bad("IP addresses are not domains")
	}
	return d, nil
}
