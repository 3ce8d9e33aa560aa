package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/tenantplane/tenantplane/archive"
	"github.com/tenantplane/tenantplane/provisioner"
	"github.com/tenantplane/tenantplane/tenant"
)

// archiveTime is the UTC timestamp in archive file names; it sorts as it reads.
const archiveTime = "20060102T150405.000Z"

// copyProgress returns the progress display of an export or import: a bar per table on
// a terminal, a line per table otherwise, nothing with --output json. Call the returned
// function when the copy ends.
func (a *app) copyProgress(what string) (provisioner.CopyProgress, func()) {
	if a.output == "json" {
		return nil, func() {}
	}
	var mu sync.Mutex
	var bar *progressbar.ProgressBar
	table, rows := "", int64(0)
	line := func() {
		if table != "" && bar == nil {
			fmt.Fprintf(a.stderr, "%s %s: %d rows\n", what, table, rows)
		}
	}
	progress := func(t string, n int64) {
		mu.Lock()
		defer mu.Unlock()
		if t != table {
			line()
			if bar != nil {
				_ = bar.Finish()
			}
			table, bar = t, nil
			if isTerminal(a.stderr) {
				bar = progressbar.NewOptions64(-1, progressbar.OptionSetWriter(a.stderr),
					progressbar.OptionSetDescription(what+" "+t), progressbar.OptionShowCount(),
					progressbar.OptionThrottle(100*time.Millisecond), progressbar.OptionClearOnFinish())
			}
		}
		rows = n
		if bar != nil {
			_ = bar.Set64(n)
		}
	}
	return progress, func() {
		mu.Lock()
		defer mu.Unlock()
		line()
		if bar != nil {
			_ = bar.Finish()
		}
	}
}

// createPrivate creates path for an archive, readable by its owner only, refusing to
// overwrite a file that exists.
func createPrivate(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("creating archive: %w", err)
	}
	return f, nil
}

// exportTo exports the tenant to path ("-": stdout), removing a partly written file.
func (a *app) exportTo(cmd *cobra.Command, prov *provisioner.Provisioner, slug, path string) (*archive.Manifest, error) {
	progress, done := a.copyProgress("exporting " + slug)
	defer done()
	opt := provisioner.ExportOptions{Key: a.cfg.ArchiveKey, Actor: "cli", Progress: progress}
	if path == "-" {
		return prov.Export(cmd.Context(), slug, a.stdout, opt)
	}
	f, err := createPrivate(path)
	if err != nil {
		return nil, err
	}
	m, err := prov.Export(cmd.Context(), slug, f, opt)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(path)
		return nil, err
	}
	return m, nil
}

// printManifest reports a written archive: JSON with --output json, a line otherwise.
func (a *app) printManifest(path string, m *archive.Manifest) error {
	if a.output == "json" {
		return printJSON(a.stdout, map[string]any{"file": path, "manifest": m})
	}
	var rows []string
	for _, s := range m.Sums {
		rows = append(rows, fmt.Sprintf("%s=%d", s.Name, s.Rows))
	}
	fmt.Fprintf(a.stderr, "exported %s (schema version %d) to %s: %s\n", m.Source.Slug, m.SchemaVersion, path, strings.Join(rows, " "))
	return nil
}

