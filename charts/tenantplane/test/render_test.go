// Package test renders the tenantplane Helm chart with the Helm library and checks the
// output against golden files and against what an operator relies on: the serve mode of
// each Deployment, the probes, secrets kept out of ConfigMaps, the migration hook, and
// clear failures for missing required values.
//
// Run with -update to rewrite testdata/*.golden.yaml after an intended chart change.
package test

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"sigs.k8s.io/yaml"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// chartDir is the chart, relative to this package.
const chartDir = ".."

// cases are the values files under testdata/ the chart is rendered with.
var cases = []string{"backup", "defaults", "existing-secrets", "ingress-tls-hpa", "metrics", "redis-opensearch-shards"}

// rendered is one chart rendering: the manifests in file order and NOTES.txt.
type rendered struct {
	docs  []doc
	notes string
}

// doc is one Kubernetes manifest, with the template file it came from.
type doc struct {
	source string
	raw    string
	obj    map[string]any
}

func (d doc) kind() string { s, _ := d.obj["kind"].(string); return s }

func (d doc) name() string { return str(d.obj, "metadata", "name") }

func loadChart(t *testing.T) *chart.Chart {
	t.Helper()
	c, err := loader.Load(chartDir)
	if err != nil {
		t.Fatalf("loading the chart: %v", err)
	}
	return c
}

// render renders the chart as `helm install tp . -n tenants -f values` would, checking
// the values against values.schema.json first.
func render(t *testing.T, values map[string]any) (*rendered, error) {
	t.Helper()
	return renderSchema(t, values, true)
}

// renderSchema renders with or without the schema check (`helm install
// --skip-schema-validation`), for the template's own checks.
func renderSchema(t *testing.T, values map[string]any, schema bool) (*rendered, error) {
	t.Helper()
	c := loadChart(t)
	opts := chartutil.ReleaseOptions{Name: "tp", Namespace: "tenants", Revision: 1, IsInstall: true}
	vals, err := chartutil.ToRenderValuesWithSchemaValidation(c, values, opts, chartutil.DefaultCapabilities, !schema)
	if err != nil {
		return nil, fmt.Errorf("building render values: %w", err)
	}
	out, err := engine.Engine{Strict: true}.Render(c, vals)
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(out))
	for name := range out {
		names = append(names, name)
	}
	sort.Strings(names)
	r := &rendered{}
	for _, name := range names {
		body := out[name]
		if strings.HasSuffix(name, "NOTES.txt") {
			r.notes = body
			continue
		}
		if !strings.HasSuffix(name, ".yaml") {
			continue
		}
		for _, part := range strings.Split(body, "\n---") {
			part = strings.TrimSpace(strings.TrimPrefix(part, "---"))
			if part == "" {
				continue
			}
			var obj map[string]any
			if err := yaml.Unmarshal([]byte(part), &obj); err != nil {
				t.Fatalf("%s does not render to valid YAML: %v\n%s", name, err, part)
			}
			if obj == nil {
				continue
			}
			r.docs = append(r.docs, doc{source: name, raw: part, obj: obj})
		}
	}
	return r, nil
}

func readValues(t *testing.T, name string) map[string]any {
	t.Helper()
	v, err := chartutil.ReadValuesFile(filepath.Join("testdata", name+".yaml"))
	if err != nil {
		t.Fatalf("reading values: %v", err)
	}
	return v.AsMap()
}

func mustRender(t *testing.T, name string) *rendered {
	t.Helper()
	r, err := render(t, readValues(t, name))
	if err != nil {
		t.Fatalf("rendering with %s.yaml: %v", name, err)
	}
	return r
}

func (r *rendered) find(kind string) []doc {
	var out []doc
	for _, d := range r.docs {
		if d.kind() == kind {
			out = append(out, d)
		}
	}
	return out
}

func (r *rendered) get(t *testing.T, kind, name string) doc {
	t.Helper()
	for _, d := range r.find(kind) {
		if d.name() == name {
			return d
		}
	}
	t.Fatalf("no %s %q rendered", kind, name)
	return doc{}
}

// golden is the text compared with testdata/NAME.golden.yaml.
func (r *rendered) golden() string {
	var b bytes.Buffer
	for _, d := range r.docs {
		fmt.Fprintf(&b, "---\n# Source: %s\n%s\n", d.source, d.raw)
	}
	fmt.Fprintf(&b, "---\n# NOTES.txt\n%s", strings.Join(commentLines(r.notes), "\n"))
	return b.String()
}

