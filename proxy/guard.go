package proxy

import (
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/strangler-proxy/strangler/config"
	"github.com/strangler-proxy/strangler/router"
)

// Readiness defaults for routes without a guard, and the margins of the
// verdict (SPEC §7).
const (
	defaultWindow            = 2 * time.Minute
	defaultReadyMinSamples   = 100
	defaultReadyMaxDivergent = 0.01
	readyErrorMargin         = 0.01
	rateTolerance            = 1e-9
	readyLatencyFactor       = 1.5
	// readyLatencyFloor is the legacy p99 below which latencies compare as
	// equal: a few milliseconds are scheduling noise and bucket width, not
	// a regression.
	readyLatencyFloor = 0.010
)

// guardEvalInterval bounds how often a route's guard adds up its window: a
// trip a few milliseconds late costs nothing, summing on every request would.
// Evidence that came within it of the last check is judged once it is over.
const guardEvalInterval = 20 * time.Millisecond

// Guard trip reasons, the values of strangler_guard_trips_total{reason}.
const (
	tripErrorRate  = "error_rate"
	tripDivergence = "divergence"
)

var tripReasons = []string{tripErrorRate, tripDivergence}

// guardState is a route's guard: tripped routes serve legacy only until
// re-armed. It lives in the routeRuntime, so it survives reloads that do
// not change the route's weight.
type guardState struct {
	tripped  atomic.Bool
	lastEval atomic.Int64 // unix nanoseconds of the last local evaluation
	// pending: a check came too soon after the last, and one more is due
	// when the interval is over.
	pending atomic.Bool
	// rearms counts re-arms of a tripped guard. Evidence read before a
	// re-arm must not trip the guard after it, so a trip carries the count
	// it read its evidence under.
	rearms atomic.Uint64

	mu        sync.Mutex // serializes trips, re-arms and ramp steps
	reason    string
	trippedAt time.Time
	rearmedAt time.Time // zero until the first re-arm of a trip
}

// evidenceSince returns the re-arm count and the time of the last re-arm,
// before which no evidence counts.
func (g *guardState) evidenceSince() (rearms uint64, since time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.rearms.Load(), g.rearmedAt
}

// guardEvidence is what a guard judges over its window: newpath's
// upstream answers and how many failed, and the comparisons and how many
// were real mismatches. The local window counts them exactly; Prometheus'
// increase() estimates them, hence floats.
type guardEvidence struct {
	calls, errors        float64
	compared, mismatches float64
}

func (c windowCounts) evidence() guardEvidence {
	return guardEvidence{
		calls:      float64(c.calls[router.Newpath]),
		errors:     float64(c.errors[router.Newpath]),
		compared:   float64(c.compared),
		mismatches: float64(c.mismatch),
	}
}

// tripReason is the guard rule of SPEC §7, whatever the source of the
// evidence: with at least min_samples, newpath's error rate or the real
// mismatch rate above its limit trips. It returns the reason and a detail
// for the log, or "" when the guard holds or the evidence is too thin.
func tripReason(g *config.Guard, e guardEvidence) (reason, detail string) {
	minSamples := float64(g.MinSamples)
	switch {
	case e.calls > 0 && e.calls >= minSamples && e.errors/e.calls > g.MaxErrorRate:
		return tripErrorRate, fmt.Sprintf("newpath error rate %.4f > %g over %.0f answers", e.errors/e.calls, g.MaxErrorRate, e.calls)
	case e.compared > 0 && e.compared >= minSamples && e.mismatches/e.compared > g.MaxDivergenceRate:
		return tripDivergence, fmt.Sprintf("real mismatch rate %.4f > %g over %.0f comparisons", e.mismatches/e.compared, g.MaxDivergenceRate, e.compared)
	}
	return "", ""
}

// windowOf returns the window a route's guard and readiness look at.
// verdictWindowOf is how far back the route's field verdicts look.
func verdictWindowOf(rc *config.Route) time.Duration {
	if w := time.Duration(rc.Compare.VerdictWindow); w > 0 {
		return w
	}
	return windowOf(rc)
}

func windowOf(rc *config.Route) time.Duration {
	if rc.Guard != nil {
		return time.Duration(rc.Guard.Window)
	}
	return defaultWindow
}

// recordCall counts one upstream answer of a route and checks its guard.
func (p *Proxy) recordCall(br *boundRoute, b router.Backend, latency time.Duration, failed bool) {
	now := p.now()
	br.rt.win.call(now, b, latency, failed)
	if b == router.Newpath {
		p.checkGuard(br, now)
	}
}

// recordBrokenAnswer counts an upstream answer, already counted by
// recordCall at its header, that broke off mid-body: an error after all.
func (p *Proxy) recordBrokenAnswer(br *boundRoute, b router.Backend) {
	now := p.now()
	br.rt.win.broke(now, b)
	if b == router.Newpath {
		p.checkGuard(br, now)
	}
}

// recordComparison counts one comparison result of a route and checks its
// guard.
func (p *Proxy) recordComparison(br *boundRoute, result int) {
	now := p.now()
	br.rt.win.comparison(now, result)
	p.checkGuard(br, now)
}

