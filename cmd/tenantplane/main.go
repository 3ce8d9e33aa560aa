// Command tenantplane is the platform's one binary: it serves the control plane and the
// dataplane, applies migrations and manages tenants and platform users. Run
// `tenantplane --help` for the commands.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/gin-gonic/gin"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"
	"gopkg.in/natefinch/lumberjack.v2"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/dataplane/search"
	"github.com/tenantplane/tenantplane/metrics"
	"github.com/tenantplane/tenantplane/provisioner"
	"github.com/tenantplane/tenantplane/redact"
	"github.com/tenantplane/tenantplane/tenant"
)

func main() {
	gin.SetMode(gin.ReleaseMode)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	root := newRoot(os.Stdin, os.Stdout, os.Stderr, os.Getenv)
	root.dotenv = loadDotEnv
	err := root.ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", errorLine(err))
		os.Exit(exitCode(err))
	}
}

// errorLine is the one line printed for a failed command.
func errorLine(err error) string {
	return strings.ReplaceAll(err.Error(), "\n", "; ")
}

// exitCode is 2 for bad usage or configuration, 1 for anything else.
func exitCode(err error) int {
	var ce *configError
	var ue *usageError
	if errors.As(err, &ce) || errors.As(err, &ue) || apperr.KindOf(err) == apperr.Invalid {
		return 2
	}
	return 1
}

// usageError is a bad argument or flag.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

// app carries what commands share: configuration, logger, output and lazily opened
// connections. Commands are built from it in newRoot.
type app struct {
	getenv env
	dotenv func() error // reads .env; nil in tests
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	output string // "table" or "json"

	cfg  *config
	log  *slog.Logger
	db   *pgxpool.Pool
	prov *provisioner.Provisioner
	os   *search.OpenSearch
}

// rootCmd is the root command and the app behind it.
type rootCmd struct {
	*cobra.Command
	*app
}

func newRoot(stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) rootCmd {
	a := &app{getenv: getenv, stdin: stdin, stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:   "tenantplane",
		Short: "Multi-tenant SaaS platform: control plane, dataplane and operator commands",
		Long: `tenantplane runs the platform and manages it.

Configuration comes from the environment and from a .env file in the working
directory when present (DATABASE_URL, TENANTPLANE_SECRET_KEY, REDIS_URL, OPENSEARCH_URL,
TENANTPLANE_BASE_DOMAIN, TENANTPLANE_LISTEN, LOG_LEVEL, LOG_FILE, ...; see the README).`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if a.output != "table" && a.output != "json" {
				return usagef("--output must be table or json, not %q", a.output)
			}
			if !needsConfig(cmd) {
				return nil
			}
			return a.setup(cmd)
		},
		PersistentPostRun: func(*cobra.Command, []string) { a.close() },
	}
	root.Version = currentBuild().Version
	root.SetVersionTemplate(currentBuild().String() + "\n")
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err.Error()} })
	root.PersistentFlags().StringVarP(&a.output, "output", "o", "table", "output format: table or json")
	root.AddCommand(a.serveCmd(), a.migrateCmd(), a.tenantsCmd(), a.usersCmd(), a.searchCmd(),
		a.versionCmd(), a.completionCmd())
	return rootCmd{root, a}
}

// setup loads configuration and the logger. The server logs to stdout; other commands
// keep stdout for their output and log to stderr.
func (a *app) setup(cmd *cobra.Command) error {
	if a.dotenv != nil {
		if err := a.dotenv(); err != nil {
			return &configError{".env", err.Error()}
		}
	}
	cfg, err := loadConfig(a.getenv)
	if err != nil {
		return err
	}
	a.cfg = cfg
	var w io.Writer = a.stderr
	if cmd.Name() == "serve" {
		w = a.stdout
	}
	if cfg.LogFile != "" {
		w = io.MultiWriter(w, &lumberjack.Logger{Filename: cfg.LogFile, MaxSize: 100, MaxBackups: 5, MaxAge: 28, Compress: true})
	}
	a.log = newLogger(w, cfg.LogLevel)
	return nil
}

// newLogger returns the JSON logger every part of the process uses; secrets are masked.
func newLogger(w io.Writer, level slog.Level) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level, ReplaceAttr: redact.ReplaceAttr}))
}

// control opens the control database pool once, with at least minConns connections
// (0: pgxpool's default).
func (a *app) control(ctx context.Context, minConns int32) (*pgxpool.Pool, error) {
	if a.db != nil {
		return a.db, nil
	}
	cfg, err := pgxpool.ParseConfig(a.cfg.DatabaseURL)
	if err != nil {
		return nil, &configError{"DATABASE_URL", err.Error()}
	}
	cfg.MaxConns = max(cfg.MaxConns, minConns)
	db, err := pgxpool.NewWithConfig(ctx, cfg)
	if err == nil {
		err = db.Ping(ctx)
		if err != nil {
			db.Close()
		}
	}
	if err != nil {
		return nil, fmt.Errorf("connecting to the control database %s: %w", redact.URL(a.cfg.DatabaseURL), err)
	}
	a.db = db
	return db, nil
}

// provisioner opens the control database and a provisioner over the configured shards.
func (a *app) provisioner(ctx context.Context) (*provisioner.Provisioner, *tenant.Store, error) {
	return a.provisionerWith(ctx, nil)
}

// provisionerWith is provisioner whose operations, when it is the first to build the
// provisioner, are counted on reg (nil: not counted).
func (a *app) provisionerWith(ctx context.Context, reg *metrics.Metrics) (*provisioner.Provisioner, *tenant.Store, error) {
	db, err := a.control(ctx, 0)
	if err != nil {
		return nil, nil, err
	}
	store := tenant.NewStore(db)
	if a.prov == nil {
		search, err := a.searchIndexes(ctx)
		if err != nil {
			return nil, nil, err
		}
		a.prov, err = provisioner.New(store, provisioner.Config{Shards: a.cfg.Shards, Logger: a.log, Metrics: reg, Search: search, WarmPool: a.cfg.WarmPool})
		if err != nil {
			return nil, nil, &configError{"TENANTPLANE_SHARDS", err.Error()}
		}
	}
	return a.prov, store, nil
}

func (a *app) close() {
	if a.os != nil {
		a.os.Close()
	}
	if a.prov != nil {
		a.prov.Close()
	}
	if a.db != nil {
		a.db.Close()
	}
}
