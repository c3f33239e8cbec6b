package proxy

import (
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/strangler-proxy/strangler/config"
	"github.com/strangler-proxy/strangler/router"
)

// A burst shorter than the guard's evaluation interval ends on evidence
// that breaks the rule: the ramp's next tick must judge it, not climb
// over it.
func TestGuardJudgesItsLastEvidence(t *testing.T) {
	clock := &fakeClock{t: rampT0}
	b := &rampBackends{}
	h := newClockedHarness(t, clock.Now, b.legacy(), b.newpath(),
		fmt.Sprintf(rampedRoute, "{ steps: [5, 10, 25, 50], every: 1m, require: none }"))
	h.proxy.tickRamps(t.Context(), clock.Now())
	clock.Set(rampT0.Add(30 * time.Second))
	b.failing.Store(true)
	h.feed(12) // all at one instant of the fake clock
	br := h.proxy.state.Load().routes[0]
	e := br.rt.win.sum(clock.Now()).evidence()
	if reason, _ := tripReason(br.cfg.Guard, e); reason == "" {
		t.Fatalf("setup: the window does not break the guard rule: %+v", e)
	}
	clock.Set(rampT0.Add(time.Minute)) // no new answer, well inside the 1m window
	h.proxy.tickRamps(t.Context(), clock.Now())
	if st := h.routeState("get-order"); st.Guard.State != "tripped" || st.EffectiveWeight != 0 {
		t.Errorf("window holds %v errors in %v newpath answers; guard %q, ramp step_index %d, effective weight %v; want tripped at 0",
			e.errors, e.calls, st.Guard.State, st.Ramp.StepIndex, st.EffectiveWeight)
	}
}

// On a quiet route the comparison that breaks the rule comes within the
// evaluation interval of its request's answer: it is judged a moment
// later, without waiting for the next request.
func TestGuardJudgesAThrottledCheckLater(t *testing.T) {
	b := &rampBackends{}
	h := newHarness(t, b.legacy(), b.newpath(), `
sticky: { key: "header:X-User-Id" }
routes:
  - name: get-order
    match: "GET /orders/{id}"
    weight: 50
    guard: { max_error_rate: 0.2, max_divergence_rate: 1, min_samples: 10, window: 1m }
`)
	br := h.proxy.state.Load().routes[0]
	now := time.Now()
	for range 12 {
		br.rt.win.call(now, router.Newpath, time.Millisecond, true)
	}
	br.rt.guard.lastEval.Store(now.UnixNano()) // a check ran a moment ago
	h.proxy.checkGuard(br, now)                // throttled
	eventually(t, 5*time.Second, "the throttled check to trip the guard", br.rt.guard.tripped.Load)
}

// A re-arm empties the window before the guard reads as armed: a check
// that read the old evidence cannot trip it again at once.
func TestRearmIsNotUndoneByOldEvidence(t *testing.T) {
	var hook atomic.Pointer[func()]
	now := func() time.Time {
		if f := hook.Swap(nil); f != nil {
			(*f)()
		}
		return time.Now()
	}
	b := &rampBackends{}
	h := newClockedHarness(t, now, b.legacy(), b.newpath(), `
sticky: { key: "header:X-User-Id" }
routes:
  - name: get-order
    match: "GET /orders/{id}"
    weight: 50
    shadow: { percent: 100 }
    guard: { max_error_rate: 0.2, max_divergence_rate: 1, min_samples: 10, window: 1m }
`)
	b.failing.Store(true)
	br := h.proxy.state.Load().routes[0]
	eventually(t, 10*time.Second, "guard trips", func() bool {
		h.feed(12)
		return br.rt.guard.tripped.Load()
	})
	b.failing.Store(false)
	h.proxy.shadows.Wait()
	checked := make(chan struct{})
	f := func() { // runs inside rearm, when it reads the clock
		go func() {
			h.proxy.checkGuard(br, time.Now().Add(time.Second))
			close(checked)
		}()
		// The check either returns (it found the guard still tripped),
		// or blocks on the guard's lock, which rearm holds, to trip.
		select {
		case <-checked:
		case <-time.After(2 * time.Second):
		}
	}
	hook.Store(&f)
	h.proxy.mu.Lock()
	h.proxy.rearm(br, "admin", false) // as serveRearm does
	h.proxy.mu.Unlock()
	<-checked
	if st := h.routeState("get-order"); st.Guard.State != "armed" || st.EffectiveWeight != 50 {
		t.Errorf("right after the re-arm, with no new evidence: guard %+v, effective %v; want armed at 50", st.Guard, st.EffectiveWeight)
	}
}

