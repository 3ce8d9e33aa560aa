// Package notify is the dataplane's real-time notifications: tenant admins post
// notifications, every user of the tenant reads them over HTTP or receives them live
// over a WebSocket. Notifications are stored in the tenant's schema (so a client that
// reconnects with after_id replays what it missed) and fanned out to every replica
// through a Transport: Redis pub/sub, or in-process for a single replica.
package notify

import (
	"cmp"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/gorilla/websocket"
	"github.com/jackc/pgx/v5"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/dataplane/tenantdb"
	"github.com/tenantplane/tenantplane/tenant"
	"github.com/tenantplane/tenantplane/web"
)

// Authenticator checks an access token presented by a WebSocket client for the
// request's tenant and returns its user; the auth service implements it.
type Authenticator interface {
	AuthenticateToken(c *gin.Context, raw string) (*tenantdb.User, error)
}

// DomainOwner finds the tenant a custom domain routes to; *tenant.Store implements it.
type DomainOwner interface {
	GetByDomain(ctx context.Context, domain string) (*tenant.Tenant, error)
}

// Config configures a Service.
type Config struct {
	// Transport fans notifications out to every replica (default: in-process).
	Transport Transport
	// Auth checks WebSocket tokens; required.
	Auth Authenticator
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
	// ReplayLimit bounds how many missed notifications after_id replays (default 1000).
	ReplayLimit int
	// Logger receives connection events (default: discard).
	Logger *slog.Logger
}

// Service serves the notification endpoints. Start runs the fan-out receiver.
type Service struct {
	cfg       Config
	hub       *hub
	transport Transport
	upgrader  websocket.Upgrader
	log       *slog.Logger

	// mu guards base, cancel, done and stopped, and orders conns.Add before Stop's
	// conns.Wait.
	mu      sync.Mutex
	base    context.Context // lives from Start to Stop; ends open WebSockets
	cancel  context.CancelFunc
	done    chan struct{}
	stopped bool
	conns   sync.WaitGroup // WebSockets being served
}

// New returns a Service; call Start to receive notifications from other replicas.
func New(cfg Config) *Service {
	cfg.SendBuffer = cmp.Or(cfg.SendBuffer, 64)
	cfg.PingInterval = cmp.Or(cfg.PingInterval, 25*time.Second)
	cfg.WriteTimeout = cmp.Or(cfg.WriteTimeout, 10*time.Second)
	cfg.ReplayLimit = cmp.Or(cfg.ReplayLimit, 1000)
	s := &Service{
		cfg:       cfg,
		hub:       newHub(),
		transport: cfg.Transport,
		log:       cmp.Or(cfg.Logger, slog.New(slog.DiscardHandler)),
	}
	if s.transport == nil {
		s.transport = NewMemory()
	}
	s.upgrader = websocket.Upgrader{
		ReadBufferSize:  1024,
		WriteBufferSize: 4096,
		// The Origin check runs before Upgrade (checkOrigin), with the tenant at hand.
		CheckOrigin: func(*http.Request) bool { return true },
	}
	return s
}

// Start runs the transport's receiver in the background until Stop; when the transport
// fails (Redis down) it retries with a growing pause.
func (s *Service) Start(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	s.mu.Lock()
	s.base, s.cancel, s.done, s.stopped = ctx, cancel, make(chan struct{}), false
	done := s.done
	s.mu.Unlock()
	go func() {
		defer close(done)
		pause := 100 * time.Millisecond
		for ctx.Err() == nil {
			err := s.transport.Run(ctx, func(tenantID string, payload []byte) {
				if n := s.hub.deliver(tenantID, payload); n > 0 {
					s.log.Warn("dropped slow websocket clients", "tenant_id", tenantID, "count", n)
				}
			})
			if err == nil || ctx.Err() != nil {
				pause = 100 * time.Millisecond
				continue
			}
			s.log.Error("notification fan-out receiver failed; retrying", "error", err, "retry_in", pause.String())
			select {
			case <-ctx.Done():
			case <-time.After(pause):
			}
			pause = min(pause*2, 5*time.Second)
		}
	}()
	return nil
}

