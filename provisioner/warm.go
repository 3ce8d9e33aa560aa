package provisioner

import (
	"cmp"
	"context"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tenantplane/tenantplane/lifecycle"
	"github.com/tenantplane/tenantplane/pgerr"
	"github.com/tenantplane/tenantplane/tenant"
)

// The warm pool keeps, per shard, Config.WarmPool schemas with their roles created and
// migrated ahead of any signup, recorded in the registry table warm_schemas. A signup of
// a schema-isolation tenant runs warmPlan: its first step claims a ready schema in one
// statement (FOR UPDATE SKIP LOCKED: two signups never get the same row) and binds it to
// the tenant in one shard transaction: the schema and the role are renamed to the
// tenant's names (so naming rules, ownership, the admin's membership and the gateway's
// grant, all kept by object id, stay as a signup would leave them), and the role gets
// the tenant's search path. The pooled role was created with a SCRAM secret computed
// here rather than by the server from a plain password, so that the claim hashes no
// password: the claim makes the pooled password the tenant's db_password in the same
// statement, and a SCRAM secret survives the rename (an MD5 one, salted with the role
// name, would not). A schema behind the binary's newest migration is
// brought up on claim. With the pool empty the same step creates the role and schema as
// provisionPlan does. The claim is recorded on the row (tenant_id) before anything is
// renamed, so a run killed at any point is finished by the next one with the same
// schema; a claimed row is never handed out again.

// warmPlan is provisionPlan for a schema-isolation signup when the pool is on: the role,
// schema and migrations steps become one claim of a pooled schema (or, with the pool
// empty, their work done in one step). The steps after it are provisionPlan's, so a run
// resumed after the claim is finished by either plan alike.
var warmPlan = append(plan{{Name: tenant.StepWarmClaim, Run: claimWarm}}, provisionPlan.after(tenant.StepMigrations)...)

// WarmSteps returns the names of the steps of a signup served by the warm pool, in order.
func WarmSteps() []tenant.Step { return warmPlan.names() }

// usesWarm reports whether the provisioning of t runs warmPlan: it is recorded at the
// claim, or it has not begun, is schema-isolated and the pool is on or (a process with
// the pool on was killed right after claiming) a pooled schema is claimed for it.
func (p *Provisioner) usesWarm(ctx context.Context, t *tenant.Tenant) bool {
	if t.ProvisioningStep == tenant.StepWarmClaim {
		return true
	}
	if t.ProvisioningStep != tenant.StepRegistered || t.Isolation != tenant.IsolationSchema {
		return false
	}
	if p.warmSize > 0 {
		return true
	}
	ws, err := p.warm.claimOf(ctx, t.ID)
	return err == nil && ws != nil
}

// warmSchema is one pooled schema as a claim sees it.
type warmSchema struct {
	schema, role, shard string
	version             int64
	// password is the role's password; secret, when set, its SCRAM secret.
	password, secret string
}

// tenant returns a stand-in tenant for the pooled schema under its pool names, for the
// steps that create, migrate and drop it: its password is the SCRAM secret.
func (w warmSchema) tenant() *tenant.Tenant {
	return &tenant.Tenant{Slug: w.schema, Isolation: tenant.IsolationSchema, Shard: w.shard,
		SchemaName: w.schema, DBRole: w.role, DBPassword: w.secret}
}

// scramIterations is the iteration count of the pooled roles' SCRAM secrets, Postgres's
// default (scram_iterations).
const scramIterations = 4096

