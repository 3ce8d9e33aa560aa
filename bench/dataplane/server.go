package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantplane/tenantplane/dataplane"
	"github.com/tenantplane/tenantplane/dataplane/blogs"
	"github.com/tenantplane/tenantplane/dataplane/pool"
	"github.com/tenantplane/tenantplane/password"
	"github.com/tenantplane/tenantplane/tenant"
	"github.com/tenantplane/tenantplane/token"
)

// The server under load runs as a child process of the bench (the bench binary run with
// the serveCommand argument), so that its CPU time is its own: the load generator stays
// in the parent, over loopback HTTP.
//
// The child serves two listeners and prints "ready APP BASE" on its standard output:
//   - APP: the dataplane's handler, configured as the flags say;
//   - BASE: the fair baseline, a bare gin engine with no middleware whose GET
//     /blogs/{id} runs the blog read's SELECT through one plain pgx pool logged in as
//     one tenant's role (no tenant resolution, auth or logging), plus the bench's own
//     routes: /bench/stats (the pool counters) and /bench/profile/{start,stop}.
//
// It exits when its standard input closes.
const serveCommand = "serve"

// serverConfig is what a child server is started with.
type serverConfig struct {
	mode        tenant.PoolMode
	maxPools    int
	budget      int
	group       int32
	baselineDSN string // the baseline pool's URL: one tenant's role on its schema
}

// serveMain is the child server's main.
func serveMain(args []string) error {
	fs := flag.NewFlagSet(serveCommand, flag.ContinueOnError)
	db := fs.String("db", "", "registry and shard URL")
	ring := fs.String("ring", "", "token key ring")
	mode := fs.String("mode", "", "pool mode")
	maxPools := fs.Int("max-pools", 100, "pool LRU size")
	budget := fs.Int("budget", 40, "connection budget")
	conns := fs.Int("conns", 4, "connections per tenant")
	group := fs.Int("group", 0, "connections per shared pool group (0: default)")
	baseline := fs.String("baseline", "", "URL of the baseline pool")
	if err := fs.Parse(args); err != nil {
		return err
	}
	gin.SetMode(gin.ReleaseMode)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	control, err := pgxpool.New(ctx, *db)
	if err != nil {
		return fmt.Errorf("opening registry pool: %w", err)
	}
	defer control.Close()
	kr, err := token.ParseKeyRing(*ring)
	if err != nil {
		return err
	}
	issuer := token.NewIssuer(kr, token.Config{AccessTTL: 2 * time.Hour})
	hasher := password.NewHasher(password.Params{Memory: 1024, Time: 1, Threads: 1, KeyLen: 32, SaltLen: 16}, 0)
	srv, err := dataplane.New(dataplane.Config{
		Control: control, Shards: map[string]string{"main": *db}, BaseDomain: "bench.test",
		PoolMode: tenant.PoolMode(*mode), MaxPools: *maxPools, ConnBudget: *budget,
		PerTenantConns: int32(*conns), GroupConns: int32(*group),
		// Logged as in production (JSON, level info: an access line per request), into
		// nothing: the platform's side of the ratio carries its logging.
		Logger: slog.New(slog.NewJSONHandler(io.Discard, nil)),
	}, tenant.NewStore(control), issuer, hasher)
	if err != nil {
		return err
	}
	if err := srv.Start(ctx); err != nil {
		return err
	}
	defer srv.Stop()

	bcfg, err := pgxpool.ParseConfig(*baseline)
	if err != nil {
		return fmt.Errorf("parsing baseline url: %w", err)
	}
	bcfg.MaxConns = int32(*conns)
	base, err := pgxpool.NewWithConfig(ctx, bcfg)
	if err != nil {
		return fmt.Errorf("opening baseline pool: %w", err)
	}
	defer base.Close()
	e := gin.New()
	e.GET("/blogs/:id", func(c *gin.Context) {
		id, err := strconv.ParseInt(c.Param("id"), 10, 64)
		if err != nil {
			c.Status(http.StatusBadRequest)
			return
		}
		var b blogs.Blog
		if err := base.QueryRow(c.Request.Context(), rawGetQuery, id).Scan(&b.ID, &b.Title, &b.Description,
			&b.Author.ID, &b.Author.Email, &b.CreatedAt, &b.UpdatedAt); err != nil {
			c.Status(http.StatusInternalServerError)
			return
		}
		c.JSON(http.StatusOK, &b)
	})
	e.GET("/bench/stats", func(c *gin.Context) { c.JSON(http.StatusOK, srv.PoolStats()) })
	var prof *os.File
	e.POST("/bench/profile/start", func(c *gin.Context) {
		f, err := os.Create(c.Query("file"))
		if err == nil {
			if err = pprof.StartCPUProfile(f); err != nil {
				_ = f.Close()
			}
		}
		if err != nil {
			c.String(http.StatusInternalServerError, err.Error())
			return
		}
		prof = f
		c.Status(http.StatusNoContent)
	})
	e.POST("/bench/profile/stop", func(c *gin.Context) {
		pprof.StopCPUProfile()
		if prof != nil {
			_ = prof.Close()
			prof = nil
		}
		c.Status(http.StatusNoContent)
	})

	appLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	baseLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	app := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second}
	bare := &http.Server{Handler: e, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = app.Serve(appLn) }()
	go func() { _ = bare.Serve(baseLn) }()
	defer app.Close()
	defer bare.Close()
	fmt.Printf("ready %s %s\n", appLn.Addr(), baseLn.Addr())
	_, _ = io.Copy(io.Discard, os.Stdin) // until the bench closes it
	return nil
}

