package controlplane

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/provisioner"
	"github.com/tenantplane/tenantplane/tenant"
	"github.com/tenantplane/tenantplane/web"
)

// defaultImportMax is the largest archive POST /api/v1/tenants/import takes by default.
const defaultImportMax = 1 << 30

// mobilityRoutes registers the export, import, clone and move routes on the
// authenticated group.
func (s *Server) mobilityRoutes(admin gin.IRouter) {
	h := s.handle
	admin.GET("/tenants/:slug/export", h(s.exportTenant))
	admin.POST("/tenants/:slug/clone", h(s.cloneTenant))
	admin.POST("/tenants/import", h(s.importTenant))
	admin.POST("/tenants/:slug/move", h(s.moveTenant))
	admin.GET("/tenants/:slug/move", h(s.getMove))
	admin.DELETE("/tenants/:slug/move", h(s.abortMove))
}

// lazyHeaders sets the archive download's headers on the first write, so that an error
// found before any byte of the archive is still answered as JSON.
type lazyHeaders struct {
	c        *gin.Context
	filename string
}

func (w *lazyHeaders) Write(p []byte) (int, error) {
	if !w.c.Writer.Written() {
		hdr := w.c.Writer.Header()
		hdr.Set("Content-Type", "application/octet-stream")
		hdr.Set("Content-Disposition", `attachment; filename="`+w.filename+`"`)
		hdr.Set("Cache-Control", "no-store")
		w.c.Status(http.StatusOK)
	}
	return w.c.Writer.Write(p)
}

// exportTenant streams the tenant's archive (see streamExport).
func (s *Server) exportTenant(c *gin.Context) error { return s.streamExport(c, "over the API") }

// streamExport answers with the archive of the tenant the path names (encrypted with
// the configured key, if any), audited with the signed-in user and detail: the API's
// and the panel's download. An error before the first byte is returned; one once the
// archive has begun cuts it short, which every reader refuses.
func (s *Server) streamExport(c *gin.Context, detail string) error {
	t, err := s.tenantBySlug(c)
	if err != nil {
		return err
	}
	name := t.Slug + "-" + s.now().UTC().Format("20060102T150405Z") + ".tpa"
	_, err = s.prov.Export(c.Request.Context(), t.Slug, &lazyHeaders{c: c, filename: name},
		provisioner.ExportOptions{Key: s.cfg.ArchiveKey, Actor: actor(c), Detail: detail})
	if err != nil && c.Writer.Written() {
		s.log.Error("export cut short", "tenant", t.Slug, "error", err)
		c.Abort()
		return nil
	}
	return err
}

// importTenant creates a tenant from the archive in the request body (streamed, at
// most ImportMaxBytes); ?slug= names it, ?shard= and ?isolation= place it. It answers
// 201 with the tenant.
func (s *Server) importTenant(c *gin.Context) error {
	q := c.Request.URL.Query()
	req := provisioner.ImportRequest{Slug: q.Get("slug"), Name: q.Get("name"), Shard: q.Get("shard"),
		Isolation: tenant.Isolation(q.Get("isolation")), Key: s.cfg.ArchiveKey, Actor: actor(c), Detail: "over the API"}
	if req.Slug == "" {
		return apperr.New(apperr.Invalid, "invalid_slug", "the query parameter slug names the new tenant")
	}
	if c.Request.ContentLength > s.cfg.ImportMaxBytes {
		return apperr.New(apperr.TooLarge, "body_too_large", "request body is larger than %d bytes", s.cfg.ImportMaxBytes)
	}
	req.Archive = http.MaxBytesReader(c.Writer, c.Request.Body, s.cfg.ImportMaxBytes)
	t, err := s.prov.Import(c.Request.Context(), req)
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return apperr.New(apperr.TooLarge, "body_too_large", "request body is larger than %d bytes", s.cfg.ImportMaxBytes)
	}
	if err != nil {
		return err
	}
	c.Header("Location", "/api/v1/tenants/"+t.Slug)
	c.JSON(http.StatusCreated, t)
	return nil
}

// cloneRequest is the body of POST /api/v1/tenants/{slug}/clone.
type cloneRequest struct {
	Slug      string `json:"slug"`
	Name      string `json:"name"`
	Shard     string `json:"shard"`
	Isolation string `json:"isolation"`
}

// cloneTenant creates a tenant with a copy of the tenant's data and answers 201 with it.
func (s *Server) cloneTenant(c *gin.Context) error {
	var body cloneRequest
	if err := web.DecodeJSON(c, &body, maxBody); err != nil {
		return err
	}
	t, err := s.clone(c, body, "over the API")
	if err != nil {
		return err
	}
	c.Header("Location", "/api/v1/tenants/"+t.Slug)
	c.JSON(http.StatusCreated, t)
	return nil
}

// clone creates the tenant body asks for with a copy of the data of the tenant the
// path names, audited with the signed-in user and detail: the API's and the panel's
// clone. It returns the provisioner's errors (NotFound, Invalid, Conflict slug_taken).
func (s *Server) clone(c *gin.Context, body cloneRequest, detail string) (*tenant.Tenant, error) {
	src, err := s.tenantBySlug(c)
	if err != nil {
		return nil, err
	}
	start := s.now()
	t, err := s.prov.Clone(c.Request.Context(), src.Slug, provisioner.ImportRequest{Slug: body.Slug, Name: body.Name,
		Shard: body.Shard, Isolation: tenant.Isolation(body.Isolation), Actor: actor(c), Detail: detail})
	if err != nil {
		return nil, err
	}
	s.log.Info("tenant cloned", "source", src.Slug, "tenant", t.Slug, "elapsed", s.now().Sub(start))
	return t, nil
}

