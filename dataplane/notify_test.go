package dataplane

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tenantplane/tenantplane/dataplane/notify"
	"github.com/tenantplane/tenantplane/internal/pgtest"
	"github.com/tenantplane/tenantplane/tenant"
	"github.com/tenantplane/tenantplane/token"
)

// wsWait bounds every wait for something that must happen.
const wsWait = eventWait

// note is a notification as the API and the WebSocket send it.
type note struct {
	Type      string `json:"type"`
	ID        int64  `json:"id"`
	Title     string `json:"title"`
	Body      string `json:"body"`
	CreatedAt string `json:"created_at"`
	raw       []byte // the JSON it was decoded from
}

func decodeNote(t testing.TB, raw []byte) note {
	t.Helper()
	var n note
	if err := json.Unmarshal(raw, &n); err != nil {
		t.Fatalf("not a notification: %q", raw)
	}
	if n.Type != "notification" || n.ID <= 0 {
		t.Fatalf("not a notification: %q", raw)
	}
	if _, err := time.Parse(time.RFC3339Nano, n.CreatedAt); err != nil {
		t.Fatalf("notification without a created_at time: %q", raw)
	}
	n.raw = raw
	return n
}

func (n note) same(o note) bool {
	return n.Type == o.Type && n.ID == o.ID && n.Title == o.Title && n.Body == o.Body && n.CreatedAt == o.CreatedAt
}

// postNote has a tenant admin post a notification through handler h and returns it.
func postNote(t testing.TB, h http.Handler, slug, tok, title, body string) note {
	t.Helper()
	r := doOn(h, req{method: "POST", path: "/api/v1/notifications", host: host(slug), token: tok,
		body: map[string]string{"title": title, "body": body}})
	if r.status != http.StatusCreated {
		t.Fatalf("posting %q at %s: %d %s", title, slug, r.status, r.raw)
	}
	n := decodeNote(t, r.raw)
	if n.Title != strings.TrimSpace(title) || n.Body != body {
		t.Fatalf("posted %q/%q, answered %s", title, body, r.raw)
	}
	return n
}

// listNotes lists a tenant's notifications with the query (after_id, limit).
func (e *env) listNotes(slug, tok, query string) []note {
	e.t.Helper()
	r := e.mustDo(req{method: "GET", path: "/api/v1/notifications" + query, host: host(slug), token: tok}, http.StatusOK)
	var out struct {
		Items []json.RawMessage `json:"items"`
	}
	if err := json.Unmarshal(r.raw, &out); err != nil || out.Items == nil {
		e.t.Fatalf("list is not {\"items\":[...]}: %s", r.raw)
	}
	notes := make([]note, len(out.Items))
	for i, raw := range out.Items {
		notes[i] = decodeNote(e.t, raw)
	}
	return notes
}

func sameNotes(got []note, want ...note) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if !got[i].same(want[i]) {
			return false
		}
	}
	return true
}

// serveWS serves h on a real listener (a WebSocket needs one) until the test ends and
// returns its ws:// address.
func serveWS(t testing.TB, h http.Handler) string {
	t.Helper()
	ts := httptest.NewServer(h)
	t.Cleanup(ts.Close)
	return "ws" + strings.TrimPrefix(ts.URL, "http")
}

// replica starts another dataplane server over the env's registry and shard, with its
// own registry connections, as a second replica of the deployment; cfg tweaks its
// configuration. It stops at cleanup.
func (e *env) replica(cfg func(*Config)) http.Handler {
	e.t.Helper()
	return e.server(cfg).Handler()
}

// server starts a replica (see replica) and returns it, for a test that stops it itself.
func (e *env) server(cfg func(*Config)) *Server {
	e.t.Helper()
	db := pgtest.Pool(e.t, e.dbURL)
	c := Config{
		Control:    db,
		BaseDomain: base,
		Shards:     map[string]string{"main": e.dbURL},
		Throttle:   testThrottle,
		Logger:     slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})),
	}
	if cfg != nil {
		cfg(&c)
	}
	srv, err := New(c, tenant.NewStore(db), e.issuer, e.hasher)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(srv.Stop)
	return srv
}

