// Package blogs serves a tenant's blogs: create, read, list (newest first, cursor
// pagination, filter by author), update and delete, and instant search through a
// Searcher. Any authenticated user of the tenant reads; only the author or a tenant admin
// writes. With the outbox on, every write also records a search_outbox row in the same
// transaction for the external search indexer.
package blogs

import (
	"cmp"
	"context"
	"log/slog"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gin-gonic/gin"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/dataplane/page"
	"github.com/tenantplane/tenantplane/dataplane/pool"
	"github.com/tenantplane/tenantplane/dataplane/search"
	"github.com/tenantplane/tenantplane/dataplane/tenantdb"
	"github.com/tenantplane/tenantplane/tenant"
	"github.com/tenantplane/tenantplane/web"
)

// DB is the database handle of a request, bound to its tenant; pgx.Tx and
// *pgxpool.Conn (and *pgxpool.Pool) have it. The search backends take the same pool.DB, so they
// satisfy Searcher as they are.
type DB = pool.DB

// Searcher finds a tenant's blogs; *search.Postgres and *search.OpenSearch implement it.
type Searcher interface {
	// Search returns the tenant's blogs matching q (instant/prefix search), best first,
	// at most limit of them. db is the tenant-bound database handle of the request.
	Search(ctx context.Context, t *tenant.Tenant, db DB, q string, limit int) ([]Hit, error)
}

// Hit is one search result.
type Hit = search.Hit

var (
	_ Searcher = (*search.Postgres)(nil)
	_ Searcher = (*search.OpenSearch)(nil)
)

// Limits of blog fields and bodies.
const (
	MaxTitle       = 200       // characters
	MaxDescription = 100 << 10 // bytes
	MaxBody        = 110 << 10 // bytes of a request body; more is answered 413
	MaxQuery       = 256       // characters of a search query
)

// Config configures a Service.
type Config struct {
	// Searcher serves GET /blogs/search; nil answers 503 search_unavailable.
	Searcher Searcher
	// Outbox records a search_outbox row with every write.
	Outbox bool
	// Logger receives internal errors (default: discard).
	Logger *slog.Logger
}

// Service serves the blogs endpoints.
type Service struct {
	search Searcher
	outbox bool
	log    *slog.Logger
}

// New returns a Service.
func New(cfg Config) *Service {
	return &Service{search: cfg.Searcher, outbox: cfg.Outbox, log: cmp.Or(cfg.Logger, slog.New(slog.DiscardHandler))}
}

// Routes registers the blog endpoints on r, which must run the tenant middleware and
// authentication (tenantdb.SetUser) first.
func (s *Service) Routes(r gin.IRouter) {
	h := func(f web.HandlerFunc) gin.HandlerFunc { return web.Handle(s.log, f) }
	r.GET("/blogs", h(s.list))
	r.POST("/blogs", h(s.create))
	r.GET("/blogs/search", h(s.searchBlogs))
	r.GET("/blogs/:id", h(s.get))
	r.PUT("/blogs/:id", h(s.put))
	r.PATCH("/blogs/:id", h(s.patch))
	r.DELETE("/blogs/:id", h(s.remove))
}

