package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// benchRoute is the one route of every strangler config the bench writes.
const benchRoute = "get-order"

// counts are the counters of strangler's /metrics, for benchRoute, that
// show what a strangler row really did with its traffic.
type counts struct {
	byBackend   map[string]float64 // strangler_requests_total by backend
	comparisons map[string]float64 // strangler_comparisons_total by result
	shadows     map[string]float64 // strangler_shadow_requests_total by outcome, over targets
	unmatched   float64            // strangler_requests_total of route "unmatched"
	inFlight    float64            // strangler_shadow_in_flight
}

// parseMetrics reads a /metrics scrape in the Prometheus text format.
func parseMetrics(r io.Reader) (counts, error) {
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(r)
	if err != nil {
		return counts{}, fmt.Errorf("parse /metrics: %w", err)
	}
	requests, ok := families["strangler_requests_total"]
	if !ok {
		return counts{}, fmt.Errorf("parse /metrics: no strangler_requests_total")
	}
	c := counts{
		byBackend:   sumByLabel(requests, "backend"),
		comparisons: sumByLabel(families["strangler_comparisons_total"], "result"),
		shadows:     sumByLabel(families["strangler_shadow_requests_total"], "outcome"),
	}
	for _, m := range requests.GetMetric() {
		if labelValue(m, "route") == "unmatched" {
			c.unmatched += metricValue(m)
		}
	}
	if m := families["strangler_shadow_in_flight"].GetMetric(); len(m) > 0 {
		c.inFlight = metricValue(m[0])
	}
	return c, nil
}

// sumByLabel sums the series of f for benchRoute by the value of label,
// over their other labels. A missing family gives an empty map.
func sumByLabel(f *dto.MetricFamily, label string) map[string]float64 {
	sums := map[string]float64{}
	for _, m := range f.GetMetric() {
		if labelValue(m, "route") == benchRoute {
			sums[labelValue(m, label)] += metricValue(m)
		}
	}
	return sums
}