// A trip racing the reload that removes its route leaves none of the
// route's series behind: a guard_tripped 1 kept forever is an alert that
// never resolves.
func TestTripRacingRouteRemovalLeavesNoSeries(t *testing.T) {
	const keep = `
upstreams:
  legacy: { url: "http://127.0.0.1:9001" }
  newpath: { url: "http://127.0.0.1:9002" }
routes:
  - name: keep
    match: "GET /keep"
`
	parse := func(y string) *config.Snapshot {
		cfg, err := config.Parse([]byte(y))
		if err != nil {
			t.Fatal(err)
		}
		return &config.Snapshot{Config: cfg}
	}
	two := parse(keep + `
  - name: gone
    match: "GET /orders/{id}"
    weight: 50
    guard: { min_samples: 1 }
`)
	one := parse(keep)
	pv, err := Provision(one.Config)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 500 {
		reg := prometheus.NewRegistry()
		p, err := New(two, Options{Registerer: reg, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		br := p.state.Load().routes[1]
		start, tripped := make(chan struct{}), make(chan struct{})
		go func() {
			<-start
			p.trip(br, time.Now(), 0, config.GuardSourceLocal, tripErrorRate, "")
			close(tripped)
		}()
		close(start)
		p.activate(one, pv)
		<-tripped
		families, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range families {
			for _, m := range f.GetMetric() {
				for _, lp := range m.GetLabel() {
					if lp.GetName() == "route" && lp.GetValue() == "gone" {
						t.Fatalf("iteration %d: after the reload that removed route gone, %s{route=\"gone\"} exists", i, f.GetName())
					}
				}
			}
		}
	}
}

// SPEC §7's "≤ legacy + 0.01" holds at the boundary, float64 or not.
func TestReadinessErrorMarginIsInclusive(t *testing.T) {
	rc := &config.Route{Name: "r"}
	var c windowCounts
	c.calls[router.Legacy], c.errors[router.Legacy] = 100, 6
	c.calls[router.Newpath], c.errors[router.Newpath] = 100, 7
	c.latency[router.Legacy][0], c.latency[router.Newpath][0] = 100, 100
	c.compared = 100
	if r := readiness(rc, c, nil); r.Verdict != "ready" {
		t.Errorf("legacy 6%% errors, newpath 7%% (= legacy + 0.01): %s %v; want ready", r.Verdict, r.Reasons)
	}
	c.errors[router.Newpath] = 8
	if r := readiness(rc, c, nil); r.Verdict == "ready" {
		t.Errorf("legacy 6%% errors, newpath 8%%: ready; want not_ready")
	}
}

// A reload that gives a tripped route a ramp exports the ramp paused at
// once, as /admin/routes shows it.
func TestRampAddedToATrippedRouteExportsItsPause(t *testing.T) {
	const route = `
routes:
  - name: get-order
    match: "GET /orders/{id}"
    weight: 40
    shadow: { percent: 100 }
    guard: { min_samples: 10, window: 1m }
`
	h := newHarness(t, nil, nil, route)
	br := h.proxy.state.Load().routes[0]
	h.proxy.trip(br, time.Now(), br.rt.guard.rearms.Load(), config.GuardSourceLocal, tripErrorRate, "test")
	h.writeConfig(route + "    ramp: { steps: [5, 10], every: 1m }\n")
	if err := h.reloader.Reload(); err != nil {
		t.Fatal(err)
	}
	st := h.routeState("get-order")
	if st.Guard.State != "tripped" || st.Ramp == nil || !strings.HasPrefix(st.Ramp.Reason, rampGuardTripped) {
		t.Fatalf("setup: guard %+v ramp %+v", st.Guard, st.Ramp)
	}
	paused, _ := h.metric("strangler_ramp_paused", map[string]string{"route": "get-order", "reason": rampGuardTripped})
	step, _ := h.metric("strangler_ramp_step", map[string]string{"route": "get-order"})
	if paused != 1 || step != 1 {
		t.Errorf("/admin/routes: step_index %d paused %q; metrics: strangler_ramp_step %v, strangler_ramp_paused{guard_tripped} %v; want 1 and 1",
			st.Ramp.StepIndex, st.Ramp.Reason, step, paused)
	}
}

// sumSeries adds up the series of name whose labels keep selects: what
// sum(increase(...)) reads over a window that holds a fresh process's
// whole life.
func (h *harness) sumSeries(name string, keep func(map[string]string) bool) float64 {
	total := 0.0
	h.eachSeries(name, func(labels map[string]string, m *dto.Metric) {
		switch {
		case !keep(labels):
		case m.Counter != nil:
			total += m.Counter.GetValue()
		case m.Histogram != nil:
			total += float64(m.Histogram.GetSampleCount())
		}
	})
	return total
}

// The Prometheus guard trips on the local guard's rule, so its query's
// terms must count what the local window counts: here a newpath that
// answers every shadow 500, at weight 0.
func TestPrometheusGuardCountsWhatTheWindowCounts(t *testing.T) {
	b := &rampBackends{}
	b.failing.Store(true)
	h := newHarness(t, b.legacy(), b.newpath(), `
sticky: { key: "header:X-User-Id" }
routes:
  - name: get-order
    match: "GET /orders/{id}"
    weight: 0
    shadow: { percent: 100 }
    guard:
      max_error_rate: 0.1
      max_divergence_rate: 1
      min_samples: 20
      window: 90s
      source: prometheus
      prometheus_url: "http://127.0.0.1:1"
`)
	h.feed(40)
	h.proxy.shadows.Wait()
	br := h.proxy.state.Load().routes[0]
	local := br.rt.win.sum(time.Now()).evidence()
	newpath := func(l map[string]string) bool { return l["route"] == "get-order" && l["backend"] == "newpath" }
	prom := guardEvidence{
		calls:  h.sumSeries("strangler_upstream_request_duration_seconds", newpath),
		errors: h.sumSeries("strangler_upstream_errors_total", newpath),
	}
	if local.calls != 40 || local.calls != prom.calls || local.errors != prom.errors {
		t.Errorf("local window: %v errors in %v newpath calls; the guard query's terms over the same traffic: %v errors in %v; want 40 in 40 both",
			local.errors, local.calls, prom.errors, prom.calls)
	}
}

// A ramp tick judges the guard on the limits in force, not on those of the
// config its round began with.
func TestRampTickJudgesTheGuardOnTheLimitsInForce(t *testing.T) {
	clock := &fakeClock{t: rampT0}
	b := &rampBackends{}
	const route = `
sticky: { key: "header:X-User-Id" }
routes:
  - name: get-order
    match: "GET /orders/{id}"
    weight: 50
    shadow: { percent: 100 }
    ramp: { steps: [5, 10, 25, 50], every: 1m, require: none }
    guard: { max_error_rate: %s, max_divergence_rate: 1, min_samples: 10, window: 1m }
`
	h := newClockedHarness(t, clock.Now, b.legacy(), b.newpath(), fmt.Sprintf(route, "0.2"))
	old := h.proxy.state.Load().routes[0]
	for range 12 {
		old.rt.win.call(clock.Now(), router.Newpath, time.Millisecond, true)
	}
	h.writeConfig(fmt.Sprintf(route, "1")) // a rate that never trips
	if err := h.reloader.Reload(); err != nil {
		t.Fatal(err)
	}
	h.proxy.tickRamp(t.Context(), old, clock.Now())
	if st := h.routeState("get-order"); st.Guard.State != "armed" {
		t.Errorf("after a reload to max_error_rate: 1, a tick of the old round: guard %+v; want armed", st.Guard)
	}
}
