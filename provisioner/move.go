package provisioner

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/tenant"
)

// MoveRequest describes a move of a tenant to another shard or isolation mode.
type MoveRequest struct {
	// Shard is the target shard; empty keeps the tenant's shard (a change of isolation).
	Shard string
	// Isolation is the target isolation mode; empty keeps the tenant's.
	Isolation tenant.Isolation
	// Offline copies with writes frozen throughout instead of replicating while the
	// tenant keeps serving: for shards without logical replication.
	Offline bool
	// Actor is who asked, for the audit log; Detail is added to its entry.
	Actor, Detail string
	// Progress, when set, follows the move.
	Progress func(MoveState)
}

// MoveState is where a move stands.
type MoveState struct {
	Slug      string           `json:"slug"`
	FromShard string           `json:"from_shard"`
	ToShard   string           `json:"to_shard"`
	Isolation tenant.Isolation `json:"isolation"`
	Offline   bool             `json:"offline"`
	// Step is the last step done.
	Step      tenant.Step `json:"step"`
	StartedAt time.Time   `json:"started_at"`
	// CopiedRows of TotalRows are on the target; LagBytes is how far replication trails.
	CopiedRows int64 `json:"copied_rows"`
	TotalRows  int64 `json:"total_rows"`
	LagBytes   int64 `json:"lag_bytes"`
	// Error is the last error of a failed step, empty otherwise.
	Error string `json:"error,omitempty"`
}

// moveRecord is a move in progress as its row in tenant_moves records it.
type moveRecord struct {
	TenantID      string
	ID            string
	FromShard     string
	FromIsolation tenant.Isolation
	FromDatabase  string
	ToShard       string
	ToIsolation   tenant.Isolation
	ToDatabase    string
	Offline       bool
	SameCluster   bool
	SubOID        int64
	Step          tenant.Step
	Actor         string
	LastError     string
	CopiedRows    int64
	TotalRows     int64
	LagBytes      int64
	StartedAt     time.Time
}

// at returns t placed where the move's source (from) or target (to) is.
func (m *moveRecord) at(t *tenant.Tenant, to bool) *tenant.Tenant {
	c := *t
	c.Shard, c.Isolation, c.DatabaseName = m.FromShard, m.FromIsolation, m.FromDatabase
	if to {
		c.Shard, c.Isolation, c.DatabaseName = m.ToShard, m.ToIsolation, m.ToDatabase
	}
	return &c
}

// source returns t placed on the move's source; target on its target.
func (m *moveRecord) source(t *tenant.Tenant) *tenant.Tenant { return m.at(t, false) }
func (m *moveRecord) target(t *tenant.Tenant) *tenant.Tenant { return m.at(t, true) }

// replicationName names the move's publication, replication slot and subscription
// (MoveReplicationName).
func (m *moveRecord) replicationName() string { return MoveReplicationName(m.TenantID) }

// MoveReplicationName is the name of the publication, replication slot and subscription
// of a move of the tenant with the given id: one move per tenant at a time.
func MoveReplicationName(tenantID string) string {
	return "tp_move_" + strings.ReplaceAll(tenantID, "-", "")
}

// switched reports whether t's registry placement is the move's target.
func (m *moveRecord) switched(t *tenant.Tenant) bool {
	return t.Shard == m.ToShard && t.Isolation == m.ToIsolation && t.DatabaseName == m.ToDatabase
}

func (m *moveRecord) state(slug string) *MoveState {
	return &MoveState{Slug: slug, FromShard: m.FromShard, ToShard: m.ToShard, Isolation: m.ToIsolation, Offline: m.Offline,
		Step: m.Step, StartedAt: m.StartedAt, CopiedRows: m.CopiedRows, TotalRows: m.TotalRows, LagBytes: m.LagBytes, Error: m.LastError}
}

