// Package browsertest starts a headless Chromium for tests that drive a page in a real
// browser.
package browsertest

import (
	"context"
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
