package notify

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"
)

// Transport carries published notifications to every dataplane replica, each of which
// hands them to its own WebSocket subscribers.
type Transport interface {
	// Publish sends payload to every replica's subscribers of the tenant.
	Publish(ctx context.Context, tenantID string, payload []byte) error
	// Run receives what any replica publishes and calls deliver for each, until ctx ends.
	Run(ctx context.Context, deliver func(tenantID string, payload []byte)) error
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

// Run installs deliver and waits for ctx to end.
func (m *Memory) Run(ctx context.Context, deliver func(string, []byte)) error {
	m.mu.Lock()
	m.deliver = deliver
	m.mu.Unlock()
	<-ctx.Done()
	m.mu.Lock()
	m.deliver = nil
	m.mu.Unlock()
	return nil
}

// Redis fans notifications out through Redis pub/sub: one channel per tenant, and one
// pattern subscription per replica (not one per WebSocket).
type Redis struct {
	client     *redis.Client
	prefix     string
	subscribed chan struct{} // closed once Run has subscribed
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

// Subscribed returns a channel closed once Run has subscribed: from then on this
// replica receives what any replica publishes (what was published before is only
// replayed to clients that reconnect with after_id).
func (r *Redis) Subscribed() <-chan struct{} { return r.subscribed }

// Ping checks that Redis answers.
func (r *Redis) Ping(ctx context.Context) error { return r.client.Ping(ctx).Err() }

// Close closes the Redis connections.
func (r *Redis) Close() error { return r.client.Close() }

// Publish sends payload on the tenant's channel.
func (r *Redis) Publish(ctx context.Context, tenantID string, payload []byte) error {
	if err := r.client.Publish(ctx, r.prefix+tenantID, payload).Err(); err != nil {
		return fmt.Errorf("publishing to redis: %w", err)
	}
	return nil
}

// Run subscribes to every tenant channel and delivers messages until ctx ends. The
// client reconnects by itself after Redis restarts.
func (r *Redis) Run(ctx context.Context, deliver func(string, []byte)) error {
	sub := r.client.PSubscribe(ctx, r.prefix+"*")
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		return fmt.Errorf("subscribing to redis: %w", err)
	}
	r.once.Do(func() { close(r.subscribed) })
	ch := sub.Channel()
	for {
		select {
		case <-ctx.Done():
			return nil
		case m, ok := <-ch:
			if !ok {
				return nil
			}
			deliver(strings.TrimPrefix(m.Channel, r.prefix), []byte(m.Payload))
		}
	}
}
