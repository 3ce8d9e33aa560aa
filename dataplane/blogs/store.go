package blogs

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/dataplane/pool"
	"github.com/tenantplane/tenantplane/pgerr"
)

// blogSelect reads a blog with its author.
const blogSelect = `SELECT b.id, b.title, b.description, b.author_id, u.email, b.created_at, b.updated_at
	FROM blogs b JOIN users u ON u.id = b.author_id`

// getQuery reads one blog, the id as $1.
const getQuery = blogSelect + ` WHERE b.id = $1`

// blogCodes are the domain errors of the blogs table.
var blogCodes = pgerr.Codes{NotFound: apperr.New(apperr.NotFound, "not_found", blogNotFound)}

func scanBlog(row pgx.Row) (*Blog, error) {
	var b Blog
	if err := row.Scan(&b.ID, &b.Title, &b.Description, &b.Author.ID, &b.Author.Email, &b.CreatedAt, &b.UpdatedAt); err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return nil, blogCodes.NotFound
		}
		return nil, fmt.Errorf("reading blog: %w", pgerr.Translate(err, blogCodes))
	}
	return &b, nil
}

func blogByID(ctx context.Context, db pool.DB, id int64) (*Blog, error) {
	return scanBlog(db.QueryRow(ctx, getQuery, id))
}

// blogsByID returns the blogs with the ids that exist, by id.
func blogsByID(ctx context.Context, db pool.DB, ids []int64) (map[int64]*Blog, error) {
	rows, err := db.Query(ctx, blogSelect+` WHERE b.id = ANY($1)`, ids)
	if err != nil {
		return nil, fmt.Errorf("reading blogs: %w", pgerr.Translate(err, blogCodes))
	}
	defer rows.Close()
	out := make(map[int64]*Blog, len(ids))
	for rows.Next() {
		b, err := scanBlog(rows)
		if err != nil {
			return nil, err
		}
		out[b.ID] = b
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading blogs: %w", pgerr.Translate(err, blogCodes))
	}
	return out, nil
}

// cursor is the position of the last blog of a page.
type cursor struct {
	CreatedMicro int64
	ID           int64
}

type listFilter struct {
	Before *cursor
	Author int64 // 0: any
	Limit  int
}

func listBlogs(ctx context.Context, db pool.DB, f listFilter) ([]*Blog, error) {
	q := blogSelect + ` WHERE true`
	var args []any
	if f.Before != nil {
		args = append(args, time.UnixMicro(f.Before.CreatedMicro), f.Before.ID)
		q += ` AND (b.created_at, b.id) < ($1, $2)`
	}
	if f.Author != 0 {
		args = append(args, f.Author)
		q += ` AND b.author_id = $` + strconv.Itoa(len(args))
	}
	args = append(args, f.Limit)
	q += ` ORDER BY b.created_at DESC, b.id DESC LIMIT $` + strconv.Itoa(len(args))
	rows, err := db.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("listing blogs: %w", pgerr.Translate(err, blogCodes))
	}
	defer rows.Close()
	var out []*Blog
	for rows.Next() {
		b, err := scanBlog(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing blogs: %w", pgerr.Translate(err, blogCodes))
	}
	return out, nil
}

func insertBlog(ctx context.Context, db pool.DB, title, description string, author int64) (*Blog, error) {
	var id int64
	err := db.QueryRow(ctx, `INSERT INTO blogs (title, description, author_id) VALUES ($1, $2, $3) RETURNING id`,
		title, description, author).Scan(&id)
	if err != nil {
		return nil, fmt.Errorf("creating blog: %w", pgerr.Translate(err, blogCodes))
	}
	return blogByID(ctx, db, id)
}

// lockBlog locks the blog for the transaction and returns its author, or NotFound.
func lockBlog(ctx context.Context, db pool.DB, id int64) (int64, error) {
	var author int64
	err := db.QueryRow(ctx, `SELECT author_id FROM blogs WHERE id = $1 FOR UPDATE`, id).Scan(&author)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, blogCodes.NotFound
	}
	if err != nil {
		return 0, fmt.Errorf("locking blog: %w", pgerr.Translate(err, blogCodes))
	}
	return author, nil
}

func updateBlog(ctx context.Context, db pool.DB, id int64, title, description *string) (*Blog, error) {
	if title != nil || description != nil {
		_, err := db.Exec(ctx, `UPDATE blogs SET title = COALESCE($2, title), description = COALESCE($3, description),
			updated_at = now() WHERE id = $1`, id, title, description)
		if err != nil {
			return nil, fmt.Errorf("updating blog: %w", pgerr.Translate(err, blogCodes))
		}
	}
	return blogByID(ctx, db, id)
}

func deleteBlog(ctx context.Context, db pool.DB, id int64) error {
	if _, err := db.Exec(ctx, `DELETE FROM blogs WHERE id = $1`, id); err != nil {
		return fmt.Errorf("deleting blog: %w", pgerr.Translate(err, blogCodes))
	}
	return nil
}

// insertOutbox records a change for the search indexer; the version orders changes of
// one blog (microseconds of the wall clock at the statement).
func insertOutbox(ctx context.Context, db pool.DB, id int64, op string) error {
	_, err := db.Exec(ctx, `INSERT INTO search_outbox (blog_id, op, version)
		VALUES ($1, $2, (extract(epoch from clock_timestamp()) * 1e6)::bigint)`, id, op)
	if err != nil {
		return fmt.Errorf("recording search outbox: %w", pgerr.Translate(err, blogCodes))
	}
	return nil
}