// scramSecret returns the SCRAM-SHA-256 secret of password (RFC 5802, RFC 7677) in the
// form Postgres stores and accepts in place of a password: a role created with it logs
// in with password whatever password_encryption says.
func scramSecret(password string) (string, error) {
	salt := make([]byte, 16)
	_, _ = rand.Read(salt)
	salted, err := pbkdf2.Key(sha256.New, password, salt, scramIterations, sha256.Size)
	if err != nil {
		return "", fmt.Errorf("deriving a SCRAM secret: %w", err)
	}
	mac := func(msg string) []byte {
		h := hmac.New(sha256.New, salted)
		h.Write([]byte(msg))
		return h.Sum(nil)
	}
	stored := sha256.Sum256(mac("Client Key"))
	b64 := base64.StdEncoding.EncodeToString
	return fmt.Sprintf("SCRAM-SHA-256$%d:%s$%s:%s", scramIterations, b64(salt), b64(stored[:]), b64(mac("Server Key"))), nil
}

// claimWarm is the warm_claim step: the tenant's schema (and role) claimed from the pool
// and bound to it, at the newest migration; with the pool empty, created and migrated.
// It finds the claim of an earlier run of the step first.
func claimWarm(ctx context.Context, r *run) (tenant.StepResult, error) {
	p, t := r.p, r.t
	ws, err := p.claim(ctx, t)
	if err != nil {
		return tenant.StepResult{}, err
	}
	if ws != nil {
		if p.afterClaim != nil {
			if err := p.afterClaim(); err != nil {
				return tenant.StepResult{}, err
			}
		}
		v, err := p.bindWarm(ctx, r, *ws)
		if err == nil {
			return tenant.StepResult{Migrated: true, MigrationVersion: v}, nil
		}
		if !errors.Is(err, errWarmTaken) {
			return tenant.StepResult{}, err
		}
		// An earlier run of this step found the pool empty and created the tenant's own
		// objects; the bind changed nothing. The pooled schema, whose password the
		// tenant now has, is dropped and the tenant's own objects take that password.
		if err := p.dropClaimed(ctx, *ws); err != nil {
			return tenant.StepResult{}, err
		}
	}
	if err := p.ensureRole(ctx, t); err != nil {
		return tenant.StepResult{}, err
	}
	if err := p.ensureSchema(ctx, r); err != nil {
		return tenant.StepResult{}, err
	}
	return migrateSchema(ctx, r)
}

// claim returns the pooled schema claimed for t: the one an earlier run claimed, else a
// ready one of t's shard, claimed in the same statement; nil when the pool is empty.
func (p *Provisioner) claim(ctx context.Context, t *tenant.Tenant) (*warmSchema, error) {
	ws, err := p.warm.claim(ctx, t.ID, t.Shard, p.now())
	if ws == nil || err != nil {
		return nil, err
	}
	t.DBPassword = ws.password
	select {
	case p.warmClaimed <- struct{}{}:
	default:
	}
	return ws, nil
}

// dropClaimed drops a claimed pooled schema that was never bound, its role and its row.
func (p *Provisioner) dropClaimed(ctx context.Context, ws warmSchema) error {
	if err := p.dropWarmObjects(ctx, ws); err != nil {
		return err
	}
	return p.warm.forget(ctx, ws.schema)
}

// dropClaimOf drops the pooled schema claimed for t, if any, with its role and the
// pool's row: under the pool's names they exist only when the bind never ran (a signup
// that failed between claim and bind); a bound one was renamed to t's names, which the
// purge drops, and only its row is left to forget.
func (p *Provisioner) dropClaimOf(ctx context.Context, t *tenant.Tenant) error {
	ws, err := p.warm.claimOf(ctx, t.ID)
	if ws == nil || err != nil {
		return err
	}
	return p.dropClaimed(ctx, *ws)
}

// errWarmTaken is returned by bindWarm when the tenant's role or schema exists already
// apart from the pooled one: nothing was changed.
var errWarmTaken = errors.New("the tenant's role or schema exists apart from the pooled one")

