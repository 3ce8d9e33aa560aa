package throttle

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis is a Store in Redis, shared by every replica. Take and Give are Lua scripts, so
// each runs atomically over all its keys; a key expires when its state has passed. On a
// Redis Cluster the keys of one attempt would need one hash slot: the platform uses a
// single Redis (or a replicated primary), as for notifications.
type Redis struct {
	client *redis.Client
	prefix string
}

var _ Store = (*Redis)(nil)

// NewRedis returns a store on client; every key is prefixed "tenantplane:throttle:".
func NewRedis(client *redis.Client) *Redis {
	return &Redis{client: client, prefix: "tenantplane:throttle:"}
}

// WithPrefix returns a store on the same client whose keys start with prefix instead:
// for several platforms, or tests, sharing one Redis.
func (r *Redis) WithPrefix(prefix string) *Redis {
	return &Redis{client: r.client, prefix: prefix}
}

// takeScript is GCRA (see take in throttle.go) over all KEYS at once, in microseconds:
// ARGV[1] is now, then refill and burst of each key. It returns 0 when the attempt was
// counted on every key, else the wait and counts nothing.
var takeScript = redis.NewScript(`
local now = tonumber(ARGV[1])
local wait = 0
local next = {}
for i, key in ipairs(KEYS) do
  local refill = tonumber(ARGV[2 * i])
  local burst = tonumber(ARGV[2 * i + 1])
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < now then tat = now end
  local n = tat + refill
  local over = n - now - burst * refill
  if over > wait then wait = over end
  next[i] = n
end
if wait > 0 then return wait end
for i, key in ipairs(KEYS) do
  redis.call('SET', key, next[i], 'PX', math.ceil((next[i] - now) / 1000) + 1000)
end
return 0
`)

// giveScript moves each key's time back by its refill (see give in throttle.go).
var giveScript = redis.NewScript(`
local now = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  local tat = redis.call('GET', key)
  if tat then
    local t = tonumber(tat) - tonumber(ARGV[1 + i])
    if t > now then
      redis.call('SET', key, t, 'PX', math.ceil((t - now) / 1000) + 1000)
    else
      redis.call('DEL', key)
    end
  end
end
return 0
`)

// Take implements Store. It returns Redis's error when Redis cannot be reached.
func (r *Redis) Take(ctx context.Context, now time.Time, keys []Key) (time.Duration, error) {
	args := []any{now.UnixMicro()}
	for _, k := range keys {
		args = append(args, k.Rule.Refill.Microseconds(), k.Rule.Burst)
	}
	us, err := takeScript.Run(ctx, r.client, r.names(keys), args...).Int64()
	if err != nil {
		return 0, fmt.Errorf("redis throttle: %w", err)
	}
	return time.Duration(us) * time.Microsecond, nil
}

// Give implements Store. Errors as for Take.
func (r *Redis) Give(ctx context.Context, now time.Time, keys []Key) error {
	args := []any{now.UnixMicro()}
	for _, k := range keys {
		args = append(args, k.Rule.Refill.Microseconds())
	}
	if err := giveScript.Run(ctx, r.client, r.names(keys), args...).Err(); err != nil {
		return fmt.Errorf("redis throttle refund: %w", err)
	}
	return nil
}

func (r *Redis) names(keys []Key) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = r.prefix + k.Name
	}
	return out
}
