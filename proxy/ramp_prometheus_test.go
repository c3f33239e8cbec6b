package proxy

import (
	"fmt"
	"net/http"
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
			out = append(out, "lat_"+b+"_"+formatLe(le), n)
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
	clock := &fakeClock{t: rampT0.Add(10 * time.Second)}
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

	// Prometheus is down: the tick of 10:02 waits, paused.
	prom.setAnswer(record(answerWith(http.StatusServiceUnavailable, `{"status":"error","errorType":"unavailable","error":"down"}`)))
	tick(2*time.Minute + 10*time.Second)
	h.rampAt("prometheus down", 1, 10, rampPrometheusUnavailable)
	tick(2*time.Minute + 20*time.Second)
	h.rampAt("still down", 1, 10, rampPrometheusUnavailable)
	// Back, and the fleet's mismatch rate is above 0.05: not ready. The
	// waiting tick and the next are judged, each at its own instant.
	prom.setAnswer(record(answerWith(http.StatusOK, promVector(readySignals(10)...))))
	tick(3*time.Minute + 5*time.Second)
	h.rampAt("not ready by prometheus", 1, 10, rampNotReady)
	if r := h.routeState("get-order").Ramp.Reason; !strings.Contains(r, "real mismatch rate 0.2500 > 0.05") {
		t.Errorf("reason %q; want the fleet's mismatch rate", r)
	}
	got := asked()
	want2, want3 := strconv.FormatInt(rampT0.Add(2*time.Minute).Unix(), 10)+".000", strconv.FormatInt(rampT0.Add(3*time.Minute).Unix(), 10)+".000"
	if n := len(got); n != 5 || got[1] != want2 || got[2] != want2 || got[3] != want2 || got[4] != want3 {
		t.Errorf("asked at %v; want 10:01, then 10:02 three times, then 10:03", got)
	}
}
