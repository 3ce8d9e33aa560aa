// Command notify measures the dataplane's WebSocket notifications against a bare
// gorilla/websocket broadcast server fed by a bare go-redis subscription.
//
// It creates a throwaway database on the Postgres cluster named by -db (a superuser URL
// on a loopback address), provisions -tenants tenants and starts each server as its own
// process (this binary, re-executed with -serve), so that its memory and CPU are read
// from its own /proc entry; the load generator is this process. For each setup (one
// dataplane replica, two replicas over Redis, the baseline) it:
//
//  1. opens -sockets WebSockets over the tenants (spread over 127.0.0.x source
//     addresses) and reports the server's RSS growth per idle socket;
//  2. posts -posts notifications, one after the other, to the first tenant -rounds
//     times and reports the fan-out latency from the POST (the baseline: the Redis
//     PUBLISH) to each socket's receipt, p50 and p99, and the deliveries per server
//     CPU-second (utime+stime of the server processes).
//
// Targets are informational: the exit status is 0 unless the run itself fails. The
// database and every role it made are dropped at the end.
//
//	scripts/test-services.sh --pg --redis -- go run ./bench/notify
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/gorilla/websocket"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/tenantplane/tenantplane/bench/internal/benchdb"
	"github.com/tenantplane/tenantplane/dataplane"
	"github.com/tenantplane/tenantplane/dataplane/notify"
	"github.com/tenantplane/tenantplane/password"
	"github.com/tenantplane/tenantplane/provisioner"
	"github.com/tenantplane/tenantplane/tenant"
	"github.com/tenantplane/tenantplane/token"
)

// Targets.
const (
	targetBytesPerSocket = 16 << 10
	targetP99            = 100 * time.Millisecond
)

// adminHash stands in for the admin's password hash; the bench issues tokens directly.
const adminHash = "$argon2id$v=19$m=1024,t=1,p=1$YmVuY2hzYWx0YmVuY2hzYWx0$YmVuY2hoYXNoYmVuY2hoYXNoYmVuY2hoYXNo"

// keyRing signs the bench's tokens, in this process and in the servers.
const keyRing = "bench:kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk"

// baselineChannel is the Redis channel the baseline server broadcasts.
const baselineChannel = "bench:notify:baseline"

type options struct {
	dbURL    string
	redisURL string
	sockets  int
	tenants  int
	posts    int
	rounds   int
	sources  int
	timeout  time.Duration
}

func main() {
	var o options
	serve := flag.String("serve", "", "internal: run a server (dataplane or baseline) and print its address")
	flag.StringVar(&o.dbURL, "db", os.Getenv("TENANTPLANE_TEST_DATABASE_URL"), "superuser URL of a loopback Postgres cluster (default $TENANTPLANE_TEST_DATABASE_URL)")
	flag.StringVar(&o.redisURL, "redis", os.Getenv("TENANTPLANE_TEST_REDIS_URL"), "URL of a loopback Redis (default $TENANTPLANE_TEST_REDIS_URL)")
	flag.IntVar(&o.sockets, "sockets", 10000, "WebSockets per setup (2-15000)")
	flag.IntVar(&o.tenants, "tenants", 1, "tenants the sockets are spread over (1-100); the fan-out goes to the first")
	flag.IntVar(&o.posts, "posts", 3, "notifications posted per round (1-100)")
	flag.IntVar(&o.rounds, "rounds", 3, "fan-out rounds per setup (1-9); medians are reported")
	flag.IntVar(&o.sources, "sources", 50, "127.0.0.x source addresses of the client sockets (1-250)")
	flag.DurationVar(&o.timeout, "timeout", 15*time.Minute, "give up after this long")
	flag.Parse()
	gin.SetMode(gin.ReleaseMode)
	raiseNoFile()
	if *serve != "" {
		if err := runServer(*serve, o); err != nil {
			fmt.Fprintln(os.Stderr, "notify bench server:", err)
			os.Exit(1)
		}
		return
	}
	if o.sockets < 2 || o.sockets > 15000 || o.tenants < 1 || o.tenants > 100 || o.posts < 1 || o.posts > 100 ||
		o.rounds < 1 || o.rounds > 9 || o.sources < 1 || o.sources > 250 {
		fmt.Fprintln(os.Stderr, "notify bench: a flag is out of range (see -h)")
		os.Exit(2)
	}
	if err := run(o, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "notify bench:", err)
		os.Exit(1)
	}
}