// wsClient is a WebSocket client whose messages are read in the background, so that a
// test can wait for the next one, or check that none comes, and go on using it.
type wsClient struct {
	conn *websocket.Conn
	msgs chan []byte // closed when the connection ends
	err  error       // why it ended, set before msgs is closed
	done chan struct{}
	once sync.Once
}

// wsHeader returns handshake headers: the Host naming the tenant (none when slug is
// empty) and the pairs given (name, value, ...).
func wsHeader(slug string, kv ...string) http.Header {
	h := http.Header{}
	if slug != "" {
		h.Set("Host", host(slug))
	}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return h
}

// wsDial opens a WebSocket at u with the headers and subprotocols. On refusal it
// returns a nil client with the handshake's status and error code.
func wsDial(t testing.TB, u string, hdr http.Header, protocols ...string) (*wsClient, int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wsWait)
	defer cancel()
	d := websocket.Dialer{HandshakeTimeout: wsWait, Subprotocols: protocols}
	conn, hr, err := d.DialContext(ctx, u, hdr)
	if err != nil {
		if hr == nil {
			t.Fatalf("dialing %s: %v", u, err)
		}
		defer hr.Body.Close()
		var b bytes.Buffer
		_, _ = b.ReadFrom(hr.Body)
		return nil, hr.StatusCode, resp{raw: b.Bytes()}.code()
	}
	c := &wsClient{conn: conn, msgs: make(chan []byte, 64), done: make(chan struct{})}
	go func() {
		defer close(c.msgs)
		for {
			_, m, err := conn.ReadMessage()
			if err != nil {
				c.err = err
				return
			}
			select {
			case c.msgs <- m:
			case <-c.done:
				return
			}
		}
	}()
	t.Cleanup(c.close)
	return c, hr.StatusCode, ""
}

// mustWS opens a WebSocket and fails the test when the handshake is refused.
func mustWS(t testing.TB, u string, hdr http.Header, protocols ...string) *wsClient {
	t.Helper()
	c, status, code := wsDial(t, u, hdr, protocols...)
	if c == nil {
		t.Fatalf("websocket %s refused: %d %s", u, status, code)
	}
	return c
}

// close ends the connection; the server sees the client leave.
func (c *wsClient) close() {
	c.once.Do(func() {
		close(c.done)
		_ = c.conn.Close()
	})
}

// next returns the next notification, failing the test when none comes in time.
func (c *wsClient) next(t testing.TB) note {
	t.Helper()
	select {
	case m, ok := <-c.msgs:
		if !ok {
			t.Fatal("the websocket closed while a notification was expected")
		}
		return decodeNote(t, m)
	case <-time.After(wsWait):
		t.Fatalf("no notification within %v", wsWait)
	}
	return note{}
}

// expect checks that the next notifications are want, in order.
func (c *wsClient) expect(t testing.TB, want ...note) {
	t.Helper()
	for _, w := range want {
		if got := c.next(t); !got.same(w) {
			t.Fatalf("websocket got %s, want %s", got.raw, w.raw)
		}
	}
}

// quietUntil checks that nothing arrived before sentinel, a notification published
// (to the client's tenant) after those that must not arrive: fan-out keeps the order of
// publication, so anything else would have come first.
func (c *wsClient) quietUntil(t testing.TB, sentinel note) {
	t.Helper()
	if got := c.next(t); !got.same(sentinel) {
		t.Fatalf("websocket got %s, want nothing before %s", got.raw, sentinel.raw)
	}
}

