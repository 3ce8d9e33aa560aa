// Package blogs is a tenant's blogs: create, read, list (newest first, cursor
// pagination, filter by author), update and delete, and instant search through a
// Searcher. Any authenticated user of the tenant reads; only the author or a tenant admin
// writes. With the outbox on, every write also records a search_outbox row in the same
// transaction for the external search indexer. It knows nothing of HTTP: its methods take
// the request's context.Context, which carries the tenant's scope (tenantdb.ScopeFrom)
// and the caller (caller.From).
package blogs

import (
	"cmp"
	"context"
	"log/slog"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/dataplane/caller"
	"github.com/tenantplane/tenantplane/dataplane/page"
	"github.com/tenantplane/tenantplane/dataplane/pool"
	"github.com/tenantplane/tenantplane/dataplane/search"
	"github.com/tenantplane/tenantplane/dataplane/tenantdb"
	"github.com/tenantplane/tenantplane/tenant"
)

// Searcher finds a tenant's blogs; *search.Postgres and *search.OpenSearch implement it.
type Searcher interface {
	// Search returns the tenant's blogs matching q (instant/prefix search), best first,
	// at most limit of them. db is the tenant-bound database handle of the request.
	Search(ctx context.Context, t *tenant.Tenant, db pool.DB, q string, limit int) ([]Hit, error)
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
)

// Config configures a Service.
type Config struct {
	// Searcher serves Search; nil makes Search fail with 503 search_unavailable.
	Searcher Searcher
	// Outbox records a search_outbox row with every write.
	Outbox bool
	// Logger receives internal errors (default: discard).
	Logger *slog.Logger
}

// Service is the blogs of the tenants.
type Service struct {
	search Searcher
	outbox bool
	log    *slog.Logger
}

