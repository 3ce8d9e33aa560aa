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
	"github.com/tenantplane/tenantplane/tenant"
)

// ImportRequest describes an import of an archive, into a new tenant (Import) or over an
// existing one (Replace).
type ImportRequest struct {
	// Archive is the archive's bytes, read once, as a stream.
	Archive io.Reader
	// Key decrypts an encrypted archive (32 bytes).
	Key []byte
	// Slug, Name, Shard, Isolation and Plan describe the new tenant (Import only): Name
	// defaults to the archived tenant's, Shard to the least loaded one.
	Slug, Name, Shard, Plan string
	Isolation               tenant.Isolation
	// Actor is who asked, for the audit log; Detail is added to its entry.
	Actor, Detail string
	// Progress, when set, follows the load.
	Progress CopyProgress
}

// loadInput is what the load step of a running import reads: the archive, open at its
// first table. It lives only in the process that opened the archive; a run resumed by
// another process finds none.
type loadInput struct {
	reader   *archive.Reader
	progress CopyProgress
}

// errNoArchive is the error of a load step run without its archive: the process that
// had it stopped.
var errNoArchive = errors.New("the archive of this import is gone with the process that read it")

// importPlan carries a tenant registered for an import to active: provisioned like a
// signup, its schema migrated to the archive's version, the archive loaded and checked
// in one transaction, then migrated to the newest version.
var importPlan = plan{
	{Name: tenant.StepImportRole, Run: createRole},
	{Name: tenant.StepImportSchema, Run: createSchema},
	{Name: tenant.StepImportMigrations, Run: migrateToArchive},
	{Name: tenant.StepImportLoad, Run: loadImport},
	{Name: tenant.StepImportMigrateUp, Run: migrateUp},
	{Name: tenant.StepImportSearchIndex, Run: createSearchIndex},
	{Name: tenant.StepActive, Run: func(_ context.Context, r *run) (tenant.StepResult, error) {
		return tenant.StepResult{Status: tenant.StatusActive, Event: "import", Actor: r.actor}, nil
	}},
}

// importUndoPlan removes what an import that cannot finish created, registry row
// included: a failed import leaves no tenant behind.
var importUndoPlan = plan{
	{Name: tenant.StepImportUndoStorage, Run: dropStorage},
	{Name: tenant.StepImportUndoRole, Run: dropRole},
	{Name: tenant.StepImportUndoIndex, Run: dropSearchIndex},
	{Name: stepForget, Run: func(ctx context.Context, r *run) (tenant.StepResult, error) {
		err := r.p.store.Forget(ctx, r.t.ID, tenant.StatusProvisioning)
		if apperr.KindOf(err) == apperr.NotFound {
			err = nil
		}
		return tenant.StepResult{}, err
	}},
}

// stepForget is the undo's last step, removing the registry row: never recorded.
const stepForget tenant.Step = "import_forget"

// replacePlan replaces a restoring tenant's data with an archive's and serves it again.
var replacePlan = plan{
	{Name: tenant.StepReplaceLoad, Run: loadReplace},
	{Name: tenant.StepActive, Run: func(_ context.Context, r *run) (tenant.StepResult, error) {
		return tenant.StepResult{Status: tenant.StatusActive, Event: "replace", Actor: r.actor}, nil
	}},
}

// replaceUndoPlan serves a restoring tenant again with its data as it was: its
// replacement never committed.
var replaceUndoPlan = plan{
	{Name: tenant.StepActive, Run: func(_ context.Context, r *run) (tenant.StepResult, error) {
		return tenant.StepResult{Status: tenant.StatusActive, Event: "replace_aborted", Actor: r.actor}, nil
	}},
}

// stepsProgress records into the registry row like registryProgress, but reads back as
// the last step done only one of its own steps: an operation that reuses step names
// (active) or follows another one on the same row starts from its beginning. Steps in
// unrecorded are not written (the row is gone after them).
type stepsProgress struct {
	registryProgress
	own        plan
	unrecorded tenant.Step
}