func labelValue(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

func metricValue(m *dto.Metric) float64 {
	switch {
	case m.GetCounter() != nil:
		return m.GetCounter().GetValue()
	case m.GetGauge() != nil:
		return m.GetGauge().GetValue()
	case m.GetUntyped() != nil:
		return m.GetUntyped().GetValue()
	}
	return 0
}

// add returns c + o: every round's strangler starts from zero, so the sum
// covers all rounds of a row.
func (c counts) add(o counts) counts {
	sum := func(a, b map[string]float64) map[string]float64 {
		s := maps.Clone(a)
		if s == nil {
			s = map[string]float64{}
		}
		for k, v := range b {
			s[k] += v
		}
		return s
	}
	return counts{
		byBackend:   sum(c.byBackend, o.byBackend),
		comparisons: sum(c.comparisons, o.comparisons),
		shadows:     sum(c.shadows, o.shadows),
		unmatched:   c.unmatched + o.unmatched,
	}
}

func (c counts) requests() float64 { return c.byBackend["legacy"] + c.byBackend["newpath"] }

// compared counts the comparisons that ran to a result.
func (c counts) compared() float64 {
	return c.comparisons["match"] + c.comparisons["mismatch"] + c.comparisons["noise"]
}

// A claim is what a strangler row says it does with its traffic.
type claim struct {
	weight        float64 // percent of requests served by the newpath
	shadowPercent float64 // percent of requests also sent to the other side and compared
	// saturates: the shadows outrun max_in_flight (a slow newpath), so
	// most are dropped_saturated by design; otherwise a drop means the row
	// did less work than it claims.
	saturates bool
}

// Tolerances of check. With a distinct X-User-Id per request the sticky
// split is a fair coin per request, so over thousands of requests its share
// is within a fraction of a point of the weight; 2 points is generous.
// Compared requests fall short of all requests only by the few in flight
// when wrk stops (a primary whose client left is not compared).
const (
	shareTolerance = 2.0  // percentage points
	minCompared    = 0.95 // of the requests a row shadows
)

// check returns what in c contradicts the claim; none: the row did what it says.
func (c counts) check(cl claim) []string {
	var problems []string
	total := c.requests()
	if total == 0 {
		return []string{"strangler counted no request of route " + benchRoute}
	}
	if c.unmatched > 0 {
		problems = append(problems, fmt.Sprintf("%.0f requests matched no route", c.unmatched))
	}
	if share := 100 * c.byBackend["newpath"] / total; math.Abs(share-cl.weight) > shareTolerance {
		problems = append(problems, fmt.Sprintf("newpath served %.1f%%, want %.0f%% ± %.0f", share, cl.weight, shareTolerance))
	}
	sent := c.shadows["sent"]
	if cl.shadowPercent == 0 {
		if sent > 0 || c.compared() > 0 {
			problems = append(problems, fmt.Sprintf("%.0f shadow calls and %.0f comparisons with shadowing off", sent, c.compared()))
		}
		return problems
	}
	want := total * cl.shadowPercent / 100
	if cl.saturates {
		// Every selected request is sent or dropped at saturation.
		if got := sent + c.shadows["dropped_saturated"]; got < minCompared*want {
			problems = append(problems, fmt.Sprintf("%.0f shadows sent or dropped_saturated of %.0f selected", got, want))
		}
		want = sent
	} else if d := c.shadows["dropped_saturated"]; d > 0 {
		problems = append(problems, fmt.Sprintf("%.0f shadows dropped_saturated: the row did less than it claims", d))
	}
	if got := c.compared(); got < minCompared*want {
		problems = append(problems, fmt.Sprintf("compared %.0f of %.0f", got, want))
	}
	for _, bad := range []string{"mismatch", "error"} {
		if n := c.comparisons[bad]; n > 0 {
			problems = append(problems, fmt.Sprintf("%.0f comparisons %s between identical backends", n, bad))
		}
	}
	return problems
}

// summary is the note line of a strangler row's counts.
func (c counts) summary() string {
	total := c.requests()
	share := 0.0
	if total > 0 {
		share = 100 * c.byBackend["newpath"] / total
	}
	return fmt.Sprintf("%.0f requests, newpath %.1f%%; comparisons: match %.0f, mismatch %.0f, noise %.0f, error %.0f, skipped %.0f; shadow calls: sent %.0f, dropped_saturated %.0f, failed %.0f, timeout %.0f",
		total, share, c.comparisons["match"], c.comparisons["mismatch"], c.comparisons["noise"], c.comparisons["error"], c.comparisons["skipped"],
		c.shadows["sent"], c.shadows["dropped_saturated"], c.shadows["failed"], c.shadows["timeout"])
}

// scrapeMetrics waits until strangler has no shadow call in flight (each
// ends within shadow.timeout), so that every comparison of the run is
// counted, then returns its counts and keeps the scrape in file.
func scrapeMetrics(ctx context.Context, client *http.Client, url, file string, wait time.Duration) (counts, error) {
	deadline := time.Now().Add(wait)
	for {
		body, err := get(ctx, client, url)
		if err != nil {
			return counts{}, err
		}
		c, err := parseMetrics(strings.NewReader(body))
		if err != nil {
			return counts{}, fmt.Errorf("%s: %w", url, err)
		}
		if c.inFlight == 0 || time.Now().After(deadline) {
			return c, writeFile(file, body)
		}
		select {
		case <-ctx.Done():
			return counts{}, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// logShare counts the access log lines in text (those with a quoted GET
// request; a log may also hold the proxy's own messages) and, of them, the
// ones whose last field is upstream: how a peer proxy really split its
// traffic.
func logShare(text, upstream string) (hits, lines int) {
	for line := range strings.Lines(text) {
		if !strings.Contains(line, `"GET `) {
			continue
		}
		lines++
		if f := strings.Fields(line); f[len(f)-1] == upstream {
			hits++
		}
	}
	return hits, lines
}
