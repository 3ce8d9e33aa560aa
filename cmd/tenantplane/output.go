package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tenantplane/tenantplane/provisioner"
	"github.com/tenantplane/tenantplane/tenant"
)

// printJSON writes v as indented JSON.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table writes rows as aligned columns under a header.
func table(w io.Writer, header []string, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

func ago(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02 15:04:05")
}

// printTenants writes tenants as a table or JSON, per --output.
func (a *app) printTenants(ts []*tenant.Tenant) error {
	if a.output == "json" {
		if ts == nil {
			ts = []*tenant.Tenant{}
		}
		return printJSON(a.stdout, ts)
	}
	rows := make([][]string, 0, len(ts))
	for _, t := range ts {
		rows = append(rows, []string{t.Slug, string(t.Status), string(t.Isolation), t.Shard, t.SchemaName,
			fmt.Sprint(t.MigrationVersion), ago(t.CreatedAt)})
	}
	return table(a.stdout, []string{"SLUG", "STATUS", "ISOLATION", "SHARD", "SCHEMA", "VERSION", "CREATED"}, rows)
}

// printTenant writes one tenant in detail, with its move in progress when m is not nil
// (under "move" in JSON).
func (a *app) printTenant(t *tenant.Tenant, m *provisioner.MoveState) error {
	if a.output == "json" {
		if m != nil {
			return printJSON(a.stdout, struct {
				*tenant.Tenant
				Move *provisioner.MoveState `json:"move"`
			}{t, m})
		}
		return printJSON(a.stdout, t)
	}
	rows := [][]string{
		{"id", t.ID}, {"slug", t.Slug}, {"name", t.Name}, {"status", string(t.Status)},
		{"isolation", string(t.Isolation)}, {"shard", t.Shard}, {"schema", t.SchemaName},
	}
	if t.DatabaseName != "" {
		rows = append(rows, []string{"database", t.DatabaseName})
	}
	rows = append(rows, []string{"role", t.DBRole}, []string{"plan", t.Plan}, []string{"admin email", t.AdminEmail},
		[]string{"migration version", fmt.Sprint(t.MigrationVersion)}, []string{"migration dirty", fmt.Sprint(t.MigrationDirty)},
		[]string{"provisioning step", string(t.ProvisioningStep)})
	if t.SearchIndex != "" {
		rows = append(rows, []string{"search index", t.SearchIndex})
	}
	if t.LastError != "" {
		rows = append(rows, []string{"last error", t.LastError})
	}
	if t.DeleteAfter != nil {
		rows = append(rows, []string{"purge after", ago(*t.DeleteAfter)})
	}
	if t.WritesFrozen {
		rows = append(rows, []string{"writes", "frozen (a move is switching shards)"})
	}
	rows = append(rows, []string{"created", ago(t.CreatedAt)}, []string{"updated", ago(t.UpdatedAt)})
	if m != nil {
		rows = append(rows, []string{"moving to", describeTarget(*m)}, []string{"move step", moveLine(*m)},
			[]string{"move started", ago(m.StartedAt)})
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
	for _, r := range rows {
		fmt.Fprintf(tw, "%s:\t%s\n", r[0], r[1])
	}
	return tw.Flush()
}