// server is a running child server.
type server struct {
	cmd       *exec.Cmd
	stdin     io.WriteCloser
	app, base string // base URLs
	mode      tenant.PoolMode
	client    *http.Client
}

// cmdMode is the pool mode the server was started with ("": the default).
func (s *server) cmdMode() tenant.PoolMode { return s.mode }

// startServer starts a child server with cfg and waits until it listens.
func (b *bench) startServer(ctx context.Context, cfg serverConfig) (*server, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, exe, serveCommand,
		"-db", b.dbURL, "-ring", ringSpec, "-mode", string(cfg.mode),
		"-max-pools", strconv.Itoa(cfg.maxPools), "-budget", strconv.Itoa(cfg.budget),
		"-conns", strconv.Itoa(int(b.o.conns)), "-group", strconv.Itoa(int(cfg.group)),
		"-baseline", cfg.baselineDSN)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting server: %w", err)
	}
	s := &server{cmd: cmd, stdin: stdin, mode: cfg.mode, client: &http.Client{Timeout: 10 * time.Second}}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	f := strings.Fields(line)
	if err != nil || len(f) != 3 || f[0] != "ready" {
		s.stop()
		return nil, fmt.Errorf("server did not start (%q): %v", line, err)
	}
	s.app, s.base = "http://"+f[1], "http://"+f[2]
	return s, nil
}

// stop ends the child and waits for it.
func (s *server) stop() {
	_ = s.stdin.Close()
	done := make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		<-done
	}
}

// cpu returns the child's CPU time (user and system) so far.
func (s *server) cpu() (time.Duration, error) { return procCPU(s.cmd.Process.Pid) }

// clockTick is the unit of /proc/<pid>/stat's times (USER_HZ, 100 on Linux).
const clockTick = 10 * time.Millisecond

// procCPU reads a process's user and system time from /proc/<pid>/stat.
func procCPU(pid int) (time.Duration, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces: count fields after its ')'.
	i := strings.LastIndexByte(string(data), ')')
	if i < 0 {
		return 0, errors.New("malformed /proc stat")
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 13 {
		return 0, errors.New("malformed /proc stat")
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64) // field 14
	stime, err2 := strconv.ParseInt(f[12], 10, 64) // field 15
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return time.Duration(utime+stime) * clockTick, nil
}

// stats returns the child's pool counters.
func (s *server) stats() (pool.Stats, error) {
	var st pool.Stats
	resp, err := s.client.Get(s.base + "/bench/stats")
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// profile starts (file != "") or stops the child's CPU profile.
func (s *server) profile(file string) error {
	u := s.base + "/bench/profile/stop"
	if file != "" {
		u = s.base + "/bench/profile/start?file=" + file
	}
	resp, err := s.client.Post(u, "", nil)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		return fmt.Errorf("profile: status %d", resp.StatusCode)
	}
	return nil
}
