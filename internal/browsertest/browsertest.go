// Package browsertest starts a headless Chromium for tests that drive a page in a real
// browser, and saves screenshots of the pages they visit as test artifacts.
package browsertest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/tenantplane/tenantplane/internal/pgtest"
)

// EnvChromium names the Chromium binary the browser tests drive.
const EnvChromium = "TENANTPLANE_TEST_CHROMIUM"

// New starts a headless Chromium with a fresh profile and returns a tab's context,
// bounded to a minute; everything ends with the test. Without EnvChromium the test
// is skipped, or fails under CI=true.
func New(t *testing.T) context.Context {
	t.Helper()
	path := pgtest.Require(t, EnvChromium)
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.WindowSize(1280, 860),
		chromedp.Flag("disable-quic", true),
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	tctx, cancelTimeout := context.WithTimeout(actx, 60*time.Second)
	t.Cleanup(cancelTimeout)
	ctx, cancelTab := chromedp.NewContext(tctx, chromedp.WithErrorf(t.Logf))
	t.Cleanup(cancelTab)
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	return ctx
}

// EnvArtifacts names the directory screenshots are saved under, one subdirectory per
// package and test; without it they go under the system's temporary directory. Either way the
// directory is named in the test's log and outlives the test.
const EnvArtifacts = "TENANTPLANE_TEST_ARTIFACTS"

// unsafeName matches what a file name should not contain.
var unsafeName = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// shots counts each test's screenshots, so their files sort in the order taken.
var shots sync.Map // test name → *int

// Screenshot saves a full-page PNG of the page in ctx's tab as the test's next
// artifact, named after step. A failure to take or save it fails the test.
func Screenshot(t *testing.T, ctx context.Context, step string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("taking a screenshot of %q: %v", step, err)
	}
	root := os.Getenv(EnvArtifacts)
	if root == "" {
		root = filepath.Join(os.TempDir(), "tenantplane-test-artifacts")
	}
	// go test runs each package's tests in its directory: name it, so that two
	// packages' tests of one name keep their own screenshots.
	pkg, err := os.Getwd()
	if err != nil {
		t.Fatalf("naming the screenshot directory: %v", err)
	}
	dir := filepath.Join(root, filepath.Base(pkg), unsafeName.ReplaceAllString(t.Name(), "_"))
	n, first := shots.LoadOrStore(t.Name(), new(int))
	count := n.(*int)
	if !first {
		if err := os.RemoveAll(dir); err != nil {
			t.Fatalf("clearing the screenshots of an earlier run: %v", err)
		}
		t.Logf("screenshots are saved in %s", dir)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("making the screenshot directory: %v", err)
	}
	*count++
	name := fmt.Sprintf("%02d-%s.png", *count, unsafeName.ReplaceAllString(step, "-"))
	if err := os.WriteFile(filepath.Join(dir, name), png, 0o644); err != nil {
		t.Fatalf("saving a screenshot: %v", err)
	}
}