var _ progress = (*stepsProgress)(nil)

func (g *stepsProgress) last(t *tenant.Tenant) tenant.Step {
	if i := g.own.index(t.ProvisioningStep); i >= 0 && i < len(g.own)-1 {
		return t.ProvisioningStep
	}
	return ""
}

func (g *stepsProgress) record(ctx context.Context, t *tenant.Tenant, during tenant.Status, name tenant.Step, res tenant.StepResult) error {
	if name == g.unrecorded {
		return nil
	}
	return g.registryProgress.record(ctx, t, during, name, res)
}

// mobilityOps returns the import, its undo, the replace and its undo.
func mobilityOps(store *tenant.Store) (imp, impUndo, repl, replUndo *operation) {
	reg := registryProgress{store: store}
	imp = &operation{name: "import", plan: importPlan, during: tenant.StatusProvisioning, progress: &reg}
	impUndo = &operation{name: "import undo", plan: importUndoPlan, during: tenant.StatusProvisioning,
		progress: &stepsProgress{registryProgress: reg, unrecorded: stepForget}}
	repl = &operation{name: "replace", plan: replacePlan, during: tenant.StatusRestoring,
		progress: &stepsProgress{registryProgress: reg, own: replacePlan}}
	replUndo = &operation{name: "replace undo", plan: replaceUndoPlan, during: tenant.StatusRestoring,
		progress: &stepsProgress{registryProgress: reg}}
	return imp, impUndo, repl, replUndo
}

// resumeOp returns the operation that finishes the tenant with the given id as a
// resumed run finds it: an import or a replace interrupted before its data was loaded
// is undone (its archive is gone), one interrupted after is finished; anything else is
// provisioning.
func (p *Provisioner) resumeOp(ctx context.Context, id string) *operation {
	t, err := p.store.GetByID(ctx, id)
	if err != nil {
		return p.provisionOp
	}
	_, hasInput := p.loads.Load(id)
	switch {
	case t.Status == tenant.StatusRestoring:
		if t.ProvisioningStep == tenant.StepReplaceLoad || hasInput {
			return p.replaceOp
		}
		return p.replaceUndoOp
	case t.Status != tenant.StatusProvisioning:
		return p.provisionOp
	case importUndoPlan.index(t.ProvisioningStep) >= 0:
		return p.importUndoOp
	case t.ProvisioningStep == tenant.StepImportRegistered || importPlan.index(t.ProvisioningStep) >= 0:
		if !hasInput && importPlan.index(t.ProvisioningStep) < importPlan.index(tenant.StepImportLoad) {
			return p.importUndoOp
		}
		return p.importOp
	case p.usesWarm(ctx, t):
		return p.warmOp
	}
	return p.provisionOp
}

// openArchive opens the request's archive and checks that this binary can load it:
// not newer, in format or schema version, than it knows. It returns Invalid errors
// (archive_invalid, archive_newer) otherwise.
func (p *Provisioner) openArchive(req ImportRequest) (*archive.Reader, error) {
	if req.Archive == nil {
		return nil, apperr.New(apperr.Invalid, "archive_invalid", "no archive given")
	}
	rd, err := archive.NewReader(req.Archive, archive.Options{Key: req.Key})
	if err != nil {
		return nil, archiveError(err)
	}
	h := rd.Header()
	latest, err := latestVersion(p.tenantMigrations)
	if err != nil {
		return nil, err
	}
	if h.SchemaVersion > latest {
		return nil, apperr.New(apperr.Invalid, "archive_newer", "the archive holds schema version %d; this binary knows versions up to %d: import it with a newer release", h.SchemaVersion, latest)
	}
	if h.SchemaVersion == 0 || len(h.Tables) == 0 {
		return nil, apperr.New(apperr.Invalid, "archive_invalid", "the archive holds no tenant schema")
	}
	return rd, nil
}

