package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"regexp"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/spf13/cobra"

	"github.com/tenantplane/tenantplane/internal/pgtest"
	"github.com/tenantplane/tenantplane/tenant"
)

// cli runs tenantplane commands against a fresh control database, as an operator would.
type cli struct {
	t     *testing.T
	env   map[string]string
	dbURL string
}

func newCLI(t *testing.T) *cli {
	t.Helper()
	dbURL := pgtest.NewDatabase(t, pgtest.URL(t))
	c := &cli{t: t, dbURL: dbURL, env: map[string]string{"DATABASE_URL": dbURL, "TENANTPLANE_METRICS_LISTEN": "127.0.0.1:0"}}
	c.ok("", "migrate", "shared")
	return c
}

// run executes the command with stdin and returns stdout, stderr and the exit code.
func (c *cli) run(stdin string, args ...string) (string, string, int) {
	c.t.Helper()
	var out, errOut bytes.Buffer
	root := newRoot(strings.NewReader(stdin), &out, &errOut, envOf(c.env))
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	code := 0
	if err != nil {
		errOut.WriteString("error: " + errorLine(err) + "\n")
		code = exitCode(err)
	}
	return out.String(), errOut.String(), code
}

func (c *cli) ok(stdin string, args ...string) string {
	c.t.Helper()
	out, errOut, code := c.run(stdin, args...)
	if code != 0 {
		c.t.Fatalf("tenantplane %s: exit %d\n%s", strings.Join(args, " "), code, errOut)
	}
	return out
}

func (c *cli) fails(wantCode int, wantMsg string, stdin string, args ...string) {
	c.t.Helper()
	_, errOut, code := c.run(stdin, args...)
	if code != wantCode || !strings.Contains(errOut, wantMsg) {
		c.t.Errorf("tenantplane %s: exit %d, stderr %q; want exit %d mentioning %q", strings.Join(args, " "), code, errOut, wantCode, wantMsg)
	}
}

func TestCLITenantLifecycle(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	out := c.ok("a-long-passphrase\n", "tenants", "create", "acme", "--admin-email", "admin@acme.test", "--password-stdin", "-o", "json")
	var created tenant.Tenant
	if err := json.Unmarshal([]byte(out), &created); err != nil || created.Status != tenant.StatusActive {
		t.Fatalf("create answered %q (%v)", out, err)
	}
	if strings.Contains(out, "password") || strings.Contains(out, "argon2") {
		t.Errorf("create output leaks the role password or the admin hash: %s", out)
	}
	c.ok("another-passphrase\n", "tenants", "create", "globex", "--admin-email", "admin@globex.test", "--password-stdin", "--isolation", "database")

	list := c.ok("", "tenants", "list")
	for _, want := range []string{"SLUG", "acme", "globex", "database", "active"} {
		if !strings.Contains(list, want) {
			t.Errorf("list lacks %q:\n%s", want, list)
		}
	}
	c.ok("", "tenants", "suspend", "acme")
	if out := c.ok("", "tenants", "list", "--status", "suspended", "-o", "json"); !strings.Contains(out, `"slug": "acme"`) || strings.Contains(out, "globex") {
		t.Errorf("status filter: %s", out)
	}
	c.fails(1, "cannot suspend", "", "tenants", "suspend", "acme")
	c.ok("", "tenants", "resume", "acme")
	c.ok("", "tenants", "delete", "acme", "--grace", "1h")

	// The grace period holds a real purge back; a dry run lists exactly what would go.
	c.fails(1, "kept until", "", "tenants", "purge", "acme", "--yes")
	plan := c.ok("", "tenants", "purge", "acme", "--dry-run")
	if !strings.Contains(plan, "would remove: drop schema "+created.SchemaName) || !strings.Contains(plan, "drop role "+created.DBRole) {
		t.Errorf("dry run plan:\n%s", plan)
	}
	if !c.schemaExists(created.SchemaName) {
		t.Fatal("the dry run removed the schema")
	}
	// Purging asks for the slug; a wrong answer removes nothing.
	c.fails(2, "not confirmed", "nope\n", "tenants", "purge", "acme", "--force")
	c.ok("acme\n", "tenants", "purge", "acme", "--force")
	if c.schemaExists(created.SchemaName) {
		t.Error("the schema survived the purge")
	}
	c.fails(1, "not found", "", "tenants", "show", "acme")
	// The slug is free again; the new tenant gets new names.
	out = c.ok("a-long-passphrase\n", "tenants", "create", "acme", "--admin-email", "admin@acme.test", "--password-stdin", "-o", "json")
	var again tenant.Tenant
	if err := json.Unmarshal([]byte(out), &again); err != nil || again.SchemaName == created.SchemaName || again.DBRole == created.DBRole {
		t.Errorf("recreated tenant reuses names: %+v", again)
	}
}