// moveRequest is the body of POST /api/v1/tenants/{slug}/move.
type moveRequest struct {
	Shard     string `json:"shard"`
	Isolation string `json:"isolation"`
	Offline   bool   `json:"offline"`
}

// moveTenant starts the move the body asks for and answers 202 with the tenant; the
// move goes on in the background (see startMove), GET .../move follows it.
func (s *Server) moveTenant(c *gin.Context) error {
	var body moveRequest
	if err := web.DecodeJSON(c, &body, maxBody); err != nil {
		return err
	}
	t, err := s.startMove(c, body, "over the API")
	if err != nil {
		return err
	}
	c.Header("Location", "/api/v1/tenants/"+t.Slug+"/move")
	c.JSON(http.StatusAccepted, t)
	return nil
}

// errNoMove is the answer about the move of a tenant that is not moving.
var errNoMove = apperr.New(apperr.NotFound, "no_move", "the tenant is not being moved")

// getMove answers the tenant's move in progress, 404 no_move when there is none.
func (s *Server) getMove(c *gin.Context) error {
	m, err := s.moveStatus(c)
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, m)
	return nil
}

// abortMove stops the tenant's move in progress and answers 200 with the tenant.
func (s *Server) abortMove(c *gin.Context) error {
	t, err := s.stopMove(c)
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, t)
	return nil
}

// moveStatus returns the move of the tenant the path names: NotFound tenant_not_found
// or no_move.
func (s *Server) moveStatus(c *gin.Context) (*provisioner.MoveState, error) {
	t, err := s.tenantBySlug(c)
	if err != nil {
		return nil, err
	}
	m, err := s.prov.MoveStatus(c.Request.Context(), t.Slug)
	if err != nil {
		return nil, err
	}
	if m == nil {
		return nil, errNoMove
	}
	return m, nil
}

// stopMove aborts the move of the tenant the path names, with the signed-in user as
// actor: the API's and the panel's abort. It returns NotFound (tenant_not_found,
// no_move) and AbortMove's errors.
func (s *Server) stopMove(c *gin.Context) (*tenant.Tenant, error) {
	m, err := s.moveStatus(c)
	if err != nil {
		return nil, err
	}
	return s.prov.AbortMove(c.Request.Context(), m.Slug, actor(c))
}

// moveStartWait bounds how long startMove waits for a move to report its first
// progress (or fail) before answering that it runs.
const moveStartWait = 5 * time.Second

// startMove checks the move req asks of the tenant the path names and starts it in the
// background on the server's lifecycle (Stop cancels it; the provisioner resumes or
// undoes it), audited with the signed-in user and detail: the API's and the panel's
// move. For a tenant whose move was interrupted it finishes that move, as the CLI's
// tenants move does (the provisioner's rule: another target is move_in_progress). It
// waits until the move reports its first progress, or fails, or moveStartWait passes,
// so that a move refused at once is answered with its error. It returns NotFound for an
// unknown tenant, Invalid (invalid_shard, invalid_isolation, move_nothing) for a bad
// request, Conflict (move_in_progress; tenant_busy while the move runs), 503
// shutting_down after Stop, and the errors of a move refused before it began.
func (s *Server) startMove(c *gin.Context, body moveRequest, detail string) (*tenant.Tenant, error) {
	ctx := c.Request.Context()
	t, err := s.tenantBySlug(c)
	if err != nil {
		return nil, err
	}
	req := provisioner.MoveRequest{Shard: body.Shard, Offline: body.Offline, Actor: actor(c), Detail: detail}
	if body.Isolation != "" {
		if req.Isolation, err = tenant.ParseIsolation(body.Isolation); err != nil {
			return nil, apperr.New(apperr.Invalid, "invalid_isolation", "isolation must be %q or %q", tenant.IsolationSchema, tenant.IsolationDatabase)
		}
	}
	started := make(chan struct{})
	var once sync.Once
	req.Progress = func(provisioner.MoveState) { once.Do(func() { close(started) }) }
	done := make(chan error, 1)
	if !s.bg.Go(func(bg context.Context) {
		_, err := s.prov.Move(bg, t.Slug, req)
		if err != nil && bg.Err() == nil {
			s.log.Error("moving tenant", "tenant", t.Slug, "to_shard", req.Shard, "isolation", req.Isolation, "error", err)
		} else if err == nil {
			s.log.Info("tenant moved", "tenant", t.Slug, "to_shard", req.Shard, "isolation", req.Isolation)
		}
		done <- err
	}) {
		return nil, errShuttingDown
	}
	timer := time.NewTimer(moveStartWait)
	defer timer.Stop()
	select {
	case err := <-done:
		if err != nil {
			return nil, err
		}
	case <-started:
	case <-timer.C:
	case <-ctx.Done():
	}
	return s.store.Get(ctx, t.Slug)
}
