package provisioner

import (
	"context"
	"time"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/tenant"
)

// MoveRequest describes a move of a tenant to another shard or isolation mode.
type MoveRequest struct {
	// Shard is the target shard; empty keeps the tenant's shard (a change of isolation).
	Shard string
	// Isolation is the target isolation mode; empty keeps the tenant's.
	Isolation tenant.Isolation
	// Offline copies with writes frozen throughout instead of replicating while the
	// tenant keeps serving: for shards without logical replication.
	Offline bool
	// Actor is who asked, for the audit log; Detail is added to its entry.
	Actor, Detail string
	// Progress, when set, follows the move.
	Progress func(MoveState)
}

// MoveState is where a move stands.
type MoveState struct {
	Slug      string
	FromShard string
	ToShard   string
	Isolation tenant.Isolation
	Offline   bool
	// Step is the last step done.
	Step      tenant.Step
	StartedAt time.Time
	// CopiedRows of TotalRows are on the target; LagBytes is how far replication trails.
	CopiedRows, TotalRows int64
	LagBytes              int64
	// Error is the last error of a failed step, empty otherwise.
	Error string
}

// Move moves the tenant to req's shard and isolation and returns it as served
// afterwards.
func (p *Provisioner) Move(ctx context.Context, slug string, req MoveRequest) (*tenant.Tenant, error) {
	return nil, apperr.New(apperr.Unavailable, "move_unavailable", "moving tenants is not available yet")
}

// AbortMove stops the tenant's move in progress and removes what it made on the target.
func (p *Provisioner) AbortMove(ctx context.Context, slug, actor string) (*tenant.Tenant, error) {
	return nil, apperr.New(apperr.Unavailable, "move_unavailable", "moving tenants is not available yet")
}

// MoveStatus returns the tenant's move in progress, nil when there is none.
func (p *Provisioner) MoveStatus(ctx context.Context, slug string) (*MoveState, error) {
	return nil, nil
}