func (a *app) tenantsExportCmd() *cobra.Command {
	var file, dir string
	var all bool
	var keep int
	cmd := &cobra.Command{
		Use:   "export SLUG --file PATH | export --all --dir DIR [--keep N]",
		Short: "Write a tenant's data to an archive (users with password hashes, blogs, notifications, ...)",
		Long: `Export writes one archive of a tenant's data, read in one snapshot while the tenant
keeps serving. The file is created with mode 0600 (it holds password hashes) and is
encrypted with TENANTPLANE_ARCHIVE_KEY when that is set. --all exports every active
tenant into DIR as SLUG-YYYYMMDDTHHMMSS.mmmZ.tpa and, with --keep N, removes all but the
newest N archives of each tenant.`,
		Example: `  tenantplane tenants export acme --file acme.tpa
  tenantplane tenants export acme --file - | ssh backup 'cat > acme.tpa'
  tenantplane tenants export --all --dir /backups --keep 7`,
		RunE: func(cmd *cobra.Command, args []string) error {
			prov, store, err := a.provisioner(cmd.Context())
			if err != nil {
				return err
			}
			if !all {
				if len(args) != 1 || file == "" {
					return usagef("export needs SLUG and --file PATH (or --all --dir DIR)")
				}
				m, err := a.exportTo(cmd, prov, args[0], file)
				if err != nil {
					return err
				}
				if file == "-" {
					return nil
				}
				return a.printManifest(file, m)
			}
			if len(args) != 0 || dir == "" || file != "" {
				return usagef("--all takes no SLUG and needs --dir DIR")
			}
			if keep < 0 {
				return usagef("--keep must not be negative")
			}
			ts, err := store.ListByStatus(cmd.Context(), tenant.StatusActive)
			if err != nil {
				return err
			}
			var written []map[string]any
			var failed []error
			for _, t := range ts {
				path := filepath.Join(dir, t.Slug+"-"+time.Now().UTC().Format(archiveTime)+".tpa")
				m, err := a.exportTo(cmd, prov, t.Slug, path)
				if err != nil {
					failed = append(failed, fmt.Errorf("tenant %s: %w", t.Slug, err))
					continue
				}
				removed, err := pruneArchives(dir, t.Slug, keep)
				if err != nil {
					failed = append(failed, err)
				}
				written = append(written, map[string]any{"file": path, "tenant": t.Slug, "rows": m.Sums, "removed": removed})
				if a.output != "json" {
					if err := a.printManifest(path, m); err != nil {
						return err
					}
				}
			}
			if a.output == "json" {
				if err := printJSON(a.stdout, written); err != nil {
					return err
				}
			}
			if len(failed) > 0 {
				return fmt.Errorf("%d of %d tenant(s) not exported: %w", len(failed), len(ts), errors.Join(failed...))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&file, "file", "", "archive to write (- for stdout)")
	f.BoolVar(&all, "all", false, "export every active tenant into --dir")
	f.StringVar(&dir, "dir", "", "directory of the archives written by --all")
	f.IntVar(&keep, "keep", 0, "with --all, keep only the newest N archives of each tenant (0: keep all)")
	return cmd
}

// pruneArchives removes all but the newest keep archives of the tenant in dir (none
// with keep 0) and returns the names removed.
func pruneArchives(dir, slug string, keep int) ([]string, error) {
	if keep == 0 {
		return nil, nil
	}
	matches, err := filepath.Glob(filepath.Join(dir, slug+"-*.tpa"))
	if err != nil {
		return nil, fmt.Errorf("listing archives of %s: %w", slug, err)
	}
	var own []string
	for _, m := range matches {
		stamp := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(m), slug+"-"), ".tpa")
		if _, err := time.Parse(archiveTime, stamp); err == nil { // not another slug's with a dash
			own = append(own, m)
		}
	}
	slices.Sort(own)
	var removed []string
	for len(own) > keep {
		if err := os.Remove(own[0]); err != nil {
			return removed, fmt.Errorf("removing old archive: %w", err)
		}
		removed, own = append(removed, own[0]), own[1:]
	}
	return removed, nil
}

