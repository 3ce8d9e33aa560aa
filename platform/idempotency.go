package platform

import (
	"context"
	"time"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/pgerr"
)

// Answer is the recorded answer of a signup made under an Idempotency-Key.
type Answer struct {
	// RequestHash fingerprints the request the key was first used with.
	RequestHash string
	// Status is the HTTP status of the answer; 0 while the first request still runs.
	Status int
	// Body is the answer's JSON body, replayed byte for byte.
	Body []byte
}

// keyCodes are the domain errors of idempotency_keys.
var keyCodes = pgerr.Codes{NotFound: apperr.New(apperr.NotFound, "idempotency_key_not_found", "idempotency key not found")}

// ReserveKey records a placeholder for key (status 0) unless the key is taken, and
// reports whether it did: of concurrent requests with one key exactly one reserves it.
// It returns Unavailable when the database is down.
func (s *Store) ReserveKey(ctx context.Context, key, requestHash string) (bool, error) {
	tag, err := s.db.Exec(ctx, `INSERT INTO idempotency_keys (key, request_hash, status_code, body) VALUES ($1, $2, 0, '')
		ON CONFLICT (key) DO NOTHING`, key, requestHash)
	if err != nil {
		return false, translate(err, keyCodes, "reserving idempotency key")
	}
	return tag.RowsAffected() == 1, nil
}

// KeyAnswer returns what is recorded for key. It returns NotFound when the key is not
// reserved, Invalid for a key Postgres cannot store, and Unavailable when the database
// is down.
func (s *Store) KeyAnswer(ctx context.Context, key string) (*Answer, error) {
	var a Answer
	err := s.db.QueryRow(ctx, `SELECT request_hash, status_code, body FROM idempotency_keys WHERE key = $1`, key).
		Scan(&a.RequestHash, &a.Status, &a.Body)
	if err != nil {
		return nil, translate(err, keyCodes, "reading idempotency key")
	}
	return &a, nil
}

// RecordAnswer stores the answer of the request holding key. It returns Unavailable
// when the database is down.
func (s *Store) RecordAnswer(ctx context.Context, key string, status int, body []byte) error {
	_, err := s.db.Exec(ctx, `UPDATE idempotency_keys SET status_code = $2, body = $3 WHERE key = $1`, key, status, body)
	return translate(err, keyCodes, "recording idempotent answer")
}

// FreeKey forgets key, so that the next request with it runs anew. It returns
// Unavailable when the database is down.
func (s *Store) FreeKey(ctx context.Context, key string) error {
	_, err := s.db.Exec(ctx, `DELETE FROM idempotency_keys WHERE key = $1`, key)
	return translate(err, keyCodes, "freeing idempotency key")
}

// DeleteExpiredKeys deletes the keys older than ttl, and the placeholders older than
// abandoned (left by a process that stopped mid-signup), and returns how many it
// deleted. It returns Unavailable when the database is down.
func (s *Store) DeleteExpiredKeys(ctx context.Context, ttl, abandoned time.Duration) (int64, error) {
	tag, err := s.db.Exec(ctx, `DELETE FROM idempotency_keys
		WHERE created_at < now() - make_interval(secs => $1)
		   OR (status_code = 0 AND created_at < now() - make_interval(secs => $2))`,
		ttl.Seconds(), abandoned.Seconds())
	if err != nil {
		return 0, translate(err, keyCodes, "deleting expired idempotency keys")
	}
	return tag.RowsAffected(), nil
}