func TestNotificationsHTTP(t *testing.T) {
	t.Parallel()
	e := setup(t, nil)
	e.newTenants("acme")
	admin, _ := e.loginAdmin("acme")
	e.createUser("acme", admin, "bob@acme.example")
	bob, _ := e.login("acme", "bob@acme.example", "user password 1")
	h := host("acme")

	first := postNote(t, e.h, "acme", admin, "Maintenance", "Tonight at 22:00.")
	// A plain user reads but may not post.
	if r := e.do(req{method: "POST", path: "/api/v1/notifications", host: h, token: bob, body: map[string]string{"title": "from bob"}}); r.status != http.StatusForbidden || r.code() != "forbidden" {
		t.Fatalf("non-admin post: %d %s", r.status, r.raw)
	}
	second := postNote(t, e.h, "acme", admin, "  Second  ", "")
	if second.Title != "Second" || second.ID <= first.ID {
		t.Fatalf("second notification: %s (first id %d)", second.raw, first.ID)
	}
	longest := postNote(t, e.h, "acme", admin, strings.Repeat("é", 200), "200 characters is the limit")

	if got := e.listNotes("acme", bob, ""); !sameNotes(got, first, second, longest) {
		t.Fatalf("list: %v", got)
	}
	after := "?after_id=" + strconv.FormatInt(first.ID, 10)
	if got := e.listNotes("acme", bob, after); !sameNotes(got, second, longest) {
		t.Fatalf("list %s: %v", after, got)
	}
	if got := e.listNotes("acme", bob, after+"&limit=1"); !sameNotes(got, second) {
		t.Fatalf("list %s&limit=1: %v", after, got)
	}
	if got := e.listNotes("acme", admin, "?after_id="+strconv.FormatInt(longest.ID, 10)); len(got) != 0 {
		t.Fatalf("nothing is newer than the last one, got %v", got)
	}

	for _, q := range []struct{ query, code string }{
		{"after_id=-1", "invalid_after_id"},
		{"after_id=abc", "invalid_after_id"},
		{"after_id=1.5", "invalid_after_id"},
		{"limit=0", "invalid_limit"},
		{"limit=101", "invalid_limit"},
		{"limit=1001", "invalid_limit"},
		{"limit=ten", "invalid_limit"},
	} {
		r := e.do(req{method: "GET", path: "/api/v1/notifications?" + q.query, host: h, token: bob})
		if r.status != http.StatusBadRequest || r.code() != q.code {
			t.Errorf("GET ?%s: %d %s, want 400 %s", q.query, r.status, r.raw, q.code)
		}
	}
	for _, b := range []struct {
		name string
		body any
		code string
	}{
		{"no title", map[string]string{"body": "untitled"}, "invalid_title"},
		{"blank title", map[string]string{"title": "   "}, "invalid_title"},
		{"title too long", map[string]string{"title": strings.Repeat("é", 201)}, "invalid_title"},
		{"body too long", map[string]string{"title": "big", "body": strings.Repeat("x", 32<<10+1)}, "invalid_body"},
		{"unknown field", map[string]string{"title": "t", "priority": "high"}, "unknown_field"},
		{"title not a string", map[string]any{"title": 7}, "invalid_field"},
		{"not JSON", "{title", "invalid_json"},
	} {
		r := e.do(req{method: "POST", path: "/api/v1/notifications", host: h, token: admin, body: b.body})
		if r.status != http.StatusBadRequest || r.code() != b.code {
			t.Errorf("POST %s: %d %s, want 400 %s", b.name, r.status, r.raw, b.code)
		}
	}
	e.mustDo(req{method: "GET", path: "/api/v1/notifications", host: h}, http.StatusUnauthorized)
	e.mustDo(req{method: "POST", path: "/api/v1/notifications", host: h, body: map[string]string{"title": "anonymous"}}, http.StatusUnauthorized)
	// The WebSocket endpoint asks for a WebSocket.
	if r := e.do(req{method: "GET", path: "/ws/notifications", host: h, token: bob}); r.status != http.StatusBadRequest || r.code() != "websocket_required" {
		t.Fatalf("plain GET of the websocket: %d %s", r.status, r.raw)
	}

	// The refused requests stored nothing.
	if got := e.listNotes("acme", admin, ""); !sameNotes(got, first, second, longest) {
		t.Fatalf("list after refused posts: %v", got)
	}
}