// bindWarm renames the pooled schema ws and its role to the tenant's names and gives the
// role the tenant's search path, in one transaction (a bind done by an
// earlier run is not done again), then brings the schema to the newest migration. It
// returns the version reached, and errWarmTaken, changing nothing, when the tenant's
// names are taken by objects of its own.
func (p *Provisioner) bindWarm(ctx context.Context, r *run, ws warmSchema) (int64, error) {
	t := r.t
	db, err := p.shards.pool(ctx, t.Shard)
	if err != nil {
		return 0, err
	}
	role := pgx.Identifier{t.DBRole}.Sanitize()
	// The role keeps its SCRAM secret (see scramSecret): no password is hashed here.
	_, err = db.Exec(ctx, `DO $tenantplane$ BEGIN
		IF EXISTS (SELECT FROM pg_namespace WHERE nspname = `+quoteLiteral(ws.schema)+`) THEN
			ALTER SCHEMA `+pgx.Identifier{ws.schema}.Sanitize()+` RENAME TO `+pgx.Identifier{t.SchemaName}.Sanitize()+`;
			ALTER ROLE `+pgx.Identifier{ws.role}.Sanitize()+` RENAME TO `+role+`;
		END IF;
	END $tenantplane$;
	ALTER ROLE `+role+` SET search_path TO `+pgx.Identifier{t.SchemaName}.Sanitize())
	switch pgCode(err) {
	case "":
	case codeDuplicateObject, codeDuplicateSchema, codeUndefinedObject:
		return 0, fmt.Errorf("binding warm schema %s: %w: %w", ws.schema, errWarmTaken, err)
	default:
		return 0, fmt.Errorf("binding warm schema %s: %w", ws.schema, err)
	}
	latest, err := latestVersion(p.tenantMigrations)
	if err != nil {
		return 0, err
	}
	if ws.version >= int64(latest) {
		return ws.version, nil
	}
	// Behind: the one-transaction upgrade from the version the pool recorded (checked
	// inside it), else golang-migrate from wherever the schema is.
	if ws.version > 0 && p.upgradeSchema(ctx, t, uint(ws.version), latest) == nil {
		return int64(latest), nil
	}
	v, err := p.migrateNewTenant(ctx, r)
	return int64(v), err
}

// WarmPoolSize returns how many ready schemas the pool holds on each configured shard.
// It returns Unavailable when the registry is unreachable.
func (p *Provisioner) WarmPoolSize(ctx context.Context) (map[string]int, error) {
	ready, err := p.warm.readyByShard(ctx)
	if err != nil {
		return nil, err
	}
	out := make(map[string]int, len(p.shards.names))
	for _, name := range p.shards.names {
		out[name] = ready[name]
	}
	return out, nil
}

// RefillWarm brings the pool of every non-draining shard up to Config.WarmPool ready
// schemas and returns how many it created. A shard another process is refilling is left
// to it. Leftovers of a refill killed mid-way are dropped first. It returns the first
// error met (other shards are still refilled), Unavailable errors when the registry is
// unreachable.
func (p *Provisioner) RefillWarm(ctx context.Context) (int, error) {
	total := 0
	var first error
	for _, name := range p.shards.names {
		if p.warmSize <= 0 || p.shards.shards[name].Draining {
			continue
		}
		n, err := p.refillShard(ctx, name)
		total += n
		if err != nil && first == nil {
			first = fmt.Errorf("refilling the warm pool of shard %s: %w", name, err)
		}
	}
	return total, first
}

// refillShard refills one shard's pool under the shard's refill lock.
func (p *Provisioner) refillShard(ctx context.Context, shard string) (int, error) {
	unlock, err := p.tryLock(ctx, warmLockKey(shard))
	if errors.Is(err, errBusy) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	defer unlock()
	// Rows left filling were the work of a refill that died: only a refill holds the lock.
	stale, err := p.warm.filling(ctx, shard)
	if err != nil {
		return 0, err
	}
	for _, ws := range stale {
		if err := p.discardWarm(ctx, ws); err != nil {
			return 0, err
		}
	}
	ready, err := p.warm.readyOn(ctx, shard)
	if err != nil {
		return 0, err
	}
	made := 0
	for ; ready < p.warmSize; ready++ {
		if err := ctx.Err(); err != nil {
			return made, err
		}
		if err := p.fillOne(ctx, shard); err != nil {
			return made, err
		}
		made++
	}
	return made, nil
}

