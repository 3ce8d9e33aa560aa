package provisioner

// FleetCrash is what a fleet run ended by CrashAfter returns.
var FleetCrash = errFleetCrash

// CrashAfter makes the fleet's runs end as a killed process would, with a tenant
// started, once n tenants have finished. Call it before the fleet runs.
func (f *Fleet) CrashAfter(n int) { f.crashAfter = n }
