package provisioner

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/pgerr"
	"github.com/tenantplane/tenantplane/tenant"
)

// step is one step of a tenant operation: the name the registry records once it is done,
// and its work. Run must be idempotent: a process killed after the work and before the
// record makes the next run do it again over what exists. What Run returns is recorded
// with the step's name in one write.
type step struct {
	Name tenant.Step
	Run  func(ctx context.Context, r *run) (tenant.StepResult, error)
	// Describe, when set, says what the step does to the tenant, for plans shown before
	// the work (a purge's dry run); "" leaves the step out of such a plan.
	Describe func(t *tenant.Tenant) string
}

// plan is the ordered list of steps of an operation.
type plan []step

// names returns the steps' names in order.
func (pl plan) names() []tenant.Step {
	out := make([]tenant.Step, len(pl))
	for i, s := range pl {
		out[i] = s.Name
	}
	return out
}

// after returns the steps that follow the recorded step last: all of them when last is
// not one of the plan's (the operation has not begun).
func (pl plan) after(last tenant.Step) plan {
	return pl[pl.index(last)+1:]
}

// index returns the position of the named step in the plan, -1 when it is not one of
// the plan's.
func (pl plan) index(name tenant.Step) int {
	return slices.IndexFunc(pl, func(s step) bool { return s.Name == name })
}

// describe returns what the plan's steps do to t, in order.
func (pl plan) describe(t *tenant.Tenant) []string {
	var out []string
	for _, s := range pl {
		if s.Describe == nil {
			continue
		}
		if d := s.Describe(t); d != "" {
			out = append(out, d)
		}
	}
	return out
}

// progress is where an operation records the steps it has done, and reads back the last
// one when a run starts.
type progress interface {
	// last returns the last step recorded for t.
	last(t *tenant.Tenant) tenant.Step
	// record records, in one write, that step name is done for t with what it produced,
	// while t is in status during; it returns a Conflict error when t is not.
	record(ctx context.Context, t *tenant.Tenant, during tenant.Status, name tenant.Step, res tenant.StepResult) error
}

// registryProgress records an operation's steps in the tenant's registry row (its
// provisioning_step column), with what each step produced. Provisioning and purge use it.
type registryProgress struct{ store *tenant.Store }

var _ progress = (*registryProgress)(nil)

func (g *registryProgress) last(t *tenant.Tenant) tenant.Step { return t.ProvisioningStep }

func (g *registryProgress) record(ctx context.Context, t *tenant.Tenant, during tenant.Status, name tenant.Step, res tenant.StepResult) error {
	return g.store.RecordStep(ctx, t.ID, during, name, res)
}

// operation is a tenant operation as the runner executes it.
type operation struct {
	// name says what the operation is, in logs and messages: "provisioning", "purge".
	name string
	// plan is its steps.
	plan plan
	// during is the tenant's status while the operation runs: a tenant in another status
	// is left alone, and no step is recorded once the tenant has left it.
	during tenant.Status
	// failed, when set, is the status a failing step leaves the tenant in, with the error
	// as its last error and an audit entry failedEvent; when empty the tenant stays as it
	// is and the error is returned.
	failed      tenant.Status
	failedEvent string
	// progress is where the steps done are recorded.
	progress progress
}

// run is one run of an operation on one tenant: what its steps share.
type run struct {
	p *Provisioner
	t *tenant.Tenant
	// actor is who asked for the operation, for the audit log.
	actor string
	conn  *pgx.Conn // logged in as the tenant; opened by tenantConn, closed by close
	// move is the tenant's move record, read by moveOf on first use.
	move *moveRecord
}

// tenantConn returns the run's connection logged in as the tenant, opening it on first
// use, so that the steps that need one (database isolation) share it.
func (r *run) tenantConn(ctx context.Context) (*pgx.Conn, error) {
	if r.conn != nil && !r.conn.IsClosed() {
		return r.conn, nil
	}
	dsn, err := r.p.tenantDSN(r.t)
	if err != nil {
		return nil, err
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("connecting as tenant: %w", err)
	}
	r.conn = conn
	return conn, nil
}

func (r *run) close(ctx context.Context) {
	if r.conn != nil {
		_ = r.conn.Close(context.WithoutCancel(ctx))
		r.conn = nil
	}
}

// errBusy is returned by execute when another run holds the tenant's lock.
var errBusy = errors.New("another run is working on the tenant")

// errNotDuring is returned by execute, with the tenant, when the tenant is not in the
// operation's status: nothing was run.
var errNotDuring = errors.New("the tenant is not in the operation's status")

// errLeft marks the error of a step whose record was refused because the tenant left the
// operation's status meanwhile: the run stops and leaves the tenant as it now is.
var errLeft = errors.New("the tenant left the operation's status")

// errCrash is returned by the afterStep test hook to simulate a killed process.
var errCrash = errors.New("simulated crash")

