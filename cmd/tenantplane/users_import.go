package main

import (
	"bytes"
	"cmp"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tenantplane/tenantplane/dataplane/pool"
	"github.com/tenantplane/tenantplane/email"
	"github.com/tenantplane/tenantplane/password"
	"github.com/tenantplane/tenantplane/pgerr"
)

// djangoUser is one row of an export of Django's user table.
type djangoUser struct {
	Line     int // the row's line (CSV) or position (JSON), for reports
	Email    string
	Password string // Django's encoded hash, e.g. pbkdf2_sha256$<iter>$<salt>$<key>
	Admin    bool   // is_staff or is_superuser
	Active   bool
}

// importResult is what happened to one row.
type importResult struct {
	Line   int    `json:"line"`
	Email  string `json:"email"`
	Result string `json:"result"` // imported, exists, refused
	Reason string `json:"reason,omitempty"`
}

func (a *app) usersImportCmd(slug *string) *cobra.Command {
	var strict bool
	cmd := &cobra.Command{
		Use:   "import --tenant SLUG FILE",
		Short: "Import a tenant's users from a JSON or CSV export of Django's user table",
		Long: `Import users into a tenant from an export of the Django app's user table: a CSV file
with a header row, or JSON (a list of rows, or the output of manage.py dumpdata). The
columns used are email, password (Django's pbkdf2_sha256$... hash, kept as it is: the
user logs in with the old password, which is rehashed to argon2id on the first login),
is_staff and is_superuser (either makes a tenant admin) and is_active (default true).

Every row is checked first (the email rule, a hash the server can verify). Rows whose
email the tenant already has are skipped, so a second run imports nothing twice. Without
--strict the valid rows are imported and the refused ones reported (the command then
exits 1); with --strict one refused row imports nothing. FILE "-" reads stdin.`,
		Example: `  tenantplane users import --tenant acme users.csv
  tenantplane users import --tenant acme --strict users.json -o json`,
		Args: exactArgs(1, "FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if *slug == "" {
				return usagef("--tenant is required: users are imported into a tenant")
			}
			data, err := a.readFile(args[0])
			if err != nil {
				return err
			}
			rows, err := parseDjangoUsers(data)
			if err != nil {
				return usagef("reading %s: %v", args[0], err)
			}
			results, valid := checkImport(rows)
			refused := len(rows) - len(valid)
			if strict && refused > 0 {
				if err := a.printImport(results); err != nil {
					return err
				}
				return usagef("%d of %d row(s) refused; nothing imported (--strict)", refused, len(rows))
			}
			tu, err := a.tenantUsers(cmd, *slug)
			if err != nil {
				return err
			}
			defer tu.close()
			for _, i := range valid {
				r := &results[i]
				inserted, err := tu.importUser(rows[i])
				switch {
				case err != nil:
					return fmt.Errorf("importing line %d (%s): %w", r.Line, r.Email, err)
				case inserted:
					r.Result = "imported"
				default:
					r.Result, r.Reason = "exists", "the tenant already has a user with this email"
				}
			}
			if err := a.printImport(results); err != nil {
				return err
			}
			if refused > 0 {
				return fmt.Errorf("%d of %d row(s) refused; the others were imported", refused, len(rows))
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&strict, "strict", false, "import nothing when any row is refused")
	return cmd
}

// readFile reads the file name, or stdin for "-".
func (a *app) readFile(name string) ([]byte, error) {
	if name == "-" {
		return io.ReadAll(a.stdin)
	}
	data, err := os.ReadFile(name)
	if err != nil {
		return nil, usagef("reading %s: %v", name, err)
	}
	return data, nil
}

// checkImport validates every row and returns a result per row and the indexes of the
// valid ones. A row repeating an earlier row's email is refused.
func checkImport(rows []djangoUser) ([]importResult, []int) {
	results := make([]importResult, len(rows))
	var valid []int
	seen := map[string]int{}
	for i, u := range rows {
		r := importResult{Line: u.Line, Email: u.Email}
		key := strings.ToLower(u.Email)
		switch err := email.Validate(u.Email); {
		case err != nil:
			r.Result, r.Reason = "refused", err.Error()
		case !password.WellFormed(u.Password):
			r.Result, r.Reason = "refused", "the password is not a pbkdf2_sha256 or argon2id hash the server can verify"
		case seen[key] != 0:
			r.Result, r.Reason = "refused", fmt.Sprintf("the email repeats line %d", seen[key])
		default:
			seen[key] = u.Line
			valid = append(valid, i)
		}
		results[i] = r
	}
	return results, valid
}

// importUser inserts u with its hash as it is, unless the tenant already has its email;
// inserted says which.
func (tu *tenantUsers) importUser(u djangoUser) (inserted bool, err error) {
	err = tu.scope.Write(tu.ctx, func(db pool.DB) error {
		tag, err := db.Exec(tu.ctx, `INSERT INTO users (email, password_hash, is_admin, is_active) VALUES ($1, $2, $3, $4)
			ON CONFLICT ((lower(email))) DO NOTHING`, u.Email, u.Password, u.Admin, u.Active)
		if err != nil {
			return pgerr.Translate(err, pgerr.Codes{})
		}
		inserted = tag.RowsAffected() == 1
		return nil
	})
	return inserted, err
}

func (a *app) printImport(results []importResult) error {
	counts := map[string]int{}
	for _, r := range results {
		counts[r.Result]++
	}
	if a.output == "json" {
		if results == nil {
			results = []importResult{}
		}
		return printJSON(a.stdout, map[string]any{
			"imported": counts["imported"], "exists": counts["exists"], "refused": counts["refused"], "rows": results,
		})
	}
	rows := make([][]string, 0, len(results))
	for _, r := range results {
		rows = append(rows, []string{strconv.Itoa(r.Line), r.Email, cmp.Or(r.Result, "not imported"), r.Reason})
	}
	if err := table(a.stdout, []string{"LINE", "EMAIL", "RESULT", "REASON"}, rows); err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "%d imported, %d already present, %d refused\n", counts["imported"], counts["exists"], counts["refused"])
	return nil
}