func TestNotificationsLiveAndTenantIsolated(t *testing.T) {
	t.Parallel()
	e := setup(t, nil)
	e.newTenants("acme", "globex")
	acmeAdmin, _ := e.loginAdmin("acme")
	globexAdmin, _ := e.loginAdmin("globex")
	ws := serveWS(t, e.h) + "/ws/notifications"

	a := mustWS(t, ws, wsHeader("acme", "Authorization", "Bearer "+acmeAdmin))
	b := mustWS(t, ws, wsHeader("globex", "Authorization", "Bearer "+globexAdmin))

	sent := postNote(t, e.h, "acme", acmeAdmin, "Deploy", "v2 is live")
	a.expect(t, sent)

	// globex's first message is its own: acme's never reached it, late or not.
	own := postNote(t, e.h, "globex", globexAdmin, "Globex news", "")
	b.quietUntil(t, own)
	a.quietUntil(t, postNote(t, e.h, "acme", acmeAdmin, "sentinel", ""))
}

func TestNotificationsWebSocketAuth(t *testing.T) {
	t.Parallel()
	e := setup(t, nil)
	e.newTenants("acme", "globex")
	acmeAdmin, acmeRefresh := e.loginAdmin("acme")
	globexAdmin, _ := e.loginAdmin("globex")
	ws := serveWS(t, e.h) + "/ws/notifications"

	accepted := []struct {
		name      string
		query     string
		hdr       http.Header
		protocols []string
		protocol  string // the subprotocol the server must answer
	}{
		{name: "authorization header", hdr: wsHeader("acme", "Authorization", "Bearer "+acmeAdmin)},
		{name: "subprotocol", hdr: wsHeader("acme"), protocols: []string{"bearer", acmeAdmin}, protocol: "bearer"},
		{name: "token parameter", query: "token=" + acmeAdmin, hdr: wsHeader("acme")},
		{name: "django query_string", query: "query_string=" + url.QueryEscape("token="+acmeAdmin), hdr: wsHeader("acme")},
		{name: "X-Tenant header", query: "token=" + acmeAdmin, hdr: wsHeader("", "X-Tenant", "acme")},
		{name: "tenant parameter", query: "tenant=acme&token=" + acmeAdmin},
		{name: "tenant_name parameter", query: "tenant_name=acme", protocols: []string{"bearer", acmeAdmin}, protocol: "bearer"},
	}
	clients := make([]*wsClient, len(accepted))
	for i, a := range accepted {
		c, status, code := wsDial(t, ws+"?"+a.query, a.hdr, a.protocols...)
		if c == nil {
			t.Fatalf("%s: handshake refused: %d %s", a.name, status, code)
		}
		if got := c.conn.Subprotocol(); got != a.protocol {
			t.Errorf("%s: server answered subprotocol %q, want %q", a.name, got, a.protocol)
		}
		clients[i] = c
	}
	// Each of them is a connection to acme.
	sent := postNote(t, e.h, "acme", acmeAdmin, "Hello all", "")
	for i, c := range clients {
		if got := c.next(t); !got.same(sent) {
			t.Fatalf("%s: got %s, want %s", accepted[i].name, got.raw, sent.raw)
		}
	}

	refused := []struct {
		name      string
		query     string
		hdr       http.Header
		protocols []string
		status    int
		code      string
	}{
		{name: "no token", hdr: wsHeader("acme"), status: 401, code: "unauthenticated"},
		{name: "only the bearer subprotocol", hdr: wsHeader("acme"), protocols: []string{"bearer"}, status: 401, code: "unauthenticated"},
		{name: "garbage token parameter", query: "token=not.a.jwt", hdr: wsHeader("acme"), status: 401, code: "invalid_token"},
		{name: "garbage bearer header", hdr: wsHeader("acme", "Authorization", "Bearer garbage"), status: 401, code: "invalid_token"},
		{name: "refresh token", query: "token=" + acmeRefresh, hdr: wsHeader("acme"), status: 401, code: "invalid_token"},
		{name: "acme's token at globex", hdr: wsHeader("globex", "Authorization", "Bearer "+acmeAdmin), status: 401, code: "invalid_token"},
		{name: "acme's token at globex by subprotocol", hdr: wsHeader("globex"), protocols: []string{"bearer", acmeAdmin}, status: 401, code: "invalid_token"},
		{name: "acme's token at globex by parameters", query: "tenant=globex&query_string=" + url.QueryEscape("token="+acmeAdmin), status: 401, code: "invalid_token"},
		{name: "globex's token at acme", query: "tenant=acme&token=" + globexAdmin, status: 401, code: "invalid_token"},
		{name: "unknown tenant", query: "tenant=nosuch&token=" + acmeAdmin, status: 404, code: "tenant_not_found"},
		{name: "no tenant", query: "token=" + acmeAdmin, status: 404, code: "tenant_not_found"},
		{name: "bad after_id", query: "after_id=-3&token=" + acmeAdmin, hdr: wsHeader("acme"), status: 400, code: "invalid_after_id"},
	}
	for _, r := range refused {
		c, status, code := wsDial(t, ws+"?"+r.query, r.hdr, r.protocols...)
		if c != nil || status != r.status || code != r.code {
			t.Errorf("%s: handshake answered %d %q, want %d %q", r.name, status, code, r.status, r.code)
		}
	}
}