// New returns a Service.
func New(cfg Config) *Service {
	return &Service{search: cfg.Searcher, outbox: cfg.Outbox, log: cmp.Or(cfg.Logger, slog.New(slog.DiscardHandler))}
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
	if !utf8.ValidString(t) || strings.ContainsFunc(t, unicode.IsControl) {
		// The rule of tenant names (tenant.ValidateName): a title is one line of text.
		return apperr.New(apperr.Invalid, "invalid_title", "title must not contain control characters (NUL, newlines, tabs...)")
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

// Filter selects a page of blogs.
type Filter struct {
	// Cursor continues a previous page ("": the first page).
	Cursor string
	// Limit is the page size (0: page.DefaultLimit; at most page.MaxLimit).
	Limit int
	// Author keeps only the blogs of this user id (0: any author).
	Author int64
}

// List returns a page of ctx's tenant's blogs, newest first. It returns
// caller.ErrUnauthenticated without a caller and an Invalid error for a bad cursor or
// limit.
func (s *Service) List(ctx context.Context, f Filter) (page.Page[*Blog], error) {
	var out page.Page[*Blog]
	sc, _, err := tenantdb.ScopeAndCaller(ctx)
	if err != nil {
		return out, err
	}
	limit, err := page.Limit(f.Limit, page.DefaultLimit)
	if err != nil {
		return out, err
	}
	cur, err := page.Decode(f.Cursor, 2)
	if err != nil {
		return out, err
	}
	lf := listFilter{Limit: limit + 1, Author: f.Author}
	if cur != nil {
		if cur[0] < minCursorMicro || cur[0] > maxCursorMicro {
			return out, page.ErrCursor
		}
		lf.Before = &cursor{CreatedMicro: cur[0], ID: cur[1]}
	}
	err = sc.Read(ctx, func(db pool.DB) error {
		out.Items, err = listBlogs(ctx, db, lf)
		return err
	})
	if err != nil {
		return out, err
	}
	if len(out.Items) > limit {
		out.Items = out.Items[:limit]
		last := out.Items[limit-1]
		out.Next = page.Encode(last.CreatedAt.UnixMicro(), last.ID)
	}
	if out.Items == nil {
		out.Items = []*Blog{}
	}
	return out, nil
}

// Get returns blog id of ctx's tenant. It returns caller.ErrUnauthenticated without a
// caller and a NotFound error for an unknown blog.
func (s *Service) Get(ctx context.Context, id int64) (*Blog, error) {
	sc, _, err := tenantdb.ScopeAndCaller(ctx)
	if err != nil {
		return nil, err
	}
	var b *Blog
	err = sc.Read(ctx, func(db pool.DB) error {
		b, err = blogByID(ctx, db, id)
		return err
	})
	return b, err
}

// Input is the content of a new blog.
type Input struct {
	Title       string
	Description string
}

// Create creates a blog of ctx's tenant whose author is ctx's caller. It returns
// caller.ErrUnauthenticated without a caller and an Invalid error (invalid_title,
// invalid_description) for bad content.
func (s *Service) Create(ctx context.Context, in Input) (*Blog, error) {
	sc, c, err := tenantdb.ScopeAndCaller(ctx)
	if err != nil {
		return nil, err
	}
	if err := validTitle(in.Title); err != nil {
		return nil, err
	}
	if err := validDescription(in.Description); err != nil {
		return nil, err
	}
	var b *Blog
	err = sc.Write(ctx, func(db pool.DB) error {
		if b, err = insertBlog(ctx, db, in.Title, in.Description, c.ID); err != nil {
			return err
		}
		return s.record(ctx, db, b.ID, "upsert")
	})
	if err != nil {
		return nil, err
	}
	return b, nil
}

// Change is a change to a blog; nil fields stay as they are.
type Change struct {
	Title       *string
	Description *string
}

// Update changes blog id of ctx's tenant as ctx's caller may: its author or a tenant
// admin. It returns caller.ErrUnauthenticated without a caller, an Invalid error for bad
// content, a NotFound error for an unknown blog and a Forbidden one for another user's
// blog.
func (s *Service) Update(ctx context.Context, id int64, ch Change) (*Blog, error) {
	sc, c, err := tenantdb.ScopeAndCaller(ctx)
	if err != nil {
		return nil, err
	}
	if ch.Title != nil {
		if err := validTitle(*ch.Title); err != nil {
			return nil, err
		}
	}
	if ch.Description != nil {
		if err := validDescription(*ch.Description); err != nil {
			return nil, err
		}
	}
	var b *Blog
	err = sc.Write(ctx, func(db pool.DB) error {
		if err := mayWrite(ctx, db, id, c); err != nil {
			return err
		}
		if b, err = updateBlog(ctx, db, id, ch.Title, ch.Description); err != nil {
			return err
		}
		return s.record(ctx, db, id, "upsert")
	})
	if err != nil {
		return nil, err
	}
	return b, nil
}

// Delete deletes blog id of ctx's tenant as ctx's caller may: its author or a tenant
// admin. It returns caller.ErrUnauthenticated without a caller, a NotFound error for an
// unknown blog and a Forbidden one for another user's blog.
func (s *Service) Delete(ctx context.Context, id int64) error {
	sc, c, err := tenantdb.ScopeAndCaller(ctx)
	if err != nil {
		return err
	}
	return sc.Write(ctx, func(db pool.DB) error {
		if err := mayWrite(ctx, db, id, c); err != nil {
			return err
		}
		if err := deleteBlog(ctx, db, id); err != nil {
			return err
		}
		return s.record(ctx, db, id, "delete")
	})
}

// mayWrite locks the blog and checks that c is its author or a tenant admin.
func mayWrite(ctx context.Context, db pool.DB, id int64, c *caller.Caller) error {
	author, err := lockBlog(ctx, db, id)
	if err != nil {
		return err
	}
	if author != c.ID && !c.Admin {
		return apperr.New(apperr.Forbidden, "forbidden", "only the author or a tenant admin may change this blog")
	}
	return nil
}

// record writes the outbox row of a change when the outbox is on.
func (s *Service) record(ctx context.Context, db pool.DB, id int64, op string) error {
	if !s.outbox {
		return nil
	}
	return insertOutbox(ctx, db, id, op)
}

// Result is a search result: the blog, its highlights and score.
type Result struct {
	*Blog
	Highlight Highlight `json:"highlight"`
	Score     float64   `json:"score"`
}

// Highlight is the matched parts of a search result's title and description.
type Highlight struct {
	Title       string `json:"title"`
	Description string `json:"description"`
}

// Search returns ctx's tenant's blogs matching q (instant, prefix search), best first, at
// most limit (0: page.DefaultLimit). It returns caller.ErrUnauthenticated without a
// caller, an Invalid error (invalid_query from the search backend's one query rule,
// invalid_limit) for a bad query or limit and an Unavailable one (search_unavailable)
// without a Searcher.
func (s *Service) Search(ctx context.Context, q string, limit int) ([]Result, error) {
	sc, _, err := tenantdb.ScopeAndCaller(ctx)
	if err != nil {
		return nil, err
	}
	if err := search.CheckQuery(q); err != nil {
		return nil, err
	}
	if limit, err = page.Limit(limit, page.DefaultLimit); err != nil {
		return nil, err
	}
	if s.search == nil {
		return nil, apperr.New(apperr.Unavailable, "search_unavailable", "search is not available")
	}
	items := []Result{}
	err = sc.Read(ctx, func(db pool.DB) error {
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
				items = append(items, Result{Blog: b, Score: h.Score,
					Highlight: Highlight{Title: h.TitleHighlight, Description: h.DescriptionHighlight}})
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return items, nil
}
