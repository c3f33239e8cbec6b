package proxy

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/strangler-proxy/strangler/router"
)

// hitCounter is a backend that answers with its name and counts what it
// received: primary calls by route prefix (/a, /b, ...), and shadows (and
// noise probes) apart.
type hitCounter struct {
	name    string
	url     string
	mu      sync.Mutex
	fail    string // a path prefix answered 503
	primary map[string]int
	shadow  map[string]int
}

func newHitCounter(name string) *hitCounter {
	return &hitCounter{name: name, primary: map[string]int{}, shadow: map[string]int{}}
}

func (c *hitCounter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	prefix := "/" + strings.Split(strings.TrimPrefix(r.URL.Path, "/"), "/")[0]
	c.mu.Lock()
	if r.Header.Get(ShadowHeader) == "1" {
		c.shadow[prefix]++
	} else {
		c.primary[prefix]++
	}
	fail := c.fail != "" && strings.HasPrefix(r.URL.Path, c.fail)
	c.mu.Unlock()
	if fail {
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("X-Served-By", c.name)
	w.Header().Set("Content-Type", "application/json")
	// The same body on every side: comparisons match.
	fmt.Fprintf(w, `{"path":%q}`, r.URL.Path)
}

// counts returns how many primary calls and shadows of prefix c got.
func (c *hitCounter) counts(prefix string) (primary, shadow int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.primary[prefix], c.shadow[prefix]
}

// manyServices has two new services and four routes, two on each, at
// different weights. get-c and get-d shadow every request.
const manyServices = `
sticky: { key: "header:X-User-Id", salt: "many" }
upstreams:
  legacy: { url: "{{legacy}}" }
  newpath: { url: "{{newpath}}" }
  payments: { url: "{{payments}}" }
routes:
  - { name: get-a, match: "GET /a/{id}", weight: 30 }
  - { name: get-b, match: "GET /b/{id}", weight: 70, to: newpath }
  - { name: get-c, match: "GET /c/{id}", weight: 40, to: payments, shadow: { percent: 100 } }
  - { name: get-d, match: "GET /d/{id}", weight: 100, to: payments, shadow: { percent: 100 } }
`

// newServicesHarness is a harness whose config names a third server,
// payments, as {{payments}}.
func newServicesHarness(t *testing.T, yaml string) (h *harness, legacy, newpath, payments *hitCounter) {
	t.Helper()
	legacy, newpath, payments = newHitCounter("legacy"), newHitCounter("newpath"), newHitCounter("payments")
	srv := httptest.NewServer(payments)
	t.Cleanup(srv.Close)
	payments.url = srv.URL
	h = newHarness(t, legacy, newpath, strings.ReplaceAll(yaml, "{{payments}}", srv.URL))
	return h, legacy, newpath, payments
}

// TestRoutesSplitToTheirOwnService: each route's newpath side is the
// service its to names, at the route's weight, by sticky bucket; its
// shadows go to that service (or to legacy), and its fallbacks to legacy.
func TestRoutesSplitToTheirOwnService(t *testing.T) {
	h, legacy, newpath, payments := newServicesHarness(t, manyServices)
	const users = 200
	weights := map[string]int{"/a": 30, "/b": 70, "/c": 40, "/d": 100}
	want := map[string]int{} // users each route sends to its new service
	for i := range users {
		user := fmt.Sprintf("user-%d", i)
		for prefix, w := range weights {
			if router.BucketFor("many", user) < w*100 {
				want[prefix]++
			}
			res, body := h.get(prefix+"/"+fmt.Sprint(i), "X-User-Id", user)
			if res.StatusCode != http.StatusOK {
				t.Fatalf("GET %s/%d: %d %s", prefix, i, res.StatusCode, body)
			}
		}
	}
	h.waitCompared("get-c", users)
	h.waitCompared("get-d", users)

	for prefix, service := range map[string]*hitCounter{"/a": newpath, "/b": newpath, "/c": payments, "/d": payments} {
		other := payments
		if service == payments {
			other = newpath
		}
		if got, _ := service.counts(prefix); got != want[prefix] {
			t.Errorf("%s: %s served %d users; want %d (weight %d%% of %d by bucket)", prefix, service.name, got, want[prefix], weights[prefix], users)
		}
		if got, _ := legacy.counts(prefix); got != users-want[prefix] {
			t.Errorf("%s: legacy served %d users; want %d", prefix, got, users-want[prefix])
		}
		if p, s := other.counts(prefix); p+s != 0 {
			t.Errorf("%s: %s got %d calls and %d shadows; want none, the route is not its", prefix, other.name, p, s)
		}
	}
	// Shadows: a legacy-served request is shadowed to the route's own
	// service, a service-served one to legacy.
	if _, got := payments.counts("/c"); got != users-want["/c"] {
		t.Errorf("/c: payments got %d shadows; want %d, one per request legacy served", got, users-want["/c"])
	}
	if _, got := legacy.counts("/c"); got != want["/c"] {
		t.Errorf("/c: legacy got %d shadows; want %d, one per request payments served", got, want["/c"])
	}
	if c := h.comparisons("get-c"); c["match"] != users {
		t.Errorf("get-c comparisons = %v; want %d matches", c, users)
	}

	// The series say which service answered.
	for _, tt := range []struct {
		metric string
		labels map[string]string
		want   float64
	}{
		{"strangler_requests_total", map[string]string{"route": "get-c", "backend": "newpath", "upstream": "payments", "code": "2xx"}, float64(want["/c"])},
		{"strangler_requests_total", map[string]string{"route": "get-c", "backend": "legacy", "upstream": "legacy", "code": "2xx"}, float64(users - want["/c"])},
		{"strangler_requests_total", map[string]string{"route": "get-a", "backend": "newpath", "upstream": "newpath", "code": "2xx"}, float64(want["/a"])},
		{"strangler_request_duration_seconds", map[string]string{"route": "get-d", "backend": "newpath", "upstream": "payments"}, users},
		{"strangler_upstream_request_duration_seconds", map[string]string{"route": "get-c", "backend": "newpath", "upstream": "payments", "role": "primary"}, float64(want["/c"])},
		{"strangler_upstream_request_duration_seconds", map[string]string{"route": "get-c", "backend": "newpath", "upstream": "payments", "role": "shadow"}, float64(users - want["/c"])},
		{"strangler_shadow_requests_total", map[string]string{"route": "get-c", "target": "newpath", "upstream": "payments", "outcome": "sent"}, float64(users - want["/c"])},
		{"strangler_shadow_requests_total", map[string]string{"route": "get-c", "target": "legacy", "upstream": "legacy", "outcome": "sent"}, float64(want["/c"])},
	} {
		if got, ok := h.metric(tt.metric, tt.labels); !ok || got != tt.want {
			t.Errorf("%s%v = %v (exists %v); want %v", tt.metric, tt.labels, got, ok, tt.want)
		}
	}
	for _, route := range []string{"get-c", "get-d"} {
		for _, s := range h.fieldSeries("strangler_requests_total", route) {
			if s["upstream"] == "newpath" {
				t.Errorf("%s has a series of newpath, %v; want only payments and legacy", route, s)
			}
		}
	}

	// A safe request payments cannot answer falls back to legacy, not to
	// newpath.
	payments.mu.Lock()
	payments.fail = "/d/"
	payments.mu.Unlock()
	legacyBefore, _ := legacy.counts("/d")
	res, _ := h.get("/d/1", "X-User-Id", "user-1")
	if res.StatusCode != http.StatusOK || res.Header.Get("X-Served-By") != "legacy" {
		t.Errorf("GET /d/1 with payments failing: %d served by %q; want 200 from legacy", res.StatusCode, res.Header.Get("X-Served-By"))
	}
	if got, _ := legacy.counts("/d"); got != legacyBefore+1 {
		t.Errorf("legacy got %d more /d calls; want 1, the fallback", got-legacyBefore)
	}
	if got, _ := h.metric("strangler_fallbacks_total", map[string]string{"route": "get-d", "reason": "status_503"}); got != 1 {
		t.Errorf("strangler_fallbacks_total{route=get-d,reason=status_503} = %v; want 1", got)
	}
	if p, s := newpath.counts("/d"); p+s != 0 {
		t.Errorf("newpath got %d /d calls and %d shadows; want none", p, s)
	}

	// The admin API names each route's service and every service's health.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { h.proxy.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	eventually(t, 10*time.Second, "payments is probed up", func() bool {
		v, _ := h.metric("strangler_upstream_up", map[string]string{"upstream": "payments"})
		return v == 1
	})
	var routes struct {
		Upstreams map[string]UpstreamHealth `json:"upstreams"`
		Routes    []struct {
			Name string `json:"name"`
			To   string `json:"to"`
		} `json:"routes"`
	}
	h.adminJSON("/admin/routes", &routes)
	var got []string
	for _, r := range routes.Routes {
		got = append(got, r.Name+"→"+r.To)
	}
	if strings.Join(got, " ") != "get-a→newpath get-b→newpath get-c→payments get-d→payments" {
		t.Errorf("/admin/routes to: %v; want get-a and get-b on newpath, get-c and get-d on payments", got)
	}
	for _, name := range []string{"legacy", "newpath", "payments"} {
		if u, ok := routes.Upstreams[name]; !ok || !u.Up || u.URL == "" {
			t.Errorf("/admin/routes upstreams[%q] = %+v (present %v); want up with its URL", name, u, ok)
		}
	}
}