// checkGuard trips the route's guard when its local window breaks the
// guard rule. Shadowing goes on after a trip, so the window keeps telling
// the truth. Guards whose source is prometheus are judged by Run instead.
func (p *Proxy) checkGuard(br *boundRoute, now time.Time) {
	rt := br.rt
	if !br.judgedLocally() {
		return
	}
	last := rt.guard.lastEval.Load()
	if now.UnixNano()-last < int64(guardEvalInterval) || !rt.guard.lastEval.CompareAndSwap(last, now.UnixNano()) {
		// Too soon, or another check is under way: this evidence may be
		// what breaks the rule, and the next request may be a while
		// coming, so it is judged when the interval is over.
		if rt.guard.pending.CompareAndSwap(false, true) {
			time.AfterFunc(guardEvalInterval, func() {
				rt.guard.pending.Store(false)
				if br := p.current(rt); br != nil {
					p.evaluateGuard(br, p.now())
				}
			})
		}
		return
	}
	p.evaluateGuard(br, now)
}

// current is rt's route in the config now in force, nil once a reload
// removed it.
func (p *Proxy) current(rt *routeRuntime) *boundRoute {
	for _, br := range p.state.Load().routes {
		if br.rt == rt {
			return br
		}
	}
	return nil
}

// judgedLocally reports whether the route has a guard, judged on its
// local window, that has not tripped.
func (br *boundRoute) judgedLocally() bool {
	g := br.cfg.Guard
	return g != nil && g.Source != config.GuardSourcePrometheus && !br.rt.guard.tripped.Load()
}

// evaluateGuard judges the route's local window now, unthrottled: trips
// the guard when it breaks the rule.
func (p *Proxy) evaluateGuard(br *boundRoute, now time.Time) {
	if !br.judgedLocally() {
		return
	}
	rt := br.rt
	rearms := rt.guard.rearms.Load()
	if reason, detail := tripReason(br.cfg.Guard, rt.win.sum(now).evidence()); reason != "" {
		p.trip(br, now, rearms, config.GuardSourceLocal, reason, detail)
	}
}

// trip rolls the route back to legacy: effective weight 0, the metrics and
// an error-level log line. It does nothing when the guard is already
// tripped, or was re-armed since the evidence was read (rearms differs).
func (p *Proxy) trip(br *boundRoute, now time.Time, rearms uint64, source, reason, detail string) {
	rt := br.rt
	rt.guard.mu.Lock()
	if rt.guard.tripped.Load() || rt.guard.rearms.Load() != rearms || rt.removed.Load() {
		rt.guard.mu.Unlock()
		return
	}
	rt.guard.tripped.Store(true)
	rt.guard.reason, rt.guard.trippedAt = reason, now
	rt.effectiveBasisPoints.Store(0)
	p.metrics.effective.WithLabelValues(rt.name).Set(0)
	p.metrics.guardTripped.WithLabelValues(rt.name).Set(1)
	if rt.ramp != nil {
		p.rampMetrics.set(rt.name, rt.ramp, true, now)
	}
	// Under the lock, as a reload's removal of the route forgets its
	// series under it: a trip never brings them back.
	p.metrics.guardTrips.WithLabelValues(rt.name, reason).Inc()
	rt.guard.mu.Unlock()
	p.logger.Error("guard tripped: route rolled back to legacy", "route", rt.name, "reason", reason, "detail", detail,
		"source", source, "window", windowOf(br.cfg).String(),
		"rearm", "change the route's weight in the config, or POST /admin/routes/"+rt.name+"/rearm")
}

// rearm applies the configured weight (or its ramp's step); with keepTrip (a reload that left
// the weight alone) a tripped guard stays tripped. A tripped guard is lifted, and its
// evidence starts afresh so the old evidence cannot trip it again at once:
// the local window is emptied, and Prometheus is asked only about the time
// since.
func (p *Proxy) rearm(br *boundRoute, why string, keepTrip bool) {
	rt := br.rt
	rt.guard.mu.Lock()
	// Decided under the lock: a trip racing a reload that left the weight
	// alone must stay tripped.
	if keepTrip && rt.guard.tripped.Load() {
		rt.guard.mu.Unlock()
		return
	}
	wasTripped := rt.guard.tripped.Load()
	if wasTripped {
		// In this order: a check that finds the guard armed finds the
		// window empty and the new rearms count, so old evidence it read
		// before cannot trip it again (trip compares rearms).
		rt.win.reset(windowOf(br.cfg))
		rt.guard.rearmedAt = p.now()
		rt.guard.rearms.Add(1)
		if rt.ramp != nil {
			// A ramp never jumps back to where it was: newpath just
			// failed, so it climbs again from the first step.
			rt.ramp.restartAt(rt.guard.rearmedAt)
		}
		rt.guard.tripped.Store(false)
	}
	p.storeEffective(rt, br.weightInForce(p.now()))
	p.metrics.guardTripped.WithLabelValues(rt.name).Set(0)
	if rt.ramp != nil {
		p.rampMetrics.set(rt.name, rt.ramp, false, p.now())
	}
	rt.guard.mu.Unlock()
	if wasTripped {
		p.logger.Warn("guard re-armed", "route", rt.name, "by", why, "weight", br.cfg.Weight)
	}
}

