package proxy

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// A ramp whose route guards with source prometheus reads the route's
// readiness across the fleet: the window's counts summed over every
// replica, at the tick's instant. An instant query with time= set reads
// only samples up to that instant, so once they are scraped in (the ramp
// waits guard.prometheus_interval after the tick) every replica that
// asks gets the same counts, and readiness judges them by the very rule
// that judges the local window.

// prometheusReadiness judges the route's readiness over its window
// ending at, from Prometheus.
func (p *Proxy) prometheusReadiness(ctx context.Context, br *boundRoute, at time.Time) (Readiness, error) {
	g := br.cfg.Guard
	timeout := time.Duration(g.PrometheusInterval)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	signals, err := queryPrometheusAt(ctx, p.rampClient, g.ParsedPrometheusURL(),
		readinessQuery(br.rt.name, g.PrometheusMatchers, windowOf(br.cfg)), at, timeout)
	if err != nil {
		return Readiness{}, err
	}
	var undecided []string
	if n := math.Round(signals["undecided"]); n > 0 {
		undecided = []string{fmt.Sprintf("%.0f field verdicts across the replicas", n)}
	}
	return readiness(br.cfg, countsFromSignals(signals), undecided), nil
}

// readinessQuery is the PromQL of a route's readiness evidence over
// span, summed across the replicas matchers select, one sample per
// signal: compared, mismatches and noise (comparisons), calls_<backend>
// and errors_<backend> (upstream answers, errors counted as the guard's
// query counts them), and lat_<backend>_<le> (the cumulative upstream
// latency buckets), and undecided (the field verdicts still undecided on
// some replica, as strangler_field_verdict says).
func readinessQuery(route, matchers string, span time.Duration) string {
	q := newEvidenceQuery(route, matchers, span)
	parts := []string{
		signal("compared", q.increase("strangler_comparisons_total", `,result=~"match|mismatch|noise"`)),
		signal("mismatches", q.increase("strangler_comparisons_total", `,result="mismatch"`)),
		signal("noise", q.increase("strangler_comparisons_total", `,result="noise"`)),
		signal("undecided", "count(strangler_field_verdict{"+q.labels+"} == 2)"),
	}
	for _, b := range backends {
		name := b.String()
		parts = append(parts,
			signal("calls_"+name, q.increase("strangler_upstream_request_duration_seconds_count", `,backend="`+name+`"`)),
			signal("errors_"+name, q.errors(b)),
			`label_replace(sum by (le) (increase(strangler_upstream_request_duration_seconds_bucket{`+q.labels+`,backend="`+name+`"}[`+q.rng+`])), "signal", "lat_`+name+`_$1", "le", "(.*)")`)
	}
	return strings.Join(parts, " or ")
}

// countsFromSignals turns readinessQuery's answer into the counts of a
// window. increase() extrapolates, so counts are rounded; the cumulative
// buckets become the window's per-bucket counts.
func countsFromSignals(signals map[string]float64) windowCounts {
	count := func(name string) int64 { return int64(math.Round(signals[name])) }
	c := windowCounts{compared: count("compared"), mismatch: count("mismatches"), noiseOnly: count("noise")}
	for _, b := range backends {
		name := b.String()
		c.calls[b], c.errors[b] = count("calls_"+name), count("errors_"+name)
		buckets := bucketsOf(signals, "lat_"+name+"_")
		var below int64
		for i, le := range append(durationBuckets[:len(durationBuckets):len(durationBuckets)], math.Inf(1)) {
			cum := int64(math.Round(buckets[le]))
			c.latency[b][i] = max(cum-below, 0)
			below = max(cum, below)
		}
	}
	return c
}

// bucketsOf reads the signals named prefix+le as cumulative bucket counts
// by bound. The bound is matched by value, not spelling: Prometheus 3
// stores le as "1.0" where client_golang's text format writes "1", and
// so does any Prometheus scraping OpenMetrics.
func bucketsOf(signals map[string]float64, prefix string) map[float64]float64 {
	buckets := make(map[float64]float64, len(durationBuckets)+1)
	for name, v := range signals {
		if s, ok := strings.CutPrefix(name, prefix); ok {
			if le, err := strconv.ParseFloat(s, 64); err == nil {
				buckets[le] += v
			}
		}
	}
	return buckets
}

// queryPrometheusAt is queryPrometheus evaluated at the instant at rather
// than at the server's now.
func queryPrometheusAt(ctx context.Context, client *http.Client, base *url.URL, query string, at time.Time, timeout time.Duration) (map[string]float64, error) {
	return queryPrometheusWith(ctx, client, base, url.Values{
		"query": {query},
		"time":  {strconv.FormatFloat(float64(at.UnixMilli())/1000, 'f', 3, 64)},
	}, timeout)
}