// moveOf returns the run's move record, read once per run under the tenant's lock (so
// no other run changes it meanwhile). It fails when the move is gone (aborted).
func (r *run) moveOf(ctx context.Context) (*moveRecord, error) {
	if r.move != nil {
		return r.move, nil
	}
	m, err := r.p.moves.get(ctx, r.t.ID)
	if err != nil {
		return nil, err
	}
	if m == nil {
		return nil, apperr.New(apperr.Conflict, "move_gone", "tenant %q has no move in progress any more", r.t.Slug)
	}
	r.move = m
	return m, nil
}

// moveProgress records a move's steps in its tenant_moves row, written only while the
// tenant is in the operation's status. The unrecorded step (the row's removal) is not
// written.
type moveProgress struct {
	moves      *moveStore
	own        plan
	unrecorded tenant.Step
}

var _ progress = (*moveProgress)(nil)

// last reads the move's recorded step; execute calls it under the tenant's lock. A
// step that is not one of the operation's own starts it from its beginning.
func (g *moveProgress) last(t *tenant.Tenant) tenant.Step {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	step, err := g.moves.step(ctx, t.ID)
	if err != nil {
		return ""
	}
	if g.own.index(step) < 0 {
		return ""
	}
	return step
}

func (g *moveProgress) record(ctx context.Context, t *tenant.Tenant, during tenant.Status, name tenant.Step, _ tenant.StepResult) error {
	if name == g.unrecorded {
		return nil
	}
	recorded, err := g.moves.setStep(ctx, t.ID, during, name)
	if err != nil {
		return err
	}
	if !recorded {
		return apperr.New(apperr.Conflict, "invalid_transition", "tenant is no longer %s or its move is gone; step %s was not recorded", during, name)
	}
	return nil
}

// stepMoveForget is the last step of a finished or undone move, removing its record:
// never recorded.
const stepMoveForget tenant.Step = "move_forget"

// The plans of a move. Online: the target prepared, the data replicated while the
// tenant serves, then writes frozen for the catch-up and the check only. Offline: the
// writes frozen first, the data copied with COPY. Undo: the source as it was, the
// target's objects gone.
var (
	moveOnlinePlan = plan{
		{Name: tenant.StepMoveRole, Run: moveRole},
		{Name: tenant.StepMoveSchema, Run: moveSchema},
		{Name: tenant.StepMoveMigrations, Run: moveMigrations},
		{Name: tenant.StepMovePublication, Run: movePublication},
		{Name: tenant.StepMoveSubscription, Run: moveSubscription},
		{Name: tenant.StepMoveCopy, Run: moveCopy},
		{Name: tenant.StepMoveFreeze, Run: moveFreeze},
		{Name: tenant.StepMoveVerify, Run: moveVerify},
		{Name: tenant.StepMoveSwitch, Run: moveSwitch},
		{Name: tenant.StepMoveCleanup, Run: moveCleanup},
		{Name: stepMoveForget, Run: moveForget},
	}
	moveOfflinePlan = plan{
		{Name: tenant.StepMoveRole, Run: moveRole},
		{Name: tenant.StepMoveSchema, Run: moveSchema},
		{Name: tenant.StepMoveMigrations, Run: moveMigrations},
		{Name: tenant.StepMoveFreeze, Run: moveFreeze},
		{Name: tenant.StepMoveOfflineCopy, Run: moveOfflineCopy},
		{Name: tenant.StepMoveVerify, Run: moveVerify},
		{Name: tenant.StepMoveSwitch, Run: moveSwitch},
		{Name: tenant.StepMoveCleanup, Run: moveCleanup},
		{Name: stepMoveForget, Run: moveForget},
	}
	moveUndoPlan = plan{
		{Name: tenant.StepMoveUndoSource, Run: moveUndoSource},
		{Name: tenant.StepMoveUndoTarget, Run: moveUndoTarget},
		{Name: stepMoveForget, Run: moveForget},
	}
)

// moveOps returns the online move, the offline move and the undo.
func moveOps(moves *moveStore) (online, offline, undo *operation) {
	op := func(name string, pl plan) *operation {
		return &operation{name: name, plan: pl, during: tenant.StatusActive,
			progress: &moveProgress{moves: moves, own: pl, unrecorded: stepMoveForget}}
	}
	return op("move", moveOnlinePlan), op("offline move", moveOfflinePlan), op("move undo", moveUndoPlan)
}

