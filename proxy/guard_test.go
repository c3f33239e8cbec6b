package proxy

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// flakyNewpath answers 500 to every tenth request once failing is set, and
// counts the requests it got as primary (without X-Strangler-Shadow).
type flakyNewpath struct {
	failing atomic.Bool
	n       atomic.Int64
	primary atomic.Int64
}

func (f *flakyNewpath) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("X-Strangler-Shadow") == "" {
		f.primary.Add(1)
	}
	w.Header().Set("X-Served-By", "newpath")
	if f.failing.Load() && f.n.Add(1)%10 == 0 {
		http.Error(w, `{"error":"boom"}`, http.StatusInternalServerError)
		return
	}
	io.WriteString(w, `{"id":1}`)
}

// guardedRoute guards on newpath's error rate. Each of flakyNewpath's 500s
// is also a mismatch (/status differs), and the comparisons of a moment
// lag its answers, so with equal limits the mismatch rate may cross first:
// its limit is set out of reach, and the trip's reason is error_rate.
const guardedRoute = `
sticky: { key: "header:X-User-Id" }
routes:
  - name: get-order
    match: "GET /orders/{id}"
    weight: %s
    shadow: { percent: 100 }
    guard: { max_error_rate: 0.05, max_divergence_rate: 0.5, min_samples: 50, window: 1m }
`

func (h *harness) routeState(name string) routeView {
	h.t.Helper()
	var routes struct{ Routes []routeView }
	h.adminJSON("/admin/routes", &routes)
	for _, r := range routes.Routes {
		if r.Name == name {
			return r
		}
	}
	h.t.Fatalf("no route %s in /admin/routes", name)
	return routeView{}
}

func (h *harness) adminPost(path, token string) (int, string) {
	h.t.Helper()
	admin := h.proxy.AdminHandler(AdminOptions{Gatherer: h.reg, Config: h.reloader})
	req := httptest.NewRequest("POST", path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	rec := httptest.NewRecorder()
	admin.ServeHTTP(rec, req)
	return rec.Code, rec.Body.String()
}

func TestGuardTripsOnNewpathErrorsAndRearms(t *testing.T) {
	t.Setenv("STRANGLER_ADMIN_TOKEN", "s3cret")
	newpath := &flakyNewpath{}
	legacy := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, `{"id":1}`) })
	h := newHarness(t, legacy, newpath, fmt.Sprintf(guardedRoute, "50"))
	sendOrders(t, h, 100)
	if st := h.routeState("get-order"); st.Guard.State != "armed" || st.EffectiveWeight != 50 {
		t.Fatalf("healthy newpath: guard %+v effective %v; want armed at 50", st.Guard, st.EffectiveWeight)
	}

	newpath.failing.Store(true)
	eventually(t, 20*time.Second, "guard trips", func() bool {
		sendOrders(t, h, 20)
		return h.routeState("get-order").Guard.State == "tripped"
	})
	st := h.routeState("get-order")
	if st.EffectiveWeight != 0 || st.Guard.Reason != "error_rate" {
		t.Errorf("after trip: effective %v reason %q; want 0 and error_rate", st.EffectiveWeight, st.Guard.Reason)
	}
	if v, _ := h.metric("strangler_guard_tripped", map[string]string{"route": "get-order"}); v != 1 {
		t.Errorf("strangler_guard_tripped = %v; want 1", v)
	}
	if v, _ := h.metric("strangler_guard_trips_total", map[string]string{"route": "get-order", "reason": "error_rate"}); v != 1 {
		t.Errorf(`strangler_guard_trips_total{reason="error_rate"} = %v; want 1`, v)
	}
	if !strings.Contains(h.logs.String(), `"level":"ERROR","msg":"guard tripped`) {
		t.Error("no error-level log line for the trip")
	}

	h.proxy.shadows.Wait()
	primaryBefore := newpath.primary.Load()
	comparedBefore := h.routeState("get-order").Comparisons
	sendOrders(t, h, 200)
	h.proxy.shadows.Wait()
	if n := newpath.primary.Load() - primaryBefore; n != 0 {
		t.Errorf("newpath served %d client requests after the trip; want 0", n)
	}
	after := h.routeState("get-order").Comparisons
	if after.Match+after.Mismatch+after.Error <= comparedBefore.Match+comparedBefore.Mismatch+comparedBefore.Error {
		t.Error("comparisons stopped after the trip; shadowing must go on")
	}

	// Re-arm by the admin endpoint.
	newpath.failing.Store(false)
	if code, body := h.adminPost("/admin/routes/get-order/rearm", "s3cret"); code != http.StatusOK {
		t.Fatalf("rearm: %d %s", code, body)
	}
	if st := h.routeState("get-order"); st.Guard.State != "armed" || st.EffectiveWeight != 50 {
		t.Errorf("after admin rearm: guard %+v effective %v; want armed at 50", st.Guard, st.EffectiveWeight)
	}

	// Trip again, then re-arm from the YAML by changing the weight.
	newpath.failing.Store(true)
	eventually(t, 20*time.Second, "guard trips again", func() bool {
		sendOrders(t, h, 20)
		return h.routeState("get-order").Guard.State == "tripped"
	})
	newpath.failing.Store(false)
	h.writeConfig(fmt.Sprintf(guardedRoute, "40"))
	if err := h.reloader.Reload(); err != nil {
		t.Fatal(err)
	}
	if st := h.routeState("get-order"); st.Guard.State != "armed" || st.EffectiveWeight != 40 {
		t.Errorf("after a weight edit: guard %+v effective %v; want armed at 40", st.Guard, st.EffectiveWeight)
	}
	// A reload that leaves the weight alone does not re-arm.
	newpath.failing.Store(true)
	eventually(t, 20*time.Second, "guard trips a third time", func() bool {
		sendOrders(t, h, 20)
		return h.routeState("get-order").Guard.State == "tripped"
	})
	h.writeConfig(fmt.Sprintf(guardedRoute, "40") + "log: { level: debug }\n")
	if err := h.reloader.Reload(); err != nil {
		t.Fatal(err)
	}
	if st := h.routeState("get-order"); st.Guard.State != "tripped" || st.EffectiveWeight != 0 {
		t.Errorf("after an unrelated reload: guard %+v effective %v; want still tripped at 0", st.Guard, st.EffectiveWeight)
	}
}

