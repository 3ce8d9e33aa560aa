package notify

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Transport carries published notifications (and control messages) to every dataplane
// replica, each of which hands them to its own WebSocket subscribers. A transport may
// lose what is published while it is down: the service notices through
// Receiver.Subscribed and has every socket catch up from the database.
type Transport interface {
	// Publish sends payload to every replica's subscribers of the tenant.
	Publish(ctx context.Context, tenantID string, payload []byte) error
	// Run receives what any replica publishes until ctx ends: it calls r.Subscribed each
	// time it has (re)subscribed, and r.Deliver for each message.
	Run(ctx context.Context, r Receiver) error
}

// Receiver is what a Transport's Run hands its messages to.
type Receiver struct {
	// Deliver takes one published payload of a tenant.
	Deliver func(tenantID string, payload []byte)
	// Subscribed is called once the transport receives, first and after every
	// reconnection: whatever was published before may have been missed.
	Subscribed func()
}

// Memory is the in-process transport for a single replica (no Redis configured).
type Memory struct {
	// mu guards deliver.
	mu      sync.RWMutex
	deliver func(tenantID string, payload []byte)
}

var _ Transport = (*Memory)(nil)

// NewMemory returns an in-process transport.
func NewMemory() *Memory { return &Memory{} }

// Publish delivers payload to this process's subscribers; it never fails.
func (m *Memory) Publish(_ context.Context, tenantID string, payload []byte) error {
	m.mu.RLock()
	d := m.deliver
	m.mu.RUnlock()
	if d != nil {
		d(tenantID, payload)
	}
	return nil
}

// Run installs r and waits for ctx to end.
func (m *Memory) Run(ctx context.Context, r Receiver) error {
	m.mu.Lock()
	m.deliver = r.Deliver
	m.mu.Unlock()
	if r.Subscribed != nil {
		r.Subscribed()
	}
	<-ctx.Done()
	m.mu.Lock()
	m.deliver = nil
	m.mu.Unlock()
	return nil
}

// redisHealth is how long the subscription may stay silent before it is pinged; a ping
// unanswered for as long again ends Run (and the service resubscribes).
const redisHealth = 5 * time.Second

// Redis fans notifications out through Redis pub/sub: one channel per tenant, and one
// pattern subscription per replica (not one per WebSocket).
type Redis struct {
	client     *redis.Client
	prefix     string
	subscribed chan struct{} // closed once Run has first subscribed
	once       sync.Once
}

var _ Transport = (*Redis)(nil)

// NewRedis returns a transport on the Redis at url (redis://host:port/db).
func NewRedis(url string) (*Redis, error) {
	opt, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("parsing redis url: %w", err)
	}
	return &Redis{client: redis.NewClient(opt), prefix: "tenantplane:notify:", subscribed: make(chan struct{})}, nil
}

// Subscribed returns a channel closed once Run has first subscribed: from then on this
// replica receives what any replica publishes.
func (r *Redis) Subscribed() <-chan struct{} { return r.subscribed }

// Ping checks that Redis answers.
func (r *Redis) Ping(ctx context.Context) error { return r.client.Ping(ctx).Err() }

// Close closes the Redis connections.
func (r *Redis) Close() error { return r.client.Close() }

// Publish sends payload on the tenant's channel. It returns the Redis error (or ctx's)
// when the message could not be sent.
func (r *Redis) Publish(ctx context.Context, tenantID string, payload []byte) error {
	if err := r.client.Publish(ctx, r.prefix+tenantID, payload).Err(); err != nil {
		return fmt.Errorf("publishing to redis: %w", err)
	}
	return nil
}

// Run subscribes to every tenant channel and delivers messages until ctx ends. It calls
// rc.Subscribed on every subscription confirmation, so also when the client
// resubscribed by itself after a reconnection. It returns an error when the connection
// fails or stops answering pings; the caller retries.
func (r *Redis) Run(ctx context.Context, rc Receiver) error {
	sub := r.client.PSubscribe(ctx, r.prefix+"*")
	defer sub.Close()
	stop := context.AfterFunc(ctx, func() { _ = sub.Close() }) // unblocks Receive
	defer stop()
	pinged := false
	for {
		msg, err := sub.ReceiveTimeout(ctx, redisHealth)
		if ctx.Err() != nil {
			return nil
		}
		var ne net.Error
		switch {
		case err != nil && errors.As(err, &ne) && ne.Timeout() && !pinged:
			pinged = true
			if err := sub.Ping(ctx); err != nil {
				return fmt.Errorf("pinging redis: %w", err)
			}
			continue
		case err != nil:
			return fmt.Errorf("receiving from redis: %w", err)
		}
		pinged = false
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "psubscribe" {
				r.once.Do(func() { close(r.subscribed) })
				if rc.Subscribed != nil {
					rc.Subscribed()
				}
			}
		case *redis.Message:
			rc.Deliver(strings.TrimPrefix(m.Channel, r.prefix), []byte(m.Payload))
		}
	}
}
