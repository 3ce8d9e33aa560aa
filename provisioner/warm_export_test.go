package provisioner

// SetAfterClaim installs fn to run after a pooled schema is claimed and before it is
// bound to the tenant; an ErrCrash from it stops the run as a killed process would.
// Call it before the Provisioner is shared between goroutines.
func (p *Provisioner) SetAfterClaim(fn func() error) { p.afterClaim = fn }