func commentLines(s string) []string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		lines[i] = strings.TrimRight("# "+l, " ")
	}
	return append(lines, "")
}

// path walks nested maps and lists (string keys, int indexes).
func path(v any, keys ...any) any {
	for _, k := range keys {
		switch k := k.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

func str(v any, keys ...any) string { s, _ := path(v, keys...).(string); return s }

func strs(v any, keys ...any) []string {
	var out []string
	l, _ := path(v, keys...).([]any)
	for _, x := range l {
		out = append(out, fmt.Sprint(x))
	}
	return out
}

func TestGolden(t *testing.T) {
	t.Parallel()
	for _, name := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			got := mustRender(t, name).golden()
			file := filepath.Join("testdata", name+".golden.yaml")
			if *update {
				if err := os.WriteFile(file, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(file)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("rendering with %s.yaml differs from %s (go test -update rewrites it after an intended change):\n%s", name, file, diff(string(want), got))
			}
		})
	}
}

// diff shows the first differing lines, enough to see what changed.
func diff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < max(len(w), len(g)); i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			return fmt.Sprintf("line %d:\n- %s\n+ %s", i+1, wl, gl)
		}
	}
	return ""
}

func TestDeploymentsServeTheirPlane(t *testing.T) {
	t.Parallel()
	for _, name := range cases {
		r := mustRender(t, name)
		for _, plane := range []string{"controlplane", "dataplane"} {
			d := r.get(t, "Deployment", "tp-tenantplane-"+plane)
			c := path(d.obj, "spec", "template", "spec", "containers", 0)
			if got, want := strs(c, "command"), []string{"tenantplane", "serve", plane}; !slices.Equal(got, want) {
				t.Errorf("%s: %s runs %q, want %q", name, d.name(), got, want)
			}
			if got := path(c, "ports", 0, "containerPort"); fmt.Sprint(got) != "8000" {
				t.Errorf("%s: %s listens on %v, want 8000", name, d.name(), got)
			}
			for probe, want := range map[string]string{"livenessProbe": "/healthz", "readinessProbe": "/readyz"} {
				if got := str(c, probe, "httpGet", "path"); got != want {
					t.Errorf("%s: %s %s checks %q, want %q", name, d.name(), probe, got, want)
				}
			}
			if got := str(c, "securityContext", "capabilities", "drop", 0); got != "ALL" {
				t.Errorf("%s: %s drops capabilities %q, want ALL", name, d.name(), got)
			}
			if path(c, "securityContext", "readOnlyRootFilesystem") != true || path(d.obj, "spec", "template", "spec", "securityContext", "runAsNonRoot") != true {
				t.Errorf("%s: %s is not read-only and non-root", name, d.name())
			}
			for _, ann := range []string{"checksum/config", "checksum/secret"} {
				if str(d.obj, "spec", "template", "metadata", "annotations", ann) == "" {
					t.Errorf("%s: %s pods lack %s, so a config change would not roll them", name, d.name(), ann)
				}
			}
			svc := r.get(t, "Service", "tp-tenantplane-"+plane)
			if got := str(svc.obj, "spec", "selector", "app.kubernetes.io/component"); got != plane {
				t.Errorf("%s: service %s selects component %q, want %q", name, svc.name(), got, plane)
			}
		}
	}
}

func TestConfigChangeRollsPods(t *testing.T) {
	t.Parallel()
	annotations := func(values map[string]any) (config, secret string) {
		r, err := render(t, values)
		if err != nil {
			t.Fatal(err)
		}
		d := r.get(t, "Deployment", "tp-tenantplane-dataplane")
		a := path(d.obj, "spec", "template", "metadata", "annotations")
		return str(a, "checksum/config"), str(a, "checksum/secret")
	}
	base := readValues(t, "defaults")
	c0, s0 := annotations(base)

	changed := readValues(t, "defaults")
	changed["config"] = map[string]any{"logLevel": "debug"}
	if c1, s1 := annotations(changed); c1 == c0 || s1 != s0 {
		t.Errorf("changing config.logLevel: config checksum changed=%v, secret checksum changed=%v; want only the config one", c1 != c0, s1 != s0)
	}
	changed = readValues(t, "defaults")
	changed["secretKey"] = "another-secret-key-0123456789abcdef0123456789"
	if c1, s1 := annotations(changed); c1 != c0 || s1 == s0 {
		t.Errorf("changing secretKey: config checksum changed=%v, secret checksum changed=%v; want only the secret one", c1 != c0, s1 != s0)
	}
}

