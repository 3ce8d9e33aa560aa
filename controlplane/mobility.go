package controlplane

import (
	"errors"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/provisioner"
	"github.com/tenantplane/tenantplane/tenant"
	"github.com/tenantplane/tenantplane/web"
)

// defaultImportMax is the largest archive POST /api/v1/tenants/import takes by default.
const defaultImportMax = 1 << 30

// mobilityRoutes registers the export, import and clone routes on the authenticated
// group.
func (s *Server) mobilityRoutes(admin gin.IRouter) {
	h := s.handle
	admin.GET("/tenants/:slug/export", h(s.exportTenant))
	admin.POST("/tenants/:slug/clone", h(s.cloneTenant))
	admin.POST("/tenants/import", h(s.importTenant))
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

// exportTenant streams the tenant's archive (encrypted with the configured key, if
// any). An error once the archive has begun cuts it short, which every reader refuses.
func (s *Server) exportTenant(c *gin.Context) error {
	t, err := s.tenantBySlug(c)
	if err != nil {
		return err
	}
	name := t.Slug + "-" + s.now().UTC().Format("20060102T150405Z") + ".tpa"
	_, err = s.prov.Export(c.Request.Context(), t.Slug, &lazyHeaders{c: c, filename: name},
		provisioner.ExportOptions{Key: s.cfg.ArchiveKey, Actor: actor(c), Detail: "over the API"})
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
	src, err := s.tenantBySlug(c)
	if err != nil {
		return err
	}
	start := s.now()
	t, err := s.prov.Clone(c.Request.Context(), src.Slug, provisioner.ImportRequest{Slug: body.Slug, Name: body.Name,
		Shard: body.Shard, Isolation: tenant.Isolation(body.Isolation), Actor: actor(c)})
	if err != nil {
		return err
	}
	s.log.Info("tenant cloned", "source", src.Slug, "tenant", t.Slug, "elapsed", s.now().Sub(start))
	c.Header("Location", "/api/v1/tenants/"+t.Slug)
	c.JSON(http.StatusCreated, t)
	return nil
}