// lossyFanout is an in-process fan-out that silently loses what is published while
// losing is set, as Redis pub/sub does while a replica is not subscribed.
type lossyFanout struct {
	*notify.Memory
	losing atomic.Bool
}

func (l *lossyFanout) Publish(ctx context.Context, tenantID string, payload []byte) error {
	if l.losing.Load() {
		return nil
	}
	return l.Memory.Publish(ctx, tenantID, payload)
}

func TestNotificationsReplay(t *testing.T) {
	t.Parallel()
	fanout := &lossyFanout{Memory: notify.NewMemory()}
	e := setup(t, func(c *Config) { c.Fanout = fanout })
	ts := e.newTenants("acme", "globex")
	acme, globex := ts[0], ts[1]
	acmeAdmin, _ := e.loginAdmin("acme")
	globexAdmin, _ := e.loginAdmin("globex")
	ws := serveWS(t, e.h) + "/ws/notifications"
	ctx := context.Background()

	n1 := postNote(t, e.h, "acme", acmeAdmin, "one", "")
	n2 := postNote(t, e.h, "acme", acmeAdmin, "two", "")
	n3 := postNote(t, e.h, "acme", acmeAdmin, "three", "")

	// A client that saw n1 gets n2 and n3, in order, then live ones.
	c := mustWS(t, ws+"?after_id="+strconv.FormatInt(n1.ID, 10), wsHeader("acme", "Authorization", "Bearer "+acmeAdmin))
	c.expect(t, n2, n3)
	// What the replay sent may also come live (published between the client's
	// subscription and the replay's read): it is not sent twice.
	for _, n := range []note{n2, n3} {
		if err := fanout.Publish(ctx, acme.ID, n.raw); err != nil {
			t.Fatal(err)
		}
	}
	n4 := postNote(t, e.h, "acme", acmeAdmin, "four", "")
	c.expect(t, n4)

	// A client that is up to date gets only live ones.
	latest := mustWS(t, ws+"?after_id="+strconv.FormatInt(n4.ID, 10), wsHeader("acme", "Authorization", "Bearer "+acmeAdmin))
	n5 := postNote(t, e.h, "acme", acmeAdmin, "five", "")
	latest.expect(t, n5)
	c.quietUntil(t, n5) // the replayed ones did not come again

	// Ids commit in order, but publications may come in any order or be lost: a live
	// client that hears of g2 first reads g1 from the database, and gets each once, in
	// order.
	g := mustWS(t, ws, wsHeader("globex", "Authorization", "Bearer "+globexAdmin))
	fanout.losing.Store(true)
	g1 := postNote(t, e.h, "globex", globexAdmin, "first id, published last", "")
	g2 := postNote(t, e.h, "globex", globexAdmin, "second id, published first", "")
	fanout.losing.Store(false)
	if g2.ID != g1.ID+1 {
		t.Fatalf("ids %d then %d are not contiguous", g1.ID, g2.ID)
	}
	for _, n := range []note{g2, g1} {
		if err := fanout.Publish(ctx, globex.ID, n.raw); err != nil {
			t.Fatal(err)
		}
	}
	g.expect(t, g1, g2)
	g.quietUntil(t, postNote(t, e.h, "globex", globexAdmin, "globex sentinel", ""))
	c.quietUntil(t, postNote(t, e.h, "acme", acmeAdmin, "sentinel", ""))

	// after_id=0 replays everything, on the socket as on GET /notifications.
	all := e.listNotes("acme", acmeAdmin, "?after_id=0")
	if len(all) != 6 || !sameNotes(all[:5], n1, n2, n3, n4, n5) {
		t.Fatalf("GET ?after_id=0: %v", all)
	}
	from0 := mustWS(t, ws+"?after_id=0", wsHeader("acme", "Authorization", "Bearer "+acmeAdmin))
	from0.expect(t, all...)
	from0.quietUntil(t, postNote(t, e.h, "acme", acmeAdmin, "after the replay", ""))

	// A client resuming from an id the tenant never reached gets what comes next.
	stale := mustWS(t, ws+"?after_id=999999", wsHeader("acme", "Authorization", "Bearer "+acmeAdmin))
	stale.expect(t, postNote(t, e.h, "acme", acmeAdmin, "for the stale client", ""))
}

