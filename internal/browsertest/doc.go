// Package browsertest drives a real, headless Chromium for the tests of
// the status pages (test/web) through chromedp.
package browsertest

import (
	_ "github.com/chromedp/cdproto/log"
	_ "github.com/chromedp/cdproto/network"
	_ "github.com/chromedp/cdproto/runtime"
	_ "github.com/chromedp/chromedp"
)