// fillOne creates one pooled schema on the shard: recorded as filling first, so that a
// refill killed mid-way leaves a row the next one drops; its role, the schema and all
// migrations; then ready.
func (p *Provisioner) fillOne(ctx context.Context, shard string) error {
	b := make([]byte, 6)
	_, _ = rand.Read(b) // crypto/rand never fails on supported platforms
	id := hex.EncodeToString(b)
	ws := warmSchema{schema: "tw_" + id, role: "twr_" + id, shard: shard, password: tenant.NewPassword()}
	var err error
	if ws.secret, err = scramSecret(ws.password); err != nil {
		return err
	}
	if err := p.warm.record(ctx, ws, p.now()); err != nil {
		return err
	}
	r := &run{p: p, t: ws.tenant(), actor: "warm-pool"}
	v, err := p.createWarm(ctx, r)
	if err != nil {
		return errors.Join(fmt.Errorf("creating warm schema %s: %w", ws.schema, err), p.discardWarm(context.WithoutCancel(ctx), ws))
	}
	return p.warm.markReady(ctx, ws.schema, int64(v))
}

// createWarm creates the run's pooled role and schema as the role and schema steps do,
// and migrates the schema to the newest version in one transaction.
func (p *Provisioner) createWarm(ctx context.Context, r *run) (uint, error) {
	if err := p.ensureRole(ctx, r.t); err != nil {
		return 0, err
	}
	if err := p.ensureSchema(ctx, r); err != nil {
		return 0, err
	}
	if err := p.ensureExtensions(ctx, r.t); err != nil {
		return 0, err
	}
	return p.bootstrapSchema(ctx, r)
}

// dropWarmObjects drops a pooled schema and its role under their pool names.
func (p *Provisioner) dropWarmObjects(ctx context.Context, ws warmSchema) error {
	r := &run{p: p, t: ws.tenant()}
	if _, err := dropStorage(ctx, r); err != nil {
		return fmt.Errorf("dropping warm schema %s: %w", ws.schema, err)
	}
	if _, err := dropRole(ctx, r); err != nil {
		return fmt.Errorf("dropping warm schema %s: %w", ws.schema, err)
	}
	return nil
}

// discardWarm drops a pooled schema that is not claimed, its role, and its row.
func (p *Provisioner) discardWarm(ctx context.Context, ws warmSchema) error {
	if err := p.dropWarmObjects(ctx, ws); err != nil {
		return err
	}
	return p.warm.forgetUnclaimed(ctx, ws.schema)
}

// migrateWarm brings the ready pooled schemas below version target up to it, one at a
// time, each under its row's lock so that no signup claims it meanwhile (a claim skips
// it and takes another). A pooled schema that cannot be migrated is dropped: the next
// refill replaces it. It returns how many it migrated.
func (p *Provisioner) migrateWarm(ctx context.Context, target int64) (int, error) {
	done := 0
	for {
		ok, err := p.migrateOneWarm(ctx, target)
		if err != nil || !ok {
			return done, err
		}
		done++
	}
}

// migrateOneWarm migrates one ready pooled schema below target; it reports false when
// none is left.
func (p *Provisioner) migrateOneWarm(ctx context.Context, target int64) (bool, error) {
	ws, ok, err := p.warm.migrateOne(ctx, target, p.shards.names, func(ws warmSchema) bool {
		uerr := p.upgradeSchema(ctx, ws.tenant(), uint(ws.version), uint(target))
		if uerr != nil {
			p.log.Warn("warm schema could not be migrated; dropping it", "schema", ws.schema, "shard", ws.shard, "error", uerr)
		}
		return uerr == nil
	})
	if ws == nil || err != nil {
		return false, err
	}
	if !ok {
		return true, p.discardWarm(ctx, *ws)
	}
	return true, nil
}

