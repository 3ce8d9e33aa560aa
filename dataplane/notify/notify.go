// Package notify is the dataplane's real-time notifications: tenant admins post
// notifications, every user of the tenant reads them or receives them live over a
// WebSocket. Notifications are stored in the tenant's schema (so a client that
// reconnects with after_id replays what it missed) and fanned out to every replica
// through a Transport: Redis pub/sub, or in-process for a single replica. It knows
// nothing of HTTP: its methods take the request's context.Context, which carries the
// tenant's scope (tenantdb.ScopeFrom) and the caller (caller.From); the WebSocket
// handshake is the adapter's, the feed over the upgraded connection is here.
package notify

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/dataplane/auth"
	"github.com/tenantplane/tenantplane/dataplane/page"
	"github.com/tenantplane/tenantplane/dataplane/pool"
	"github.com/tenantplane/tenantplane/dataplane/tenantdb"
	"github.com/tenantplane/tenantplane/lifecycle"
	"github.com/tenantplane/tenantplane/pgerr"
	"github.com/tenantplane/tenantplane/tenant"
)

// DomainOwner finds the tenant a custom domain routes to; *tenant.Store implements it.
type DomainOwner interface {
	GetByDomain(ctx context.Context, domain string) (*tenant.Tenant, error)
}

// Config configures a Service.
type Config struct {
	// Transport fans notifications out to every replica (default: in-process).
	Transport Transport
	// Domains resolves custom domains for the Origin check (nil: only the tenant's
	// {slug}.{BaseDomain} host and AllowedOrigins are accepted).
	Domains DomainOwner
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
	// ReplayLimit bounds how many missed notifications a feed replays (default 1000).
	ReplayLimit int
	// StopTimeout bounds how long Stop waits for the receiver and the feeds (default 5 s).
	StopTimeout time.Duration
	// Logger receives connection events (default: discard).
	Logger *slog.Logger
}

// Service is the tenants' notifications. Start runs the fan-out receiver.
type Service struct {
	cfg       Config
	hub       *hub
	transport Transport
	log       *slog.Logger
	// run is the receiver and the live feeds; its context ends open WebSockets.
	run lifecycle.Group
}

// New returns a Service; call Start to receive notifications from other replicas.
func New(cfg Config) *Service {
	cfg.SendBuffer = cmp.Or(cfg.SendBuffer, 64)
	cfg.PingInterval = cmp.Or(cfg.PingInterval, 25*time.Second)
	cfg.WriteTimeout = cmp.Or(cfg.WriteTimeout, 10*time.Second)
	cfg.ReplayLimit = cmp.Or(cfg.ReplayLimit, 1000)
	cfg.StopTimeout = cmp.Or(cfg.StopTimeout, 5*time.Second)
	s := &Service{
		cfg:       cfg,
		hub:       newHub(),
		transport: cfg.Transport,
		log:       cmp.Or(cfg.Logger, slog.New(slog.DiscardHandler)),
	}
	if s.transport == nil {
		s.transport = NewMemory()
	}
	return s
}

// Start runs the transport's receiver in the background until Stop; when the transport
// fails (Redis down) it retries with a growing pause (lifecycle.Retry). It returns an
// error when the service was already started or stopped.
func (s *Service) Start(ctx context.Context) error {
	if err := s.run.Start(ctx); err != nil {
		return fmt.Errorf("starting notifications: %w", err)
	}
	s.run.Go(func(ctx context.Context) {
		lifecycle.Retry(ctx, s.log, "notification fan-out receiver", lifecycle.Backoff{}, func(ctx context.Context) error {
			return s.transport.Run(ctx, s.deliver)
		})
	})
	return nil
}

// deliver hands what the transport received to the tenant's feeds.
func (s *Service) deliver(tenantID string, payload []byte) {
	if n := s.hub.deliver(tenantID, payload); n > 0 {
		s.log.Warn("dropped slow websocket clients", "tenant_id", tenantID, "count", n)
	}
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

// Post stores a notification of ctx's tenant sent by ctx's caller (a tenant admin) and
// fans it out to the tenant's feeds on every replica. A fan-out failure is logged, not
// returned: the notification is stored, and feeds replay it. It returns
// auth.RequireAdmin's errors and an Invalid error (invalid_title, invalid_body) for bad
// content.
func (s *Service) Post(ctx context.Context, title, body string) (*Message, error) {
	c, err := auth.RequireAdmin(ctx)
	if err != nil {
		return nil, err
	}
	sc, _ := tenantdb.ScopeFrom(ctx) // RequireAdmin found it
	title = strings.TrimSpace(title)
	if title == "" || len([]rune(title)) > 200 {
		return nil, apperr.New(apperr.Invalid, "invalid_title", "title must be 1 to 200 characters")
	}
	if len(body) > 32<<10 {
		return nil, apperr.New(apperr.Invalid, "invalid_body", "body must be at most 32 KB")
	}
	m := &Message{Type: "notification", Title: title, Body: body, SenderID: &c.ID}
	err = sc.Write(ctx, func(db pool.DB) error { return insert(ctx, db, m) })
	if err != nil {
		return nil, err
	}
	payload, _ := json.Marshal(m)
	// Stored first: a client that misses the live message gets it on reconnect.
	if err := s.transport.Publish(context.WithoutCancel(ctx), sc.Tenant.ID, payload); err != nil {
		s.log.ErrorContext(ctx, "notification stored but not fanned out", "tenant", sc.Tenant.Slug, "id", m.ID, "error", err)
	}
	return m, nil
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
		items, err = since(ctx, db, after, limit)
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

// insert stores m, setting its id and creation time.
func insert(ctx context.Context, db pool.DB, m *Message) error {
	err := db.QueryRow(ctx, `INSERT INTO notifications (title, body, sender_id) VALUES ($1, $2, $3)
		RETURNING id, created_at`, m.Title, m.Body, m.SenderID).Scan(&m.ID, &m.CreatedAt)
	if err != nil {
		return fmt.Errorf("storing notification: %w", pgerr.Translate(err, pgerr.Codes{}))
	}
	return nil
}

// since returns up to limit notifications with id > after, oldest first.
func since(ctx context.Context, db pool.DB, after int64, limit int) ([]Message, error) {
	rows, err := db.Query(ctx, `SELECT 'notification', id, title, body, sender_id, created_at FROM notifications
		WHERE id > $1 ORDER BY id LIMIT $2`, after, limit)
	if err != nil {
		return nil, fmt.Errorf("reading notifications: %w", pgerr.Translate(err, pgerr.Codes{}))
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[Message])
	if err != nil {
		return nil, fmt.Errorf("reading notifications: %w", pgerr.Translate(err, pgerr.Codes{}))
	}
	return out, nil
}