// secretsIn lists the secret strings a values file sets.
func secretsIn(values map[string]any) []string {
	var out []string
	for _, keys := range [][]any{{"database", "url"}, {"secretKey"}, {"redis", "url"}, {"opensearch", "url"}} {
		if s := str(values, keys...); s != "" {
			out = append(out, s)
		}
	}
	for i := range strs(values, "shards") {
		out = append(out, str(values, "shards", i, "url"))
	}
	return out
}

func TestSecretsStayInSecrets(t *testing.T) {
	t.Parallel()
	for _, name := range cases {
		values := readValues(t, name)
		r := mustRender(t, name)
		for _, d := range r.docs {
			if d.kind() == "Secret" {
				continue
			}
			for _, s := range secretsIn(values) {
				if strings.Contains(d.raw, s) {
					t.Errorf("%s: %s %s (%s) contains a secret value %q", name, d.kind(), d.name(), d.source, s)
				}
			}
		}
		for _, s := range secretsIn(values) {
			if strings.Contains(r.notes, s) {
				t.Errorf("%s: NOTES.txt shows a secret value %q", name, s)
			}
		}
	}

	// Each secret reaches the pods through the chart's Secret under the variable name.
	r := mustRender(t, "redis-opensearch-shards")
	sec := r.get(t, "Secret", "tp-tenantplane")
	want := map[string]string{
		"DATABASE_URL":           "postgres://tenantplane:db-password-3@pg-0.db.svc:5432/tenantplane",
		"TENANTPLANE_SECRET_KEY": "k1:secret-key-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa,k0:secret-key-bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
		"REDIS_URL":              "redis://:redis-password-3@redis.cache.svc:6379/0",
		"OPENSEARCH_URL":         "https://admin:opensearch-password-3@opensearch.search.svc:9200",
		"TENANTPLANE_SHARDS":     "default=postgres://tenantplane:db-password-3@pg-0.db.svc:5432/tenantplane,eu2!=postgres://tenantplane:shard-password-3@pg-1.db.svc:5432/tenantplane",
	}
	for k, v := range want {
		if got := str(sec.obj, "stringData", k); got != v {
			t.Errorf("Secret %s = %q, want %q", k, got, v)
		}
	}
}

func TestExistingSecretsAreReferenced(t *testing.T) {
	t.Parallel()
	r := mustRender(t, "existing-secrets")
	if s := r.find("Secret"); len(s) != 0 {
		t.Errorf("a Secret is rendered although every secret is an existing one: %s", s[0].name())
	}
	d := r.get(t, "Deployment", "tp-tenantplane-controlplane")
	c := path(d.obj, "spec", "template", "spec", "containers", 0)
	refs := map[string]string{}
	for i := range strs(c, "env") {
		if ref := path(c, "env", i, "valueFrom", "secretKeyRef"); ref != nil {
			refs[str(c, "env", i, "name")] = str(ref, "name") + "/" + str(ref, "key")
		}
	}
	want := map[string]string{"DATABASE_URL": "tenantplane-db/url", "TENANTPLANE_SECRET_KEY": "tenantplane-jwt/keyring"}
	if !reflect.DeepEqual(refs, want) {
		t.Errorf("secret env refs = %v, want %v", refs, want)
	}
	cm := r.get(t, "ConfigMap", "tp-tenantplane")
	if got := str(cm.obj, "data", "TENANTPLANE_BASE_DOMAIN"); got != "tenants.example.org" {
		t.Errorf("TENANTPLANE_BASE_DOMAIN = %q, want the lower-cased base domain", got)
	}
}

