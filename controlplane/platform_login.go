package controlplane

import (
	"errors"

	"github.com/tenantplane/tenantplane/apperr"
)

// errNotTenantLogin is the API's answer to failed credentials at the platform login:
// the request named no tenant, so a tenant's user who meant their tenant's login learns
// where it is. The code and the start of the message are every failed login's.
var errNotTenantLogin = apperr.New(apperr.Unauthenticated, "invalid_credentials",
	"invalid email or password (this is the platform login; to log in to a tenant, use its host or the X-Tenant header)")

// platformLoginError returns err, with failed credentials said to be the platform's.
func platformLoginError(err error) error {
	if errors.Is(err, apperr.New(apperr.Unauthenticated, "invalid_credentials", "")) {
		return errNotTenantLogin
	}
	return err
}
