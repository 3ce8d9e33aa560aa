package blogs

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/dataplane/tenantdb"
)

// blogSelect reads a blog with its author; GET /blogs/{id} runs it with `WHERE b.id = $1`.
const blogSelect = `SELECT b.id, b.title, b.description, b.author_id, u.email, b.created_at, b.updated_at
	FROM blogs b JOIN users u ON u.id = b.author_id`

// GetQuery is the query behind GET /blogs/{id}, with the blog id as $1.
const GetQuery = blogSelect + ` WHERE b.id = $1`

func scanBlog(row pgx.Row) (*Blog, error) {
	var b Blog
	if err := row.Scan(&b.ID, &b.Title, &b.Description, &b.Author.ID, &b.Author.Email, &b.CreatedAt, &b.UpdatedAt); err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return nil, apperr.New(apperr.NotFound, "not_found", blogNotFound)
		}
		return nil, fmt.Errorf("reading blog: %w", err)
	}
	return &b, nil
}

func blogByID(ctx context.Context, db tenantdb.DB, id int64) (*Blog, error) {
	return scanBlog(db.QueryRow(ctx, GetQuery, id))
}

// blogsByID returns the blogs with the ids that exist, by id.
func blogsByID(ctx context.Context, db DB, ids []int64) (map[int64]*Blog, error) {
	rows, err := db.Query(ctx, blogSelect+` WHERE b.id = ANY($1)`, ids)
	if err != nil {
		return nil, fmt.Errorf("reading blogs: %w", err)
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
		return nil, fmt.Errorf("reading blogs: %w", err)
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

func listBlogs(ctx context.Context, db DB, f listFilter) ([]*Blog, error) {
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
		return nil, fmt.Errorf("listing blogs: %w", err)
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
		return nil, fmt.Errorf("listing blogs: %w", err)
	}
	return out, nil
}

func insertBlog(ctx context.Context, db DB, title, description string, author int64) (*Blog, error) {
	var id int64
	err := db.QueryRow(ctx, `INSERT INTO blogs (title, description, author_id) VALUES ($1, $2, $3) RETURNING id`,
		title, description, author).Scan(&id)
	if err != nil {
		return nil, fmt.Errorf("creating blog: %w", err)
	}
	return blogByID(ctx, db, id)
}

// lockBlog locks the blog for the transaction and returns its author, or NotFound.
func lockBlog(ctx context.Context, db DB, id int64) (int64, error) {
	var author int64
	err := db.QueryRow(ctx, `SELECT author_id FROM blogs WHERE id = $1 FOR UPDATE`, id).Scan(&author)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, apperr.New(apperr.NotFound, "not_found", blogNotFound)
	}
	if err != nil {
		return 0, fmt.Errorf("locking blog: %w", err)
	}
	return author, nil
}

func updateBlog(ctx context.Context, db DB, id int64, title, description *string) (*Blog, error) {
	if title != nil || description != nil {
		_, err := db.Exec(ctx, `UPDATE blogs SET title = COALESCE($2, title), description = COALESCE($3, description),
			updated_at = now() WHERE id = $1`, id, title, description)
		if err != nil {
			return nil, fmt.Errorf("updating blog: %w", err)
		}
	}
	return blogByID(ctx, db, id)
}

func deleteBlog(ctx context.Context, db DB, id int64) error {
	if _, err := db.Exec(ctx, `DELETE FROM blogs WHERE id = $1`, id); err != nil {
		return fmt.Errorf("deleting blog: %w", err)
	}
	return nil
}

// insertOutbox records a change for the search indexer; the version orders changes of
// one blog (microseconds of the wall clock at the statement).
func insertOutbox(ctx context.Context, db DB, id int64, op string) error {
	_, err := db.Exec(ctx, `INSERT INTO search_outbox (blog_id, op, version)
		VALUES ($1, $2, (extract(epoch from clock_timestamp()) * 1e6)::bigint)`, id, op)
	if err != nil {
		return fmt.Errorf("recording search outbox: %w", err)
	}
	return nil
}

func parsePositive(s string) (int64, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, errors.New("not a positive integer")
	}
	return n, nil
}
