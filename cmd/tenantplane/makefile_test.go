package main

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/tenantplane/tenantplane/internal/pgtest"
)

// TestMakeHelpAndStop runs the checkout's Makefile as a newcomer does: `make` piped into
// a file lists the targets without escape codes, and `make stop` with nothing running
// says so.
func TestMakeHelpAndStop(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("make"); err != nil {
		pgtest.Missing(t, "make is not installed")
	}
	out, err := exec.Command("make", "-C", "../..", "--no-print-directory").CombinedOutput()
	if err != nil {
		t.Fatalf("make: %v\n%s", err, out)
	}
	if strings.Contains(string(out), "\x1b") {
		t.Errorf("make help piped prints escape codes: %q", out)
	}
	for _, want := range []string{"help", "run", "stop", "test"} {
		if !strings.Contains(string(out), "  "+want+" ") {
			t.Errorf("make help lacks %q:\n%s", want, out)
		}
	}
	out, err = exec.Command("make", "-C", "../..", "--no-print-directory", "stop", "LOCAL_PG="+t.TempDir()+"/pg").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "nothing to stop") {
		t.Errorf("make stop with nothing running: %v %q", err, out)
	}
}
