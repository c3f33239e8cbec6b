package proxy

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// readyz is /readyz's status and decoded body.
type readyz struct {
	Status    string                    `json:"status"`
	Reason    string                    `json:"reason"`
	Upstreams map[string]UpstreamHealth `json:"upstreams"`
}

// getReadyz asks admin, the admin listener's URL, for /readyz.
func getReadyz(t *testing.T, admin string) (int, readyz) {
	t.Helper()
	res, err := http.Get(admin + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var body readyz
	if err := json.NewDecoder(res.Body).Decode(&body); err != nil {
		t.Fatalf("/readyz: %v", err)
	}
	return res.StatusCode, body
}

// TestReadinessFollowsLegacyOnly: a newpath outage leaves the proxy ready
// (legacy and fallback serve everything) and shows in strangler_upstream_up
// and /admin/routes; a legacy outage makes it unready.
func TestReadinessFollowsLegacyOnly(t *testing.T) {
	h := newHarness(t, nil, nil, `
routes:
  - { name: get-order, match: "GET /orders/{id}", weight: 100 }
`)
	admin := httptest.NewServer(h.proxy.AdminHandler(AdminOptions{Gatherer: h.reg, Config: h.reloader}))
	defer admin.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { h.proxy.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	up := func(upstream string) float64 {
		v, ok := h.metric("strangler_upstream_up", map[string]string{"upstream": upstream})
		if !ok {
			t.Fatalf("no strangler_upstream_up{upstream=%q}", upstream)
		}
		return v
	}
	eventually(t, 10*time.Second, "both upstreams are probed up", func() bool { return up("legacy") == 1 && up("newpath") == 1 })
	if code, body := getReadyz(t, admin.URL); code != http.StatusOK || body.Status != "ready" {
		t.Fatalf("/readyz with both up: %d %+v; want 200 ready", code, body)
	}

	h.newpath.Close()
	eventually(t, 10*time.Second, "newpath is probed down", func() bool { return up("newpath") == 0 })
	code, body := getReadyz(t, admin.URL)
	if code != http.StatusOK || body.Status != "ready" {
		t.Errorf("/readyz with newpath down: %d %+v; want 200 ready", code, body)
	}
	if nb := body.Upstreams["newpath"]; nb.Up || nb.Error == "" {
		t.Errorf("/readyz reports newpath as %+v; want down with its error", nb)
	}
	var routes struct {
		Upstreams map[string]UpstreamHealth `json:"upstreams"`
	}
	h.adminJSON("/admin/routes", &routes)
	if nb := routes.Upstreams["newpath"]; nb.Up || !strings.Contains(nb.Error, "refused") || nb.CheckedAt.IsZero() {
		t.Errorf("/admin/routes reports newpath as %+v; want down, connection refused", nb)
	}
	if lb := routes.Upstreams["legacy"]; !lb.Up {
		t.Errorf("/admin/routes reports legacy as %+v; want up", lb)
	}
	// A safe request assigned to newpath falls back.
	res, text := h.get("/orders/ord_1")
	if res.StatusCode != http.StatusOK || res.Header.Get("X-Served-By") != "legacy" {
		t.Errorf("GET with newpath down: %d from %q (%q); want 200 from legacy", res.StatusCode, res.Header.Get("X-Served-By"), text)
	}
	if v, _ := h.metric("strangler_fallbacks_total", map[string]string{"route": "get-order", "reason": "connect_error"}); v != 1 {
		t.Errorf("fallbacks by connect_error = %v; want 1", v)
	}

	// A replica that is shutting down is unready, whatever its upstreams.
	stopping := make(chan struct{})
	close(stopping)
	draining := httptest.NewServer(h.proxy.AdminHandler(AdminOptions{Gatherer: h.reg, Config: h.reloader, Stopping: stopping}))
	defer draining.Close()
	if code, body := getReadyz(t, draining.URL); code != http.StatusServiceUnavailable || !strings.Contains(body.Reason, "shutting down") {
		t.Errorf("/readyz while stopping: %d %+v; want 503 shutting down", code, body)
	}

	h.legacy.Close()
	eventually(t, 10*time.Second, "legacy is probed down", func() bool { return up("legacy") == 0 })
	code, body = getReadyz(t, admin.URL)
	if code != http.StatusServiceUnavailable || body.Status != "unavailable" || !strings.Contains(body.Reason, "legacy is unreachable") {
		t.Errorf("/readyz with legacy down: %d %+v; want 503 naming legacy", code, body)
	}
}
