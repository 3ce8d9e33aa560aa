package provisioner

import "github.com/tenantplane/tenantplane/tenant"

// ErrCrash is what a test's step hook returns to stop a run as a killed process would.
var ErrCrash = errCrash

// SetAfterStep installs fn to run after each recorded step of any operation; an
// ErrCrash from it stops the run with the tenant left as the step recorded it. Call it
// before the Provisioner is shared between goroutines.
func (p *Provisioner) SetAfterStep(fn func(step tenant.Step) error) { p.afterStep = fn }

// CrashAt returns a step hook that crashes right after step is recorded.
func CrashAt(step tenant.Step) func(tenant.Step) error {
	return func(done tenant.Step) error {
		if done == step {
			return errCrash
		}
		return nil
	}
}

// LockKey is the advisory lock id every operation on the tenant holds while it runs.
func LockKey(id string) int64 { return lockKey(id) }
