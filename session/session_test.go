package session_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tenantplane/tenantplane/internal/pgtest"
	"github.com/tenantplane/tenantplane/provisioner"
	"github.com/tenantplane/tenantplane/session"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func stores() map[string]func(t *testing.T) session.Store {
	return map[string]func(t *testing.T) session.Store{
		"memory": func(*testing.T) session.Store { return session.NewMemory() },
		"postgres": func(t *testing.T) session.Store {
			dsn := pgtest.NewDatabase(t, pgtest.URL(t))
			if _, err := provisioner.MigrateShared(context.Background(), dsn); err != nil {
				t.Fatalf("migrating: %v", err)
			}
			return session.NewPostgres(pgtest.Pool(t, dsn))
		},
		"redis": func(t *testing.T) session.Store {
			opt, err := redis.ParseURL(pgtest.Require(t, "TENANTPLANE_TEST_REDIS_URL"))
			if err != nil {
				t.Fatal(err)
			}
			c := redis.NewClient(opt)
			t.Cleanup(func() { _ = c.Close() })
			return session.NewRedis(c)
		},
	}
}

var csrfKey = []byte(strings.Repeat("c", 32))

// replicas returns two managers sharing one store, as two replicas would.
func replicas(t *testing.T, st session.Store, c *clock) (*session.Manager, *session.Manager) {
	mk := func() *session.Manager {
		m, err := session.New(session.Config{Store: st, Idle: 30 * time.Minute, Absolute: 2 * time.Hour, CSRFKey: csrfKey, Now: c.now})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	return mk(), mk()
}

func TestSessionsEndEverywhereAtOnce(t *testing.T) {
	t.Parallel()
	for name, mk := range stores() {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			c := &clock{t: time.Now()}
			a, b := replicas(t, mk(t), c)
			aud := "tenant-" + t.Name() + c.now().Format(time.RFC3339Nano)

			s, err := a.Start(ctx, aud, "7", 3)
			if err != nil {
				t.Fatal(err)
			}
			got, err := b.Check(ctx, aud, s.Token)
			if err != nil || got.Subject != "7" || got.Version != 3 || got.CSRF != s.CSRF {
				t.Fatalf("the other replica's check = %+v, %v", got, err)
			}
			if !b.ValidCSRF(got, s.CSRF) || b.ValidCSRF(got, "forged") {
				t.Error("CSRF tokens do not agree across replicas")
			}
			if _, err := b.Check(ctx, "another-tenant", s.Token); !errors.Is(err, session.ErrNoSession) {
				t.Errorf("session accepted at another audience: %v", err)
			}

			// Logout on one replica: the copied cookie is refused on the other.
			if err := a.End(ctx, s.Token); err != nil {
				t.Fatal(err)
			}
			if _, err := b.Check(ctx, aud, s.Token); !errors.Is(err, session.ErrNoSession) {
				t.Errorf("session survived logout: %v", err)
			}

			// A password change (or deactivation, demotion) ends every session of the user.
			s1, _ := a.Start(ctx, aud, "7", 3)
			s2, _ := b.Start(ctx, aud, "7", 3)
			other, _ := a.Start(ctx, aud, "8", 1)
			if err := b.EndAll(ctx, aud, "7"); err != nil {
				t.Fatal(err)
			}
			for _, tok := range []string{s1.Token, s2.Token} {
				if _, err := a.Check(ctx, aud, tok); !errors.Is(err, session.ErrNoSession) {
					t.Errorf("session survived EndAll: %v", err)
				}
			}
			if _, err := a.Check(ctx, aud, other.Token); err != nil {
				t.Errorf("another user's session ended: %v", err)
			}
		})
	}
}

func TestRenewalNeverOutlivesTheAbsoluteLifetime(t *testing.T) {
	t.Parallel()
	for name, mk := range stores() {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			c := &clock{t: time.Now()}
			m, _ := replicas(t, mk(t), c)
			aud := "platform-" + t.Name() + c.now().Format(time.RFC3339Nano)
			s, err := m.Start(ctx, aud, "ops", 0)
			if err != nil {
				t.Fatal(err)
			}
			// Used every 20 minutes, the session lives on past its 30-minute idle time...
			for range 5 {
				c.add(20 * time.Minute)
				if _, err := m.Check(ctx, aud, s.Token); err != nil {
					t.Fatalf("active session ended after %v: %v", c.now().Sub(s.Expires), err)
				}
			}
			// ...but not past two hours, however it is used.
			c.add(25 * time.Minute)
			if _, err := m.Check(ctx, aud, s.Token); !errors.Is(err, session.ErrNoSession) {
				t.Errorf("session outlived its absolute lifetime: %v", err)
			}
			// And an idle session ends after its idle time.
			s, _ = m.Start(ctx, aud, "ops", 0)
			c.add(31 * time.Minute)
			if _, err := m.Check(ctx, aud, s.Token); !errors.Is(err, session.ErrNoSession) {
				t.Errorf("idle session still open: %v", err)
			}
		})
	}
}

func TestLoginCSRF(t *testing.T) {
	t.Parallel()
	m, _ := replicas(t, session.NewMemory(), &clock{t: time.Now()})
	n := session.NewNonce()
	if !m.ValidLoginCSRF(n, m.LoginCSRF(n)) {
		t.Error("login CSRF token refused")
	}
	if m.ValidLoginCSRF(n, m.LoginCSRF(session.NewNonce())) || m.ValidLoginCSRF("", m.LoginCSRF("")) {
		t.Error("login CSRF token of another nonce accepted")
	}
	if _, err := m.Check(context.Background(), "x", strings.Repeat("a", 500)); !errors.Is(err, session.ErrNoSession) {
		t.Error("an oversized token was looked up")
	}
}