func (a *app) tenantsImportCmd() *cobra.Command {
	var req provisioner.ImportRequest
	var file, iso, replace, safety string
	var yes bool
	cmd := &cobra.Command{
		Use:   "import --file PATH (--slug NEW | --replace SLUG)",
		Short: "Create a tenant from an archive, or restore an existing one in place",
		Long: `Import loads an archive written by tenants export. With --slug it creates a new tenant
(its own role, schema and search index), migrates the data of an older schema version up
and refuses a newer, cut or altered archive with nothing changed.

With --replace it restores an existing tenant in place: it first writes a safety export
(next to the input unless --safety-file says where), asks for confirmation unless --yes,
answers 503 tenant_restoring meanwhile, keeps the tenant's id and afterwards refuses
every token issued before the restore. The archive must hold the tenant's current
schema version.`,
		Example: `  tenantplane tenants import --file acme.tpa --slug acme-copy --shard b
  tenantplane tenants import --file acme-20260101T000000Z.tpa --replace acme`,
		Args: exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" || (req.Slug == "") == (replace == "") {
				return usagef("import needs --file and one of --slug NEW or --replace SLUG")
			}
			var err error
			if req.Isolation, err = tenant.ParseIsolation(iso); err != nil {
				return err
			}
			prov, _, err := a.provisioner(cmd.Context())
			if err != nil {
				return err
			}
			in, err := os.Open(file)
			if err != nil {
				return fmt.Errorf("opening archive: %w", err)
			}
			defer in.Close()
			req.Archive, req.Key, req.Actor = in, a.cfg.ArchiveKey, "cli"
			var t *tenant.Tenant
			if replace == "" {
				progress, done := a.copyProgress("importing")
				req.Progress = progress
				t, err = prov.Import(cmd.Context(), req)
				done()
			} else {
				t, err = a.replace(cmd, prov, replace, file, safety, yes, req)
			}
			if err != nil {
				return err
			}
			return a.printTenant(t, nil)
		},
	}
	f := cmd.Flags()
	f.StringVar(&file, "file", "", "archive to read (required)")
	f.StringVar(&req.Slug, "slug", "", "slug of the new tenant")
	f.StringVar(&req.Name, "name", "", "display name of the new tenant (default: the archived tenant's)")
	f.StringVar(&req.Shard, "shard", "", "shard of the new tenant (default: the least loaded)")
	f.StringVar(&iso, "isolation", "schema", "isolation of the new tenant: schema or database")
	f.StringVar(&replace, "replace", "", "restore this existing tenant in place")
	f.StringVar(&safety, "safety-file", "", "with --replace, where to write the safety export (default: next to --file)")
	f.BoolVarP(&yes, "yes", "y", false, "with --replace, do not ask for confirmation")
	return cmd
}

// replace restores the tenant slug in place from the archive in req, after a safety
// export and the operator's confirmation.
func (a *app) replace(cmd *cobra.Command, prov *provisioner.Provisioner, slug, file, safety string, yes bool, req provisioner.ImportRequest) (*tenant.Tenant, error) {
	if safety == "" {
		safety = filepath.Join(filepath.Dir(file), slug+"-before-restore-"+time.Now().UTC().Format(archiveTime)+".tpa")
	}
	if _, err := a.exportTo(cmd, prov, slug, safety); err != nil {
		return nil, fmt.Errorf("writing the safety export (nothing was changed): %w", err)
	}
	fmt.Fprintf(a.stderr, "safety export of %s written to %s\n", slug, safety)
	if !yes {
		ok, err := a.confirm(fmt.Sprintf("This replaces every row of tenant %s with the archive %s and signs every user out.\nType the slug to confirm: ", slug, file), slug)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, usagef("restore not confirmed; nothing was changed (pass --yes to skip the question)")
		}
	}
	progress, done := a.copyProgress("restoring " + slug)
	defer done()
	req.Progress = progress
	return prov.Replace(cmd.Context(), slug, req)
}

func (a *app) tenantsCloneCmd() *cobra.Command {
	var req provisioner.ImportRequest
	var iso string
	cmd := &cobra.Command{
		Use:     "clone SRC NEW",
		Short:   "Create a tenant with a copy of another tenant's data (its own role, schema and index)",
		Example: `  tenantplane tenants clone template-shop acme --shard b`,
		Args:    exactArgs(2, "SRC and NEW"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var err error
			if req.Isolation, err = tenant.ParseIsolation(iso); err != nil {
				return err
			}
			prov, _, err := a.provisioner(cmd.Context())
			if err != nil {
				return err
			}
			req.Slug, req.Actor = args[1], "cli"
			progress, done := a.copyProgress("cloning " + args[0])
			req.Progress = progress
			t, err := prov.Clone(cmd.Context(), args[0], req)
			done()
			if err != nil {
				return err
			}
			return a.printTenant(t, nil)
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Name, "name", "", "display name of the new tenant (default: the source's)")
	f.StringVar(&req.Shard, "shard", "", "shard of the new tenant (default: the least loaded)")
	f.StringVar(&iso, "isolation", "schema", "isolation of the new tenant: schema or database")
	return cmd
}