func TestMigrationJobIsAHook(t *testing.T) {
	t.Parallel()
	r := mustRender(t, "redis-opensearch-shards")
	job := r.get(t, "Job", "tp-tenantplane-migrate")
	ann := path(job.obj, "metadata", "annotations")
	if got := str(ann, "helm.sh/hook"); got != "pre-install,pre-upgrade" {
		t.Errorf("Job helm.sh/hook = %q, want pre-install,pre-upgrade", got)
	}
	if got := str(ann, "helm.sh/hook-delete-policy"); !strings.Contains(got, "before-hook-creation") {
		t.Errorf("Job hook-delete-policy = %q, want before-hook-creation", got)
	}
	if path(job.obj, "spec", "backoffLimit") == nil {
		t.Error("Job has no backoffLimit")
	}
	spec := path(job.obj, "spec", "template", "spec")
	if got, want := strs(spec, "initContainers", 0, "command"), []string{"tenantplane", "migrate", "shared"}; !slices.Equal(got, want) {
		t.Errorf("first step runs %q, want %q", got, want)
	}
	if got, want := strs(spec, "containers", 0, "command"), []string{"tenantplane", "migrate", "tenants", "--parallel", "8"}; !slices.Equal(got, want) {
		t.Errorf("second step runs %q, want %q", got, want)
	}
	// Hooks run before the release's own Secret exists, so the Job's Secret is a hook too,
	// created before the Job.
	sec := r.get(t, "Secret", "tp-tenantplane-migrate")
	if got := str(sec.obj, "metadata", "annotations", "helm.sh/hook"); got != "pre-install,pre-upgrade" {
		t.Errorf("the Job's Secret helm.sh/hook = %q, want pre-install,pre-upgrade", got)
	}
	if got := str(spec, "initContainers", 0, "envFrom", 0, "secretRef", "name"); got != sec.name() {
		t.Errorf("the Job reads secrets from %q, want the hook Secret %q", got, sec.name())
	}
	// Nothing that is not a hook may be needed by the Job.
	if got := str(spec, "serviceAccountName"); got != "" {
		t.Errorf("the Job runs as service account %q that may not exist before install", got)
	}
}

func TestIngressRoutesTenantHostsToTheDataplane(t *testing.T) {
	t.Parallel()
	if len(mustRender(t, "defaults").find("Ingress")) != 0 {
		t.Error("an Ingress is rendered although ingress.enabled is false")
	}
	r := mustRender(t, "ingress-tls-hpa")
	ing := r.get(t, "Ingress", "tp-tenantplane")
	routes := map[string]string{}
	for i := range strs(ing.obj, "spec", "rules") {
		rule := path(ing.obj, "spec", "rules", i)
		routes[str(rule, "host")] = str(rule, "http", "paths", 0, "backend", "service", "name")
	}
	want := map[string]string{
		"example.com":         "tp-tenantplane-controlplane",
		"api.example.com":     "tp-tenantplane-controlplane",
		"*.example.com":       "tp-tenantplane-dataplane",
		"blog.acme-corp.test": "tp-tenantplane-dataplane",
		"tenants.example.net": "tp-tenantplane-dataplane",
	}
	if !reflect.DeepEqual(routes, want) {
		t.Errorf("ingress routes = %v, want %v", routes, want)
	}
	if got := strs(ing.obj, "spec", "tls", 0, "hosts"); !slices.Contains(got, "*.example.com") {
		t.Errorf("TLS hosts %q lack the tenant wildcard", got)
	}
	hpa := r.get(t, "HorizontalPodAutoscaler", "tp-tenantplane-dataplane")
	if got := str(hpa.obj, "spec", "scaleTargetRef", "name"); got != "tp-tenantplane-dataplane" {
		t.Errorf("HPA scales %q", got)
	}
	if got := path(r.get(t, "Deployment", "tp-tenantplane-dataplane").obj, "spec", "replicas"); got != nil {
		t.Errorf("the autoscaled dataplane Deployment sets replicas %v; each upgrade would reset the HPA's count", got)
	}
	if n := len(r.find("PodDisruptionBudget")); n != 2 {
		t.Errorf("%d PodDisruptionBudgets rendered, want 2", n)
	}
	if n := len(mustRender(t, "defaults").find("PodDisruptionBudget")); n != 0 {
		t.Errorf("%d PodDisruptionBudgets rendered by default, want 0", n)
	}
}