// TestReloadAddsAndRemovesServices: a reload that adds a service and
// points a route at it takes effect; one naming an unknown service is
// refused and the running config keeps serving; one that drops the
// service forgets its series.
func TestReloadAddsAndRemovesServices(t *testing.T) {
	base := `
upstreams:
  legacy: { url: "{{legacy}}" }
  newpath: { url: "{{newpath}}" }
routes:
  - { name: get-c, match: "GET /c/{id}", weight: 100 }
`
	h, _, newpath, payments := newServicesHarness(t, base)
	servedBy := func() string {
		t.Helper()
		res, _ := h.get("/c/1")
		return res.Header.Get("X-Served-By")
	}
	if got := servedBy(); got != "newpath" {
		t.Fatalf("before the reload /c is served by %q; want newpath", got)
	}
	moved := strings.Replace(base, "  newpath: { url: \"{{newpath}}\" }\n",
		"  newpath: { url: \"{{newpath}}\" }\n  payments: { url: \"{{payments}}\" }\n", 1)
	moved = strings.Replace(moved, "weight: 100 }", "weight: 100, to: payments }", 1)
	h.writeConfig(strings.ReplaceAll(moved, "{{payments}}", payments.url))
	if _, ok := h.routeState("get-c").Readiness.P99Seconds["newpath"]; !ok {
		t.Fatal("get-c's window has no newpath latency after newpath served it")
	}
	if err := h.reloader.Reload(); err != nil {
		t.Fatalf("reload adding payments: %v", err)
	}
	// What newpath did says nothing of payments: the window starts afresh.
	if p99, ok := h.routeState("get-c").Readiness.P99Seconds["newpath"]; ok {
		t.Errorf("get-c's window kept newpath's p99 %v after the route moved to payments; want it emptied", p99)
	}
	if got := servedBy(); got != "payments" {
		t.Errorf("after the reload /c is served by %q; want payments", got)
	}
	if v, ok := h.metric("strangler_upstream_up", map[string]string{"upstream": "payments"}); !ok || v != 0 {
		t.Errorf("strangler_upstream_up{upstream=payments} = %v (exists %v); want 0 until probed", v, ok)
	}
	newpathCalls, _ := newpath.counts("/c")

	broken := strings.Replace(moved, "to: payments }", "to: billing }", 1)
	h.writeConfig(strings.ReplaceAll(broken, "{{payments}}", payments.url))
	err := h.reloader.Reload()
	if err == nil || !strings.Contains(err.Error(), `routes[0].to: unknown upstream "billing" (have: newpath, payments)`) {
		t.Errorf("reload with to: billing: %v; want it refused naming routes[0].to", err)
	}
	if got := servedBy(); got != "payments" {
		t.Errorf("after the refused reload /c is served by %q; want payments still", got)
	}
	if got, _ := newpath.counts("/c"); got != newpathCalls {
		t.Errorf("newpath got %d /c calls after the move; want none", got-newpathCalls)
	}

	h.writeConfig(base)
	if err := h.reloader.Reload(); err != nil {
		t.Fatalf("reload dropping payments: %v", err)
	}
	if got := servedBy(); got != "newpath" {
		t.Errorf("after dropping payments /c is served by %q; want newpath", got)
	}
	if _, ok := h.metric("strangler_upstream_up", map[string]string{"upstream": "payments"}); ok {
		t.Error("strangler_upstream_up{upstream=payments} is still exported after payments was removed")
	}
	for _, s := range h.fieldSeries("strangler_requests_total", "get-c") {
		if s["upstream"] == "payments" {
			t.Errorf("get-c still has a series of payments, %v, after it moved back to newpath", s)
		}
	}
}
