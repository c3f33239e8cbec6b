package proxy

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// consoleToken is the bearer token of the console tests' admin API.
const consoleToken = "console-test-token"

// consoleHarness is a proxy with real divergences on get-order (a real
// total, a real note carrying markup, a noisy served_at), a tripped guard
// on get-user, and its admin listener on a real socket.
func consoleHarness(t *testing.T) (*harness, *httptest.Server) {
	t.Setenv("STRANGLER_CONSOLE_TOKEN", consoleToken)
	order := func(total int, note string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if strings.HasPrefix(r.URL.Path, "/users/") {
				if total != 1000 { // newpath's users endpoint is broken
					http.Error(w, "boom", http.StatusInternalServerError)
					return
				}
				fmt.Fprint(w, `{"id":1}`)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"id":%q,"total_cents":%d,"served_at":"%d","note":%q,"items":[{"sku":"a","qty":1}]}`,
				strings.TrimPrefix(r.URL.Path, "/orders/"), total, rand.Int64(), note)
		}
	}
	h := newHarness(t, order(1000, "<b>paid</b>"), order(1001, "<script>alert(1)</script>"), `
admin: { token_env: STRANGLER_CONSOLE_TOKEN }
routes:
  - name: get-order
    match: "GET /orders/{id}"
    shadow: { percent: 100 }
    compare: { noise_percent: 100 }
  - name: get-user
    match: "GET /users/{id}"
    weight: 100
    guard: { max_error_rate: 0.1, min_samples: 5, window: 1m }
`)
	for i := range 30 {
		h.get(fmt.Sprintf("/orders/%d", i))
	}
	h.waitCompared("get-order", 30)
	// The guard looks at its window at most every 20 ms: errors go on
	// until it has (legacy answers each, by fallback).
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; !h.proxy.boundRoute("get-user").rt.guard.tripped.Load(); i++ {
		if time.Now().After(deadline) {
			t.Fatal("get-user's guard did not trip on newpath's errors")
		}
		h.get(fmt.Sprintf("/users/%d", i))
	}
	admin := httptest.NewServer(h.proxy.AdminHandler(AdminOptions{Gatherer: h.reg, Config: h.reloader}))
	t.Cleanup(admin.Close)
	return h, admin
}

// browser starts a headless Chromium for the test. make test installs
// the Debian package and sets STRANGLER_REQUIRE_BROWSER, so a missing
// browser fails there; elsewhere the test skips, saying why.
func browser(t *testing.T) context.Context {
	t.Helper()
	var path string
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			path = p
			break
		}
	}
	if path == "" {
		if os.Getenv("STRANGLER_REQUIRE_BROWSER") != "" {
			t.Fatal("no chromium on PATH: apt-get install chromium (make test does)")
		}
		t.Skip("no chromium on PATH: apt-get install chromium, or run make test, which does")
	}
	opts := append(slices.Clone(chromedp.DefaultExecAllocatorOptions[:]),
		chromedp.ExecPath(path), chromedp.NoSandbox, chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(1440, 1000))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	ctx, cancelTab := chromedp.NewContext(actx)
	t.Cleanup(cancelTab)
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// page drives one browser tab for a test, failing it on any error.
type page struct {
	t   *testing.T
	ctx context.Context
}

func (pg page) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	pg.t.Helper()
	if err := chromedp.Do(pg.ctx, steps...); err != nil {
		pg.t.Fatalf("%s: %v", what, err)
	}
}

// eval returns the value of a JavaScript expression in the page.
func eval[T any](pg page, expr string) T {
	pg.t.Helper()
	v, err := chromedp.Run(pg.ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		pg.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// waitFor polls a JavaScript condition until it holds, for at most 10 s,
// through the page's own navigations (an evaluation cut off by one is
// tried again).
func (pg page) waitFor(what, cond string) {
	pg.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ok, err := chromedp.Run(pg.ctx, chromedp.Evaluate[bool](cond))
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			pg.t.Fatalf("waiting for %s: still not so after 10 s (last error: %v)", what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// screenshot saves the page to $STRANGLER_SCREENSHOTS/name when set: the
// README's pictures come from this test.
func (pg page) screenshot(name string) {
	pg.t.Helper()
	dir := os.Getenv("STRANGLER_SCREENSHOTS")
	if dir == "" {
		return
	}
	png, err := chromedp.Run(pg.ctx, chromedp.FullScreenshot(100))
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, name), png, 0o644)
	}
	if err != nil {
		pg.t.Fatalf("screenshot %s: %v", name, err)
	}
}

func TestConsoleInABrowser(t *testing.T) {
	pg := page{t, browser(t)}
	h, admin := consoleHarness(t)

	// The routes page.
	pg.do("routes page", chromedp.Navigate(admin.URL+"/ui/"), chromedp.WaitVisible(chromedp.CSS("#routes")))
	pg.screenshot("console-routes.png")
	if routes := eval[[]string](pg, `[...document.querySelectorAll("#routes tbody tr[data-route]")].map(r => r.dataset.route)`); !slices.Equal(routes, []string{"get-order", "get-user"}) {
		t.Errorf("routes table rows = %q; want get-order, get-user", routes)
	}
	if guard := eval[string](pg, `document.querySelector('tr[data-route="get-user"] .guard .badge').textContent`); guard != "tripped" {
		t.Errorf("get-user guard badge = %q; want tripped", guard)
	}

	// A route's fields: real first, the noisy one marked noisy.
	pg.do("route page", chromedp.Navigate(admin.URL+"/ui/routes/get-order"), chromedp.WaitVisible(chromedp.CSS("#fields")))
	pg.screenshot("console-route.png")
	fields := eval[[][]string](pg, `[...document.querySelectorAll("#fields tbody tr[data-field]")].map(r => [r.dataset.field, r.querySelector(".badge").textContent])`)
	want := [][]string{{"/body/note", "real"}, {"/body/total_cents", "real"}, {"/body/served_at", "noisy"}}
	if !slices.EqualFunc(fields, want, slices.Equal) {
		t.Errorf("fields = %q; want %q", fields, want)
	}

	// Filtering the samples by field.
	pg.do("samples filtered by field", chromedp.Navigate(admin.URL+"/ui/routes/get-order?field=/body/total_cents"), chromedp.WaitVisible(chromedp.CSS("#samples")))
	filtered := eval[[]string](pg, `[...document.querySelectorAll("#samples tbody tr[data-request-id]")].map(r => r.textContent)`)
	if len(filtered) == 0 || slices.ContainsFunc(filtered, func(s string) bool { return !strings.Contains(s, "/body/total_cents") }) {
		t.Errorf("samples filtered by /body/total_cents: %q; want some, each differing there", filtered)
	}

	// A sample side by side: the differing lines marked on both sides,
	// the rest not, and the newpath's <script> shown as text.
	pg.do("sample page", chromedp.Click(chromedp.CSS("#samples a.open")), chromedp.WaitVisible(chromedp.CSS("#newpath")))
	pg.screenshot("console-sample.png")
	legacyMarked := eval[[]string](pg, `[...document.querySelectorAll("#legacy .line.differs")].map(e => e.textContent.trim())`)
	newpathMarked := eval[[]string](pg, `[...document.querySelectorAll("#newpath .line.differs")].map(e => e.textContent.trim())`)
	unmarked := eval[[]string](pg, `[...document.querySelectorAll("#newpath .line:not(.differs)")].map(e => e.textContent.trim())`)
	if !slices.Contains(legacyMarked, `"total_cents": 1000,`) || !slices.Contains(legacyMarked, `"note": "<b>paid</b>",`) {
		t.Errorf("legacy's marked lines = %q; want its total_cents and note", legacyMarked)
	}
	if !slices.Contains(newpathMarked, `"total_cents": 1001,`) {
		t.Errorf("newpath's marked lines = %q; want its total_cents", newpathMarked)
	}
	for _, line := range newpathMarked {
		if strings.Contains(line, "served_at") || strings.Contains(line, `"sku"`) {
			t.Errorf("newpath line %q is marked: only real differences are", line)
		}
	}
	if !slices.ContainsFunc(unmarked, func(s string) bool { return strings.Contains(s, `"sku": "a"`) }) {
		t.Errorf("newpath's unmarked lines = %q; want the equal items among them", unmarked)
	}
	scripts := eval[int](pg, `document.scripts.length`)
	shown := eval[bool](pg, `[...document.querySelectorAll("#newpath .line")].some(e => e.textContent.includes("<script>alert(1)</script>"))`)
	if scripts != 1 || !shown {
		t.Errorf("%d script elements (want 1, the console's); newpath's <script> shown as text: %v", scripts, shown)
	}

	// Re-arm: refused with a wrong token, done with the right one.
	row := `tr[data-route="get-user"] `
	pg.do("re-arm with a wrong token",
		chromedp.Navigate(admin.URL+"/ui/"),
		chromedp.WaitVisible(chromedp.CSS(row+"form.rearm")),
		chromedp.SendKeys(chromedp.CSS(row+"input[name=token]"), "wrong"),
		chromedp.Click(chromedp.CSS(row+"button")))
	pg.waitFor("the refusal", `document.querySelector('`+row+`output').textContent.startsWith("refused")`)
	if refusal := eval[string](pg, `document.querySelector('`+row+`output').textContent`); !strings.Contains(refusal, "401") {
		t.Errorf("re-arm with a wrong token said %q; want a 401 refusal", refusal)
	}
	if !h.proxy.boundRoute("get-user").rt.guard.tripped.Load() {
		t.Fatal("a refused re-arm re-armed the guard")
	}
	pg.do("re-arm with the token",
		chromedp.SendKeys(chromedp.CSS(row+"input[name=token]"), consoleToken),
		chromedp.Click(chromedp.CSS(row+"button")))
	// The page reloads itself once the admin API said yes.
	pg.waitFor("the guard armed on the reloaded page", `document.readyState === "complete" && document.querySelector('`+row+`.guard .badge')?.textContent === "armed"`)
	if h.proxy.boundRoute("get-user").rt.guard.tripped.Load() {
		t.Error("the page says armed, the proxy's guard is still tripped")
	}
}

// TestConsoleHeaders checks what every console answer carries, and that
// a sample or route that is not there is a 404 page.
func TestConsoleHeaders(t *testing.T) {
	_, admin := consoleHarness(t)
	for path, status := range map[string]int{
		"/ui/":                                http.StatusOK,
		"/ui/routes/get-order":                http.StatusOK,
		"/ui/routes/nope":                     http.StatusNotFound,
		"/ui/routes/get-order/samples/absent": http.StatusNotFound,
		"/ui/static/console.css":              http.StatusOK,
		"/ui/static/console.js":               http.StatusOK,
	} {
		res, err := http.Get(admin.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != status {
			t.Errorf("GET %s: %d; want %d", path, res.StatusCode, status)
		}
		csp := res.Header.Get("Content-Security-Policy")
		if !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") || strings.Contains(csp, "unsafe-inline") {
			t.Errorf("GET %s: Content-Security-Policy %q; want self-only scripts, no framing, nothing inline", path, csp)
		}
		if res.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET %s: X-Content-Type-Options %q; want nosniff", path, res.Header.Get("X-Content-Type-Options"))
		}
	}
}

// TestConsoleSamplesByLabelAndNumber: filtering by "other" finds the
// samples of the fields counted under it once a route's labels are used
// up, and samples of requests that share a client's request id each have
// a page of their own.
func TestConsoleSamplesByLabelAndNumber(t *testing.T) {
	legacy := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{}`)
	})
	// Ten fields of 400 per answer: the route's 200 labels are used up
	// after a few dozen answers.
	newpath := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fields := make([]string, 10)
		for i := range fields {
			fields[i] = fmt.Sprintf(`"f%d":1`, rand.IntN(400))
		}
		fmt.Fprintf(w, "{%s}", strings.Join(fields, ","))
	})
	h := newHarness(t, legacy, newpath, `
routes:
  - name: wide
    match: "GET /wide"
    shadow: { percent: 100 }
`)
	for range 80 {
		h.get("/wide", "X-Request-Id", "same-id")
	}
	h.waitCompared("wide", 80)
	admin := httptest.NewServer(h.proxy.AdminHandler(AdminOptions{Gatherer: h.reg, Config: h.reloader}))
	t.Cleanup(admin.Close)
	page := func(path string) (int, string) {
		res, err := http.Get(admin.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(body)
	}

	status, body := page("/ui/routes/wide?field=other")
	links := regexp.MustCompile(`href="/ui/routes/wide/samples/(\d+)"`).FindAllStringSubmatch(body, -1)
	if status != http.StatusOK || len(links) == 0 {
		t.Fatalf("samples filtered by other: %d with %d samples; want some", status, len(links))
	}
	seen := map[string]bool{}
	for _, l := range links {
		if seen[l[1]] {
			t.Errorf("two samples link to number %s", l[1])
		}
		seen[l[1]] = true
		if status, body := page("/ui/routes/wide/samples/" + l[1]); status != http.StatusOK || !strings.Contains(body, "same-id") {
			t.Errorf("sample %s: %d; want its page", l[1], status)
		}
	}
	if status, _ := page("/ui/routes/wide/samples/same-id"); status != http.StatusNotFound {
		t.Errorf("a sample by request id: %d; want 404, samples are numbered", status)
	}
}
