package provisioner

import "github.com/tenantplane/tenantplane/tenant"

// FleetCrash is what a fleet run ended by CrashAfter returns.
var FleetCrash = errFleetCrash

// CrashAfter makes the fleet's runs end as a killed process would, with a tenant
// started, once n tenants have finished. Call it before the fleet runs.
func (f *Fleet) CrashAfter(n int) { f.crashAfter = n }

// BeforeTenant sets a function run as each planned tenant is about to be migrated.
func (f *Fleet) BeforeTenant(fn func(*tenant.Tenant)) { f.beforeTenant = fn }
