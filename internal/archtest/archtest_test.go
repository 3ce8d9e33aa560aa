package archtest

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const (
	module = "github.com/tenantplane/tenantplane"
	gin    = "github.com/gin-gonic/gin"
)

// ginImporters are the packages that may import gin: the servers, the HTTP adapters
// and the shared HTTP plumbing. A name ending in "/..." allows the packages under it.
var ginImporters = []string{
	"cmd/tenantplane",
	"controlplane",
	"dataplane",
	"dataplane/api",
	"dataplane/adminui",
	"web",
	"web/adminpanel",
	"apidoc",
	"bench/...",
}

// core are the packages that know nothing of HTTP and of the servers: they must not
// depend, even indirectly, on gin, controlplane, the dataplane server or cmd. A package
// of the list that does not exist (yet) is skipped.
var core = []string{
	"apperr", "tenant", "token", "password", "email", "lifecycle", "pgerr", "redact",
	"migrations", "provisioner", "refresh",
	"dataplane/auth", "dataplane/blogs", "dataplane/notify", "dataplane/search",
	"dataplane/pool", "dataplane/tenantdb", "dataplane/caller", "dataplane/page",
}

// servers are the packages no core package may depend on.
var servers = []string{"controlplane", "dataplane", "cmd/..."}

type pkg struct {
	ImportPath string
	Imports    []string
	Deps       []string
}

// listPackages returns the module's packages with their imports, as `go list` sees them
// (test files excluded).
func listPackages(t *testing.T) map[string]pkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-json=ImportPath,Imports,Deps", module+"/...")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	pkgs := map[string]pkg{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p pkg
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("decoding go list: %v", err)
		}
		pkgs[strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, module), "/")] = p
	}
	if len(pkgs) == 0 {
		t.Fatal("go list found no packages")
	}
	return pkgs
}

// matches reports whether the module-relative package name is one of patterns.
func matches(name string, patterns []string) bool {
	for _, p := range patterns {
		if dir, ok := strings.CutSuffix(p, "/..."); ok {
			if name == dir || strings.HasPrefix(name, dir+"/") {
				return true
			}
		} else if name == p {
			return true
		}
	}
	return false
}

func TestOnlyAdaptersImportGin(t *testing.T) {
	t.Parallel()
	for name, p := range listPackages(t) {
		if slices.Contains(p.Imports, gin) && !matches(name, ginImporters) {
			t.Errorf("%s imports gin; only the HTTP adapters may (%v)", p.ImportPath, ginImporters)
		}
	}
}

func TestCoreImportsNoServerNorGin(t *testing.T) {
	t.Parallel()
	pkgs := listPackages(t)
	for _, name := range core {
		p, ok := pkgs[name]
		if !ok {
			continue
		}
		for _, d := range p.Deps {
			if d == gin {
				t.Errorf("%s depends on gin", p.ImportPath)
			}
			if rel, ok := strings.CutPrefix(d, module+"/"); ok && matches(rel, servers) {
				t.Errorf("%s depends on the server package %s", p.ImportPath, d)
			}
		}
	}
	// The rule must bite: the core packages that exist today are all found.
	for _, name := range []string{"apperr", "dataplane/auth", "dataplane/blogs", "dataplane/notify", "dataplane/tenantdb"} {
		if _, ok := pkgs[name]; !ok {
			t.Errorf("core package %s not found by go list", name)
		}
	}
}