// track counts a WebSocket about to be served (the caller calls conns.Done when it
// ends) and returns the context it lives in: the one Start received, so Stop closes it
// (a hijacked connection outlives its request's context). It returns false once Stop
// has begun: a connection counted after Stop's Wait started would misuse the WaitGroup.
func (s *Service) track() (context.Context, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return nil, false
	}
	s.conns.Add(1)
	if s.base == nil {
		return context.Background(), true
	}
	return s.base, true
}

// Stop ends the receiver and closes every WebSocket, waiting for them (bounded).
func (s *Service) Stop() {
	s.mu.Lock()
	cancel, done := s.cancel, s.done
	if cancel != nil {
		s.stopped = true
	}
	s.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel()
	<-done
	wait := make(chan struct{})
	go func() { s.conns.Wait(); close(wait) }()
	select {
	case <-wait:
	case <-time.After(5 * time.Second):
	}
}

// Routes registers POST and GET /notifications on api and GET /notifications (the
// WebSocket) on ws; both run the tenant middleware. require authenticates by bearer
// token and requireAdmin lets only tenant admins through.
func (s *Service) Routes(api, ws gin.IRouter, require, requireAdmin gin.HandlerFunc) {
	h := func(f web.HandlerFunc) gin.HandlerFunc { return web.Handle(s.log, f) }
	api.POST("/notifications", require, requireAdmin, h(s.create))
	api.GET("/notifications", require, h(s.list))
	ws.GET("/notifications", h(s.websocket))
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

type createRequest struct {
	Title string `json:"title"`
	Body  string `json:"body"`
}

func (s *Service) create(c *gin.Context) error {
	sc, err := tenantdb.From(c)
	if err != nil {
		return err
	}
	u, err := tenantdb.UserFrom(c)
	if err != nil {
		return err
	}
	var in createRequest
	if err := web.DecodeJSON(c, &in, 64<<10); err != nil {
		return err
	}
	in.Title = strings.TrimSpace(in.Title)
	if in.Title == "" || len([]rune(in.Title)) > 200 {
		return apperr.New(apperr.Invalid, "invalid_title", "title must be 1 to 200 characters")
	}
	if len(in.Body) > 32<<10 {
		return apperr.New(apperr.Invalid, "invalid_body", "body must be at most 32 KB")
	}
	m := Message{Type: "notification", Title: in.Title, Body: in.Body, SenderID: &u.ID}
	err = sc.Write(c.Request.Context(), func(db tenantdb.DB) error {
		return db.QueryRow(c.Request.Context(), `INSERT INTO notifications (title, body, sender_id) VALUES ($1, $2, $3)
			RETURNING id, created_at`, m.Title, m.Body, u.ID).Scan(&m.ID, &m.CreatedAt)
	})
	if err != nil {
		return err
	}
	payload, _ := json.Marshal(m)
	// Stored first: a client that misses the live message gets it on reconnect.
	if err := s.transport.Publish(context.WithoutCancel(c.Request.Context()), sc.Tenant.ID, payload); err != nil {
		s.log.Error("notification stored but not fanned out", "request_id", web.RequestID(c), "error", err)
	}
	c.JSON(http.StatusCreated, m)
	return nil
}

func afterID(c *gin.Context) (int64, error) {
	v := c.Query("after_id")
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, apperr.New(apperr.Invalid, "invalid_after_id", "after_id must be a non-negative integer")
	}
	return n, nil
}

func (s *Service) list(c *gin.Context) error {
	sc, err := tenantdb.From(c)
	if err != nil {
		return err
	}
	after, err := afterID(c)
	if err != nil {
		return err
	}
	limit := 100
	if v := c.Query("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil || limit < 1 || limit > 1000 {
			return apperr.New(apperr.Invalid, "invalid_limit", "limit must be between 1 and 1000")
		}
	}
	var items []Message
	err = sc.Read(c.Request.Context(), func(db tenantdb.DB) error {
		items, err = since(c.Request.Context(), db, after, limit)
		return err
	})
	if err != nil {
		return err
	}
	if items == nil {
		items = []Message{}
	}
	c.JSON(http.StatusOK, gin.H{"items": items})
	return nil
}

// since returns up to limit notifications with id > after, oldest first.
func since(ctx context.Context, db tenantdb.DB, after int64, limit int) ([]Message, error) {
	rows, err := db.Query(ctx, `SELECT 'notification', id, title, body, sender_id, created_at FROM notifications
		WHERE id > $1 ORDER BY id LIMIT $2`, after, limit)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowToStructByPos[Message])
}