// raiseNoFile lifts the open-file limit to its hard maximum: every socket is a file.
func raiseNoFile() {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) == nil && l.Cur < l.Max {
		l.Cur = l.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
}

func run(o options, out io.Writer) error {
	if o.dbURL == "" || o.redisURL == "" {
		return errors.New("no database or redis: set TENANTPLANE_TEST_DATABASE_URL and TENANTPLANE_TEST_REDIS_URL (or -db, -redis)")
	}
	if err := loopbackOnly(o.dbURL, o.redisURL); err != nil {
		return err
	}
	var l syscall.Rlimit
	_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l)
	if need := uint64(o.sockets) + 200; l.Cur < need {
		return fmt.Errorf("the open-file limit is %d; %d sockets need at least %d", l.Cur, o.sockets, need)
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	b, err := newBench(ctx, o)
	if err != nil {
		return err
	}
	defer b.close()
	fmt.Fprintf(out, "notify bench: %d sockets over %d tenant(s), %d posts per round to the first (%d sockets), %d rounds, default GOGC\n",
		o.sockets, o.tenants, o.posts, b.fanoutSockets(), o.rounds)

	setups := []struct {
		name string
		kind string
		n    int
	}{
		{"dataplane, 1 replica", "dataplane", 1},
		{"dataplane, 2 replicas over redis", "dataplane", 2},
		{"baseline: bare gorilla + go-redis", "baseline", 1},
	}
	results := make([]result, len(setups))
	for i, s := range setups {
		r, err := b.measure(ctx, s.kind, s.n)
		if err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		results[i] = r
		fmt.Fprintf(out, "  %-34s %s\n", s.name, r)
	}
	one, base := results[0], results[2]
	fmt.Fprintf(out, "idle memory per socket, 1 replica: %.1f KB (target <= %d KB): %s; baseline %.1f KB\n",
		one.bytesPerSocket/1024, targetBytesPerSocket>>10, verdict(one.bytesPerSocket <= targetBytesPerSocket), base.bytesPerSocket/1024)
	fmt.Fprintf(out, "fan-out p99, 1 replica: %v (target <= %v): %s; 2 replicas %v; baseline %v\n",
		one.p99.Round(time.Millisecond), targetP99, verdict(one.p99 <= targetP99), results[1].p99.Round(time.Millisecond), base.p99.Round(time.Millisecond))
	fmt.Fprintf(out, "deliveries per server CPU-second, 1 replica: %.0f (%.2fx the baseline's %.0f); 2 replicas %.0f\n",
		one.perCPU, one.perCPU/base.perCPU, base.perCPU, results[1].perCPU)
	return nil
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT met"
}

// loopbackOnly refuses services that are not on this machine's loopback.
func loopbackOnly(dbURL, redisURL string) error {
	ropt, err := redis.ParseURL(redisURL)
	if err != nil {
		return fmt.Errorf("parsing redis url: %w", err)
	}
	if err := benchdb.RequireLoopbackHost(ropt.Addr); err != nil {
		return err
	}
	return benchdb.RequireLoopback(dbURL)
}

type benchTenant struct {
	t     *tenant.Tenant
	token string
}

type bench struct {
	o        options
	adminURL string
	dbURL    string
	dbName   string
	db       *pgxpool.Pool
	rdb      *redis.Client
	tenants  []*benchTenant
}

func newBench(ctx context.Context, o options) (*bench, error) {
	b := &bench{o: o, adminURL: o.dbURL}
	var err error
	if b.dbName, b.dbURL, err = benchdb.Create(ctx, o.dbURL, "bench_notify_"); err != nil {
		return nil, err
	}
	if err := b.init(ctx); err != nil {
		b.close()
		return nil, err
	}
	return b, nil
}

