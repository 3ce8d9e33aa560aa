package provisioner

import (
	"context"
	"net/url"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantplane/tenantplane/internal/pgtest"
)

// Two processes may spell the same database differently in their URLs; golang-migrate
// derives its lock id from the URL's path, so they would not exclude each other. Every
// migrator goes through runMigrate, which derives it from the server's own names.
func TestFleetMigratorsInOneSchemaNeverDoubleApply(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dsn := pgtest.NewDatabase(t, pgtest.URL(t))
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `CREATE SCHEMA lockme`); err != nil {
		t.Fatal(err)
	}
	set := fstest.MapFS{
		"000001_marks.up.sql":   {Data: []byte(`CREATE TABLE marks (version int NOT NULL); SELECT pg_sleep(0.2); INSERT INTO marks VALUES (1);`)},
		"000001_marks.down.sql": {Data: []byte(`DROP TABLE marks;`)},
		"000002_more.up.sql":    {Data: []byte(`SELECT pg_sleep(0.2); ALTER TABLE marks ADD COLUMN note text; INSERT INTO marks VALUES (2);`)},
		"000002_more.down.sql":  {Data: []byte(`ALTER TABLE marks DROP COLUMN note; DELETE FROM marks WHERE version = 2;`)},
	}

	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", "lockme")
	u.RawQuery = q.Encode()
	byPath := u.String()
	q.Set("dbname", strings.TrimPrefix(u.Path, "/"))
	u.Path = "/"
	u.RawQuery = q.Encode()
	byQuery := u.String()

	var wg sync.WaitGroup
	errs := make([]error, 6)
	versions := make([]uint, 6)
	for i := range errs {
		dsn := byPath
		if i%2 == 1 {
			dsn = byQuery
		}
		wg.Go(func() {
			versions[i], _, errs[i] = runMigrate(ctx, migrateJob{set: "tenant", fsys: set, dsn: dsn, schema: "lockme", target: -1})
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil || versions[i] != 2 {
			t.Errorf("migrator %d ended at version %d: %v", i, versions[i], err)
		}
	}
	var applied []int
	rows, err := conn.Query(ctx, `SELECT version FROM lockme.marks ORDER BY version`)
	if err != nil {
		t.Fatal(err)
	}
	if applied, err = pgx.CollectRows(rows, pgx.RowTo[int]); err != nil {
		t.Fatal(err)
	}
	if len(applied) != 2 || applied[0] != 1 || applied[1] != 2 {
		t.Errorf("migrations applied: %v, want [1 2], each once", applied)
	}
}