// tryLock takes the session advisory lock key on a registry lock connection and returns
// its release; errBusy when another session holds it.
func (p *Provisioner) tryLock(ctx context.Context, key int64) (func(), error) {
	conn, err := p.locks.acquire(ctx)
	if err != nil {
		return nil, err
	}
	var got bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, key).Scan(&got); err != nil {
		conn.Release()
		return nil, fmt.Errorf("taking a registry lock: %w", pgerr.Translate(err, pgerr.Codes{}))
	}
	if !got {
		conn.Release()
		return nil, errBusy
	}
	return func() {
		if _, err := conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, key); err != nil {
			_ = conn.Conn().Close(context.WithoutCancel(ctx)) // ending the session frees its lock
		}
		conn.Release()
	}, nil
}

// warmLockKey is the advisory lock id of the refills of a shard's pool.
func warmLockKey(shard string) int64 {
	h := fnv.New64a()
	h.Write([]byte("tenantplane/warm/" + shard))
	return int64(h.Sum64())
}

// WarmRefillerConfig configures a WarmRefiller.
type WarmRefillerConfig struct {
	// Interval is how often the pool is checked besides right after each claim
	// (default 30s).
	Interval time.Duration
	// Logger receives refill failures (default: the provisioner's).
	Logger *slog.Logger
	// Now is the clock (default: the provisioner's).
	Now func() time.Time
}

// WarmRefiller keeps the provisioner's warm pool full in the background, between Start
// and Stop: at start, after each claim and every Interval.
type WarmRefiller struct {
	p        *Provisioner
	interval time.Duration
	log      *slog.Logger
	now      func() time.Time
	group    lifecycle.Group
	// size is the ready schemas per shard as of the last refill.
	size *prometheus.GaugeVec
}

// NewWarmRefiller returns a refiller of p's pool. It starts nothing.
func NewWarmRefiller(p *Provisioner, cfg WarmRefillerConfig) *WarmRefiller {
	w := &WarmRefiller{p: p, interval: cmp.Or(cfg.Interval, 30*time.Second), log: cmp.Or(cfg.Logger, p.log), now: cfg.Now,
		size: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tenantplane_warm_pool_schemas", Help: "Ready schemas in the warm pool, by shard, as of the last refill.",
		}, []string{"shard"})}
	if w.now == nil {
		w.now = p.now
	}
	return w
}

// Collector returns the gauge of the pool's size per shard, for the metrics registry.
func (w *WarmRefiller) Collector() prometheus.Collector { return w.size }

// Start refills the pool in the background until Stop or until ctx ends. It returns an
// error wrapping lifecycle.ErrStarted when the refiller was already started or stopped.
func (w *WarmRefiller) Start(ctx context.Context) error {
	if err := w.group.Start(ctx); err != nil {
		return fmt.Errorf("starting the warm pool refiller: %w", err)
	}
	w.group.Go(w.loop)
	return nil
}

// Stop ends the refills and waits for the schema being created, at most a minute; a
// refill stopped mid-way is cleaned up by the next one.
func (w *WarmRefiller) Stop() { w.group.Stop(time.Minute) }

func (w *WarmRefiller) loop(ctx context.Context) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-w.p.warmClaimed:
		}
		start := w.now()
		n, err := w.p.RefillWarm(ctx)
		if err != nil && ctx.Err() == nil {
			w.log.Error("warm pool refill", "error", err)
		}
		if n > 0 {
			w.log.Info("warm pool refilled", "created", n, "elapsed_ms", w.now().Sub(start).Milliseconds())
		}
		if sizes, err := w.p.WarmPoolSize(ctx); err == nil {
			for shard, k := range sizes {
				w.size.WithLabelValues(shard).Set(float64(k))
			}
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(w.interval)
	}
}