func (b *bench) init(ctx context.Context) error {
	opt, err := redis.ParseURL(b.o.redisURL)
	if err != nil {
		return err
	}
	b.rdb = redis.NewClient(opt)
	if _, err := provisioner.MigrateShared(ctx, b.dbURL); err != nil {
		return fmt.Errorf("migrating registry: %w", err)
	}
	if b.db, err = pgxpool.New(ctx, b.dbURL); err != nil {
		return err
	}
	store := tenant.NewStore(b.db)
	issuer, err := newIssuer()
	if err != nil {
		return err
	}
	prov, err := provisioner.New(store, provisioner.Config{Shards: []provisioner.Shard{{Name: "main", URL: b.dbURL}}, Parallel: 4})
	if err != nil {
		return err
	}
	defer prov.Close()
	for i := range b.o.tenants {
		slug := fmt.Sprintf("notify-%03d", i)
		reg, err := prov.Register(ctx, provisioner.CreateRequest{Slug: slug, AdminEmail: "admin@" + slug + ".example", AdminPasswordHash: adminHash})
		if err != nil {
			return fmt.Errorf("registering %s: %w", slug, err)
		}
		t, err := prov.Provision(ctx, reg.ID)
		if err != nil {
			return fmt.Errorf("provisioning %s: %w", slug, err)
		}
		if t.Status != tenant.StatusActive {
			return fmt.Errorf("tenant %s is %s: %s", slug, t.Status, t.LastError)
		}
		tok, _, err := issuer.Issue(token.Access, "1", t.ID, token.Claims{Admin: true})
		if err != nil {
			return err
		}
		b.tenants = append(b.tenants, &benchTenant{t: t, token: tok})
	}
	return nil
}

func newIssuer() (*token.Issuer, error) {
	ring, err := token.ParseKeyRing(keyRing)
	if err != nil {
		return nil, err
	}
	return token.NewIssuer(ring, token.Config{AccessTTL: 2 * time.Hour}), nil
}

func (b *bench) close() {
	if b.rdb != nil {
		_ = b.rdb.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var roles []string
	if b.db != nil {
		roles = benchdb.TenantRoles(ctx, b.db)
		b.db.Close()
	}
	if err := benchdb.Drop(ctx, b.adminURL, b.dbName, roles); err != nil {
		fmt.Fprintln(os.Stderr, "notify bench: cleaning up:", err)
	}
}

// fanoutSockets is how many sockets the first tenant has.
func (b *bench) fanoutSockets() int { return (b.o.sockets + b.o.tenants - 1) / b.o.tenants }

// result is one setup's measurements.
type result struct {
	bytesPerSocket float64
	p50, p99       time.Duration
	perCPU         float64 // deliveries per server CPU-second
	missing        int     // deliveries that never arrived
}

func (r result) String() string {
	s := fmt.Sprintf("idle %6.1f KB/socket, fan-out p50 %7v p99 %7v, %7.0f deliveries/CPU-s",
		r.bytesPerSocket/1024, r.p50.Round(100*time.Microsecond), r.p99.Round(100*time.Microsecond), r.perCPU)
	if r.missing > 0 {
		s += fmt.Sprintf(", %d MISSING", r.missing)
	}
	return s
}

// server is one server process.
type server struct {
	cmd  *exec.Cmd
	addr string
}

// startServer runs this binary with -serve kind and waits for the address it prints.
func (b *bench) startServer(ctx context.Context, kind string) (*server, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, self, "-serve", kind, "-db", b.dbURL, "-redis", b.o.redisURL)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the %s server: %w", kind, err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, fmt.Errorf("the %s server did not start: %w", kind, err)
	}
	return &server{cmd: cmd, addr: strings.TrimSpace(line)}, nil
}

func (s *server) stop() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-done
	}
}