// archiveError makes an archive's refusal an Invalid error that says why, keeping the
// archive package's error for errors.Is.
func archiveError(err error) error {
	var ae *apperr.Error
	if errors.As(err, &ae) {
		return err
	}
	code := "archive_invalid"
	if errors.Is(err, archive.ErrNewer) {
		code = "archive_newer"
	}
	for _, known := range []error{archive.ErrNotArchive, archive.ErrNewer, archive.ErrTruncated, archive.ErrChecksum, archive.ErrEncrypted, archive.ErrKey} {
		if errors.Is(err, known) {
			e := apperr.New(apperr.Invalid, code, "archive refused: %s", err.Error())
			e.Err = err
			return e
		}
	}
	return err
}

// Import creates a new tenant from an archive: registered for an import, provisioned
// with its own role and schema, its schema migrated to the archive's version, the data
// loaded and checked against the archive's checksums and manifest in one transaction,
// then migrated to the newest version, its search rebuilt, and served. An archive that
// is newer than this binary, cut short or altered is refused, and an import that fails
// at any step is undone: no registry row, schema, database or role is left. One
// interrupted (a killed process, a cancelled context) is left for the next run of
// Provision (tenants retry, or ResumeInterrupted at start), which finishes it when its
// data is loaded and undoes it otherwise. It returns Invalid errors for a bad request
// or archive (archive_invalid, archive_newer), Conflict (slug_taken) and Unavailable.
func (p *Provisioner) Import(ctx context.Context, req ImportRequest) (*tenant.Tenant, error) {
	if err := tenant.ValidateSlug(req.Slug); err != nil {
		return nil, err
	}
	iso, err := tenant.ParseIsolation(string(req.Isolation))
	if err != nil {
		return nil, err
	}
	rd, err := p.openArchive(req)
	if err != nil {
		return nil, err
	}
	name := strings.TrimSpace(cmp.Or(req.Name, rd.Header().Source.Name, req.Slug))
	if err := tenant.ValidateName(name); err != nil {
		return nil, err
	}
	t := newTenant(req.Slug, name, iso, req.Plan)
	t.ProvisioningStep = tenant.StepImportRegistered
	if err := p.place(ctx, t, req.Shard, req.Actor); err != nil {
		return nil, err
	}
	actor := cmp.Or(req.Actor, "system")
	p.loads.Store(t.ID, &loadInput{reader: rd, progress: req.Progress})
	defer p.loads.Delete(t.ID)
	got, err := p.execute(ctx, p.importOp, t.ID, actor)
	if err == nil {
		h := rd.Header()
		detail := strings.TrimSpace(fmt.Sprintf("from %s (%s) taken at %s, schema version %d %s",
			h.Source.Slug, h.Source.ID, h.CreatedAt.UTC().Format(time.RFC3339), h.SchemaVersion, req.Detail))
		if aerr := p.store.AddEvent(context.WithoutCancel(ctx), t.ID, "import_source", actor, detail); aerr != nil {
			return got, aerr
		}
		return got, nil
	}
	// A killed run is left to the next one. A cancelled one (a client gone mid-upload)
	// whose data is not loaded cannot be finished by anyone: it is undone now, so that
	// the slug is free again at once.
	if interrupted(ctx, err) && (errors.Is(err, errCrash) || errors.Is(err, errLeft) || got == nil ||
		importPlan.index(got.ProvisioningStep) >= importPlan.index(tenant.StepImportLoad)) {
		return nil, fmt.Errorf("import of %s was interrupted (run `tenantplane tenants retry %s` to finish or undo it): %w", req.Slug, req.Slug, err)
	}
	p.log.Error("import failed; undoing it", "tenant", req.Slug, "error", err)
	p.loads.Delete(t.ID)
	if _, uerr := p.execute(context.WithoutCancel(ctx), p.importUndoOp, t.ID, actor); uerr != nil {
		return nil, errors.Join(loadError(err), fmt.Errorf("undoing the import (run `tenantplane tenants retry %s` to finish): %w", req.Slug, uerr))
	}
	return nil, loadError(err)
}

