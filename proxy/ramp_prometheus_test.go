package proxy

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/strangler-proxy/strangler/router"
)

// readySignals is the answer of readinessQuery for a route that is ready
// on min_samples 10: 40 comparisons without a mismatch, both backends
// answering within 25 ms (the 0.025 bucket), newpath's errors at 0.
func readySignals(mismatches int) []string {
	out := []string{"compared", "40", "mismatches", strconv.Itoa(mismatches), "noise", "0"}
	for _, b := range []string{"legacy", "newpath"} {
		out = append(out, "calls_"+b, "40", "errors_"+b, "0")
		for _, le := range durationBuckets {
			n := "0"
			if le >= 0.025 {
				n = "40"
			}
			out = append(out, "lat_"+b+"_"+strconv.FormatFloat(le, 'g', -1, 64), n)
		}
		out = append(out, "lat_"+b+"_+Inf", "40")
	}
	return out
}

func TestCountsFromSignalsAreTheWindowsCounts(t *testing.T) {
	got := countsFromSignals(map[string]float64{
		"compared": 40.4, "mismatches": 2, "noise": 3,
		"calls_legacy": 41, "errors_legacy": 1, "calls_newpath": 39.6, "errors_newpath": 0,
		"lat_newpath_0.005": 10, "lat_newpath_0.01": 30, "lat_newpath_0.025": 30, "lat_newpath_10": 39, "lat_newpath_+Inf": 40,
	})
	var want windowCounts
	want.compared, want.mismatch, want.noiseOnly = 40, 2, 3
	want.calls[router.Legacy], want.errors[router.Legacy], want.calls[router.Newpath] = 41, 1, 40
	want.latency[router.Newpath][latencyBucket(0.005)] = 10
	want.latency[router.Newpath][latencyBucket(0.01)] = 20
	want.latency[router.Newpath][latencyBucket(10)] = 9
	want.latency[router.Newpath][len(durationBuckets)] = 1
	if got != want {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
}

// TestRampReadsReadinessFromPrometheusAtTheTick: with guard.source
// prometheus a ramp asks Prometheus about each tick at the tick's own
// instant, once prometheus_interval has passed; a failed query is no
// answer, so the tick waits (paused prometheus_unavailable) and is asked
// about again, at the same instant, until Prometheus answers.
func TestRampReadsReadinessFromPrometheusAtTheTick(t *testing.T) {
	var mu sync.Mutex
	var times []string
	prom := newFakePrometheus(t, answerWith(http.StatusOK, promVector(readySignals(0)...)))
	record := func(next http.HandlerFunc) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			times = append(times, r.PostForm.Get("time"))
			mu.Unlock()
			next(w, r)
		}
	}
	prom.setAnswer(record(answerWith(http.StatusOK, promVector(readySignals(0)...))))
	clock := &fakeClock{t: rampT0} // on a tick: the origin
	h := newClockedHarness(t, clock.Now, nil, nil, fmt.Sprintf(`
routes:
  - name: get-order
    match: "GET /orders/{id}"
    weight: 50
    guard: { min_samples: 10, window: 1m, source: prometheus, prometheus_url: %q, prometheus_interval: 5s }
    ramp: { steps: [5, 10, 25], every: 1m }
`, prom.URL+"/prom"))
	tick := func(at time.Duration) {
		clock.Set(rampT0.Add(at))
		h.proxy.tickRamps(t.Context(), clock.Now())
	}
	asked := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), times...)
	}
	tick(time.Minute + 2*time.Second) // the tick's scrapes may not be in yet
	if n := len(asked()); n != 0 {
		t.Errorf("asked %d times before prometheus_interval passed; want 0", n)
	}
	h.rampAt("before the tick settles", 0, 5, "")
	tick(time.Minute + 5*time.Second)
	h.rampAt("ready at 10:01", 1, 10, "")
	if got, want := asked(), []string{strconv.FormatInt(rampT0.Add(time.Minute).Unix(), 10) + ".000"}; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("asked at %v; want the tick's instant %v", got, want)
	}
	if q := prom.received()[0]; !strings.Contains(q, `strangler_comparisons_total{route="get-order",result=~"match|mismatch|noise"}[60000ms]`) {
		t.Errorf("query %s; want the route's comparisons over its window", q)
	}

	// A field undecided on some replica holds the fleet back.
	prom.setAnswer(record(answerWith(http.StatusOK, promVector(append(readySignals(0), "undecided", "2")...))))
	tick(2*time.Minute + 5*time.Second)
	h.rampAt("undecided across the fleet", 1, 10, rampNotReady)
	if r := h.routeState("get-order").Ramp.Reason; !strings.Contains(r, "verdicts still undecided: 2 field verdicts across the replicas") {
		t.Errorf("reason %q; want the undecided verdicts", r)
	}
	mu.Lock()
	times = times[:1] // the tick of 10:02 is judged; the rest of the test asks about later ones
	mu.Unlock()

	// Prometheus is down: the tick of 10:03 waits, paused.
	prom.setAnswer(record(answerWith(http.StatusServiceUnavailable, `{"status":"error","errorType":"unavailable","error":"down"}`)))
	tick(3*time.Minute + 10*time.Second)
	h.rampAt("prometheus down", 1, 10, rampPrometheusUnavailable)
	tick(3*time.Minute + 20*time.Second)
	h.rampAt("still down", 1, 10, rampPrometheusUnavailable)
	// Back, and the fleet's mismatch rate is above 0.05: not ready. The
	// waiting tick and the next are judged, each at its own instant.
	prom.setAnswer(record(answerWith(http.StatusOK, promVector(readySignals(10)...))))
	tick(4*time.Minute + 5*time.Second)
	h.rampAt("not ready by prometheus", 1, 10, rampNotReady)
	if r := h.routeState("get-order").Ramp.Reason; !strings.Contains(r, "real mismatch rate 0.2500 > 0.05") {
		t.Errorf("reason %q; want the fleet's mismatch rate", r)
	}
	got := asked()
	want3, want4 := strconv.FormatInt(rampT0.Add(3*time.Minute).Unix(), 10)+".000", strconv.FormatInt(rampT0.Add(4*time.Minute).Unix(), 10)+".000"
	if n := len(got); n != 5 || got[1] != want3 || got[2] != want3 || got[3] != want3 || got[4] != want4 {
		t.Errorf("asked at %v; want 10:01, then 10:03 three times, then 10:04", got)
	}
}