// rss returns the server's resident memory in bytes.
func (s *server) rss() (float64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(data)) {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			return kb * 1024, err
		}
	}
	return 0, errors.New("no VmRSS")
}

// cpu returns the server's user+system CPU time.
func (s *server) cpu() (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", s.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	i := bytes.LastIndexByte(data, ')')
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 13 {
		return 0, errors.New("short /proc stat")
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100, nil // USER_HZ
}

// client is one WebSocket of the load generator with its receipt times by message id.
type client struct {
	conn *websocket.Conn
	mu   sync.Mutex
	got  []receipt
}

// receipt is one message a client read: its id, and when.
type receipt struct {
	id int64
	at time.Time
}

// measure starts replicas servers of kind, opens the sockets, and fans out.
func (b *bench) measure(ctx context.Context, kind string, replicas int) (result, error) {
	var servers []*server
	defer func() {
		for _, s := range servers {
			s.stop()
		}
	}()
	for range replicas {
		s, err := b.startServer(ctx, kind)
		if err != nil {
			return result{}, err
		}
		servers = append(servers, s)
	}
	time.Sleep(time.Second)
	rssBefore := 0.0
	for _, s := range servers {
		r, err := s.rss()
		if err != nil {
			return result{}, err
		}
		rssBefore += r
	}

	// 1. Idle sockets.
	clients := make([]*client, b.o.sockets)
	var next atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	var received atomic.Int64
	for range 32 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(clients) || ctx.Err() != nil {
					return
				}
				c, err := b.dial(ctx, kind, servers[i%len(servers)].addr, i)
				if err != nil {
					once.Do(func() { firstErr = err })
					return
				}
				clients[i] = c
			}
		})
	}
	wg.Wait()
	var readers sync.WaitGroup
	defer func() {
		for _, c := range clients {
			if c != nil {
				_ = c.conn.Close()
			}
		}
		readers.Wait()
	}()
	if firstErr != nil {
		return result{}, fmt.Errorf("opening sockets: %w", firstErr)
	}
	for _, c := range clients {
		readers.Go(func() { c.read(&received) })
	}
	time.Sleep(3 * time.Second) // let the servers settle
	rssAfter := 0.0
	for _, s := range servers {
		r, err := s.rss()
		if err != nil {
			return result{}, err
		}
		rssAfter += r
	}
	res := result{bytesPerSocket: (rssAfter - rssBefore) / float64(len(clients))}

	// 2. Fan-out to the first tenant's sockets.
	var fan []*client
	for i, c := range clients {
		if i%b.o.tenants == 0 {
			fan = append(fan, c)
		}
	}
	var p50s, p99s []time.Duration
	var cpu time.Duration
	delivered := 0
	httpc := &http.Client{Timeout: 30 * time.Second}
	defer httpc.CloseIdleConnections()
	for range b.o.rounds {
		cpu0, err := totalCPU(servers)
		if err != nil {
			return result{}, err
		}
		want := received.Load() + int64(b.o.posts*len(fan))
		posted := map[int64]time.Time{}
		for range b.o.posts {
			t0 := time.Now()
			id, err := b.post(ctx, httpc, kind, servers[0].addr)
			if err != nil {
				return result{}, err
			}
			posted[id] = t0
		}
		deadline := time.Now().Add(60 * time.Second)
		for received.Load() < want && time.Now().Before(deadline) && ctx.Err() == nil {
			time.Sleep(time.Millisecond)
		}
		cpu1, err := totalCPU(servers)
		if err != nil {
			return result{}, err
		}
		cpu += cpu1 - cpu0
		var lat []time.Duration
		for _, c := range fan {
			c.mu.Lock()
			for id, t0 := range posted {
				i := slices.IndexFunc(c.got, func(r receipt) bool { return r.id == id })
				if i >= 0 {
					lat = append(lat, c.got[i].at.Sub(t0))
				} else {
					res.missing++
				}
			}
			c.got = c.got[:0]
			c.mu.Unlock()
		}
		delivered += len(lat)
		if len(lat) == 0 {
			return result{}, errors.New("no notification arrived")
		}
		slices.Sort(lat)
		p50s = append(p50s, pct(lat, 0.50))
		p99s = append(p99s, pct(lat, 0.99))
	}
	res.p50, res.p99 = medianDur(p50s), medianDur(p99s)
	if cpu > 0 {
		res.perCPU = float64(delivered) / cpu.Seconds()
	}
	return res, nil
}