// parseDjangoUsers reads a JSON or CSV export of Django's user table.
func parseDjangoUsers(data []byte) ([]djangoUser, error) {
	trimmed := bytes.TrimSpace(bytes.TrimPrefix(data, []byte("\xef\xbb\xbf")))
	if len(trimmed) == 0 {
		return nil, errors.New("the file is empty")
	}
	if trimmed[0] == '[' || trimmed[0] == '{' {
		return parseDjangoJSON(trimmed)
	}
	return parseDjangoCSV(trimmed)
}

// parseDjangoJSON reads a list of rows, each either the user's fields or a dumpdata
// record ({"model": "...", "pk": 1, "fields": {...}}).
func parseDjangoJSON(data []byte) ([]djangoUser, error) {
	var list []map[string]json.RawMessage
	if err := json.Unmarshal(data, &list); err != nil {
		return nil, fmt.Errorf("not a JSON list of users: %w", err)
	}
	users := make([]djangoUser, 0, len(list))
	for i, rec := range list {
		if f, ok := rec["fields"]; ok {
			rec = nil
			if err := json.Unmarshal(f, &rec); err != nil {
				return nil, fmt.Errorf("row %d: fields: %w", i+1, err)
			}
		}
		get := func(k string) string {
			var v any
			if raw, ok := rec[k]; ok && json.Unmarshal(raw, &v) == nil && v != nil {
				return fmt.Sprint(v)
			}
			return ""
		}
		users = append(users, djangoRow(i+1, get))
	}
	return users, nil
}

// parseDjangoCSV reads a CSV file with a header row naming the columns.
func parseDjangoCSV(data []byte) ([]djangoUser, error) {
	r := csv.NewReader(bytes.NewReader(data))
	r.FieldsPerRecord = -1
	header, err := r.Read()
	if err != nil {
		return nil, fmt.Errorf("reading the CSV header: %w", err)
	}
	col := map[string]int{}
	for i, h := range header {
		col[strings.ToLower(strings.TrimSpace(h))] = i
	}
	if _, ok := col["email"]; !ok {
		return nil, errors.New("the CSV header has no email column")
	}
	if _, ok := col["password"]; !ok {
		return nil, errors.New("the CSV header has no password column")
	}
	var users []djangoUser
	for {
		rec, err := r.Read()
		if err == io.EOF {
			return users, nil
		}
		if err != nil {
			return nil, fmt.Errorf("reading CSV: %w", err)
		}
		line, _ := r.FieldPos(0)
		users = append(users, djangoRow(line, func(k string) string {
			if i, ok := col[k]; ok && i < len(rec) {
				return rec[i]
			}
			return ""
		}))
	}
}

// djangoRow builds a row from its columns (get returns "" for a missing one).
func djangoRow(line int, get func(string) string) djangoUser {
	return djangoUser{
		Line:     line,
		Email:    strings.TrimSpace(get("email")),
		Password: strings.TrimSpace(get("password")),
		Admin:    djangoBool(get("is_staff"), false) || djangoBool(get("is_superuser"), false),
		Active:   djangoBool(get("is_active"), true),
	}
}

// djangoBool reads a boolean as Django, Postgres and spreadsheet exports write it.
func djangoBool(s string, def bool) bool {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "1", "t", "true", "y", "yes":
		return true
	case "0", "f", "false", "n", "no":
		return false
	}
	return def
}