func TestNotificationsOrigin(t *testing.T) {
	t.Parallel()
	e := setup(t, func(c *Config) { c.AllowedOrigins = []string{"https://app.partner.example"} })
	ts := e.newTenants("acme", "globex")
	if _, err := e.store.AddDomain(context.Background(), ts[0].ID, "portal.acme-corp.example", true); err != nil {
		t.Fatal(err)
	}
	acmeAdmin, _ := e.loginAdmin("acme")
	ws := serveWS(t, e.h) + "/ws/notifications"

	for _, o := range []struct {
		origin string
		status int
	}{
		{"", http.StatusSwitchingProtocols}, // not a browser
		{"http://acme." + base, http.StatusSwitchingProtocols},
		{"https://acme." + base + ":8443", http.StatusSwitchingProtocols},
		{"https://portal.acme-corp.example", http.StatusSwitchingProtocols}, // acme's custom domain
		{"https://app.partner.example", http.StatusSwitchingProtocols},      // configured
		{"http://evil.example", http.StatusForbidden},
		{"http://globex." + base, http.StatusForbidden}, // another tenant's page
		{"http://acme." + base + ".evil.example", http.StatusForbidden},
		{"https://app.partner.example.evil.example", http.StatusForbidden},
		{"null", http.StatusForbidden},
	} {
		hdr := wsHeader("acme", "Authorization", "Bearer "+acmeAdmin)
		if o.origin != "" {
			hdr.Set("Origin", o.origin)
		}
		c, status, code := wsDial(t, ws, hdr)
		if status != o.status {
			t.Errorf("Origin %q: handshake answered %d %s, want %d", o.origin, status, code, o.status)
		}
		if status == http.StatusForbidden && code != "origin_not_allowed" {
			t.Errorf("Origin %q: refused with code %q, want origin_not_allowed", o.origin, code)
		}
		if c != nil {
			c.close()
		}
	}
}

