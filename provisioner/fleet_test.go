package provisioner_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/provisioner"
	"github.com/tenantplane/tenantplane/tenant"
)

// fleetSize is the size of the big fleet: a few hundred tenants, as operators have.
const fleetSize = 300

func TestFleetMigratesEveryTenantPastABrokenOne(t *testing.T) {
	t.Parallel()
	b := fleetSetup(t, fleetSize, "synthetic")
	broken := b.tenants[137]
	b.breakTenant(t, broken)

	var mu sync.Mutex
	var reports []provisioner.Progress
	run := b.run(t, b.fleet, provisioner.RunOptions{Parallel: 8, Actor: "cli", OnProgress: func(p provisioner.Progress) {
		mu.Lock()
		defer mu.Unlock()
		reports = append(reports, p)
	}})

	// The broken tenant is reported, the others all finished.
	if run.State != provisioner.RunFailed || run.Failed != 1 || run.Done != fleetSize-1 || run.Total != fleetSize || run.TargetVersion != int64(b.next) {
		t.Fatalf("run = %s, %d done, %d failed of %d, target %d; want failed, %d done, 1 failed, target %d",
			run.State, run.Done, run.Failed, run.Total, run.TargetVersion, fleetSize-1, b.next)
	}
	if len(run.Failures) != 1 || run.Failures[0].Slug != broken.Slug || !strings.Contains(run.Failures[0].Error, b.table) {
		t.Fatalf("failures = %+v, want %s failing on the missing %s table", run.Failures, broken.Slug, b.table)
	}
	for _, tn := range b.tenants {
		if tn != broken {
			b.checkAt(t, tn, b.next)
		}
	}
	reg := b.registry(t, broken.Slug)
	if !reg.MigrationDirty || reg.Migrating {
		t.Errorf("broken tenant registry: dirty %v migrating %v, want dirty and not migrating", reg.MigrationDirty, reg.Migrating)
	}
	if err := reg.Serving(); apperr.KindOf(err) != apperr.Unavailable || !strings.Contains(err.(*apperr.Error).Code, "dirty") {
		t.Errorf("broken tenant Serving() = %v, want unavailable with a dirty code", err)
	}

	// Progress was reported for every tenant, ending with the totals.
	last := reports[len(reports)-1]
	if len(reports) != fleetSize+1 || last.Done != fleetSize-1 || last.Failed != 1 || last.Remaining != 0 || last.Rate <= 0 {
		t.Errorf("%d progress reports, last %+v; want %d, ending with %d done, 1 failed, none remaining",
			len(reports), last, fleetSize+1, fleetSize-1)
	}

	// migrate status matches what each tenant's own version table says.
	status, err := b.fleet.Status(b.ctx, provisioner.StatusFilter{Verify: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(status) != fleetSize {
		t.Fatalf("status lists %d tenants, want %d", len(status), fleetSize)
	}
	bySlug := map[string]*tenant.Tenant{}
	for _, tn := range b.tenants {
		bySlug[tn.Slug] = tn
	}
	for _, s := range status {
		c := b.catalog(t, bySlug[s.Slug])
		if s.Version != c.version || s.Dirty != c.dirty || s.Catalog == nil || s.Catalog.Version != c.version ||
			s.Catalog.Dirty != c.dirty || s.Catalog.Corrected {
			t.Errorf("status of %s = version %d dirty %v (catalog %+v); the schema says version %d dirty %v",
				s.Slug, s.Version, s.Dirty, s.Catalog, c.version, c.dirty)
		}
	}
	dirty, err := b.fleet.Status(b.ctx, provisioner.StatusFilter{Dirty: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(dirty) != 1 || dirty[0].Slug != broken.Slug || dirty[0].LastState != provisioner.EntryFailed ||
		!strings.Contains(dirty[0].LastError, b.table) || dirty[0].LastRun != run.ID {
		t.Errorf("dirty tenants = %+v, want only %s with its failure of run %s", dirty, broken.Slug, run.ID)
	}
	failedOnly, err := b.fleet.Status(b.ctx, provisioner.StatusFilter{State: provisioner.EntryFailed})
	if err != nil || len(failedOnly) != 1 {
		t.Errorf("status filtered on failed = %d tenants, %v; want 1", len(failedOnly), err)
	}

	// A second run opens no connection to the tenants at the target: with their
	// passwords wrong in the registry it still skips them, and reports the dirty one.
	if _, err := b.admin.Exec(b.ctx, `UPDATE tenants SET db_password = 'wrong' WHERE id <> $1`, broken.ID); err != nil {
		t.Fatal(err)
	}
	again := b.run(t, b.fleet, provisioner.RunOptions{Parallel: 8})
	if again.Skipped != fleetSize-1 || again.Failed != 1 || again.Done != 0 {
		t.Fatalf("rerun: %d skipped, %d failed, %d done; want %d skipped, 1 failed", again.Skipped, again.Failed, again.Done, fleetSize-1)
	}
	if !strings.Contains(strings.ToLower(again.Failures[0].Error), "dirty") {
		t.Errorf("rerun failure = %q, want it to say the schema is dirty", again.Failures[0].Error)
	}

	// The operator repairs the schema, forces the version, and retries the failures only.
	if _, err := b.admin.Exec(b.ctx, `SET ROLE `+fleetIdent(broken.DBRole)+`;
		CREATE TABLE `+fleetIdent(broken.SchemaName)+`.`+b.table+` (id bigserial PRIMARY KEY, title text NOT NULL);
		RESET ROLE`); err != nil {
		t.Fatal(err)
	}
	if err := b.fleet.Force(b.ctx, broken.Slug, b.base, "operator@example.com"); err != nil {
		t.Fatalf("Force: %v", err)
	}
	if reg := b.registry(t, broken.Slug); reg.MigrationDirty || reg.MigrationVersion != int64(b.base) || reg.Serving() != nil {
		t.Errorf("after force: version %d dirty %v serving %v; want %d, clean, served", reg.MigrationVersion, reg.MigrationDirty, reg.Serving(), b.base)
	}
	retry := b.run(t, b.fleet, provisioner.RunOptions{RetryFailed: true})
	if retry.Total != 1 || retry.Done != 1 || retry.State != provisioner.RunDone {
		t.Fatalf("retry: %d of %d done, %s; want the one broken tenant done", retry.Done, retry.Total, retry.State)
	}
	b.checkAt(t, broken, b.next)
}

func TestFleetCanaryFailureTouchesNoOtherTenant(t *testing.T) {
	t.Parallel()
	b := fleetSetup(t, 30, "synthetic")
	b.breakTenant(t, b.tenants[1])

	run := b.run(t, b.fleet, provisioner.RunOptions{Canary: 3, Parallel: 4})
	if run.State != provisioner.RunFailed || run.Failed != 1 || run.Done != 2 || run.Skipped != 27 {
		t.Fatalf("run = %s, %d done, %d failed, %d skipped; want failed with 2 done, 1 failed, 27 skipped",
			run.State, run.Done, run.Failed, run.Skipped)
	}
	if !strings.Contains(run.Error, "canary") {
		t.Errorf("run error = %q, want it to name the canary failure", run.Error)
	}
	entries := b.entries(t, b.fleet, run.ID)
	for i, tn := range b.tenants {
		e := entries[tn.Slug]
		switch {
		case i == 1:
			continue
		case i < 3:
			b.checkAt(t, tn, b.next)
		default:
			b.checkAt(t, tn, b.base)
			if e.State != provisioner.EntrySkipped || e.Attempts != 0 || !strings.Contains(e.Detail, "canary") {
				t.Errorf("entry of %s = %+v, want skipped because of the canary, never attempted", tn.Slug, e)
			}
		}
	}
}

func TestFleetStopOnErrorStartsNoMoreTenants(t *testing.T) {
	t.Parallel()
	b := fleetSetup(t, 20, "synthetic")
	b.breakTenant(t, b.tenants[0])

	run := b.run(t, b.fleet, provisioner.RunOptions{Parallel: 1, StopOnError: true})
	if run.Failed != 1 || run.Done != 0 || run.Skipped != 19 || run.State != provisioner.RunFailed {
		t.Fatalf("run = %s, %d done, %d failed, %d skipped; want the first failing and the rest skipped", run.State, run.Done, run.Failed, run.Skipped)
	}
	for _, tn := range b.tenants[1:] {
		b.checkAt(t, tn, b.base)
	}
}

func TestFleetCanceledRunIsFinishedByTheNext(t *testing.T) {
	t.Parallel()
	b := fleetSetup(t, 40, "synthetic")

	// Ctrl-C after ten tenants.
	ctx, cancel := context.WithCancel(b.ctx)
	defer cancel()
	run, err := b.fleet.Run(ctx, provisioner.RunOptions{Parallel: 2, OnProgress: func(p provisioner.Progress) {
		if p.Done >= 10 {
			cancel()
		}
	}})
	if !errors.Is(err, context.Canceled) || run == nil {
		t.Fatalf("Run = %v, %v; want the canceled run and context.Canceled", run, err)
	}
	if run.State != provisioner.RunCanceled || run.Done < 10 || run.Done >= 40 || run.Pending != 40-run.Done || run.Running != 0 {
		t.Fatalf("canceled run = %s, %d done, %d pending, %d running; want canceled with the rest pending",
			run.State, run.Done, run.Pending, run.Running)
	}
	for _, tn := range b.tenants {
		if reg := b.registry(t, tn.Slug); reg.Migrating || reg.MigrationDirty {
			t.Errorf("tenant %s left migrating %v dirty %v by a canceled run", tn.Slug, reg.Migrating, reg.MigrationDirty)
		}
	}

	next := b.run(t, b.fleet, provisioner.RunOptions{Parallel: 4})
	if next.Done != 40-run.Done || next.Skipped != run.Done || next.State != provisioner.RunDone {
		t.Fatalf("next run: %d done, %d skipped, %s; want %d done, %d skipped", next.Done, next.Skipped, next.State, 40-run.Done, run.Done)
	}
	for _, tn := range b.tenants {
		b.checkAt(t, tn, b.next)
	}
}

func TestFleetKilledRunIsFinishedByTheNext(t *testing.T) {
	t.Parallel()
	b := fleetSetup(t, 40, "synthetic")

	// The process dies after ten tenants: entries left running, tenants left migrating.
	_, dying := b.newFleet(t)
	dying.CrashAfter(10)
	if _, err := dying.Run(b.ctx, provisioner.RunOptions{Parallel: 4}); !errors.Is(err, provisioner.FleetCrash) {
		t.Fatalf("Run = %v, want the simulated crash", err)
	}
	runs, err := b.fleet.ListRuns(b.ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	dead := runs[0]
	if dead.State != provisioner.RunRunning || dead.Running == 0 {
		t.Fatalf("dead run = %s with %d running entries, want it left running", dead.State, dead.Running)
	}
	migrating := 0
	for _, tn := range b.tenants {
		reg := b.registry(t, tn.Slug)
		if reg.Migrating {
			migrating++
			if err := reg.Serving(); apperr.KindOf(err) != apperr.Unavailable || err.(*apperr.Error).Code != "tenant_migrating" {
				t.Errorf("mid-migration tenant %s: Serving() = %v, want 503 tenant_migrating", tn.Slug, err)
			}
		}
	}
	if migrating == 0 {
		t.Fatal("no tenant left mid-migration by the killed run")
	}

	// A new process runs again: the dead run is marked interrupted, everything finishes.
	_, fresh := b.newFleet(t)
	next := b.run(t, fresh, provisioner.RunOptions{Parallel: 4})
	if next.State != provisioner.RunDone || next.Failed != 0 || next.Done+next.Skipped != 40 {
		t.Fatalf("next run = %s, %d done, %d skipped, %d failed; want all 40 finished", next.State, next.Done, next.Skipped, next.Failed)
	}
	for _, tn := range b.tenants {
		b.checkAt(t, tn, b.next)
	}
	old, err := fresh.GetRun(b.ctx, dead.ID)
	if err != nil {
		t.Fatal(err)
	}
	if old.State != provisioner.RunInterrupted || old.Running != 0 || old.FinishedAt == nil {
		t.Errorf("dead run now %s with %d running; want interrupted, none running", old.State, old.Running)
	}
}

func TestFleetConcurrentRunsNeverDoubleApply(t *testing.T) {
	t.Parallel()
	b := fleetSetup(t, 24, "slow")
	b.migrateAllTo(t, b.base)

	// The CLI and the API of two processes start a run at the same time.
	_, cli := b.newFleet(t)
	_, api := b.newFleet(t)
	if err := api.Start(b.ctx); err != nil {
		t.Fatal(err)
	}
	defer api.Stop()
	var wg sync.WaitGroup
	var cliRun *provisioner.Run
	var cliErr error
	wg.Go(func() { cliRun, cliErr = cli.Run(b.ctx, provisioner.RunOptions{Parallel: 6, Actor: "cli"}) })
	id, err := api.StartRun(b.ctx, provisioner.RunOptions{Parallel: 6, Actor: "admin@example.com"})
	if err != nil {
		t.Fatalf("StartRun: %v", err)
	}
	apiRun := fleetAwait(t, b, api, id)
	wg.Wait()
	if cliErr != nil {
		t.Fatal(cliErr)
	}
	for _, run := range []*provisioner.Run{cliRun, apiRun} {
		if run.Failed != 0 || run.State != provisioner.RunDone || run.Done+run.Skipped != 24 {
			t.Errorf("run %s by %s: %s, %d done, %d skipped, %d failed (%+v); want all finished", run.ID, run.Actor, run.State,
				run.Done, run.Skipped, run.Failed, run.Failures)
		}
	}
	if apiRun.Actor != "admin@example.com" || apiRun.Options.Parallel != 6 {
		t.Errorf("API run recorded as actor %q, options %+v", apiRun.Actor, apiRun.Options)
	}
	for _, tn := range b.tenants {
		b.checkAt(t, tn, b.next)
	}
}

// fleetWait bounds how long a test waits for a fleet run to get somewhere: generous, so
// that a loaded machine is slow rather than red.
const fleetWait = time.Minute

// fleetAwait follows a background run in the ledger until it ends, for at most fleetWait.
func fleetAwait(t *testing.T, b *fleetBundle, f *provisioner.Fleet, id string) *provisioner.Run {
	t.Helper()
	deadline := time.After(fleetWait)
	for {
		run, err := f.GetRun(b.ctx, id)
		if err != nil {
			t.Fatalf("GetRun: %v", err)
		}
		if run.State != provisioner.RunRunning {
			return run
		}
		select {
		case <-b.ctx.Done():
			t.Fatalf("run %s still running when the test's time ran out: %+v", id, run)
		case <-deadline:
			t.Fatalf("run %s still running after %v: %+v", id, fleetWait, run)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func TestFleetSignupDuringRunGetsNewestAndStaysThere(t *testing.T) {
	t.Parallel()
	b := fleetSetup(t, 12, "slow")
	b.migrateAllTo(t, b.base)

	var signup sync.WaitGroup
	var once sync.Once
	var created *tenant.Tenant
	var signupErr error
	run := b.run(t, b.fleet, provisioner.RunOptions{Parallel: 2, OnProgress: func(p provisioner.Progress) {
		if p.Done == 1 {
			once.Do(func() {
				signup.Go(func() {
					created, signupErr = b.prov.Register(b.ctx, provisioner.CreateRequest{
						Slug: "newcomer", AdminEmail: "admin@newcomer.example", AdminPasswordHash: "hash", Actor: "signup",
					})
					if signupErr == nil {
						created, signupErr = b.prov.Provision(b.ctx, created.ID)
					}
				})
			})
		}
	}})
	signup.Wait()
	if signupErr != nil || created.Status != tenant.StatusActive {
		t.Fatalf("signup during the run = %+v, %v; want active", created, signupErr)
	}
	if run.Done != 12 || run.Failed != 0 {
		t.Fatalf("run: %d done, %d failed; want 12 done", run.Done, run.Failed)
	}
	b.checkAt(t, created, b.next)

	// The next run leaves it alone: already at the newest version.
	next := b.run(t, b.fleet, provisioner.RunOptions{})
	if next.Skipped != 13 || next.Done != 0 {
		t.Errorf("next run: %d skipped, %d done; want all 13 skipped", next.Skipped, next.Done)
	}
	b.checkAt(t, created, b.next)
}

func TestFleetDownMigrationPerTenantAndFleetWide(t *testing.T) {
	t.Parallel()
	b := fleetSetup(t, 10, "additive")
	b.migrateAllTo(t, b.next)
	// A tenant with a database of its own, provisioned for real: at the newest version.
	own, err := b.prov.Register(b.ctx, provisioner.CreateRequest{Slug: "own-db", Isolation: tenant.IsolationDatabase,
		AdminEmail: "admin@own-db.example", AdminPasswordHash: "hash"})
	if err == nil {
		own, err = b.prov.Provision(b.ctx, own.ID)
	}
	if err != nil || own.Status != tenant.StatusActive || own.MigrationVersion != int64(b.next) {
		t.Fatalf("provisioning a database-isolated tenant = %+v, %v", own, err)
	}
	checkOwn := func(want int) {
		t.Helper()
		st, err := b.fleet.Status(b.ctx, provisioner.StatusFilter{Tenants: []string{own.Slug}, Verify: true})
		if err != nil || len(st) != 1 || st[0].Catalog == nil || st[0].Catalog.Version != int64(want) || st[0].Version != int64(want) || st[0].Catalog.Error != "" {
			t.Fatalf("status of %s = %+v (catalog %+v), %v; want version %d in registry and schema", own.Slug, st, st[0].Catalog, err, want)
		}
	}

	// One tenant down, with the same ledger.
	one := b.tenants[3]
	run := b.run(t, b.fleet, provisioner.RunOptions{To: b.base, Tenants: []string{one.Slug}})
	if run.Total != 1 || run.Done != 1 || run.TargetVersion != int64(b.base) {
		t.Fatalf("down run for one tenant: %d of %d done, target %d", run.Done, run.Total, run.TargetVersion)
	}
	for _, tn := range b.tenants {
		want := b.next
		if tn == one {
			want = b.base
		}
		b.checkAt(t, tn, want)
	}

	// A dry run plans the rest and changes nothing.
	plan, err := b.fleet.Run(b.ctx, provisioner.RunOptions{To: b.base, DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if !plan.DryRun || len(plan.Entries) != 11 || plan.Pending != 10 || plan.Skipped != 1 || plan.ID != "" {
		t.Fatalf("dry run = %d listed, %d to migrate, %d skipped, id %q; want 11 listed, 10 planned, 1 skipped, nothing recorded",
			len(plan.Entries), plan.Pending, plan.Skipped, plan.ID)
	}
	runs, err := b.fleet.ListRuns(b.ctx, 100)
	if err != nil || len(runs) != 2 {
		t.Fatalf("ledger holds %d runs, %v; want 2 (the dry run is not recorded)", len(runs), err)
	}

	// The whole fleet down, then up again.
	b.migrateAllTo(t, b.base)
	for _, tn := range b.tenants {
		b.checkAt(t, tn, b.base)
	}
	checkOwn(b.base)
	up := b.run(t, b.fleet, provisioner.RunOptions{})
	if up.Done != 11 || up.TargetVersion != int64(b.next) {
		t.Fatalf("up run: %d done, target %d; want all 11 done", up.Done, up.TargetVersion)
	}
	for _, tn := range b.tenants {
		b.checkAt(t, tn, b.next)
	}
	checkOwn(b.next)
}

func TestFleetStatusVerifyCorrectsTheRegistry(t *testing.T) {
	t.Parallel()
	b := fleetSetup(t, 5, "synthetic")
	liar := b.tenants[2]
	// The registry claims a version the schema does not have: a run would skip it.
	if _, err := b.admin.Exec(b.ctx, `UPDATE tenants SET migration_version = $2 WHERE id = $1`, liar.ID, b.next); err != nil {
		t.Fatal(err)
	}
	st, err := b.fleet.Status(b.ctx, provisioner.StatusFilter{Verify: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range st {
		corrected := s.Slug == liar.Slug
		if s.Catalog == nil || s.Catalog.Corrected != corrected || s.Version != int64(b.base) || !s.Behind {
			t.Errorf("status of %s = version %d behind %v, catalog %+v; want version %d, behind, corrected %v",
				s.Slug, s.Version, s.Behind, s.Catalog, b.base, corrected)
		}
	}
	run := b.run(t, b.fleet, provisioner.RunOptions{})
	if run.Done != 5 {
		t.Fatalf("run after verification: %d done, %d skipped; want all 5 migrated", run.Done, run.Skipped)
	}
	for _, tn := range b.tenants {
		b.checkAt(t, tn, b.next)
	}
}

func TestFleetBackgroundRunStopsWithTheServer(t *testing.T) {
	t.Parallel()
	b := fleetSetup(t, 30, "synthetic")
	// A run whose tenants each take a while: the server stops in the middle.
	if _, err := b.admin.Exec(b.ctx, `CREATE FUNCTION public.fleet_slow() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN PERFORM pg_sleep(0.05); RETURN NEW; END $$;
		CREATE TRIGGER fleet_slow BEFORE UPDATE ON migration_entries FOR EACH ROW EXECUTE FUNCTION public.fleet_slow()`); err != nil {
		t.Fatal(err)
	}
	if err := b.fleet.Start(b.ctx); err != nil {
		t.Fatal(err)
	}
	// The server stops once the first tenant is done: the run reports it.
	firstDone := make(chan struct{})
	var once sync.Once
	id, err := b.fleet.StartRun(b.ctx, provisioner.RunOptions{Parallel: 1, Actor: "admin@example.com",
		OnProgress: func(p provisioner.Progress) {
			if p.Done > 0 {
				once.Do(func() { close(firstDone) })
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-firstDone:
	case <-time.After(fleetWait):
		t.Fatalf("no tenant of run %s was migrated within %v", id, fleetWait)
	}
	b.fleet.Stop()
	run, err := b.fleet.GetRun(b.ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if run.State != provisioner.RunCanceled || run.Running != 0 || run.Done+run.Pending != 30 || run.Pending == 0 {
		t.Fatalf("run after Stop = %s, %d done, %d pending, %d running; want canceled with the rest pending", run.State, run.Done, run.Pending, run.Running)
	}
	if _, err := b.fleet.StartRun(b.ctx, provisioner.RunOptions{}); apperr.KindOf(err) != apperr.Unavailable {
		t.Errorf("StartRun after Stop = %v, want unavailable", err)
	}
}

func TestFleetRejectsBadRequests(t *testing.T) {
	t.Parallel()
	b := fleetSetup(t, 2, "additive")
	pending, err := b.prov.Register(b.ctx, provisioner.CreateRequest{Slug: "half-done", AdminEmail: "a@half-done.example", AdminPasswordHash: "hash"})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		opts provisioner.RunOptions
		kind apperr.Kind
		code string
	}{
		{"unknown version", provisioner.RunOptions{To: 999}, apperr.Invalid, "unknown_version"},
		{"unknown tenant", provisioner.RunOptions{Tenants: []string{"nobody-here"}}, apperr.NotFound, "tenant_not_found"},
		{"tenant still provisioning", provisioner.RunOptions{Tenants: []string{pending.Slug}}, apperr.Invalid, "tenant_not_migratable"},
		{"retry without an earlier run", provisioner.RunOptions{RetryFailed: true}, apperr.Invalid, "no_previous_run"},
		{"too parallel", provisioner.RunOptions{Parallel: 1000}, apperr.Invalid, "invalid"},
	}
	for _, c := range cases {
		_, err := b.fleet.Run(b.ctx, c.opts)
		var ae *apperr.Error
		if !errors.As(err, &ae) || ae.Kind != c.kind || ae.Code != c.code {
			t.Errorf("%s: Run = %v, want %v error %s", c.name, err, c.kind, c.code)
		}
	}
	if _, err := b.fleet.GetRun(b.ctx, "not-a-uuid"); apperr.KindOf(err) != apperr.NotFound {
		t.Errorf("GetRun(bad id) = %v, want not found", err)
	}
	if _, err := b.fleet.StartRun(b.ctx, provisioner.RunOptions{}); apperr.KindOf(err) != apperr.Unavailable {
		t.Errorf("StartRun before Start = %v, want unavailable", err)
	}
	if err := b.fleet.Force(b.ctx, b.tenants[0].Slug, 999, "op"); apperr.KindOf(err) != apperr.Invalid {
		t.Errorf("Force to an unknown version = %v, want invalid", err)
	}
}