// GuardView is a route's guard state in /admin/routes.
type GuardView struct {
	// State is none (no guard), armed or tripped.
	State     string     `json:"state"`
	Reason    string     `json:"reason,omitempty"`
	TrippedAt *time.Time `json:"tripped_at,omitempty"`
}

func (br *boundRoute) guardView() GuardView {
	if br.cfg.Guard == nil {
		return GuardView{State: "none"}
	}
	if !br.rt.guard.tripped.Load() {
		return GuardView{State: "armed"}
	}
	br.rt.guard.mu.Lock()
	defer br.rt.guard.mu.Unlock()
	at := br.rt.guard.trippedAt
	return GuardView{State: "tripped", Reason: br.rt.guard.reason, TrippedAt: &at}
}

// Readiness is a route's promotion verdict (SPEC §7) over its window.
type Readiness struct {
	// Verdict is ready, not_ready or insufficient_data.
	Verdict      string             `json:"verdict"`
	Reasons      []string           `json:"reasons,omitempty"`
	Window       string             `json:"window"`
	Comparisons  int64              `json:"comparisons"`
	MismatchRate float64            `json:"mismatch_rate"`
	NoiseRate    float64            `json:"noise_rate"`
	ErrorRate    map[string]float64 `json:"error_rate"`
	P99Seconds   map[string]float64 `json:"p99_seconds,omitempty"`
}

// readiness judges a route over its window: ready when there are enough
// comparisons, the real mismatch rate is within the limit, newpath errs no
// more than legacy plus a margin, and newpath's p99 is within 1.5 × legacy's.
func readiness(rc *config.Route, c windowCounts, undecided []string) Readiness {
	minSamples, maxDivergent := int64(defaultReadyMinSamples), defaultReadyMaxDivergent
	if g := rc.Guard; g != nil {
		minSamples, maxDivergent = int64(g.MinSamples), g.MaxDivergenceRate
	}
	r := Readiness{
		Window:       windowOf(rc).String(),
		Comparisons:  c.compared,
		MismatchRate: c.mismatchRate(),
		NoiseRate:    c.noiseRate(),
		ErrorRate:    map[string]float64{"legacy": c.errorRate(router.Legacy), "newpath": c.errorRate(router.Newpath)},
		P99Seconds:   map[string]float64{},
	}
	legacyP99, newpathP99 := c.p99(router.Legacy), c.p99(router.Newpath)
	for name, v := range map[string]float64{"legacy": legacyP99, "newpath": newpathP99} {
		if !math.IsNaN(v) {
			r.P99Seconds[name] = v
		}
	}
	if c.compared < minSamples {
		r.Verdict = "insufficient_data"
		r.Reasons = []string{fmt.Sprintf("%d comparisons in the last %s, need %d", c.compared, r.Window, minSamples)}
		return r
	}
	if math.IsNaN(legacyP99) || math.IsNaN(newpathP99) {
		r.Verdict = "insufficient_data"
		r.Reasons = []string{"no latency from both backends in the window"}
		return r
	}
	if r.MismatchRate > maxDivergent {
		r.Reasons = append(r.Reasons, fmt.Sprintf("real mismatch rate %.4f > %g", r.MismatchRate, maxDivergent))
	}
	// "≤ legacy + 0.01" allows for float64, where 0.06 + 0.01 is less
	// than 0.07: rateTolerance is far below what one answer moves a rate
	// by in any window a guard or readiness judges.
	if le, ne := r.ErrorRate["legacy"], r.ErrorRate["newpath"]; ne > le+readyErrorMargin+rateTolerance {
		r.Reasons = append(r.Reasons, fmt.Sprintf("newpath error rate %.4f > legacy %.4f + %g", ne, le, readyErrorMargin))
	}
	if newpathP99 > readyLatencyFactor*math.Max(legacyP99, readyLatencyFloor) {
		r.Reasons = append(r.Reasons, fmt.Sprintf("newpath p99 %.3fs > %g × legacy p99 %.3fs", newpathP99, readyLatencyFactor, legacyP99))
	}
	switch {
	case len(r.Reasons) > 0:
		r.Verdict = "not_ready"
	case len(undecided) > 0:
		// Their comparisons were skipped, not counted: a route is not
		// ready while some of its differences could still be real.
		r.Verdict = "insufficient_data"
		r.Reasons = []string{"verdicts still undecided: " + strings.Join(undecided, ", ")}
	default:
		r.Verdict = "ready"
	}
	return r
}

// readinessCollector exports strangler_route_ready, judged at scrape time
// from each route's window.
type readinessCollector struct {
	p    *Proxy
	desc *prometheus.Desc
}

func (c readinessCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c readinessCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.p.state.Load()
	now := c.p.now()
	for _, br := range st.routes {
		v := 0.0
		if readiness(br.cfg, br.rt.win.sum(now), br.rt.cmp.undecided(now)).Verdict == "ready" {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, v, br.rt.name)
	}
}