func (c *cli) schemaExists(name string) bool {
	c.t.Helper()
	conn, err := pgx.Connect(context.Background(), c.dbURL)
	if err != nil {
		c.t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM pg_namespace WHERE nspname = $1`, name).Scan(&n); err != nil {
		c.t.Fatal(err)
	}
	return n == 1
}

func TestCLIBadInput(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	c.fails(2, "reserved", "a-long-passphrase\n", "tenants", "create", "admin", "--admin-email", "a@b.test", "--password-stdin")
	c.fails(2, "must be 3-63 characters", "a-long-passphrase\n", "tenants", "create", "No", "--admin-email", "a@b.test", "--password-stdin")
	c.fails(2, "not a valid email", "a-long-passphrase\n", "tenants", "create", "okslug", "--admin-email", "nope", "--password-stdin")
	c.fails(2, "at least 8", "short\n", "tenants", "create", "okslug", "--admin-email", "a@b.test", "--password-stdin")
	c.fails(2, "no password", "", "tenants", "create", "okslug", "--admin-email", "a@b.test", "--password-stdin")
	c.fails(2, "isolation must be", "", "tenants", "create", "okslug", "--admin-email", "a@b.test", "--isolation", "vm")
	c.fails(2, "--admin-email is required", "", "tenants", "create", "okslug")
	c.fails(2, "needs SLUG", "", "tenants", "show")
	c.fails(2, "unknown status", "", "tenants", "list", "--status", "sleeping")
	c.fails(2, "--output must be", "", "tenants", "list", "-o", "yaml")
	c.fails(2, "unknown flag", "", "tenants", "list", "--colour")
	c.fails(2, "--parallel must be", "", "migrate", "tenants", "--parallel", "0")
	c.fails(2, "VERSION must be", "", "migrate", "force", "acme", "latest", "--yes")
	c.fails(1, "not found", "", "tenants", "resume", "ghost")

	c.env["DATABASE_URL"] = "mysql://root:hunter2@db/x"
	_, errOut, code := c.run("", "tenants", "list")
	if code != 2 || !strings.Contains(errOut, "DATABASE_URL") || strings.Contains(errOut, "hunter2") || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
		t.Errorf("bad DATABASE_URL: exit %d, stderr %q: want one line naming the variable, without the password", code, errOut)
	}
}

func TestCLIMigrateTenants(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	for _, slug := range []string{"mig-a", "mig-b", "mig-c"} {
		c.ok("a-long-passphrase\n", "tenants", "create", slug, "--admin-email", "admin@"+slug+".test", "--password-stdin")
	}
	out := c.ok("", "migrate", "tenants", "--parallel", "2", "-o", "json")
	var run struct {
		State   string
		Total   int
		Skipped int
		Failed  int
	}
	if err := json.Unmarshal([]byte(out), &run); err != nil || run.Total != 3 || run.Skipped != 3 || run.Failed != 0 {
		t.Errorf("no-op fleet run: %s (%v)", out, err)
	}
	// Down one version for one tenant, then back up: the ledger and status follow.
	c.ok("", "migrate", "tenants", "--tenant", "mig-b", "--to", "1")
	status := c.ok("", "migrate", "status", "--verify", "-o", "json")
	var list []struct {
		Slug    string
		Version int64
		Behind  bool
	}
	if err := json.Unmarshal([]byte(status), &list); err != nil || len(list) != 3 {
		t.Fatalf("status: %s (%v)", status, err)
	}
	for _, m := range list {
		if (m.Slug == "mig-b") != m.Behind || (m.Slug == "mig-b" && m.Version != 1) {
			t.Errorf("status of %s: %+v", m.Slug, m)
		}
	}
	text := c.ok("", "migrate", "tenants")
	if !strings.Contains(text, "1 done, 2 skipped, 0 failed") {
		t.Errorf("fleet run summary: %s", text)
	}
	// Every tenant is at the target: the plan still lists each, and says it skips them.
	out = c.ok("", "migrate", "tenants", "--dry-run")
	if !strings.Contains(out, "dry run: nothing was changed") || !strings.Contains(out, "0 to migrate, 3 to skip") {
		t.Errorf("dry run: %s", out)
	}
	for _, slug := range []string{"mig-a", "mig-b", "mig-c"} {
		if !regexp.MustCompile(slug + `\s+\S+\s+\d+\s+\d+\s+skip\s+already at the target version`).MatchString(out) {
			t.Errorf("dry run lacks the row of %s:\n%s", slug, out)
		}
	}
	c.ok("", "migrate", "tenants", "--tenant", "mig-c", "--to", "1")
	out = c.ok("", "migrate", "tenants", "--dry-run")
	if !regexp.MustCompile(`mig-c\s+\S+\s+1\s+\d+\s+migrate up\s+up \d+ version`).MatchString(out) || !strings.Contains(out, "1 to migrate, 2 to skip") {
		t.Errorf("dry run with one tenant behind:\n%s", out)
	}
}

func TestExitCodes(t *testing.T) {
	t.Parallel()
	if exitCode(&configError{"X", "y"}) != 2 || exitCode(usagef("bad")) != 2 || exitCode(errors.New("boom")) != 1 {
		t.Error("exit codes: usage and configuration errors are 2, failures 1")
	}
}

func TestCLICreateSuperuser(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	if out := c.ok("platform-passphrase\n", "users", "createsuperuser", "--email", "ops@example.com", "--password-stdin"); !strings.Contains(out, "superuser ops@example.com created") {
		t.Errorf("createsuperuser: %q", out)
	}
	c.fails(1, "exists", "platform-passphrase\n", "users", "createsuperuser", "--email", "OPS@example.com", "--password-stdin")
	c.fails(2, "--email is required", "", "users", "createsuperuser")
	c.fails(2, "at least 8", "short\n", "users", "createsuperuser", "--email", "new@example.com", "--password-stdin")
}

// TestCLIWithoutConfiguration runs what a newcomer runs first, with nothing configured:
// help, version and shell completion must work without a database URL or a key.
func TestCLIWithoutConfiguration(t *testing.T) {
	t.Parallel()
	c := &cli{t: t, env: map[string]string{}}

	var walk func(cmd *cobra.Command)
	var paths [][]string
	walk = func(cmd *cobra.Command) {
		for _, sub := range cmd.Commands() {
			walk(sub)
		}
		if !cmd.Hidden {
			paths = append(paths, append(strings.Fields(cmd.CommandPath())[1:], "--help"))
		}
	}
	walk(newRoot(strings.NewReader(""), io.Discard, io.Discard, envOf(c.env)).Command)
	if len(paths) < 10 {
		t.Fatalf("only %d commands found: %q", len(paths), paths)
	}
	for _, args := range append(paths, []string{"help", "tenants", "create"}, []string{"--help"}) {
		if out := c.ok("", args...); !strings.Contains(out, "Usage:") {
			t.Errorf("tenantplane %s prints no usage:\n%s", strings.Join(args, " "), out)
		}
	}

	if out := c.ok("", "--version"); !strings.HasPrefix(out, "tenantplane ") || !strings.Contains(out, runtime.Version()) {
		t.Errorf("--version: %q", out)
	}
	var b buildInfo
	if out := c.ok("", "version", "-o", "json"); json.Unmarshal([]byte(out), &b) != nil || b.GoVersion != runtime.Version() || b.Version == "" || b.Commit == "" || b.Date == "" {
		t.Errorf("version -o json: %q", out)
	}
	if out := c.ok("", "version"); !strings.Contains(out, "COMMIT") || !strings.Contains(out, runtime.Version()) {
		t.Errorf("version: %q", out)
	}
	for shell, want := range map[string]string{"bash": "complete -o default -F __start_tenantplane tenantplane", "zsh": "#compdef tenantplane", "fish": "complete -c tenantplane"} {
		if out := c.ok("", "completion", shell); !strings.Contains(out, want) {
			t.Errorf("completion %s lacks %q", shell, want)
		}
	}
	// The shells call back into the binary for candidates, also unconfigured.
	if out := c.ok("", "__complete", "serve", ""); !strings.Contains(out, "controlplane") {
		t.Errorf("__complete serve: %q", out)
	}
	c.fails(2, "bash, zsh and fish", "", "completion", "tcsh")
	c.fails(2, "one shell", "", "completion")
	// Commands that need the configuration still say so in one line.
	c.fails(2, "DATABASE_URL", "", "tenants", "list")
}

func TestBuildInfo(t *testing.T) {
	t.Parallel()
	info := &debug.BuildInfo{GoVersion: "go1.99", Main: debug.Module{Version: "v1.2.3"}, Settings: []debug.BuildSetting{
		{Key: "vcs.revision", Value: "0123456789abcdef0123"}, {Key: "vcs.time", Value: "2026-01-02T03:04:05Z"}, {Key: "vcs.modified", Value: "true"},
	}}
	got := fromBuildInfo(buildInfo{}, info)
	if got.Version != "v1.2.3" || got.Commit != "0123456789ab-dirty" || got.Date != "2026-01-02T03:04:05Z" || got.GoVersion != "go1.99" {
		t.Errorf("from build info: %+v", got)
	}
	// Link-time values win over the build information.
	got = fromBuildInfo(buildInfo{Version: "v9.9.9-3-gabc", Commit: "abc", Date: "2027-01-01T00:00:00Z"}, info)
	if got.Version != "v9.9.9-3-gabc" || got.Commit != "abc" || got.Date != "2027-01-01T00:00:00Z" {
		t.Errorf("link-time values lost: %+v", got)
	}
	if got := fromBuildInfo(buildInfo{}, &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}); got.Version != "" {
		t.Errorf("a development build claims version %q", got.Version)
	}
}