// Replace restores an existing active tenant in place from an archive of the same
// schema version: the tenant answers tenant_restoring while it is replaced, keeps its id,
// names and role, and afterwards refuses every token issued before (every user's token
// version is raised past every earlier one, every refresh token is dropped). The old
// data is replaced in one transaction that also checks the archive, so a refused archive
// changes nothing. Take a safety export first (Export): the old data is gone. It returns
// NotFound, Conflict (invalid_transition, tenant_busy), Invalid for the archive
// (archive_invalid, archive_newer, archive_version_mismatch) and Unavailable.
func (p *Provisioner) Replace(ctx context.Context, slug string, req ImportRequest) (*tenant.Tenant, error) {
	t, err := p.store.Get(ctx, slug)
	if err != nil {
		return nil, err
	}
	if t.Status != tenant.StatusActive {
		return nil, apperr.New(apperr.Conflict, "invalid_transition", "tenant %q is %s; only an active tenant can be replaced", slug, t.Status)
	}
	rd, err := p.openArchive(req)
	if err != nil {
		return nil, err
	}
	if v := rd.Header().SchemaVersion; int64(v) != t.MigrationVersion {
		return nil, apperr.New(apperr.Invalid, "archive_version_mismatch",
			"the archive holds schema version %d and tenant %q is at %d; import it as a new tenant instead (tenants import --slug)", v, slug, t.MigrationVersion)
	}
	actor := cmp.Or(req.Actor, "system")
	h := rd.Header()
	if _, err := p.store.Transition(ctx, slug, []tenant.Status{tenant.StatusActive}, tenant.StatusRestoring, tenant.TransitionInfo{
		Action: "replace_begin", Actor: actor,
		Detail: strings.TrimSpace(fmt.Sprintf("from %s taken at %s %s", h.Source.Slug, h.CreatedAt.UTC().Format(time.RFC3339), req.Detail)),
	}); err != nil {
		return nil, err
	}
	p.loads.Store(t.ID, &loadInput{reader: rd, progress: req.Progress})
	defer p.loads.Delete(t.ID)
	got, err := p.execute(ctx, p.replaceOp, t.ID, actor)
	if errors.Is(err, errBusy) {
		err = busy(slug)
	}
	if err == nil {
		return got, nil
	}
	if interrupted(ctx, err) {
		return nil, fmt.Errorf("replace of %s was interrupted (run `tenantplane tenants retry %s` to finish or undo it): %w", slug, slug, err)
	}
	p.loads.Delete(t.ID)
	if _, uerr := p.execute(context.WithoutCancel(ctx), p.replaceUndoOp, t.ID, actor); uerr != nil {
		return nil, errors.Join(loadError(err), fmt.Errorf("serving the old data again (run `tenantplane tenants retry %s`): %w", slug, uerr))
	}
	return nil, loadError(err)
}

// interrupted reports whether a run stopped as a killed process would: it is resumed,
// not undone.
func interrupted(ctx context.Context, err error) bool {
	return errors.Is(err, errCrash) || errors.Is(err, errLeft) || ctx.Err() != nil
}

// loadError returns the archive's refusal inside err when there is one, so the caller
// sees why, and err otherwise.
func loadError(err error) error {
	var ae *apperr.Error
	if errors.As(err, &ae) && ae.Kind == apperr.Invalid {
		return ae
	}
	return err
}

// migrateToArchive is the import_migrations step: the new schema at the archive's
// version, so that the archive's columns are the schema's.
func migrateToArchive(ctx context.Context, r *run) (tenant.StepResult, error) {
	in, ok := r.p.loads.Load(r.t.ID)
	if !ok {
		return tenant.StepResult{}, errNoArchive
	}
	v, err := r.p.MigrateTenant(ctx, r.t, int(in.(*loadInput).reader.Header().SchemaVersion))
	if err != nil {
		return tenant.StepResult{}, err
	}
	return tenant.StepResult{Migrated: true, MigrationVersion: int64(v)}, nil
}