func totalCPU(servers []*server) (time.Duration, error) {
	var sum time.Duration
	for _, s := range servers {
		c, err := s.cpu()
		if err != nil {
			return 0, err
		}
		sum += c
	}
	return sum, nil
}

func pct(sorted []time.Duration, p float64) time.Duration {
	return sorted[int(math.Ceil(p*float64(len(sorted))))-1]
}

func medianDur(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// dial opens socket i to addr from source address 127.0.0.(1 + i%sources).
func (b *bench) dial(ctx context.Context, kind, addr string, i int) (*client, error) {
	src := &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(1+i%b.o.sources))}
	nd := &net.Dialer{LocalAddr: src, Timeout: 10 * time.Second}
	d := websocket.Dialer{NetDialContext: nd.DialContext, ReadBufferSize: 512, WriteBufferSize: 256, HandshakeTimeout: 30 * time.Second}
	hdr := http.Header{}
	u := "ws://" + addr + "/ws"
	if kind == "dataplane" {
		bt := b.tenants[i%len(b.tenants)]
		hdr.Set("Host", bt.t.Slug+".bench.test")
		hdr.Set("Authorization", "Bearer "+bt.token)
		u = "ws://" + addr + "/ws/notifications"
	}
	conn, resp, err := d.DialContext(ctx, u, hdr)
	if err != nil {
		if resp != nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			return nil, fmt.Errorf("dialing: %w: %d %s", err, resp.StatusCode, body)
		}
		return nil, fmt.Errorf("dialing: %w", err)
	}
	return &client{conn: conn}, nil
}

// read records each message's receipt until the socket ends; pings are answered by
// gorilla's default handler. It reads into one buffer of its own, so the load
// generator's allocations and GC take little of the cores it shares with the servers.
func (c *client) read(received *atomic.Int64) {
	var buf bytes.Buffer
	for {
		_, r, err := c.conn.NextReader()
		if err != nil {
			return
		}
		buf.Reset()
		if _, err := buf.ReadFrom(r); err != nil {
			return
		}
		now := time.Now()
		id, ok := idOf(buf.Bytes())
		if !ok {
			continue
		}
		c.mu.Lock()
		c.got = append(c.got, receipt{id, now})
		c.mu.Unlock()
		received.Add(1)
	}
}

// idOf returns the id of a notification as both servers send it ({"type":...,"id":N,...},
// the id before any free text), without decoding the rest: json.Unmarshal was a third
// of the load generator's CPU, taken from the servers it measures.
func idOf(msg []byte) (int64, bool) {
	_, after, ok := bytes.Cut(msg, []byte(`"id":`))
	if !ok {
		return 0, false
	}
	end := 0
	for end < len(after) && after[end] >= '0' && after[end] <= '9' {
		end++
	}
	id, err := strconv.ParseInt(string(after[:end]), 10, 64)
	return id, err == nil
}

var baselineSeq atomic.Int64

// post sends one notification to the first tenant and returns its id: a POST to the
// dataplane, or a PUBLISH the baseline server broadcasts.
func (b *bench) post(ctx context.Context, httpc *http.Client, kind, addr string) (int64, error) {
	if kind == "baseline" {
		id := baselineSeq.Add(1)
		payload, _ := json.Marshal(notify.Message{Type: "notification", ID: id, Title: "bench", CreatedAt: time.Now()})
		return id, b.rdb.Publish(ctx, baselineChannel, payload).Err()
	}
	bt := b.tenants[0]
	req, err := http.NewRequestWithContext(ctx, "POST", "http://"+addr+"/api/v1/notifications",
		strings.NewReader(`{"title":"bench","body":""}`))
	if err != nil {
		return 0, err
	}
	req.Host = bt.t.Slug + ".bench.test"
	req.Header.Set("Authorization", "Bearer "+bt.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := httpc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var m notify.Message
	if resp.StatusCode != http.StatusCreated {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return 0, fmt.Errorf("posting: status %d: %s", resp.StatusCode, body)
	}
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		return 0, err
	}
	return m.ID, nil
}