// MoveSteps returns the names of the steps of an online (or, with offline, an offline)
// move in order; MoveState.Step is the last one done.
func MoveSteps(offline bool) []tenant.Step {
	pl := moveOnlinePlan
	if offline {
		pl = moveOfflinePlan
	}
	return pl[:len(pl)-1].names()
}

// opFor returns the operation that carries the move on from its recorded step.
func (p *Provisioner) opFor(m *moveRecord) *operation {
	switch {
	case moveUndoPlan.index(m.Step) >= 0:
		return p.moveUndoOp
	case m.Offline:
		return p.moveOfflineOp
	}
	return p.moveOnlineOp
}

// Move moves the tenant to req's shard and isolation and returns it as served
// afterwards. The move is recorded (tenant_moves) and runs as a plan of steps under the
// tenant's lock: the target's role, schema and migrations at the source's version, then
// (online) a publication on the source and a subscription on the target that copy the
// data and follow the writes while the tenant is served from the source; writes are
// frozen only for the catch-up, the check of every table's count and checksum and the
// switch of the registry, which thaws them. Offline, writes are frozen first and the data
// copied with COPY. A Move interrupted (a killed process, a cancelled context) is
// finished by calling Move again on the slug; one whose step fails before the switch is
// rolled back (as AbortMove does) and its error returned. It returns NotFound, Invalid
// (invalid_shard, move_nothing), Unprocessable (logical_replication_unavailable: pass
// the offline option), Conflict (invalid_transition, tenant_migrating,
// move_in_progress, tenant_busy) and Unavailable.
func (p *Provisioner) Move(ctx context.Context, slug string, req MoveRequest) (*tenant.Tenant, error) {
	t, err := p.store.Get(ctx, slug)
	if err != nil {
		return nil, err
	}
	actor := cmp.Or(req.Actor, "system")
	m, err := p.moves.get(ctx, t.ID)
	if err != nil {
		return nil, err
	}
	if m == nil {
		if m, err = p.beginMove(ctx, t, req, actor); err != nil {
			return nil, err
		}
	} else if (req.Shard != "" && req.Shard != m.ToShard) || (req.Isolation != "" && req.Isolation != m.ToIsolation) {
		return nil, apperr.New(apperr.Conflict, "move_in_progress", "tenant %q is being moved to shard %s (%s isolation); abort that move first", slug, m.ToShard, m.ToIsolation)
	}
	if req.Progress != nil {
		// The first caller's watcher stays: a second Move of the slug at once ends busy.
		w := &req.Progress
		if _, taken := p.moveWatchers.LoadOrStore(t.ID, w); !taken {
			defer p.moveWatchers.CompareAndDelete(t.ID, w)
		}
	}
	op := p.opFor(m)
	got, err := p.execute(ctx, op, t.ID, actor)
	switch {
	case errors.Is(err, errBusy):
		return nil, busy(slug)
	case errors.Is(err, errNotDuring):
		return nil, apperr.New(apperr.Conflict, "invalid_transition", "tenant %q is %s; only an active tenant can be moved", slug, got.Status)
	case err == nil && op == p.moveUndoOp:
		return nil, apperr.New(apperr.Conflict, "move_rolled_back", "the move of tenant %q was rolled back; it is served from shard %s", slug, got.Shard)
	case err == nil:
		p.log.Info("tenant moved", "tenant", slug, "shard", got.Shard, "isolation", got.Isolation)
		return got, nil
	case interrupted(ctx, err) || op == p.moveUndoOp:
		return nil, fmt.Errorf("move of %s was interrupted (move it again to finish, or abort it): %w", slug, err)
	}
	cur, lerr := p.moves.get(context.WithoutCancel(ctx), t.ID)
	if lerr != nil || cur == nil {
		return nil, errors.Join(err, lerr)
	}
	if op.plan.index(cur.Step) >= op.plan.index(tenant.StepMoveSwitch) {
		// Served from the target already: only the cleanup is left, for the next run.
		return nil, fmt.Errorf("move of %s switched to shard %s but its cleanup failed (move it again to finish): %w", slug, cur.ToShard, err)
	}
	p.log.Error("move failed; rolling it back", "tenant", slug, "to_shard", cur.ToShard, "error", err)
	_ = p.moves.setError(context.WithoutCancel(ctx), t.ID, err.Error())
	if _, uerr := p.undoMove(context.WithoutCancel(ctx), t, actor, "failed: "+err.Error()); uerr != nil {
		return nil, errors.Join(err, fmt.Errorf("rolling the move of %s back (abort the move to finish once the shards are reachable): %w", slug, uerr))
	}
	return nil, fmt.Errorf("moving tenant %s to shard %s failed and was rolled back; it is served from shard %s as before: %w", slug, cur.ToShard, cur.FromShard, err)
}

