package provisioner

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Shard is one Postgres server tenants can be placed on.
type Shard struct {
	// Name identifies the shard in the registry; it must never change once tenants use it.
	Name string
	// URL connects as a role that may create roles, schemas and databases. Its database
	// holds the schema-isolated tenants.
	URL string
	// Draining shards receive no new tenants.
	Draining bool
}

// shardSet is the configured shards and their admin pools.
type shardSet struct {
	shards map[string]Shard
	names  []string
	admin  *shardPools
}

// shardPools keeps one pool per shard, opened on first use with the same settings: the
// provisioner's admin pools and the migrations' pools are two of them.
type shardPools struct {
	maxConns int32
	idle     time.Duration // 0: pgxpool's default

	// mu guards pools.
	mu    sync.Mutex
	pools map[string]*pgxpool.Pool
}

func newShardPools(maxConns int32, idle time.Duration) *shardPools {
	return &shardPools{maxConns: maxConns, idle: idle, pools: map[string]*pgxpool.Pool{}}
}

// get returns the pool of sh, opening it on first use.
func (s *shardPools) get(ctx context.Context, sh Shard) (*pgxpool.Pool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p, ok := s.pools[sh.Name]; ok {
		return p, nil
	}
	cfg, err := pgxpool.ParseConfig(sh.URL)
	if err != nil {
		return nil, fmt.Errorf("parsing shard %q url: %w", sh.Name, err)
	}
	cfg.MaxConns = s.maxConns
	if s.idle > 0 {
		cfg.MaxConnIdleTime = s.idle
	}
	p, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connecting to shard %q: %w", sh.Name, err)
	}
	s.pools[sh.Name] = p
	return p, nil
}

// close closes every pool opened so far.
func (s *shardPools) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, p := range s.pools {
		p.Close()
		delete(s.pools, name)
	}
}

func newShardSet(shards []Shard, maxConns int32) (*shardSet, error) {
	s := &shardSet{shards: map[string]Shard{}, admin: newShardPools(maxConns, 0)}
	for _, sh := range shards {
		if sh.Name == "" || sh.URL == "" {
			return nil, fmt.Errorf("shard needs a name and a url")
		}
		if _, dup := s.shards[sh.Name]; dup {
			return nil, fmt.Errorf("shard %q is configured twice", sh.Name)
		}
		s.shards[sh.Name] = sh
		s.names = append(s.names, sh.Name)
	}
	if len(s.names) == 0 {
		return nil, fmt.Errorf("no shard configured")
	}
	sort.Strings(s.names)
	return s, nil
}

func (s *shardSet) get(name string) (Shard, bool) {
	sh, ok := s.shards[name]
	return sh, ok
}

// pool returns the admin pool of the shard.
func (s *shardSet) pool(ctx context.Context, name string) (*pgxpool.Pool, error) {
	sh, ok := s.shards[name]
	if !ok {
		return nil, fmt.Errorf("shard %q is not configured", name)
	}
	return s.admin.get(ctx, sh)
}

func (s *shardSet) close() { s.admin.close() }

// place picks the shard for a new tenant: the requested one, or the non-draining shard
// with the fewest live tenants (ties go to the first by name).
func (s *shardSet) place(requested string, counts map[string]int) (string, error) {
	if requested != "" {
		if _, ok := s.shards[requested]; !ok {
			return "", fmt.Errorf("unknown shard %q", requested)
		}
		return requested, nil
	}
	best := ""
	for _, name := range s.names {
		if s.shards[name].Draining {
			continue
		}
		if best == "" || counts[name] < counts[best] {
			best = name
		}
	}
	if best == "" {
		return "", fmt.Errorf("every shard is draining")
	}
	return best, nil
}
