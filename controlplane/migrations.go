package controlplane

import (
	"net/http"
	"strconv"

	"github.com/gin-gonic/gin"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/provisioner"
	"github.com/tenantplane/tenantplane/web"
)

// migrationRequest is the body of POST /api/v1/migrations: the options of a fleet run.
type migrationRequest struct {
	// To is the target version; 0 or absent means the newest.
	To int `json:"to"`
	// Parallel is how many tenants migrate at once (default 4, at most 256).
	Parallel int `json:"parallel"`
	// Canary migrates this many tenants first and stops if any fails.
	Canary int `json:"canary"`
	// Tenants limits the run to these slugs.
	Tenants []string `json:"tenants"`
	// StopOnError stops the run at the first failed tenant.
	StopOnError bool `json:"stop_on_error"`
	// RetryFailed migrates only the tenants that failed in the last run.
	RetryFailed bool `json:"retry_failed"`
}

func (s *Server) fleet() (*provisioner.Fleet, error) {
	if s.cfg.Fleet == nil {
		return nil, apperr.New(apperr.Unavailable, "migrations_unavailable", "fleet migrations are not enabled on this server")
	}
	return s.cfg.Fleet, nil
}

// startMigration starts a fleet run in the background and answers 202 with its id and
// where to follow it.
func (s *Server) startMigration(c *gin.Context) error {
	f, err := s.fleet()
	if err != nil {
		return err
	}
	var in migrationRequest
	if err := web.DecodeJSON(c, &in, 64<<10); err != nil {
		return err
	}
	if in.Parallel == 0 {
		in.Parallel = 4
	}
	if in.Parallel < 1 || in.Parallel > 256 {
		return apperr.New(apperr.Invalid, "invalid_parallel", "parallel must be between 1 and 256")
	}
	if in.Canary < 0 || in.To < -1 {
		return apperr.Invalidf("canary and to must not be negative")
	}
	id, err := f.StartRun(c.Request.Context(), provisioner.RunOptions{
		To: in.To, Parallel: in.Parallel, Canary: in.Canary, Tenants: in.Tenants,
		StopOnError: in.StopOnError, RetryFailed: in.RetryFailed, Actor: actor(c),
	})
	if err != nil {
		return err
	}
	c.Header("Location", "/api/v1/migrations/"+id)
	c.JSON(http.StatusAccepted, gin.H{"id": id, "state": provisioner.RunRunning})
	return nil
}

// getMigration shows a run's progress: counts per state and the failed entries.
func (s *Server) getMigration(c *gin.Context) error {
	f, err := s.fleet()
	if err != nil {
		return err
	}
	run, err := f.GetRun(c.Request.Context(), c.Param("id"))
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, run)
	return nil
}

// listMigrations lists the latest runs, newest first (?limit=, default 20).
func (s *Server) listMigrations(c *gin.Context) error {
	f, err := s.fleet()
	if err != nil {
		return err
	}
	limit := 20
	if v, ok := c.GetQuery("limit"); ok {
		if limit, err = strconv.Atoi(v); err != nil || limit < 1 || limit > 1000 {
			return apperr.New(apperr.Invalid, "invalid_limit", "limit must be an integer between 1 and 1000")
		}
	}
	runs, err := f.ListRuns(c.Request.Context(), limit)
	if err != nil {
		return err
	}
	if runs == nil {
		runs = []*provisioner.Run{}
	}
	c.JSON(http.StatusOK, gin.H{"items": runs})
	return nil
}