// beginMove checks the request and records the move, with its audit entry.
func (p *Provisioner) beginMove(ctx context.Context, t *tenant.Tenant, req MoveRequest, actor string) (*moveRecord, error) {
	if t.Status != tenant.StatusActive {
		return nil, apperr.New(apperr.Conflict, "invalid_transition", "tenant %q is %s; only an active tenant can be moved", t.Slug, t.Status)
	}
	if t.Migrating {
		return nil, apperr.New(apperr.Conflict, "tenant_migrating", "a fleet migration is working on tenant %q; move it when the run is done", t.Slug)
	}
	m := &moveRecord{TenantID: t.ID, ID: uuid.NewString(), FromShard: t.Shard, FromIsolation: t.Isolation, FromDatabase: t.DatabaseName,
		ToShard: cmp.Or(req.Shard, t.Shard), Offline: req.Offline, Step: tenant.StepMoveRegistered, Actor: actor}
	if _, ok := p.shards.get(m.ToShard); !ok {
		return nil, apperr.New(apperr.Invalid, "invalid_shard", "unknown shard %q", m.ToShard)
	}
	iso := t.Isolation
	if req.Isolation != "" {
		var err error
		if iso, err = tenant.ParseIsolation(string(req.Isolation)); err != nil {
			return nil, err
		}
	}
	m.ToIsolation = iso
	if m.ToShard == t.Shard && iso == t.Isolation {
		return nil, apperr.New(apperr.Invalid, "move_nothing", "tenant %q is on shard %s in %s isolation already", t.Slug, t.Shard, iso)
	}
	same, err := p.sameCluster(ctx, m.FromShard, m.ToShard)
	if err != nil {
		return nil, err
	}
	m.SameCluster = same
	if iso == tenant.IsolationDatabase {
		m.ToDatabase = t.DatabaseName
		if same || m.ToDatabase == "" {
			m.ToDatabase = tenant.NewNames(t.Slug, iso).Database
		}
	}
	if !m.Offline {
		if err := p.checkLogical(ctx, m, t); err != nil {
			return nil, err
		}
	}
	mode := "online"
	if m.Offline {
		mode = "offline"
	}
	detail := strings.TrimSpace(fmt.Sprintf("%s move from shard %s (%s) to shard %s (%s) %s", mode, m.FromShard, m.FromIsolation, m.ToShard, m.ToIsolation, req.Detail))
	err = p.moves.begin(ctx, m, func(tx pgx.Tx) error {
		return tenant.AddEventTx(ctx, tx, t.ID, "move_start", actor, detail)
	})
	switch {
	case errors.Is(err, errMoveRecorded):
		return nil, apperr.New(apperr.Conflict, "move_in_progress", "tenant %q is being moved already", t.Slug)
	case errors.Is(err, errMoveRefused):
		return nil, apperr.New(apperr.Conflict, "invalid_transition", "tenant %q is no longer active or a fleet migration is working on it", t.Slug)
	case err != nil:
		return nil, err
	}
	m.StartedAt = p.now()
	return m, nil
}