func TestNotificationsDeactivatedUser(t *testing.T) {
	t.Parallel()
	e := setup(t, nil)
	e.newTenants("acme")
	admin, _ := e.loginAdmin("acme")
	id := e.createUser("acme", admin, "bob@acme.example")
	bob, _ := e.login("acme", "bob@acme.example", "user password 1")
	ws := serveWS(t, e.h) + "/ws/notifications"

	c := mustWS(t, ws, wsHeader("acme", "Authorization", "Bearer "+bob))
	c.expect(t, postNote(t, e.h, "acme", admin, "welcome bob", ""))
	c.close()

	e.mustDo(req{method: "PATCH", path: "/api/v1/users/" + strconv.FormatInt(id, 10), host: host("acme"), token: admin,
		body: map[string]any{"is_active": false}}, http.StatusOK)
	for _, hdr := range []http.Header{
		wsHeader("acme", "Authorization", "Bearer "+bob),
		wsHeader("acme", "Sec-WebSocket-Protocol", "bearer, "+bob),
	} {
		if c, status, code := wsDial(t, ws, hdr); c != nil || status != http.StatusUnauthorized || code != "invalid_token" {
			t.Fatalf("deactivated user's handshake: %d %q, want 401 invalid_token", status, code)
		}
	}
	if c, status, code := wsDial(t, ws+"?token="+bob, wsHeader("acme")); c != nil || status != http.StatusUnauthorized {
		t.Fatalf("deactivated user's handshake by token parameter: %d %q, want 401", status, code)
	}
}

