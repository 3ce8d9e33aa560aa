// Package notify is the dataplane's real-time notifications: tenant admins post
// notifications, every user of the tenant reads them or receives them live over a
// WebSocket. Notifications are stored in the tenant's schema and fanned out to every
// replica through a Transport: Redis pub/sub, or in-process for a single replica. It
// knows nothing of HTTP: its methods take the request's context.Context, which carries
// the tenant's scope (tenantdb.ScopeFrom) and the caller (caller.From); the WebSocket
// handshake is the adapter's, the feed over the upgraded connection is here.
//
// Delivery guarantees. Ids are assigned in commit order from a per-tenant counter
// (tenant migration 000004): they are contiguous, and id N is visible only once every
// smaller id is. Each socket remembers the last id it sent. A live message with the next
// id is sent at once; an older one is a duplicate and skipped; a newer one means the
// fan-out lost something, and the socket first reads the gap from the database. When the
// transport (re)subscribes after an outage, every socket of the replica catches up from
// the database. So every socket gets every notification stored after its starting point,
// in order, exactly once. A Redis outage only delays: Post stores the notification,
// publishes with a short bound (Config.PublishTimeout) and never refuses for the
// fan-out; what could not be published is published again once Redis answers.
//
// Writing. A fanned-out notification is framed once for all of the tenant's sockets
// and written by a few fan-out workers (GOMAXPROCS), each taking a socket's whole queue
// in one write that never waits; a socket whose buffer is full, and all other writing
// (replay and catch-up, replies, pings and pongs, the close), is its feed's own writer
// goroutine's, which runs only while there is something to write. One of them holds a
// feed at a time, so frames never interleave.
//
// Starting point: after_id absent is live only (what commits after the handshake);
// after_id=N replays every stored notification after N first (after_id=0: all of them).
//
// Sending over the socket. A tenant admin may send a notification as a JSON text frame
// {"title": "...", "body": "..."}, or the Django app's {"message": "..."}: the message's
// first line (cut to MaxTitle characters) becomes the title, and the whole message the
// body when it did not fit in the title. It is stored and fanned out as by Post, and
// reaches the sender's own socket like any other. A frame from a non-admin (checked as
// stored at the time of the frame) or a malformed one is answered with an error frame
// {"type":"error","error":{"code":"...","message":"..."}} and changes nothing. A
// client frame may be as large as the API's largest notification request (MaxRequest).
//
// Limits. At most Config.MaxConnsPerIP (default 32) WebSockets are open at once from one
// client IP on one replica; beyond it the handshake is refused with 429
// too_many_connections. A client that falls Config.SendBuffer messages behind is
// dropped; one that does not answer pings within two Config.PingInterval is
// disconnected. A socket ends (close code CloseNotAllowed) within a second on every
// replica when its user is deactivated, deleted or changes password (UserRevoked, sent
// through the fan-out) and when its tenant is suspended or deleted (TenantChanged, from
// the registry's change notifications; not while its schema is migrating), and with
// CloseTokenExpired when its token expires.
package notify

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"runtime"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/gorilla/websocket"
	"github.com/jackc/pgx/v5"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/dataplane/auth"
	"github.com/tenantplane/tenantplane/dataplane/page"
	"github.com/tenantplane/tenantplane/dataplane/pool"
	"github.com/tenantplane/tenantplane/dataplane/tenantdb"
	"github.com/tenantplane/tenantplane/lifecycle"
	"github.com/tenantplane/tenantplane/metrics"
	"github.com/tenantplane/tenantplane/pgerr"
	"github.com/tenantplane/tenantplane/tenant"
)

// Content limits of a notification.
const (
	// MaxTitle is the longest title, in characters.
	MaxTitle = 200
	// MaxBody is the longest body, in bytes.
	MaxBody = 32 << 10
	// MaxRequest bounds the JSON of one notification, as a POST body or a socket frame.
	MaxRequest = 64 << 10
)

// DomainOwner finds the tenant a custom domain routes to; *tenant.Store implements it.
type DomainOwner interface {
	GetByDomain(ctx context.Context, domain string) (*tenant.Tenant, error)
}

// Registry finds a tenant by slug; *tenant.Store implements it.
type Registry interface {
	Get(ctx context.Context, slug string) (*tenant.Tenant, error)
}