func TestGuardOnDivergence(t *testing.T) {
	body := func(total int) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, `{"total_cents":%d,"request_uuid":%q}`, total, randomHex())
		}
	}
	tests := []struct {
		name     string
		newpath  http.HandlerFunc
		requests int
		noise    int
		want     string
	}{
		{"real divergence trips", body(999), 120, 20, "tripped"},
		{"noise does not trip", body(1000), 300, 50, "armed"},
		{"below min_samples nothing trips", body(999), 30, 20, "armed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, body(1000), tt.newpath, fmt.Sprintf(`
routes:
  - name: get-order
    match: "GET /orders/{id}"
    weight: 0
    shadow: { percent: 100 }
    compare: { noise_percent: %d }
    guard: { max_error_rate: 0.5, max_divergence_rate: 0.05, min_samples: 50, window: 1m }
`, tt.noise))
			sendOrders(t, h, tt.requests)
			h.waitCompared("get-order", tt.requests)
			h.proxy.checkGuard(h.proxy.state.Load().routes[0], time.Now().Add(time.Second)) // evaluate now
			if got := h.routeState("get-order").Guard.State; got != tt.want {
				t.Errorf("guard %s; want %s (comparisons %+v)", got, tt.want, h.routeState("get-order").Comparisons)
			}
		})
	}
}

func TestReadinessVerdicts(t *testing.T) {
	order := func(delay time.Duration, total int) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			time.Sleep(delay) // the backend's own latency, not a test wait
			fmt.Fprintf(w, `{"total_cents":%d}`, total)
		}
	}
	// Each route's path picks the behaviour it is judged on. A loaded
	// machine only ever adds latency (seen: 200 ms under the race
	// detector), so each latency verdict leans away from the jitter: on
	// parity legacy takes 300 ms and newpath nothing, so newpath's p99
	// would need 2% of its answers to take over 450 ms to fail; on slow
	// newpath takes a second and legacy nothing, so legacy's p99 would
	// need to reach 667 ms to pass it.
	legacy := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/parity/") {
			order(300*time.Millisecond, 1000)(w, r)
			return
		}
		order(0, 1000)(w, r)
	})
	newpath := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasPrefix(r.URL.Path, "/diverging/"):
			order(0, 999)(w, r)
		case strings.HasPrefix(r.URL.Path, "/slow/"):
			order(time.Second, 1000)(w, r)
		default:
			order(0, 1000)(w, r)
		}
	})
	h := newHarness(t, legacy, newpath, `
shadow: { max_in_flight: 1000 }
routes:
  - { name: quiet, match: "GET /quiet/{id}", shadow: { percent: 100 } }
  - { name: parity, match: "GET /parity/{id}", shadow: { percent: 100 } }
  - { name: diverging, match: "GET /diverging/{id}", shadow: { percent: 100 } }
  - { name: slow, match: "GET /slow/{id}", shadow: { percent: 100 } }
`)
	for _, route := range []string{"quiet", "parity", "diverging", "slow"} {
		n := 150
		if route == "quiet" {
			n = 10
		}
		// Clients wait for legacy only: the newpath shadows run meanwhile.
		const clients = 16
		var wg sync.WaitGroup
		for c := 0; c < clients; c++ {
			wg.Go(func() {
				for i := c; i < n; i += clients {
					h.get(fmt.Sprintf("/%s/%d", route, i))
				}
			})
		}
		wg.Wait()
		h.waitCompared(route, n)
	}
	want := map[string]string{"quiet": "insufficient_data", "parity": "ready", "diverging": "not_ready", "slow": "not_ready"}
	reason := map[string]string{"diverging": "real mismatch rate", "slow": "newpath p99"}
	for route, verdict := range want {
		r := h.routeState(route).Readiness
		if r.Verdict != verdict {
			t.Errorf("%s: verdict %s (%v, p99 %v); want %s", route, r.Verdict, r.Reasons, r.P99Seconds, verdict)
		}
		if reason[route] != "" && (len(r.Reasons) == 0 || !strings.Contains(strings.Join(r.Reasons, ";"), reason[route])) {
			t.Errorf("%s: reasons %v; want one about %s", route, r.Reasons, reason[route])
		}
		v, _ := h.metric("strangler_route_ready", map[string]string{"route": route})
		if (v == 1) != (verdict == "ready") {
			t.Errorf("strangler_route_ready{route=%q} = %v; want %v", route, v, verdict == "ready")
		}
	}
}

func TestAdminMutationsNeedTheToken(t *testing.T) {
	h := newHarness(t, nil, nil, fmt.Sprintf(guardedRoute, "50"))
	t.Setenv("STRANGLER_ADMIN_TOKEN", "")
	code, body := h.adminPost("/admin/routes/get-order/rearm", "anything")
	if code != http.StatusForbidden || !strings.Contains(body, "STRANGLER_ADMIN_TOKEN") {
		t.Errorf("no token configured: %d %s; want 403 saying how to configure one", code, body)
	}
	t.Setenv("STRANGLER_ADMIN_TOKEN", "right")
	for _, tok := range []string{"", "wrong", "righ", "right "} {
		if code, body := h.adminPost("/admin/routes/get-order/rearm", tok); code != http.StatusUnauthorized {
			t.Errorf("token %q: %d %s; want 401", tok, code, body)
		}
	}
	if code, body := h.adminPost("/admin/routes/get-order/rearm", "right"); code != http.StatusOK {
		t.Errorf("right token: %d %s; want 200", code, body)
	}
	if code, _ := h.adminPost("/admin/routes/nope/rearm", "right"); code != http.StatusNotFound {
		t.Errorf("unknown route: %d; want 404", code)
	}
}
