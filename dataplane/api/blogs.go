package api

import (
	"context"
	"encoding/json"
	"strconv"

	"github.com/gin-gonic/gin"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/dataplane/blogs"
	"github.com/tenantplane/tenantplane/web"
)

const blogNotFound = "blog not found"

// listBlogs answers GET /blogs?cursor=&limit=&author=, newest first.
func (a *API) listBlogs(ctx context.Context, c *gin.Context) error {
	limit, err := queryLimit(c)
	if err != nil {
		return err
	}
	f := blogs.Filter{Cursor: c.Query("cursor"), Limit: limit}
	if raw, given := c.GetQuery("author"); given {
		id, err := strconv.ParseInt(raw, 10, 64)
		if err != nil || id <= 0 {
			return apperr.New(apperr.Invalid, "invalid_author", "author must be a user id")
		}
		f.Author = id
	}
	p, err := a.blogs.List(ctx, f)
	if err != nil {
		return err
	}
	return okJSON(c, p)
}

// getBlog answers GET /blogs/{id}.
func (a *API) getBlog(ctx context.Context, c *gin.Context) error {
	id, err := web.PathID(c, "id", blogNotFound)
	if err != nil {
		return err
	}
	b, err := a.blogs.Get(ctx, id)
	if err != nil {
		return err
	}
	return okJSON(c, b)
}

// createBlog answers POST /blogs {title, description} with 201; the caller is the author.
func (a *API) createBlog(ctx context.Context, c *gin.Context) error {
	var in blogInput
	if err := web.DecodeJSON(c, &in, blogs.MaxBody); err != nil {
		return err
	}
	if err := in.Title.refuseNull("title"); err != nil {
		return err
	}
	b, err := a.blogs.Create(ctx, blogs.Input{Title: in.Title.v, Description: in.Description.v})
	if err != nil {
		return err
	}
	return createdJSON(c, b)
}

// putBlog answers PUT /blogs/{id} {title, description}: both replaced (an absent or
// null description becomes empty).
func (a *API) putBlog(ctx context.Context, c *gin.Context) error {
	var in blogInput
	if err := web.DecodeJSON(c, &in, blogs.MaxBody); err != nil {
		return err
	}
	if err := in.Title.refuseNull("title"); err != nil {
		return err
	}
	return a.updateBlog(ctx, c, blogs.Change{Title: &in.Title.v, Description: &in.Description.v})
}

// patchBlog answers PATCH /blogs/{id} {title?, description?}: absent fields stay, a null
// description becomes empty, a null title is refused.
func (a *API) patchBlog(ctx context.Context, c *gin.Context) error {
	var in blogInput
	if err := web.DecodeJSON(c, &in, blogs.MaxBody); err != nil {
		return err
	}
	if err := in.Title.refuseNull("title"); err != nil {
		return err
	}
	return a.updateBlog(ctx, c, blogs.Change{Title: in.Title.ptr(), Description: in.Description.ptr()})
}

// blogInput is the body of POST, PUT and PATCH /blogs: title is a string (null is
// refused), description a string or null (empty).
type blogInput struct {
	Title       optString `json:"title"`
	Description optString `json:"description"`
}

// optString is a string field of a JSON body that tells an absent field, null and a
// value apart.
type optString struct {
	set, null bool
	v         string
}

// UnmarshalJSON records the field as given, null or a string.
func (o *optString) UnmarshalJSON(b []byte) error {
	o.set = true
	if string(b) == "null" {
		o.null = true
		return nil
	}
	return json.Unmarshal(b, &o.v)
}

// ptr is the field as a change: nil when absent, the value (empty for null) otherwise.
func (o optString) ptr() *string {
	if !o.set {
		return nil
	}
	return &o.v
}

// refuseNull returns an Invalid error (invalid_field) when the field was given as null.
func (o optString) refuseNull(name string) error {
	if o.null {
		return apperr.New(apperr.Invalid, "invalid_field", "field %q must be a string, not null", name)
	}
	return nil
}

func (a *API) updateBlog(ctx context.Context, c *gin.Context, ch blogs.Change) error {
	id, err := web.PathID(c, "id", blogNotFound)
	if err != nil {
		return err
	}
	b, err := a.blogs.Update(ctx, id, ch)
	if err != nil {
		return err
	}
	return okJSON(c, b)
}

// deleteBlog answers DELETE /blogs/{id} with 204.
func (a *API) deleteBlog(ctx context.Context, c *gin.Context) error {
	id, err := web.PathID(c, "id", blogNotFound)
	if err != nil {
		return err
	}
	if err := a.blogs.Delete(ctx, id); err != nil {
		return err
	}
	return noContent(c)
}

// searchBlogs answers GET /blogs/search?q=&limit= with the matching blogs, best first.
func (a *API) searchBlogs(ctx context.Context, c *gin.Context) error {
	limit, err := queryLimit(c)
	if err != nil {
		return err
	}
	items, err := a.blogs.Search(ctx, c.Query("q"), limit)
	if err != nil {
		return err
	}
	return okJSON(c, gin.H{"items": items})
}