// runServer is the server process: it serves kind on a loopback port, prints the
// address and runs until SIGTERM.
func runServer(kind string, o options) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	var h http.Handler
	switch kind {
	case "dataplane":
		srv, err := newDataplane(ctx, o)
		if err != nil {
			return err
		}
		defer srv.Stop()
		h = srv.Handler()
	case "baseline":
		bs, err := newBaseline(ctx, o.redisURL)
		if err != nil {
			return err
		}
		h = bs
	default:
		return fmt.Errorf("unknown server %q", kind)
	}
	hs := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	fmt.Println(ln.Addr().String())
	<-ctx.Done()
	return hs.Close()
}

// newDataplane starts a dataplane replica with the Redis fan-out.
func newDataplane(ctx context.Context, o options) (*dataplane.Server, error) {
	db, err := pgxpool.New(ctx, o.dbURL)
	if err != nil {
		return nil, err
	}
	issuer, err := newIssuer()
	if err != nil {
		return nil, err
	}
	fanout, err := notify.NewRedis(o.redisURL)
	if err != nil {
		return nil, err
	}
	hasher := password.NewHasher(password.Params{Memory: 1024, Time: 1, Threads: 1, KeyLen: 32, SaltLen: 16}, 0)
	srv, err := dataplane.New(dataplane.Config{
		Control:            db,
		Shards:             map[string]string{"main": o.dbURL},
		BaseDomain:         "bench.test",
		Logger:             slog.New(slog.DiscardHandler),
		Fanout:             fanout,
		MaxWebSocketsPerIP: -1,
	}, tenant.NewStore(db), issuer, hasher)
	if err != nil {
		return nil, err
	}
	if err := srv.Start(ctx); err != nil {
		return nil, err
	}
	select {
	case <-fanout.Subscribed():
	case <-time.After(10 * time.Second):
		return nil, errors.New("the fan-out did not subscribe")
	}
	return srv, nil
}

// baseline is the bare broadcast server: every socket's handler reads (for pongs and
// the close), and the Redis subscription writes each message to every socket in turn.
type baseline struct {
	upgrader websocket.Upgrader
	mu       sync.Mutex
	conns    map[*websocket.Conn]struct{}
}

func newBaseline(ctx context.Context, redisURL string) (*baseline, error) {
	opt, err := redis.ParseURL(redisURL)
	if err != nil {
		return nil, err
	}
	rdb := redis.NewClient(opt)
	sub := rdb.Subscribe(ctx, baselineChannel)
	if _, err := sub.Receive(ctx); err != nil {
		return nil, err
	}
	bs := &baseline{conns: map[*websocket.Conn]struct{}{}}
	go func() {
		for m := range sub.Channel() {
			bs.mu.Lock()
			for c := range bs.conns {
				_ = c.SetWriteDeadline(time.Now().Add(10 * time.Second))
				if c.WriteMessage(websocket.TextMessage, []byte(m.Payload)) != nil {
					delete(bs.conns, c)
					_ = c.Close()
				}
			}
			bs.mu.Unlock()
		}
	}()
	return bs, nil
}

func (bs *baseline) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c, err := bs.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	bs.mu.Lock()
	bs.conns[c] = struct{}{}
	bs.mu.Unlock()
	defer func() {
		bs.mu.Lock()
		delete(bs.conns, c)
		bs.mu.Unlock()
		_ = c.Close()
	}()
	for {
		if _, _, err := c.ReadMessage(); err != nil {
			return
		}
	}
}