// TestRampAcrossReplicasFromARealPrometheus: two replicas whose ramps read
// readiness from a real Prometheus climb together, tick by tick, on
// traffic that makes the route ready only summed across them: each alone
// has fewer comparisons than min_samples.
func TestRampAcrossReplicasFromARealPrometheus(t *testing.T) {
	prom := startPrometheus(t)
	const every = 2 * time.Second
	yaml := `
sticky: { key: "header:X-User-Id" }
routes:
  - name: get-order
    match: "GET /orders/{id}"
    weight: 50
    shadow: { percent: 100 }
    guard:
      max_error_rate: 0.5
      max_divergence_rate: 0.5
      min_samples: 20
      window: 1m
      source: prometheus
      prometheus_url: %q
      prometheus_matchers: 'job="strangler-test"'
      prometheus_interval: 1500ms
`
	yaml = fmt.Sprintf(yaml, prom.url.String())
	var replicas [2]*harness
	var admins [2]*httptest.Server
	for i := range replicas {
		b := &rampBackends{}
		h := newHarness(t, b.legacy(), b.newpath(), yaml)
		admins[i] = httptest.NewServer(h.proxy.AdminHandler(AdminOptions{Gatherer: h.reg, Config: h.reloader}))
		t.Cleanup(admins[i].Close)
		replicas[i] = h
	}
	prom.scrape(t, admins[:]...)
	// Scrapes before the traffic: increase() needs a sample before it.
	eventually(t, 20*time.Second, "three scrapes of both replicas", func() bool {
		return prom.value(`count(count_over_time(up{job="strangler-test"}[1m]) >= 3)`) == 2
	})
	for _, h := range replicas {
		h.feed(12)
	}
	eventually(t, 20*time.Second, "both replicas' comparisons in prometheus", func() bool {
		return prom.value(`sum(strangler_comparisons_total{job="strangler-test",route="get-order",result="match"})`) == 24
	})
	// The ramp arrives by a reload of both, starting a little later.
	start := time.Now().Truncate(time.Second).Add(3 * time.Second)
	for _, h := range replicas {
		h.writeConfig(yaml + fmt.Sprintf("    ramp: { steps: [5, 10, 25, 50], every: %s, start: %q }\n", every, start.UTC().Format(time.RFC3339)))
		if err := h.reloader.Reload(); err != nil {
			t.Fatal(err)
		}
	}
	for i, h := range replicas {
		if v := h.routeState("get-order").Readiness.Verdict; v != "insufficient_data" {
			t.Fatalf("replica %d alone is %s; the test needs each below min_samples", i, v)
		}
	}
	// Each round judges both replicas at one instant: they must agree
	// at every round, and climb to the last step as the ticks settle.
	rounds := 0
	eventually(t, 30*time.Second, "the fleet's ramp on its last step", func() bool {
		now := time.Now()
		var got [2]string
		for i, h := range replicas {
			h.proxy.tickRamps(t.Context(), now)
			// Read at now too: /admin/routes would read the wall clock.
			st := h.proxy.state.Load().routes[0].rampView(now)
			got[i] = fmt.Sprintf("step %d paused %v %s", st.StepIndex, st.Paused, st.Reason)
		}
		rounds++
		if got[0] != got[1] {
			t.Fatalf("at %s: the replicas disagree: %q and %q", now.Format(time.StampMilli), got[0], got[1])
		}
		if strings.Contains(got[0], "paused true") && !strings.Contains(got[0], rampNotStarted) {
			t.Fatalf("at %s: %q; want no pause: the fleet is ready", now.Format(time.StampMilli), got[0])
		}
		return got[0] == "step 3 paused false "
	})
	t.Logf("%d rounds", rounds)
	for i, h := range replicas {
		if st := h.routeState("get-order"); st.EffectiveWeight != 50 || !st.Ramp.Complete {
			t.Errorf("replica %d: effective %v, complete %v; want 50 and complete", i, st.EffectiveWeight, st.Ramp.Complete)
		}
	}
}

// Prometheus 3 stores le as "1.0", "5.0", "10.0" (and so does any
// Prometheus scraping OpenMetrics): the buckets are found by value.
func TestReadinessReadsPrometheus3Buckets(t *testing.T) {
	signals := map[string]float64{"compared": 100}
	for _, b := range []string{"legacy", "newpath"} {
		signals["calls_"+b] = 100
		for _, le := range []string{"0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5"} {
			signals["lat_"+b+"_"+le] = 0
		}
		for _, le := range []string{"1.0", "2.5", "5.0", "10.0", "+Inf"} {
			signals["lat_"+b+"_"+le] = 100
		}
	}
	c := countsFromSignals(signals)
	if p := c.p99(router.Legacy); p > 1 {
		t.Errorf("legacy p99 %.3fs from buckets that put every answer at or under 1s", p)
	}
}
