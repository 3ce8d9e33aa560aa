package provisioner

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/archive"
	"github.com/tenantplane/tenantplane/pgerr"
	"github.com/tenantplane/tenantplane/tenant"
)

// notExported are the tenant tables an archive leaves out: refresh tokens (an archive
// must not carry live sessions), the search outbox (rebuilt by an import) and
// golang-migrate's version table (the manifest records the version).
var notExported = []string{"refresh_tokens", "search_outbox", "schema_migrations"}

// CopyProgress receives, while an export or an import copies a table, the table's name and
// the rows copied so far; it is called from the goroutine doing the work.
type CopyProgress func(table string, rows int64)

// ExportOptions change how Export works.
type ExportOptions struct {
	// Key encrypts the archive with AES-256-GCM (32 bytes); nil writes it in the clear.
	Key []byte
	// Actor is who asked, for the audit log; Detail is added to its entry.
	Actor, Detail string
	// Progress, when set, follows the copy.
	Progress CopyProgress
}

// Export writes an archive of the tenant's data to w: every tenant table but those in
// notExported, the stored columns only, in an order that satisfies the foreign keys,
// all read in one repeatable-read snapshot as the tenant's role while the tenant keeps
// serving. It records the export in the audit log and returns the archive's manifest.
// It returns NotFound for an unknown slug, Conflict (tenant_not_exportable) for a
// tenant that is not active or suspended or whose schema is dirty, Unavailable when
// the shard is down, and w's errors.
func (p *Provisioner) Export(ctx context.Context, slug string, w io.Writer, opt ExportOptions) (*archive.Manifest, error) {
	t, err := p.store.Get(ctx, slug)
	if err != nil {
		return nil, err
	}
	if t.Status != tenant.StatusActive && t.Status != tenant.StatusSuspended {
		return nil, apperr.New(apperr.Conflict, "tenant_not_exportable", "tenant %q is %s; only active or suspended tenants can be exported", slug, t.Status)
	}
	var m *archive.Manifest
	err = p.withTenantConn(ctx, t, func(conn *pgx.Conn) error {
		m, err = exportTenant(ctx, conn, t, w, opt, p.now)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("exporting tenant %s: %w", slug, pgerr.Translate(err, pgerr.Codes{}))
	}
	detail := strings.TrimSpace(fmt.Sprintf("schema version %d, %s %s", m.SchemaVersion, rowSummary(m.Sums), opt.Detail))
	if err := p.store.AddEvent(context.WithoutCancel(ctx), t.ID, "export", cmp.Or(opt.Actor, "system"), detail); err != nil {
		return nil, err
	}
	p.log.Info("tenant exported", "tenant", slug, "schema_version", m.SchemaVersion, "tables", len(m.Sums))
	return m, nil
}

// rowSummary says how many rows each table of an archive holds.
func rowSummary(sums []archive.Sum) string {
	parts := make([]string, len(sums))
	for i, s := range sums {
		parts[i] = fmt.Sprintf("%s=%d", s.Name, s.Rows)
	}
	return "rows " + strings.Join(parts, " ")
}

func exportTenant(ctx context.Context, conn *pgx.Conn, t *tenant.Tenant, w io.Writer, opt ExportOptions, now func() time.Time) (*archive.Manifest, error) {
	tx, err := readSnapshot(ctx, conn)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	version, err := schemaVersion(ctx, tx, t.SchemaName)
	if err != nil {
		return nil, err
	}
	tables, err := archiveTables(ctx, tx, t.SchemaName)
	if err != nil {
		return nil, err
	}
	aw, err := archive.NewWriter(w, archive.Options{Key: opt.Key})
	if err != nil {
		return nil, err
	}
	h := archive.Header{
		Source:        archive.Source{ID: t.ID, Slug: t.Slug, Name: t.Name},
		SchemaVersion: version,
		CreatedAt:     now().UTC(),
		Tables:        tables,
	}
	if err := aw.Begin(h); err != nil {
		return nil, err
	}
	for _, tb := range tables {
		tw, err := aw.Table(tb.Name)
		if err != nil {
			return nil, err
		}
		cw := &rowCounter{w: tw, table: tb.Name, progress: opt.Progress}
		if _, err := tx.Conn().PgConn().CopyTo(ctx, cw, `COPY `+qualified(t.SchemaName, tb.Name)+` (`+columnList(tb.Columns)+`) TO STDOUT`); err != nil {
			return nil, fmt.Errorf("copying table %s: %w", tb.Name, err)
		}
		if err := tw.Close(); err != nil {
			return nil, err
		}
	}
	if err := aw.Close(); err != nil {
		return nil, err
	}
	h.Format = archive.Format
	return &archive.Manifest{Header: h, Sums: aw.Sums()}, nil
}

// readSnapshot opens a read-only REPEATABLE READ transaction on conn whose COPY text is
// UTF-8, as archives hold it; roll it back when done.
func readSnapshot(ctx context.Context, conn *pgx.Conn) (pgx.Tx, error) {
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, fmt.Errorf("opening snapshot: %w", err)
	}
	if _, err := tx.Exec(ctx, `SET LOCAL client_encoding TO 'UTF8'`); err != nil {
		_ = tx.Rollback(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("pinning encoding: %w", err)
	}
	return tx, nil
}

// schemaVersion reads the schema's migration version; a dirty schema is refused.
func schemaVersion(ctx context.Context, q rowQuerier, schema string) (uint, error) {
	var v int64
	var dirty bool
	err := q.QueryRow(ctx, `SELECT version, dirty FROM `+qualified(schema, "schema_migrations")+` LIMIT 1`).Scan(&v, &dirty)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, apperr.New(apperr.Conflict, "tenant_not_exportable", "the tenant's schema has no migration applied")
	}
	if err != nil {
		return 0, fmt.Errorf("reading schema version: %w", err)
	}
	if dirty {
		return 0, apperr.New(apperr.Conflict, "tenant_not_exportable", "the tenant's schema is dirty at version %d: a migration was interrupted", v)
	}
	return uint(v), nil
}