// Blog is a blog as the API shows it.
type Blog struct {
	ID          int64     `json:"id"`
	Title       string    `json:"title"`
	Description string    `json:"description"`
	Author      Author    `json:"author"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
}

// Author is the author of a blog.
type Author struct {
	ID    int64  `json:"id"`
	Email string `json:"email"`
}

func validTitle(t string) error {
	n := utf8.RuneCountInString(t)
	if n < 1 || n > MaxTitle || strings.TrimSpace(t) == "" {
		return apperr.New(apperr.Invalid, "invalid_title", "title must be 1 to %d characters, not only spaces", MaxTitle)
	}
	if strings.ContainsRune(t, 0) {
		return apperr.New(apperr.Invalid, "invalid_title", "title must not contain NUL characters")
	}
	return nil
}

func validDescription(d string) error {
	if len(d) > MaxDescription {
		return apperr.New(apperr.Invalid, "invalid_description", "description must be at most %d bytes", MaxDescription)
	}
	if strings.ContainsRune(d, 0) {
		return apperr.New(apperr.Invalid, "invalid_description", "description must not contain NUL characters")
	}
	return nil
}

const blogNotFound = "blog not found"

// The creation times a cursor may carry: years 1970 to 9999, well inside what Postgres
// timestamps hold.
var (
	minCursorMicro = int64(0)
	maxCursorMicro = time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC).UnixMicro()
)

// list answers GET /blogs?cursor=&limit=&author=, newest first.
func (s *Service) list(c *gin.Context) error {
	items, next, err := s.List(c)
	if err != nil {
		return err
	}
	if items == nil {
		items = []*Blog{}
	}
	c.JSON(http.StatusOK, gin.H{"items": items, "next_cursor": next})
	return nil
}

// List returns a page of the request's tenant's blogs, newest first, as its
// ?cursor=&limit=&author= parameters ask (the API's pagination), and the cursor of the
// next page ("" on the last). It returns an Invalid error for a bad parameter.
func (s *Service) List(c *gin.Context) ([]*Blog, string, error) {
	sc, err := tenantdb.From(c)
	if err != nil {
		return nil, "", err
	}
	limit, err := page.Limit(c)
	if err != nil {
		return nil, "", err
	}
	cur, err := page.Cursor(c, 2)
	if err != nil {
		return nil, "", err
	}
	f := listFilter{Limit: limit + 1}
	if cur != nil {
		if cur[0] < minCursorMicro || cur[0] > maxCursorMicro {
			return nil, "", apperr.New(apperr.Invalid, "invalid_cursor", "cursor is not one this API returned")
		}
		f.Before = &cursor{CreatedMicro: cur[0], ID: cur[1]}
	}
	if a, ok := c.GetQuery("author"); ok {
		id, err := parsePositive(a)
		if err != nil {
			return nil, "", apperr.New(apperr.Invalid, "invalid_author", "author must be a user id")
		}
		f.Author = id
	}
	ctx := c.Request.Context()
	var items []*Blog
	err = sc.Read(ctx, func(db tenantdb.DB) error {
		items, err = listBlogs(ctx, db, f)
		return err
	})
	if err != nil {
		return nil, "", err
	}
	next := ""
	if len(items) > limit {
		items = items[:limit]
		last := items[limit-1]
		next = page.Encode(last.CreatedAt.UnixMicro(), last.ID)
	}
	return items, next, nil
}

// get answers GET /blogs/{id}.
func (s *Service) get(c *gin.Context) error {
	b, err := tenantdb.ReadByID(c, blogNotFound, blogByID)
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, b)
	return nil
}

// create answers POST /blogs {title, description} with 201; the caller is the author.
func (s *Service) create(c *gin.Context) error {
	sc, err := tenantdb.From(c)
	if err != nil {
		return err
	}
	u, err := tenantdb.UserFrom(c)
	if err != nil {
		return err
	}
	var in struct {
		Title       string `json:"title"`
		Description string `json:"description"`
	}
	if err := web.DecodeJSON(c, &in, MaxBody); err != nil {
		return err
	}
	if err := validTitle(in.Title); err != nil {
		return err
	}
	if err := validDescription(in.Description); err != nil {
		return err
	}
	ctx := c.Request.Context()
	var b *Blog
	err = sc.Write(ctx, func(db tenantdb.DB) error {
		if b, err = insertBlog(ctx, db, in.Title, in.Description, u.ID); err != nil {
			return err
		}
		return s.record(ctx, db, b.ID, "upsert")
	})
	if err != nil {
		return err
	}
	c.JSON(http.StatusCreated, b)
	return nil
}

// put answers PUT /blogs/{id} {title, description}: both replaced (an absent
// description becomes empty).
func (s *Service) put(c *gin.Context) error {
	var in struct {
		Title       string `json:"title"`
		Description string `json:"description"`
	}
	if err := web.DecodeJSON(c, &in, MaxBody); err != nil {
		return err
	}
	return s.update(c, &in.Title, &in.Description)
}

// patch answers PATCH /blogs/{id} {title?, description?}: absent fields stay.
func (s *Service) patch(c *gin.Context) error {
	var in struct {
		Title       *string `json:"title"`
		Description *string `json:"description"`
	}
	if err := web.DecodeJSON(c, &in, MaxBody); err != nil {
		return err
	}
	return s.update(c, in.Title, in.Description)
}

func (s *Service) update(c *gin.Context, title, description *string) error {
	sc, err := tenantdb.From(c)
	if err != nil {
		return err
	}
	u, err := tenantdb.UserFrom(c)
	if err != nil {
		return err
	}
	id, err := page.ID(c, "id", blogNotFound)
	if err != nil {
		return err
	}
	if title != nil {
		if err := validTitle(*title); err != nil {
			return err
		}
	}
	if description != nil {
		if err := validDescription(*description); err != nil {
			return err
		}
	}
	ctx := c.Request.Context()
	var b *Blog
	err = sc.Write(ctx, func(db tenantdb.DB) error {
		if err := mayWrite(ctx, db, id, u); err != nil {
			return err
		}
		if b, err = updateBlog(ctx, db, id, title, description); err != nil {
			return err
		}
		return s.record(ctx, db, id, "upsert")
	})
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, b)
	return nil
}

// remove answers DELETE /blogs/{id} with 204.
func (s *Service) remove(c *gin.Context) error {
	id, err := page.ID(c, "id", blogNotFound)
	if err != nil {
		return err
	}
	if err := s.Delete(c, id); err != nil {
		return err
	}
	c.Status(http.StatusNoContent)
	return nil
}

// Delete deletes blog id of the request's tenant as the request's user (tenantdb.SetUser)
// may: its author or a tenant admin. It returns a NotFound error for an unknown blog and
// a Forbidden one for another user's blog.
func (s *Service) Delete(c *gin.Context, id int64) error {
	sc, err := tenantdb.From(c)
	if err != nil {
		return err
	}
	u, err := tenantdb.UserFrom(c)
	if err != nil {
		return err
	}
	ctx := c.Request.Context()
	return sc.Write(ctx, func(db tenantdb.DB) error {
		if err := mayWrite(ctx, db, id, u); err != nil {
			return err
		}
		if err := deleteBlog(ctx, db, id); err != nil {
			return err
		}
		return s.record(ctx, db, id, "delete")
	})
}

// mayWrite locks the blog and checks that u is its author or a tenant admin.
func mayWrite(ctx context.Context, db DB, id int64, u *tenantdb.User) error {
	author, err := lockBlog(ctx, db, id)
	if err != nil {
		return err
	}
	if author != u.ID && !u.Admin {
		return apperr.New(apperr.Forbidden, "forbidden", "only the author or a tenant admin may change this blog")
	}
	return nil
}

// record writes the outbox row of a change when the outbox is on.
func (s *Service) record(ctx context.Context, db DB, id int64, op string) error {
	if !s.outbox {
		return nil
	}
	return insertOutbox(ctx, db, id, op)
}

// searchItem is a search result: the blog, its highlights and score.
type searchItem struct {
	*Blog
	Highlight highlight `json:"highlight"`
	Score     float64   `json:"score"`
}

type highlight struct {
	Title       string `json:"title"`
	Description string `json:"description"`
}

// searchBlogs answers GET /blogs/search?q=&limit= with the matching blogs, best first.
func (s *Service) searchBlogs(c *gin.Context) error {
	sc, err := tenantdb.From(c)
	if err != nil {
		return err
	}
	q := c.Query("q")
	if strings.TrimSpace(q) == "" || utf8.RuneCountInString(q) > MaxQuery || strings.ContainsRune(q, 0) || !utf8.ValidString(q) {
		return apperr.New(apperr.Invalid, "invalid_query", "q must be 1 to %d characters", MaxQuery)
	}
	limit, err := page.Limit(c)
	if err != nil {
		return err
	}
	if s.search == nil {
		return apperr.New(apperr.Unavailable, "search_unavailable", "search is not available")
	}
	ctx := c.Request.Context()
	items := []searchItem{}
	err = sc.Read(ctx, func(db tenantdb.DB) error {
		hits, err := s.search.Search(ctx, sc.Tenant, db, q, limit)
		if err != nil {
			return err
		}
		if len(hits) == 0 {
			return nil
		}
		ids := make([]int64, len(hits))
		for i, h := range hits {
			ids[i] = h.ID
		}
		found, err := blogsByID(ctx, db, ids)
		if err != nil {
			return err
		}
		for _, h := range hits {
			if b, ok := found[h.ID]; ok { // a blog deleted since it was indexed is left out
				items = append(items, searchItem{Blog: b, Score: h.Score,
					Highlight: highlight{Title: h.TitleHighlight, Description: h.DescriptionHighlight}})
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{"items": items})
	return nil
}