// migrateUp is the import_migrate_up step: the loaded schema at the newest version.
func migrateUp(ctx context.Context, r *run) (tenant.StepResult, error) {
	v, err := r.p.MigrateTenant(ctx, r.t, -1)
	if err != nil {
		return tenant.StepResult{}, err
	}
	return tenant.StepResult{Migrated: true, MigrationVersion: int64(v)}, nil
}

// loadImport is the import_load step: the archive into the new tenant's empty tables.
func loadImport(ctx context.Context, r *run) (tenant.StepResult, error) {
	return tenant.StepResult{}, r.p.loadArchive(ctx, r, false)
}

// loadReplace is the replace_load step: the archive in place of the tenant's data.
func loadReplace(ctx context.Context, r *run) (tenant.StepResult, error) {
	return tenant.StepResult{}, r.p.loadArchive(ctx, r, true)
}

// loadArchive loads the run's archive into the tenant's schema in one transaction, as
// the tenant's role: with replace, the tenant's tables are emptied first and every
// user's token version raised past every earlier one. The transaction commits only
// once every table's checksum and the manifest have been checked, the sequences set
// past the loaded ids and, with an external search index, every blog queued for
// reindexing. Nothing of a refused archive is kept.
func (p *Provisioner) loadArchive(ctx context.Context, r *run, replace bool) error {
	v, ok := p.loads.Load(r.t.ID)
	if !ok {
		return errNoArchive
	}
	in := v.(*loadInput)
	conn, err := r.tenantConn(ctx)
	if err != nil {
		return err
	}
	schema := r.t.SchemaName
	tx, err := conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("beginning load: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.Exec(ctx, `SET LOCAL client_encoding TO 'UTF8'; SET LOCAL lock_timeout = '30s'`); err != nil {
		return fmt.Errorf("pinning encoding: %w", err)
	}
	tables, err := archiveTables(ctx, tx, schema)
	if err != nil {
		return err
	}
	var oldTokenVersion int64
	var oldBlogs []int64
	if replace {
		if oldTokenVersion, oldBlogs, err = emptyTenant(ctx, tx, schema, tables, p.search != nil); err != nil {
			return err
		}
	} else if err := emptyTables(ctx, tx, schema, withUnarchived(tables)); err != nil {
		// A new tenant's tables hold only what its migrations seeded (a counter's
		// row, say): the archive's rows replace them.
		return err
	}
	want := map[string]archive.Table{}
	for _, tb := range tables {
		want[tb.Name] = tb
	}
	for {
		tr, err := in.reader.NextTable()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return archiveError(err)
		}
		tb, ok := want[tr.Name]
		if !ok {
			return apperr.New(apperr.Invalid, "archive_invalid", "archive refused: table %s is not in the tenant's schema at version %d", tr.Name, in.reader.Header().SchemaVersion)
		}
		for _, c := range tr.Columns {
			if !slices.Contains(tb.Columns, c) {
				return apperr.New(apperr.Invalid, "archive_invalid", "archive refused: column %s.%s is not a stored column of the tenant's schema", tr.Name, c)
			}
		}
		rc := &rowCounter{r: tr, table: tr.Name, progress: in.progress}
		if _, err := tx.Conn().PgConn().CopyFrom(ctx, rc, `COPY `+qualified(schema, tr.Name)+` (`+columnList(tr.Columns)+`) FROM STDIN`); err != nil {
			if rc.err != nil {
				return archiveError(rc.err)
			}
			return fmt.Errorf("loading table %s: %w", tr.Name, err)
		}
	}
	if _, err := in.reader.Manifest(); err != nil {
		return archiveError(err)
	}
	if err := resetSequences(ctx, tx, schema); err != nil {
		return err
	}
	if _, ok := want["notification_counter"]; ok {
		// Notification ids come from this counter: never hand out a loaded id again,
		// even from an archive whose counter lagged its notifications.
		if _, err := tx.Exec(ctx, `UPDATE `+qualified(schema, "notification_counter")+` SET last_id =
			GREATEST(last_id, (SELECT COALESCE(max(id), 0) FROM `+qualified(schema, "notifications")+`))`); err != nil {
			return fmt.Errorf("setting the notification counter: %w", err)
		}
	}
	if replace {
		if _, err := tx.Exec(ctx, `UPDATE `+qualified(schema, "users")+` SET token_version = token_version + $1 + 1`, oldTokenVersion); err != nil {
			return fmt.Errorf("raising token versions: %w", err)
		}
	}
	if p.search != nil {
		if err := queueReindex(ctx, tx, schema, oldBlogs); err != nil {
			return err
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("committing load: %w", err)
	}
	return nil
}