// querier is a transaction or a connection, as the catalog readers need.
type querier interface {
	rowQuerier
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

var (
	_ querier = (pgx.Tx)(nil)
	_ querier = (*pgx.Conn)(nil)
)

// archiveTables reads from the catalog the schema's tables an archive holds, each with
// its stored columns (generated ones left out) in column order, the tables in an order
// where every table comes after those its foreign keys point to.
func archiveTables(ctx context.Context, q querier, schema string) ([]archive.Table, error) {
	return schemaTables(ctx, q, schema, notExported)
}

// schemaTables reads the schema's tables but those named in exclude as archiveTables
// does: each with its stored columns, in foreign key order.
func schemaTables(ctx context.Context, q querier, schema string, exclude []string) ([]archive.Table, error) {
	rows, err := q.Query(ctx, `SELECT c.relname, array_agg(a.attname::text ORDER BY a.attnum)
		FROM pg_catalog.pg_class c
		JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
		JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
		WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND NOT c.relispartition AND c.relname <> ALL ($2)
		GROUP BY c.relname ORDER BY c.relname`, schema, exclude)
	if err != nil {
		return nil, fmt.Errorf("listing tables: %w", err)
	}
	var tables []archive.Table
	for rows.Next() {
		var tb archive.Table
		if err := rows.Scan(&tb.Name, &tb.Columns); err != nil {
			rows.Close()
			return nil, fmt.Errorf("listing tables: %w", err)
		}
		tables = append(tables, tb)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing tables: %w", err)
	}
	rows, err = q.Query(ctx, `SELECT src.relname, dst.relname
		FROM pg_catalog.pg_constraint k
		JOIN pg_catalog.pg_class src ON src.oid = k.conrelid
		JOIN pg_catalog.pg_class dst ON dst.oid = k.confrelid
		JOIN pg_catalog.pg_namespace n ON n.oid = src.relnamespace
		WHERE k.contype = 'f' AND n.nspname = $1 AND src.oid <> dst.oid`, schema)
	if err != nil {
		return nil, fmt.Errorf("listing foreign keys: %w", err)
	}
	deps := map[string][]string{}
	for rows.Next() {
		var from, to string
		if err := rows.Scan(&from, &to); err != nil {
			rows.Close()
			return nil, fmt.Errorf("listing foreign keys: %w", err)
		}
		deps[from] = append(deps[from], to)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing foreign keys: %w", err)
	}
	return loadOrder(tables, deps)
}

// loadOrder sorts tables so that each comes after the tables it depends on, keeping the
// given (alphabetical) order among independent ones. Dependencies on tables not in the
// list are ignored; a cycle is an error.
func loadOrder(tables []archive.Table, deps map[string][]string) ([]archive.Table, error) {
	in := map[string]bool{}
	for _, tb := range tables {
		in[tb.Name] = true
	}
	done := map[string]bool{}
	var out []archive.Table
	for len(out) < len(tables) {
		progressed := false
		for _, tb := range tables {
			if done[tb.Name] {
				continue
			}
			ready := !slices.ContainsFunc(deps[tb.Name], func(d string) bool { return in[d] && !done[d] })
			if ready {
				done[tb.Name] = true
				out = append(out, tb)
				progressed = true
			}
		}
		if !progressed {
			return nil, errors.New("ordering tables: the foreign keys form a cycle")
		}
	}
	return out, nil
}

// rowCounter passes COPY text data on and reports the rows that went through.
type rowCounter struct {
	w        io.Writer
	r        io.Reader
	table    string
	rows     int64
	progress CopyProgress
	// err is the error the underlying reader returned, kept so that the archive's own
	// error is reported rather than the server's answer to an aborted COPY.
	err error
}

func (c *rowCounter) count(p []byte) {
	n := int64(0)
	for _, b := range p {
		if b == '\n' {
			n++
		}
	}
	if n > 0 {
		c.rows += n
		if c.progress != nil {
			c.progress(c.table, c.rows)
		}
	}
}

func (c *rowCounter) Write(p []byte) (int, error) {
	c.count(p)
	return c.w.Write(p)
}

func (c *rowCounter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.count(p[:n])
	if err != nil && err != io.EOF {
		c.err = err
	}
	return n, err
}

// qualified returns schema.name quoted.
func qualified(schema, name string) string { return pgx.Identifier{schema, name}.Sanitize() }

// columnList returns the columns quoted and separated by commas.
func columnList(cols []string) string {
	q := make([]string, len(cols))
	for i, c := range cols {
		q[i] = pgx.Identifier{c}.Sanitize()
	}
	return strings.Join(q, ", ")
}