func TestNotes(t *testing.T) {
	t.Parallel()
	notes := mustRender(t, "defaults").notes
	for _, want := range []string{"tenantplane users createsuperuser --email", "--password-stdin", "/api/v1/tenants"} {
		if !strings.Contains(notes, want) {
			t.Errorf("NOTES.txt lacks %q:\n%s", want, notes)
		}
	}
	if strings.Contains(notes, "WARNING") {
		t.Errorf("NOTES.txt warns with one dataplane replica:\n%s", notes)
	}
	values := readValues(t, "defaults")
	values["dataplane"] = map[string]any{"replicas": 3}
	r, err := render(t, values)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(r.notes, "WARNING: more than one dataplane replica without redis.url") {
		t.Errorf("NOTES.txt does not warn about 3 dataplane replicas without Redis:\n%s", r.notes)
	}
	if notes := mustRender(t, "ingress-tls-hpa").notes; !strings.Contains(notes, "X-Tenant") || !strings.Contains(notes, "https://tenants.example.net") {
		t.Errorf("NOTES.txt with an Ingress does not explain where X-Tenant clients go:\n%s", notes)
	}
}

// TestRequiredValuesFailClearly checks the templates' own messages, which an install
// with --skip-schema-validation still gets; TestSchemaRejectsBadValues checks the schema.
func TestRequiredValuesFailClearly(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		values map[string]any
		want   string
	}{
		{"no database", map[string]any{"secretKey": "secret-key-0123456789abcdef0123456789abcdef"}, "set database.url"},
		{"no secret key", map[string]any{"database": map[string]any{"url": "postgres://u:p@h/db"}}, "set secretKey"},
		{"not a postgres URL", map[string]any{"database": map[string]any{"url": "mysql://u:p@h/db"}, "secretKey": "k"}, "database.url must be a postgres:// URL"},
		{"bad search strategy", map[string]any{"database": map[string]any{"url": "postgres://h/db"}, "secretKey": "k", "config": map[string]any{"searchStrategy": "elastic"}}, "config.searchStrategy must be shared or per-tenant"},
		{"shard without url", map[string]any{"database": map[string]any{"url": "postgres://h/db"}, "secretKey": "k", "shards": []any{map[string]any{"name": "eu"}}}, "every entry of shards needs a name and a url"},
		{"delay not below grace", map[string]any{"database": map[string]any{"url": "postgres://h/db"}, "secretKey": "k", "config": map[string]any{"shutdownGraceSeconds": 5, "shutdownDelaySeconds": 5}}, "config.shutdownDelaySeconds (5) must be less than config.shutdownGraceSeconds (5)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := renderSchema(t, tt.values, false)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("rendering error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestSchemaRejectsBadValues(t *testing.T) {
	t.Parallel()
	valid := func(overrides map[string]any) map[string]any {
		v := map[string]any{"database": map[string]any{"url": "postgres://h/db"}, "secretKey": "secret-key-0123456789abcdef0123456789abcdef"}
		for k, o := range overrides {
			v[k] = o
		}
		return v
	}
	tests := []struct {
		name   string
		values map[string]any
		want   string // "" for values the schema accepts
	}{
		{"no database", map[string]any{"secretKey": "k"}, "at '/database/url'"},
		{"not a postgres URL", valid(map[string]any{"database": map[string]any{"url": "mysql://u:p@h/db"}}), "at '/database/url': 'mysql://u:p@h/db' does not match"},
		{"existing secret instead of a URL", valid(map[string]any{"database": map[string]any{"existingSecret": "db"}}), ""},
		{"no secret key", map[string]any{"database": map[string]any{"url": "postgres://h/db"}}, "at '/secretKey'"},
		{"existing secret instead of a key", map[string]any{"database": map[string]any{"url": "postgres://h/db"}, "secretKeyExistingSecret": map[string]any{"name": "jwt"}}, ""},
		{"negative replicas", valid(map[string]any{"controlplane": map[string]any{"replicas": -1}}), "at '/controlplane/replicas'"},
		{"replicas as a word", valid(map[string]any{"dataplane": map[string]any{"replicas": "two"}}), "at '/dataplane/replicas'"},
		{"fractional replicas", valid(map[string]any{"dataplane": map[string]any{"replicas": 1.5}}), "at '/dataplane/replicas'"},
		{"boolean as a string", valid(map[string]any{"config": map[string]any{"setLocal": "yes"}}), "at '/config/setLocal'"},
		{"misspelt key", valid(map[string]any{"dataplane": map[string]any{"replica": 2}}), "additional properties 'replica'"},
		{"unknown top-level key", valid(map[string]any{"replicas": 2}), "additional properties 'replicas'"},
		{"bad search strategy", valid(map[string]any{"config": map[string]any{"searchStrategy": "elastic"}}), "at '/config/searchStrategy'"},
		{"bad duration", valid(map[string]any{"config": map[string]any{"accessTTL": "five minutes"}}), "at '/config/accessTTL'"},
		{"zero grace", valid(map[string]any{"config": map[string]any{"shutdownGraceSeconds": 0}}), "at '/config/shutdownGraceSeconds'"},
		{"metrics port out of range", valid(map[string]any{"metrics": map[string]any{"port": 70000}}), "at '/metrics/port'"},
		{"ServiceMonitor interval", valid(map[string]any{"metrics": map[string]any{"serviceMonitor": map[string]any{"enabled": true, "interval": "often"}}}), "at '/metrics/serviceMonitor/interval'"},
		{"shard without url", valid(map[string]any{"shards": []any{map[string]any{"name": "eu"}}}), "at '/shards/0': missing property 'url'"},
		{"env without name", valid(map[string]any{"controlplane": map[string]any{"extraEnv": []any{map[string]any{"value": "x"}}}}), "at '/controlplane/extraEnv/0'"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := render(t, tt.values)
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("rendering failed: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("rendering error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestMetricsAndShutdown(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		values        string
		port          string
		grace         string
		scrape, crds  bool
		terminationGP float64
	}{
		{"defaults", "9090", "10s", false, false, 15},
		{"metrics", "9102", "25s", true, true, 30},
	} {
		r := mustRender(t, tt.values)
		cm := r.get(t, "ConfigMap", "tp-tenantplane")
		if got := str(cm.obj, "data", "TENANTPLANE_METRICS_LISTEN"); got != ":"+tt.port {
			t.Errorf("%s: TENANTPLANE_METRICS_LISTEN = %q, want :%s", tt.values, got, tt.port)
		}
		if got := str(cm.obj, "data", "TENANTPLANE_SHUTDOWN_GRACE"); got != tt.grace {
			t.Errorf("%s: TENANTPLANE_SHUTDOWN_GRACE = %q, want %s", tt.values, got, tt.grace)
		}
		for _, plane := range []string{"controlplane", "dataplane"} {
			d := r.get(t, "Deployment", "tp-tenantplane-"+plane)
			spec := path(d.obj, "spec", "template", "spec")
			if got, _ := path(spec, "terminationGracePeriodSeconds").(float64); got != tt.terminationGP {
				t.Errorf("%s: %s terminationGracePeriodSeconds = %v, want %v (above the server's grace)", tt.values, plane, got, tt.terminationGP)
			}
			ports := map[string]string{}
			for i := range strs(spec, "containers", 0, "ports") {
				ports[str(spec, "containers", 0, "ports", i, "name")] = fmt.Sprint(path(spec, "containers", 0, "ports", i, "containerPort"))
			}
			if ports["metrics"] != tt.port || ports["http"] != "8000" {
				t.Errorf("%s: %s container ports %v, want http 8000 and metrics %s", tt.values, plane, ports, tt.port)
			}
			ann := path(d.obj, "spec", "template", "metadata", "annotations")
			if got := str(ann, "prometheus.io/scrape") == "true" && str(ann, "prometheus.io/port") == tt.port && str(ann, "prometheus.io/path") == "/metrics"; got != tt.scrape {
				t.Errorf("%s: %s scrape annotations %v, want them: %v", tt.values, plane, ann, tt.scrape)
			}
			// The public Service never carries the metrics port.
			svc := r.get(t, "Service", "tp-tenantplane-"+plane)
			if got := strs(svc.obj, "spec", "ports"); len(got) != 1 || str(svc.obj, "spec", "ports", 0, "name") != "http" {
				t.Errorf("%s: public Service %s ports %v, want http only", tt.values, svc.name(), got)
			}
		}
		monitors := r.find("ServiceMonitor")
		if !tt.crds {
			if len(monitors) != 0 {
				t.Errorf("%s: a ServiceMonitor is rendered although metrics.serviceMonitor.enabled is false", tt.values)
			}
			continue
		}
		if len(monitors) != 1 {
			t.Fatalf("%s: %d ServiceMonitors rendered, want 1", tt.values, len(monitors))
		}
		sm := monitors[0]
		if got := str(sm.obj, "apiVersion"); got != "monitoring.coreos.com/v1" {
			t.Errorf("ServiceMonitor apiVersion %q", got)
		}
		if got := str(sm.obj, "metadata", "labels", "release"); got != "kube-prometheus-stack" {
			t.Errorf("ServiceMonitor lacks the label the operator selects by: %v", path(sm.obj, "metadata", "labels"))
		}
		if str(sm.obj, "spec", "endpoints", 0, "port") != "metrics" || str(sm.obj, "spec", "endpoints", 0, "interval") != "15s" {
			t.Errorf("ServiceMonitor endpoints %v", path(sm.obj, "spec", "endpoints"))
		}
		// The ServiceMonitor selects exactly the two metrics Services, each of which
		// targets its plane's pods on the metrics port.
		sel, _ := path(sm.obj, "spec", "selector", "matchLabels").(map[string]any)
		var selected []string
		for _, svc := range r.find("Service") {
			labels, _ := path(svc.obj, "metadata", "labels").(map[string]any)
			matches := true
			for k, v := range sel {
				matches = matches && labels[k] == v
			}
			if matches {
				selected = append(selected, svc.name())
				if str(svc.obj, "spec", "ports", 0, "targetPort") != "metrics" || fmt.Sprint(path(svc.obj, "spec", "ports", 0, "port")) != tt.port {
					t.Errorf("metrics Service %s ports %v", svc.name(), path(svc.obj, "spec", "ports"))
				}
				if str(svc.obj, "spec", "selector", "app.kubernetes.io/component") != str(labels, "app.kubernetes.io/component") {
					t.Errorf("metrics Service %s selects another plane's pods", svc.name())
				}
			}
		}
		sort.Strings(selected)
		if want := []string{"tp-tenantplane-controlplane-metrics", "tp-tenantplane-dataplane-metrics"}; !slices.Equal(selected, want) {
			t.Errorf("the ServiceMonitor selects Services %q, want %q", selected, want)
		}
	}
}

// TestDefaultImageIsMakeImage keeps the chart's default image the one `make image`
// builds from a release checkout: IMAGE_REPO, tagged with the version without its v.
func TestDefaultImageIsMakeImage(t *testing.T) {
	t.Parallel()
	mk, err := os.ReadFile(filepath.Join("..", "..", "..", "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^IMAGE_REPO \?= (\S+)$`).FindSubmatch(mk)
	if m == nil {
		t.Fatal("the Makefile sets no IMAGE_REPO")
	}
	if !regexp.MustCompile(`(?m)^IMAGE \?= \$\(IMAGE_REPO\):\$\(VERSION\)$`).Match(mk) || !bytes.Contains(mk, []byte("VERSION := $(patsubst v%,%,$(shell git describe")) {
		t.Error("make image no longer tags IMAGE_REPO:VERSION with the git version without its v")
	}
	c := loadChart(t)
	r := mustRender(t, "defaults")
	d := r.get(t, "Deployment", "tp-tenantplane-controlplane")
	if got, want := str(d.obj, "spec", "template", "spec", "containers", 0, "image"), string(m[1])+":"+c.Metadata.AppVersion; got != want {
		t.Errorf("the default image is %q, want %q, what `make image` builds at the tag v%s", got, want, c.Metadata.AppVersion)
	}
}

// TestBackupCronJob: the nightly export is off by default, needs a volume when on, and
// runs `tenants export --all` with the configured retention into it.
func TestBackupCronJob(t *testing.T) {
	t.Parallel()
	for _, d := range mustRender(t, "defaults").docs {
		if d.kind() == "CronJob" {
			t.Errorf("the defaults render a CronJob: %s", d.name())
		}
	}
	c := path(mustRender(t, "backup").get(t, "CronJob", "tp-tenantplane-backup").obj,
		"spec", "jobTemplate", "spec", "template", "spec", "containers", 0)
	if got, want := strs(c, "command"), []string{"tenantplane", "tenants", "export", "--all", "--dir", "/backups", "--keep", "14"}; !slices.Equal(got, want) {
		t.Errorf("backup runs %q, want %q", got, want)
	}
	if path(c, "securityContext", "readOnlyRootFilesystem") != true {
		t.Error("the backup container's root filesystem is writable")
	}
	values := readValues(t, "backup")
	values["backup"].(map[string]any)["existingClaim"] = ""
	if _, err := render(t, values); err == nil || !strings.Contains(err.Error(), "backup.existingClaim") {
		t.Errorf("backup without a volume rendered: %v", err)
	}
}