// emptyTenant empties every table of the tenant's schema but the migration ledger, in
// one statement, refresh tokens included, and returns the highest token version any
// user had and, when keepBlogs, the ids of the blogs there were (for their removal
// from the search index).
func emptyTenant(ctx context.Context, tx pgx.Tx, schema string, tables []archive.Table, keepBlogs bool) (int64, []int64, error) {
	var maxVersion int64
	if err := tx.QueryRow(ctx, `SELECT COALESCE(max(token_version), 0) FROM `+qualified(schema, "users")).Scan(&maxVersion); err != nil {
		return 0, nil, fmt.Errorf("reading token versions: %w", err)
	}
	var blogs []int64
	if keepBlogs {
		rows, err := tx.Query(ctx, `SELECT id FROM `+qualified(schema, "blogs"))
		if err != nil {
			return 0, nil, fmt.Errorf("reading blogs: %w", err)
		}
		if blogs, err = pgx.CollectRows(rows, pgx.RowTo[int64]); err != nil {
			return 0, nil, fmt.Errorf("reading blogs: %w", err)
		}
	}
	if err := emptyTables(ctx, tx, schema, withUnarchived(tables)); err != nil {
		return 0, nil, err
	}
	return maxVersion, blogs, nil
}

// withUnarchived adds to the archive's tables those of the tenant that archives leave
// out (refresh tokens, the search outbox): emptying them together satisfies their
// foreign keys.
func withUnarchived(tables []archive.Table) []archive.Table {
	return append([]archive.Table{{Name: "refresh_tokens"}, {Name: "search_outbox"}}, tables...)
}

// emptyTables empties the given tables of the schema in one statement.
func emptyTables(ctx context.Context, tx pgx.Tx, schema string, tables []archive.Table) error {
	if len(tables) == 0 {
		return nil
	}
	names := make([]string, 0, len(tables))
	for _, tb := range tables {
		names = append(names, qualified(schema, tb.Name))
	}
	if _, err := tx.Exec(ctx, `TRUNCATE `+strings.Join(names, ", ")); err != nil {
		return fmt.Errorf("emptying tenant tables: %w", err)
	}
	return nil
}