var _ Registry = (*tenant.Store)(nil)

// Config configures a Service.
type Config struct {
	// Transport fans notifications out to every replica (default: in-process).
	Transport Transport
	// Domains resolves custom domains for the Origin check (nil: only the tenant's
	// {slug}.{BaseDomain} host and AllowedOrigins are accepted).
	Domains DomainOwner
	// Registry is read when the registry announces a change of a tenant with open
	// sockets, to end them when it is no longer served (nil: they end when their token
	// expires).
	Registry Registry
	// BaseDomain is the platform's base domain; a page at {slug}.{BaseDomain} (any
	// scheme or port) may open the tenant's WebSocket.
	BaseDomain string
	// AllowedOrigins are further origins (scheme://host[:port]) allowed for every tenant.
	AllowedOrigins []string
	// SendBuffer is how many messages a slow client may fall behind before it is
	// dropped (default 64).
	SendBuffer int
	// PingInterval is how often the server pings; a client that does not answer within
	// two intervals is disconnected (default 25 s).
	PingInterval time.Duration
	// WriteTimeout bounds each write to a client (default 10 s).
	WriteTimeout time.Duration
	// ReplayLimit is how many stored notifications one database read of a replay or
	// catch-up fetches; a longer backlog is read in several (default 100).
	ReplayLimit int
	// PublishTimeout bounds how long Post waits for the fan-out (default 250 ms); what
	// could not be published is retried in the background.
	PublishTimeout time.Duration
	// RepublishInterval is how often publications that failed are retried (default 1 s).
	RepublishInterval time.Duration
	// MaxConnsPerIP bounds the WebSockets open at once from one client IP on this
	// replica (default 32; negative: no bound).
	MaxConnsPerIP int
	// StopTimeout bounds how long Stop waits for the receiver and the feeds (default 5 s).
	StopTimeout time.Duration
	// Logger receives connection events (default: discard).
	Logger *slog.Logger
	// Metrics counts open sockets, deliveries and dropped clients (nil: nothing recorded).
	Metrics *metrics.Metrics
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Service is the tenants' notifications. Start runs the fan-out receiver.
type Service struct {
	cfg       Config
	hub       *hub
	transport Transport
	log       *slog.Logger
	now       func() time.Time
	// run is the receiver and the live feeds; its context ends open WebSockets.
	run lifecycle.Group

	// mu guards perIP and pending.
	mu    sync.Mutex
	perIP map[string]int
	// pending are the publications that failed, by key (the latest notification of a
	// tenant, or one user's revocation), retried by the republisher.
	pending map[string]publication
}

// publication is one message to publish on a tenant's channel.
type publication struct {
	tenantID string
	payload  []byte
}

// New returns a Service; call Start to receive notifications from other replicas.
func New(cfg Config) *Service {
	cfg.SendBuffer = cmp.Or(cfg.SendBuffer, 64)
	cfg.PingInterval = cmp.Or(cfg.PingInterval, 25*time.Second)
	cfg.WriteTimeout = cmp.Or(cfg.WriteTimeout, 10*time.Second)
	cfg.ReplayLimit = cmp.Or(cfg.ReplayLimit, 100)
	cfg.PublishTimeout = cmp.Or(cfg.PublishTimeout, 250*time.Millisecond)
	cfg.RepublishInterval = cmp.Or(cfg.RepublishInterval, time.Second)
	cfg.MaxConnsPerIP = cmp.Or(cfg.MaxConnsPerIP, 32)
	cfg.StopTimeout = cmp.Or(cfg.StopTimeout, 5*time.Second)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Service{
		cfg:       cfg,
		hub:       newHub(),
		transport: cfg.Transport,
		log:       cmp.Or(cfg.Logger, slog.New(slog.DiscardHandler)),
		now:       cfg.Now,
		perIP:     map[string]int{},
		pending:   map[string]publication{},
	}
	if s.transport == nil {
		s.transport = NewMemory()
	}
	return s
}

// Start runs the transport's receiver and the republisher in the background until
// Stop; when the transport fails (Redis down) it retries with a growing pause
// (lifecycle.Retry). It returns an error when the service was already started or
// stopped.
func (s *Service) Start(ctx context.Context) error {
	if err := s.run.Start(ctx); err != nil {
		return fmt.Errorf("starting notifications: %w", err)
	}
	r := Receiver{Deliver: s.deliver, Subscribed: s.subscribed}
	s.run.Go(func(ctx context.Context) {
		lifecycle.Retry(ctx, s.log, "notification fan-out receiver", lifecycle.Backoff{Max: 2 * time.Second}, func(ctx context.Context) error {
			return s.transport.Run(ctx, r)
		})
	})
	s.run.Go(s.republish)
	s.hub.ready.start()
	for range runtime.GOMAXPROCS(0) {
		s.run.Go(func(context.Context) { s.hub.ready.work() })
	}
	// Stop ends every socket with 1001; a feed that subscribes after this ran ends itself.
	context.AfterFunc(s.run.Context(), func() {
		s.hub.ready.stop()
		s.hub.end("", func(*subscriber) bool { return true }, websocket.CloseGoingAway, "server shutting down")
	})
	return nil
}

// Stop ends the receiver and closes every WebSocket, waiting for them at most
// Config.StopTimeout.
func (s *Service) Stop() {
	if !s.run.Stop(s.cfg.StopTimeout) {
		s.log.Warn("notifications did not stop in time")
	}
}

// Message is a notification as sent to clients.
type Message struct {
	Type      string    `json:"type"`
	ID        int64     `json:"id"`
	Title     string    `json:"title"`
	Body      string    `json:"body"`
	SenderID  *int64    `json:"sender_id,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

// control is a control message on the fan-out: it ends the sockets of a user whose
// credentials were revoked.
type control struct {
	Type   string `json:"type"`
	UserID int64  `json:"user_id,omitempty"`
}

const typeUserRevoked = "user_revoked"

// deliver hands what the transport received to the tenant's feeds: notifications to
// their mailboxes, control messages to the hub.
func (s *Service) deliver(tenantID string, payload []byte) {
	var head struct {
		Type   string `json:"type"`
		ID     int64  `json:"id"`
		UserID int64  `json:"user_id"`
	}
	err := json.Unmarshal(payload, &head)
	if err != nil {
		s.log.Warn("ignoring a malformed fan-out message", "tenant_id", tenantID, "error", err)
		return
	}
	if head.Type == typeUserRevoked {
		s.hub.end(tenantID, func(sub *subscriber) bool { return sub.userID == head.UserID },
			CloseNotAllowed, "user no longer allowed")
		return
	}
	if s.hub.count(tenantID) == 0 {
		return
	}
	// Framed once for all of the tenant's sockets.
	if n := s.hub.deliver(tenantID, live{id: head.ID, frame: textFrame(payload)}); n > 0 {
		s.log.Warn("dropped slow websocket clients", "tenant_id", tenantID, "count", n)
	}
}

// subscribed has every feed catch up: the transport may have lost messages while it was
// not subscribed.
func (s *Service) subscribed() { s.hub.kickAll() }

// publish sends payload on the tenant's channel within Config.PublishTimeout; on
// failure it keeps it under key for the republisher. It never fails.
func (s *Service) publish(ctx context.Context, key, tenantID string, payload []byte) {
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.PublishTimeout)
	defer cancel()
	if err := s.transport.Publish(pctx, tenantID, payload); err != nil {
		s.log.WarnContext(ctx, "fan-out unavailable; will publish again", "tenant_id", tenantID, "error", err)
		s.mu.Lock()
		s.pending[key] = publication{tenantID: tenantID, payload: payload}
		s.mu.Unlock()
	}
}

// republish retries failed publications every Config.RepublishInterval until ctx ends.
// Feeds skip what they already sent, and read from the database what a republished
// notification shows they missed.
func (s *Service) republish(ctx context.Context) {
	t := time.NewTicker(s.cfg.RepublishInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.mu.Lock()
		todo := make(map[string]publication, len(s.pending))
		for k, p := range s.pending {
			todo[k] = p
		}
		s.mu.Unlock()
		for k, p := range todo {
			pctx, cancel := context.WithTimeout(ctx, s.cfg.PublishTimeout)
			err := s.transport.Publish(pctx, p.tenantID, p.payload)
			cancel()
			if err != nil {
				break // still down; retry everything next time
			}
			s.mu.Lock()
			if cur, ok := s.pending[k]; ok && string(cur.payload) == string(p.payload) {
				delete(s.pending, k)
			}
			s.mu.Unlock()
		}
	}
}

// Post stores a notification of ctx's tenant sent by ctx's caller (a tenant admin) and
// fans it out to the tenant's feeds on every replica. A fan-out failure is logged, not
// returned: the notification is stored, and feeds catch up once the fan-out is back. It
// returns auth.RequireAdmin's errors, an Invalid error (invalid_title, invalid_body) for
// bad content, and the store's errors (Unavailable when the database is).
func (s *Service) Post(ctx context.Context, title, body string) (*Message, error) {
	c, err := auth.RequireAdmin(ctx)
	if err != nil {
		return nil, err
	}
	sc, _ := tenantdb.ScopeFrom(ctx) // RequireAdmin found it
	return s.send(ctx, sc, c.ID, title, body)
}

// send validates, stores and publishes a notification of sc's tenant from sender, who
// must be an active admin as stored when it is inserted (a Forbidden error otherwise).
func (s *Service) send(ctx context.Context, sc *tenantdb.Scope, sender int64, title, body string) (*Message, error) {
	title = strings.TrimSpace(title)
	if err := validate(title, body); err != nil {
		return nil, err
	}
	m := &Message{Type: "notification", Title: title, Body: body, SenderID: &sender}
	if err := sc.Write(ctx, func(db pool.DB) error { return insert(ctx, db, m) }); err != nil {
		return nil, err
	}
	payload, _ := json.Marshal(m)
	// Stored first: a feed that misses the live message reads it from the database.
	s.publish(ctx, "n:"+sc.Tenant.ID, sc.Tenant.ID, payload)
	return m, nil
}

// validate checks a notification's (trimmed) title and body. It returns an Invalid
// error: invalid_title for a title that is empty, longer than MaxTitle characters, not
// UTF-8 or holds control characters; invalid_body for a body longer than MaxBody bytes,
// not UTF-8 or holding NUL bytes.
func validate(title, body string) error {
	switch {
	case title == "" || utf8.RuneCountInString(title) > MaxTitle:
		return apperr.New(apperr.Invalid, "invalid_title", "title must be 1 to %d characters", MaxTitle)
	case !utf8.ValidString(title) || strings.ContainsFunc(title, unicode.IsControl):
		return apperr.New(apperr.Invalid, "invalid_title", "title must be UTF-8 text without control characters")
	case len(body) > MaxBody:
		return apperr.New(apperr.Invalid, "invalid_body", "body must be at most 32 KB")
	case !utf8.ValidString(body) || strings.ContainsRune(body, 0):
		return apperr.New(apperr.Invalid, "invalid_body", "body must be UTF-8 text without NUL bytes")
	}
	return nil
}

// UserRevoked ends the open sockets of user userID of tenant tenantID on every replica:
// the user was deactivated or deleted, or their tokens were revoked. Those of this
// replica end at once, the others when the fan-out delivers the message (retried in
// the background while it is down). It never fails.
func (s *Service) UserRevoked(ctx context.Context, tenantID string, userID int64) {
	s.hub.end(tenantID, func(sub *subscriber) bool { return sub.userID == userID }, CloseNotAllowed, "user no longer allowed")
	payload, _ := json.Marshal(control{Type: typeUserRevoked, UserID: userID})
	s.publish(ctx, fmt.Sprintf("u:%s:%d", tenantID, userID), tenantID, payload)
}

// TenantChanged is told that the registry changed tenant slug (the dataplane's
// registry listener calls it): when this replica has sockets of that tenant, it reads
// the tenant and ends them if it is no longer served (suspended, deleted, gone). The
// read runs in the background; it never fails.
func (s *Service) TenantChanged(slug string) {
	if s.cfg.Registry == nil || !s.hub.hasSlug(slug) {
		return
	}
	s.run.Go(func(ctx context.Context) {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		t, err := s.cfg.Registry.Get(ctx, slug)
		if err != nil && apperr.KindOf(err) != apperr.NotFound {
			s.log.Warn("reading a changed tenant", "tenant", slug, "error", err)
			return
		}
		// A tenant briefly unavailable (its schema migrating) keeps its sockets.
		if err == nil && (t.Serving() == nil || apperr.KindOf(t.Serving()) == apperr.Unavailable) {
			return
		}
		if n := s.hub.end("", func(sub *subscriber) bool { return sub.slug == slug }, CloseNotAllowed, "tenant no longer served"); n > 0 {
			s.log.Info("closed websockets of a tenant no longer served", "tenant", slug, "count", n)
		}
	})
}

// TenantsChanged is TenantChanged for every tenant with sockets on this replica: the
// registry listener reconnected, and changes may have been missed.
func (s *Service) TenantsChanged() {
	for _, slug := range s.hub.slugs() {
		s.TenantChanged(slug)
	}
}

// acquireConn takes one of ip's WebSocket slots; false when it has none left.
func (s *Service) acquireConn(ip string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cfg.MaxConnsPerIP > 0 && s.perIP[ip] >= s.cfg.MaxConnsPerIP {
		return false
	}
	s.perIP[ip]++
	return true
}

// releaseConn gives back one of ip's slots.
func (s *Service) releaseConn(ip string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.perIP[ip]--; s.perIP[ip] <= 0 {
		delete(s.perIP, ip)
	}
}

// defaultSince is how many notifications Since returns when no limit is given.
const defaultSince = 100

// Since returns up to limit (0: 100; at most page.MaxLimit) notifications of ctx's
// tenant with ids after after, oldest first. It returns caller.ErrUnauthenticated
// without a caller and an Invalid error (invalid_limit) for a bad limit.
func (s *Service) Since(ctx context.Context, after int64, limit int) ([]Message, error) {
	sc, _, err := tenantdb.ScopeAndCaller(ctx)
	if err != nil {
		return nil, err
	}
	if limit, err = page.Limit(limit, defaultSince); err != nil {
		return nil, err
	}
	var items []Message
	err = sc.Read(ctx, func(db pool.DB) error {
		items, err = since(ctx, db, after, math.MaxInt64, limit)
		return err
	})
	if err != nil {
		return nil, err
	}
	if items == nil {
		items = []Message{}
	}
	return items, nil
}

var errNotAdmin = apperr.New(apperr.Forbidden, "forbidden", "only tenant admins may send notifications")

// insertSQL takes the next id from the tenant's counter and stores the notification in
// one statement, only when the sender is an active admin as stored: the counter's row
// lock orders concurrent inserts by commit, and a rolled-back insert gives its id back.
const insertSQL = `WITH sender AS (
		SELECT 1 FROM users WHERE id = $3 AND is_admin AND is_active
	), next AS (
		UPDATE notification_counter SET last_id = last_id + 1 WHERE EXISTS (SELECT 1 FROM sender) RETURNING last_id
	)
	INSERT INTO notifications (id, title, body, sender_id) SELECT last_id, $1, $2, $3 FROM next
	RETURNING id, created_at`

// insert stores m, setting its id and creation time. It returns a Forbidden error when
// the sender is not an active admin.
func insert(ctx context.Context, db pool.DB, m *Message) error {
	err := db.QueryRow(ctx, insertSQL, m.Title, m.Body, m.SenderID).Scan(&m.ID, &m.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return errNotAdmin
	}
	if err != nil {
		return fmt.Errorf("storing notification: %w", pgerr.Translate(err, pgerr.Codes{}))
	}
	return nil
}

// lastID returns the id of the tenant's newest notification (0: none).
func lastID(ctx context.Context, db pool.DB) (int64, error) {
	var id int64
	if err := db.QueryRow(ctx, `SELECT last_id FROM notification_counter`).Scan(&id); err != nil {
		return 0, fmt.Errorf("reading the notification counter: %w", pgerr.Translate(err, pgerr.Codes{}))
	}
	return id, nil
}

// since returns up to limit notifications with after < id <= upto, oldest first.
func since(ctx context.Context, db pool.DB, after, upto int64, limit int) ([]Message, error) {
	rows, err := db.Query(ctx, `SELECT 'notification', id, title, body, sender_id, created_at FROM notifications
		WHERE id > $1 AND id <= $2 ORDER BY id LIMIT $3`, after, upto, limit)
	if err != nil {
		return nil, fmt.Errorf("reading notifications: %w", pgerr.Translate(err, pgerr.Codes{}))
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[Message])
	if err != nil {
		return nil, fmt.Errorf("reading notifications: %w", pgerr.Translate(err, pgerr.Codes{}))
	}
	return out, nil
}