// newRedisFanout returns a Redis transport, closed at cleanup (after the servers that
// use it, when made before them).
func newRedisFanout(t *testing.T, u string) *notify.Redis {
	t.Helper()
	r, err := notify.NewRedis(u)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

// twoReplicas returns an env whose server and a second replica (h2) share the Redis at
// redisURL for the fan-out, once both have subscribed, with the tenants provisioned.
func twoReplicas(t *testing.T, redisURL string, slugs ...string) (e *env, h2 http.Handler) {
	t.Helper()
	fanout1, fanout2 := newRedisFanout(t, redisURL), newRedisFanout(t, redisURL)
	e = setup(t, func(c *Config) { c.Fanout = fanout1 })
	h2 = e.replica(func(c *Config) { c.Fanout = fanout2 })
	e.newTenants(slugs...)
	// Replicas receive live notifications once subscribed; what came before is only
	// replayed (after_id).
	for _, f := range []*notify.Redis{fanout1, fanout2} {
		select {
		case <-f.Subscribed():
		case <-time.After(wsWait):
			t.Fatal("a replica never subscribed to redis")
		}
	}
	return e, h2
}

func TestNotificationsAcrossReplicas(t *testing.T) {
	t.Parallel()
	e, h2 := twoReplicas(t, pgtest.Require(t, "TENANTPLANE_TEST_REDIS_URL"), "acme", "globex")
	acmeAdmin, _ := e.loginAdmin("acme")
	globexAdmin, _ := e.loginAdmin("globex")
	ws1, ws2 := serveWS(t, e.h)+"/ws/notifications", serveWS(t, h2)+"/ws/notifications"

	on1 := mustWS(t, ws1, wsHeader("acme", "Authorization", "Bearer "+acmeAdmin))
	on2 := mustWS(t, ws2, wsHeader("acme", "Authorization", "Bearer "+acmeAdmin))
	globexOn1 := mustWS(t, ws1, wsHeader("globex", "Authorization", "Bearer "+globexAdmin))

	// Posted through replica 2, received on both.
	sent := postNote(t, h2, "acme", acmeAdmin, "through replica 2", "")
	on1.expect(t, sent)
	on2.expect(t, sent)
	// And the other way round.
	back := postNote(t, e.h, "acme", acmeAdmin, "through replica 1", "")
	on2.expect(t, back)
	on1.expect(t, back)
	// globex's client heard nothing of acme's, and gets its own from replica 2.
	own := postNote(t, h2, "globex", globexAdmin, "globex via replica 2", "")
	globexOn1.expect(t, own)
	on1.quietUntil(t, postNote(t, h2, "acme", acmeAdmin, "sentinel", ""))
}

// lockedBuffer is a bytes.Buffer safe for a logger writing while the test reads.
type lockedBuffer struct {
	// mu guards buf.
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestNotificationsTokenNotLogged(t *testing.T) {
	t.Parallel()
	var logs lockedBuffer
	e := setup(t, func(c *Config) {
		c.Logger = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	})
	e.newTenants("acme", "globex")
	acmeAdmin, _ := e.loginAdmin("acme")
	ws := serveWS(t, e.h) + "/ws/notifications"

	// Accepted, by token and by query_string; they are logged when they end.
	byToken := mustWS(t, ws+"?token="+acmeAdmin, wsHeader("acme"))
	byQS := mustWS(t, ws+"?tenant=acme&query_string="+url.QueryEscape("token="+acmeAdmin), nil)
	sent := postNote(t, e.h, "acme", acmeAdmin, "logged?", "")
	byToken.expect(t, sent)
	byQS.expect(t, sent)
	byToken.close()
	byQS.close()
	// Refused at the wrong tenant, and by subprotocol.
	for _, u := range []string{ws + "?tenant=globex&token=" + acmeAdmin, ws + "?tenant=globex&query_string=" + acmeAdmin} {
		if c, status, _ := wsDial(t, u, nil); c != nil || status != http.StatusUnauthorized {
			t.Fatalf("acme's token at globex: %d", status)
		}
	}
	if c, status, _ := wsDial(t, ws+"?tenant=globex", nil, "bearer", acmeAdmin); c != nil || status != http.StatusUnauthorized {
		t.Fatalf("acme's token at globex by subprotocol: %d", status)
	}

	// Every handshake reaches the access log (the accepted ones once the server has seen
	// the client leave).
	deadline := time.Now().Add(wsWait)
	for strings.Count(logs.String(), `"route":"/ws/notifications"`) < 5 {
		if time.Now().After(deadline) {
			t.Fatalf("the access log misses websocket requests:\n%s", logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	out := logs.String()
	sig := acmeAdmin[strings.LastIndex(acmeAdmin, ".")+1:]
	if strings.Contains(out, acmeAdmin) || strings.Contains(out, sig) {
		t.Fatalf("the access token reached the log:\n%s", out)
	}
	if !strings.Contains(out, `"query":"token=%5BREDACTED%5D"`) || !strings.Contains(out, "query_string=%5BREDACTED%5D") {
		t.Fatalf("the token parameters are not logged masked:\n%s", out)
	}
}

// TestNotificationsTokenExpiry: an open WebSocket ends when the access token that opened
// it expires, with a close code telling the client to reconnect with a fresh token.
func TestNotificationsTokenExpiry(t *testing.T) {
	t.Parallel()
	e := setup(t, nil)
	ts := e.newTenants("acme")
	admin, _ := e.loginAdmin("acme")
	claims, err := e.issuer.Verify(admin, token.Access, ts[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	short := token.NewIssuer(e.ring, token.Config{AccessTTL: 1500 * time.Millisecond, Leeway: time.Millisecond})
	raw, _, err := short.Issue(token.Access, claims.Subject, ts[0].ID, token.Claims{Admin: claims.Admin, Version: claims.Version})
	if err != nil {
		t.Fatal(err)
	}
	d := websocket.Dialer{HandshakeTimeout: wsWait}
	conn, _, err := d.Dial(serveWS(t, e.h)+"/ws/notifications", wsHeader("acme", "Authorization", "Bearer "+raw))
	if err != nil {
		t.Fatalf("handshake with a fresh short-lived token: %v", err)
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(wsWait + 2*time.Second))
	_, _, err = conn.ReadMessage()
	if !websocket.IsCloseError(err, notify.CloseTokenExpired) {
		t.Errorf("connection ended with %v, want close code %d", err, notify.CloseTokenExpired)
	}
}