// resetSequences sets every sequence of the schema past the ids loaded: a sequence
// owned by a column to that column's maximum, and a free-standing notification
// sequence (a notification id counter) past the notifications' ids, so that loaded
// notification ids are never given out again.
func resetSequences(ctx context.Context, tx pgx.Tx, schema string) error {
	rows, err := tx.Query(ctx, `SELECT s.relname, COALESCE(t.relname, ''), COALESCE(a.attname::text, '')
		FROM pg_catalog.pg_class s
		JOIN pg_catalog.pg_namespace n ON n.oid = s.relnamespace
		LEFT JOIN pg_catalog.pg_depend d ON d.objid = s.oid AND d.classid = 'pg_catalog.pg_class'::regclass
			AND d.refclassid = 'pg_catalog.pg_class'::regclass AND d.deptype IN ('a', 'i')
		LEFT JOIN pg_catalog.pg_class t ON t.oid = d.refobjid
		LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
		WHERE s.relkind = 'S' AND n.nspname = $1`, schema)
	if err != nil {
		return fmt.Errorf("listing sequences: %w", err)
	}
	type seq struct{ name, table, column string }
	seqs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (seq, error) {
		var s seq
		err := row.Scan(&s.name, &s.table, &s.column)
		return s, err
	})
	if err != nil {
		return fmt.Errorf("listing sequences: %w", err)
	}
	for _, s := range seqs {
		table, column := s.table, s.column
		if table == "" {
			if !strings.HasPrefix(s.name, "notification") {
				continue
			}
			table, column = "notifications", "id"
		}
		_, err := tx.Exec(ctx, `SELECT setval($1::regclass, COALESCE((SELECT max(`+pgx.Identifier{column}.Sanitize()+`) FROM `+
			qualified(schema, table)+`), 0) + 1, false)`, qualified(schema, s.name))
		if err != nil {
			return fmt.Errorf("setting sequence %s: %w", s.name, err)
		}
	}
	return nil
}

// queueReindex records in the search outbox every loaded blog, and the removal of the
// old blogs that are not, for the indexer to rebuild the external index from.
func queueReindex(ctx context.Context, tx pgx.Tx, schema string, oldBlogs []int64) error {
	const version = `(extract(epoch from clock_timestamp()) * 1e6)::bigint`
	outbox := qualified(schema, "search_outbox")
	blogs := qualified(schema, "blogs")
	if _, err := tx.Exec(ctx, `INSERT INTO `+outbox+` (blog_id, op, version)
		SELECT old.id, 'delete', `+version+` FROM unnest($1::bigint[]) AS old(id)
		WHERE NOT EXISTS (SELECT 1 FROM `+blogs+` b WHERE b.id = old.id)`, oldBlogs); err != nil {
		return fmt.Errorf("queueing search removals: %w", err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO `+outbox+` (blog_id, op, version) SELECT id, 'upsert', `+version+` FROM `+blogs); err != nil {
		return fmt.Errorf("queueing search reindex: %w", err)
	}
	return nil
}

// Clone creates a new tenant with a copy of the tenant src's data: an export streamed
// straight into an import, with nothing written to disk. The source is read in one
// snapshot and is otherwise untouched: no lock is held on it beyond the snapshot's. req
// describes the new tenant as for Import (its Archive and Key are ignored). Errors as
// for Export and Import.
func (p *Provisioner) Clone(ctx context.Context, src string, req ImportRequest) (*tenant.Tenant, error) {
	if err := tenant.ValidateSlug(req.Slug); err != nil {
		return nil, err
	}
	if _, err := p.store.Get(ctx, src); err != nil {
		return nil, err
	}
	// A taken slug is refused before the source is read (and its export audited).
	if _, err := p.store.Get(ctx, req.Slug); err == nil {
		return nil, apperr.New(apperr.Conflict, "slug_taken", "a tenant with this slug already exists")
	} else if apperr.KindOf(err) != apperr.NotFound {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pr, pw := io.Pipe()
	exported := make(chan error, 1)
	go func() {
		_, err := p.Export(ctx, src, pw, ExportOptions{Actor: req.Actor, Detail: "clone to " + req.Slug})
		pw.CloseWithError(cmp.Or(err, io.EOF))
		exported <- err
	}()
	req.Archive, req.Key = pr, nil
	req.Detail = strings.TrimSpace("clone " + req.Detail)
	t, err := p.Import(ctx, req)
	_ = pr.CloseWithError(errors.New("the import stopped reading"))
	cancel()
	if eerr := <-exported; err != nil && eerr != nil && !errors.Is(eerr, context.Canceled) && !errors.Is(eerr, io.ErrClosedPipe) {
		return nil, errors.Join(eerr, err)
	}
	return t, err
}

// ImportSteps returns the names of the steps of an import in order; the registry records
// the last one done (tenant.StepImportRegistered before the first).
func ImportSteps() []tenant.Step { return importPlan.names() }
