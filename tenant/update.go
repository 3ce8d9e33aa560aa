package tenant

import (
	"context"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Patch changes a tenant's descriptive fields; nil fields stay as they are. Callers
// validate the values; Update stores them as given.
type Patch struct {
	Name  *string // new display name
	Plan  *string // new plan name
	Actor string  // who asked, for the audit log
}

// Update applies the patch to the live tenant with the slug, records it in the audit log
// and returns the tenant as it now is. It returns NotFound when no live tenant has the
// slug. A patch with no field set returns the tenant unchanged, without an audit entry.
func (s *Store) Update(ctx context.Context, slug string, p Patch) (*Tenant, error) {
	if p.Name == nil && p.Plan == nil {
		return s.Get(ctx, slug)
	}
	var changed []string
	if p.Name != nil {
		changed = append(changed, "name")
	}
	if p.Plan != nil {
		changed = append(changed, "plan")
	}
	var out *Tenant
	err := inTx(ctx, s.db, func(tx pgx.Tx) error {
		var err error
		out, err = scan(tx.QueryRow(ctx, `UPDATE tenants SET name = COALESCE($2, name), plan = COALESCE($3, plan), updated_at = now()
			WHERE slug = $1 AND status <> 'purged' RETURNING `+columns, slug, p.Name, p.Plan))
		if err != nil {
			return err
		}
		return AddEventTx(ctx, tx, out.ID, "update", p.Actor, "changed "+strings.Join(changed, ", "))
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
