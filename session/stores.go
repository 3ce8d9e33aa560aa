package session

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/tenantplane/tenantplane/pgerr"
)

// Memory is a Store for a single process (and tests): not shared with other replicas.
type Memory struct {
	// mu guards recs.
	mu   sync.Mutex
	recs map[[32]byte]Record
}

var _ Store = (*Memory)(nil)

// NewMemory returns an empty in-process store.
func NewMemory() *Memory { return &Memory{recs: map[[32]byte]Record{}} }

// Put implements Store.
func (m *Memory) Put(_ context.Context, r Record) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.recs[r.Hash] = r
	return nil
}

// Get implements Store.
func (m *Memory) Get(_ context.Context, h [32]byte, now time.Time) (*Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.recs[h]
	if !ok || !now.Before(r.Expires) {
		delete(m.recs, h)
		return nil, ErrNoSession
	}
	return &r, nil
}

// Delete implements Store.
func (m *Memory) Delete(_ context.Context, h [32]byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.recs, h)
	return nil
}

// DeleteSubject implements Store.
func (m *Memory) DeleteSubject(_ context.Context, audience, subject string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for h, r := range m.recs {
		if r.Audience == audience && r.Subject == subject {
			delete(m.recs, h)
		}
	}
	return nil
}

// Postgres is a Store in the control database's panel_sessions table (public migration
// 000006). Expired rows are deleted as new sessions start.
type Postgres struct {
	db *pgxpool.Pool
}

var _ Store = (*Postgres)(nil)

// NewPostgres returns a store on the control database pool db.
func NewPostgres(db *pgxpool.Pool) *Postgres { return &Postgres{db: db} }

// Put implements Store. Errors are translated by pgerr (an unreachable database is
// Unavailable).
func (p *Postgres) Put(ctx context.Context, r Record) error {
	_, err := p.db.Exec(ctx, `INSERT INTO panel_sessions (token_hash, audience, subject, version, created_at, expires_at, absolute_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7)
		ON CONFLICT (token_hash) DO UPDATE SET expires_at = excluded.expires_at`,
		r.Hash[:], r.Audience, r.Subject, r.Version, r.Created, r.Expires, r.Absolute)
	if err != nil {
		return pgerr.Translate(fmt.Errorf("recording a session: %w", err), pgerr.Codes{})
	}
	if r.Hash[0] == 0 { // about one start in 256 sweeps the expired sessions
		_, _ = p.db.Exec(ctx, `DELETE FROM panel_sessions WHERE expires_at < $1`, r.Created)
	}
	return nil
}

// Get implements Store. Errors as for Put.
func (p *Postgres) Get(ctx context.Context, h [32]byte, now time.Time) (*Record, error) {
	r := Record{Hash: h}
	err := p.db.QueryRow(ctx, `SELECT audience, subject, version, created_at, expires_at, absolute_at
		FROM panel_sessions WHERE token_hash = $1 AND expires_at > $2`, h[:], now).
		Scan(&r.Audience, &r.Subject, &r.Version, &r.Created, &r.Expires, &r.Absolute)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNoSession
	}
	if err != nil {
		return nil, pgerr.Translate(fmt.Errorf("reading a session: %w", err), pgerr.Codes{})
	}
	return &r, nil
}

// Delete implements Store. Errors as for Put.
func (p *Postgres) Delete(ctx context.Context, h [32]byte) error {
	if _, err := p.db.Exec(ctx, `DELETE FROM panel_sessions WHERE token_hash = $1`, h[:]); err != nil {
		return pgerr.Translate(fmt.Errorf("ending a session: %w", err), pgerr.Codes{})
	}
	return nil
}

// DeleteSubject implements Store. Errors as for Put.
func (p *Postgres) DeleteSubject(ctx context.Context, audience, subject string) error {
	if _, err := p.db.Exec(ctx, `DELETE FROM panel_sessions WHERE audience = $1 AND subject = $2`, audience, subject); err != nil {
		return pgerr.Translate(fmt.Errorf("ending a user's sessions: %w", err), pgerr.Codes{})
	}
	return nil
}

// Redis is a Store in Redis: one key per session, and a set per user
// of their sessions' keys, so that DeleteSubject finds them.
type Redis struct {
	client *redis.Client
	prefix string
}

var _ Store = (*Redis)(nil)

// NewRedis returns a store on client; keys are prefixed "tenantplane:session:".
func NewRedis(client *redis.Client) *Redis {
	return &Redis{client: client, prefix: "tenantplane:session:"}
}

type redisRecord struct {
	Audience string    `json:"a"`
	Subject  string    `json:"s"`
	Version  int       `json:"v"`
	Created  time.Time `json:"c"`
	Expires  time.Time `json:"e"`
	Absolute time.Time `json:"x"`
}

func (r *Redis) key(h [32]byte) string { return r.prefix + hex.EncodeToString(h[:]) }
func (r *Redis) subjectKey(audience, subject string) string {
	return r.prefix + "user:" + audience + ":" + subject
}

// Put implements Store. It returns Redis's error when Redis cannot be reached.
func (r *Redis) Put(ctx context.Context, rec Record) error {
	b, _ := json.Marshal(redisRecord{rec.Audience, rec.Subject, rec.Version, rec.Created, rec.Expires, rec.Absolute})
	// Redis expires the key by its own clock at the absolute end; Get checks the idle
	// end against the manager's clock.
	ttl := max(time.Until(rec.Absolute), time.Second)
	sk := r.subjectKey(rec.Audience, rec.Subject)
	_, err := r.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, r.key(rec.Hash), b, ttl)
		p.SAdd(ctx, sk, r.key(rec.Hash))
		p.ExpireAt(ctx, sk, rec.Absolute)
		return nil
	})
	if err != nil {
		return fmt.Errorf("recording a session in redis: %w", err)
	}
	return nil
}

// Get implements Store. Errors as for Put.
func (r *Redis) Get(ctx context.Context, h [32]byte, now time.Time) (*Record, error) {
	b, err := r.client.Get(ctx, r.key(h)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, ErrNoSession
	}
	if err != nil {
		return nil, fmt.Errorf("reading a session from redis: %w", err)
	}
	var rr redisRecord
	if err := json.Unmarshal(b, &rr); err != nil || !now.Before(rr.Expires) {
		return nil, ErrNoSession
	}
	return &Record{Hash: h, Audience: rr.Audience, Subject: rr.Subject, Version: rr.Version, Created: rr.Created, Expires: rr.Expires, Absolute: rr.Absolute}, nil
}

// Delete implements Store. Errors as for Put.
func (r *Redis) Delete(ctx context.Context, h [32]byte) error {
	if err := r.client.Del(ctx, r.key(h)).Err(); err != nil {
		return fmt.Errorf("ending a session in redis: %w", err)
	}
	return nil
}

// deleteSubjectScript deletes every session key in the set KEYS[1], then the set.
var deleteSubjectScript = redis.NewScript(`
for _, k in ipairs(redis.call('SMEMBERS', KEYS[1])) do redis.call('DEL', k) end
redis.call('DEL', KEYS[1])
return 0
`)

// DeleteSubject implements Store. Errors as for Put.
func (r *Redis) DeleteSubject(ctx context.Context, audience, subject string) error {
	if err := deleteSubjectScript.Run(ctx, r.client, []string{r.subjectKey(audience, subject)}).Err(); err != nil {
		return fmt.Errorf("ending a user's sessions in redis: %w", err)
	}
	return nil
}