// execute runs op on the tenant with the given id: under the tenant's lock (one
// operation per tenant at a time, across processes), from the step after the last one
// recorded, recording each step as it is done. It returns the tenant as the run left
// it. A failing step either leaves the tenant in op.failed with the error, returning no
// error, or returns the error (translated by pgerr). A context cancellation, a tenant
// that left op.during under the run, or a simulated crash return the error and leave
// the tenant at its last recorded step, for the next run. It returns errBusy when
// another run holds the lock, and the tenant with errNotDuring, running nothing, when
// the tenant is not in op.during.
func (p *Provisioner) execute(ctx context.Context, op *operation, id, actor string) (*tenant.Tenant, error) {
	select {
	case p.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-p.sem }()

	unlock, err := p.lockTenant(ctx, id)
	if err != nil {
		return nil, err
	}
	defer unlock()

	t, err := p.store.GetByID(ctx, id)
	if err != nil {
		return nil, err
	}
	if t.Status != op.during {
		return t, errNotDuring
	}
	r := &run{p: p, t: t, actor: actor}
	defer r.close(ctx)
	start := p.now()
	for _, s := range op.plan.after(op.progress.last(t)) {
		if err := p.runStep(ctx, op, r, s); err != nil {
			if errors.Is(err, errCrash) || errors.Is(err, errLeft) || ctx.Err() != nil || op.failed == "" {
				return t, fmt.Errorf("%s of tenant %s: step %s: %w", op.name, t.Slug, s.Name, pgerr.Translate(err, pgerr.Codes{}))
			}
			p.log.Error(op.name+" failed", "tenant", t.Slug, "step", s.Name, "error", err)
			msg := fmt.Sprintf("step %s: %s", s.Name, err)
			if serr := p.store.SetStatusByID(context.WithoutCancel(ctx), t.ID, op.failed, msg, actor, op.failedEvent); serr != nil {
				return nil, errors.Join(err, serr)
			}
			t.Status, t.LastError = op.failed, msg
			p.metrics.Operation(op.name, "failed", p.now().Sub(start))
			return t, nil
		}
	}
	p.log.Info(op.name+" done", "tenant", t.Slug, "shard", t.Shard, "isolation", t.Isolation, "elapsed_ms", p.now().Sub(start).Milliseconds())
	p.metrics.Operation(op.name, "ok", p.now().Sub(start))
	return t, nil
}

// runStep does one step and records it.
func (p *Provisioner) runStep(ctx context.Context, op *operation, r *run, s step) error {
	start := p.now()
	res, err := s.Run(ctx, r)
	if err != nil {
		return err
	}
	if err := op.progress.record(ctx, r.t, op.during, s.Name, res); err != nil {
		if apperr.KindOf(err) == apperr.Conflict {
			return fmt.Errorf("%w: %w", errLeft, err)
		}
		return err
	}
	res.Apply(r.t, s.Name)
	p.log.Debug(op.name+" step done", "tenant", r.t.Slug, "step", s.Name, "duration", p.now().Sub(start))
	if p.afterStep != nil {
		return p.afterStep(s.Name)
	}
	return nil
}

// lockTenant takes the tenant's lock, a session advisory lock on the control database
// held on a dedicated connection, and returns its release. It returns errBusy when
// another session holds it.
func (p *Provisioner) lockTenant(ctx context.Context, id string) (func(), error) {
	return p.tryLock(ctx, lockKey(id))
}

// tenantLocks hands out the control-database connections that hold a per-tenant
// provisioning lock for the length of a run. They come from a pool of their own, as
// many as runs may go at once: taken from the registry pool, a few runs holding their
// lock could leave none of its connections for their own registry writes, and every
// run would wait forever.
type tenantLocks struct {
	store *tenant.Store
	size  int32

	// mu guards pool, opened on first use.
	mu   sync.Mutex
	pool *pgxpool.Pool
}

// acquire returns a connection to hold a lock on; release it when the run ends.
func (l *tenantLocks) acquire(ctx context.Context) (*pgxpool.Conn, error) {
	l.mu.Lock()
	if l.pool == nil {
		cfg := l.store.PoolConfig()
		cfg.MaxConns = l.size
		cfg.MinConns = 0
		pool, err := pgxpool.NewWithConfig(ctx, cfg)
		if err != nil {
			l.mu.Unlock()
			return nil, fmt.Errorf("opening registry lock pool: %w", err)
		}
		l.pool = pool
	}
	pool := l.pool
	l.mu.Unlock()
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("acquiring registry lock connection: %w", pgerr.Translate(err, pgerr.Codes{}))
	}
	return conn, nil
}

func (l *tenantLocks) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.pool != nil {
		l.pool.Close()
		l.pool = nil
	}
}

// lockKey is the advisory lock id of the tenant's operations. It keeps the key of the
// provisioning lock, so that processes of different versions exclude one another.
func lockKey(id string) int64 {
	h := fnv.New64a()
	h.Write([]byte("tenantplane/provision/" + id))
	return int64(h.Sum64())
}

// busy is the error of an operation asked for while another one runs on the tenant.
func busy(slug string) error {
	return apperr.New(apperr.Conflict, "tenant_busy", "another operation is working on tenant %q; try again when it is done", slug)
}