// undoMove runs the undo of the tenant's move, from its beginning unless an undo was
// under way, with an audit entry (move_abort).
func (p *Provisioner) undoMove(ctx context.Context, t *tenant.Tenant, actor, detail string) (*tenant.Tenant, error) {
	got, err := p.execute(ctx, p.moveUndoOp, t.ID, actor)
	if err != nil {
		return nil, err
	}
	if err := p.store.AddEvent(ctx, t.ID, "move_abort", actor, detail); err != nil {
		return got, err
	}
	return got, nil
}

// AbortMove stops the tenant's move in progress and removes what it made on the target:
// the replication objects on both sides, the target's schema or database (and its role
// when the move created it on another cluster); the source is writable again and the
// record gone. A move that has switched already cannot be aborted: Move finishes it. It
// returns NotFound (tenant_not_found, no_move), Conflict (move_switched, tenant_busy)
// and Unavailable.
func (p *Provisioner) AbortMove(ctx context.Context, slug, actor string) (*tenant.Tenant, error) {
	t, err := p.store.Get(ctx, slug)
	if err != nil {
		return nil, err
	}
	m, err := p.moves.get(ctx, t.ID)
	if err != nil {
		return nil, err
	}
	if m == nil {
		return nil, apperr.New(apperr.NotFound, "no_move", "tenant %q has no move in progress", slug)
	}
	if m.switched(t) && moveUndoPlan.index(m.Step) < 0 {
		return nil, apperr.New(apperr.Conflict, "move_switched", "tenant %q is served from shard %s already; move it again to finish the cleanup", slug, m.ToShard)
	}
	got, err := p.undoMove(ctx, t, cmp.Or(actor, "system"), "aborted")
	if errors.Is(err, errBusy) {
		return nil, busy(slug)
	}
	if err != nil {
		return nil, fmt.Errorf("aborting the move of %s: %w", slug, err)
	}
	return got, nil
}

// MoveStatus returns the tenant's move in progress, nil when there is none. It returns
// NotFound for an unknown slug and Unavailable.
func (p *Provisioner) MoveStatus(ctx context.Context, slug string) (*MoveState, error) {
	t, err := p.store.Get(ctx, slug)
	if err != nil {
		return nil, err
	}
	m, err := p.moves.get(ctx, t.ID)
	if err != nil || m == nil {
		return nil, err
	}
	return m.state(slug), nil
}

// report records the move's copy progress in its row and passes it to the watcher of
// the run's Move call.
func (r *run) report(ctx context.Context, m *moveRecord) {
	if err := r.p.moves.progress(ctx, m); err != nil {
		r.p.log.Warn("recording move progress", "tenant", r.t.Slug, "error", err)
	}
	if fn, ok := r.p.moveWatchers.Load(m.TenantID); ok {
		(*fn.(*func(MoveState)))(*m.state(r.t.Slug))
	}
}

// DropMovedSources drops the schemas and databases moves left on their source shards
// (unwritable since their switch) once grace has passed since the move, with the
// tenant's role there when it was the tenant's own on another cluster. It returns how
// many it dropped and the first error met; the others are tried again by the next call.
func (p *Provisioner) DropMovedSources(ctx context.Context, grace time.Duration) (int, error) {
	list, err := p.moves.sources(ctx, p.now().Add(-grace))
	if err != nil {
		return 0, err
	}
	n := 0
	var first error
	for _, s := range list {
		err := p.dropTenantStorage(ctx, &s.t, false)
		if err == nil && s.dropRole {
			_, err = dropRole(ctx, &run{p: p, t: &s.t})
		}
		if err == nil {
			err = p.moves.sourceDropped(ctx, s.id)
		}
		if err != nil {
			if first == nil {
				first = fmt.Errorf("dropping the moved-away source of %s on shard %s: %w", s.t.Slug, s.t.Shard, err)
			}
			continue
		}
		p.log.Info("moved-away source dropped", "tenant", s.t.Slug, "shard", s.t.Shard, "schema", s.t.SchemaName, "database", s.t.DatabaseName)
		n++
	}
	return n, first
}
