package main

import (
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/tenantplane/tenantplane/session"
	"github.com/tenantplane/tenantplane/throttle"
	"github.com/tenantplane/tenantplane/token"
	"github.com/tenantplane/tenantplane/web/adminpanel"
)

// authCore is the state both planes and both admin panels share across replicas: the
// password-check throttle and the panel sessions.
type authCore struct {
	limiter  *throttle.Limiter
	sessions *session.Manager
	// close releases the Redis client, when there is one.
	close func() error
}

// newAuthCore keeps the throttle and the sessions in Redis when REDIS_URL is set, in
// the control database db otherwise, so every replica sees the same; the panels' CSRF
// key is derived from the secret key ring, the same on every replica.
func (a *app) newAuthCore(db *pgxpool.Pool, ring *token.KeyRing) (*authCore, error) {
	core := &authCore{close: func() error { return nil }}
	var tstore throttle.Store = throttle.NewPostgres(db)
	var sstore session.Store = session.NewPostgres(db)
	if a.cfg.RedisURL != "" {
		opts, err := redis.ParseURL(a.cfg.RedisURL)
		if err != nil {
			return nil, &configError{"REDIS_URL", err.Error()}
		}
		client := redis.NewClient(opts)
		core.close = client.Close
		tstore, sstore = throttle.NewRedis(client), session.NewRedis(client)
	}
	var err error
	if core.limiter, err = throttle.New(throttle.Config{Store: tstore}); err != nil {
		return nil, err
	}
	if core.sessions, err = session.New(session.Config{Store: sstore, CSRFKey: ring.Derive(adminpanel.CSRFLabel)}); err != nil {
		return nil, err
	}
	return core, nil
}
