package proxy

import (
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/strangler-proxy/strangler/proxy/diff"
)

// A field's differences are judged by kind, over a sliding window, by how
// their rate compares with what noise explains (README, "How verdicts are
// reached"):
//
//   - r of the window's n comparisons differed in this field and kind
//     (legacy against newpath); s of its m noise probes did (legacy
//     against legacy, the same request twice).
//   - real: the raw rate is significantly above the noise rate: the
//     lower confidence bound of r/n is above the upper bound of s/m
//     (Wilson score intervals, one-sided, at compare.confidence).
//   - noisy: noise is seen (s > 0) and the raw rate is not significantly
//     above it.
//   - undecided: neither yet: no noise seen, and too few probes to show
//     that none explains the rate. Then the route's counts since start
//     decide, if they can (compareState.verdict): a real difference on
//     a route of little traffic must not stay undecided, and unseen by
//     the guard, for as long as the window is too short to show it.
//   - match: no difference in the window.
//
// A route that never probes (noise_percent 0) learns nothing of noise:
// every difference is real, as it always was.

// Verdict is what the evidence says of one field and kind.
type Verdict uint8

const (
	VerdictMatch     Verdict = iota // no difference in the window
	VerdictNoisy                    // noise explains the differences
	VerdictUndecided                // too little evidence either way
	VerdictReal                     // more differences than noise explains
)

var verdictNames = [...]string{"match", "noisy", "undecided", "real"}

func (v Verdict) String() string { return verdictNames[v] }

// verdictNamed is the Verdict whose String is name (match for none).
func verdictNamed(name string) Verdict {
	for i, n := range verdictNames {
		if n == name {
			return Verdict(i)
		}
	}
	return VerdictMatch
}

// VerdictOf judges raw differences in compared comparisons against noise
// differences in probes, at a one-sided confidence (0.99): the rule of
// the proxy's field verdicts, which strangler replay applies too. A route
// that does not probe (probing false) calls every difference real.
func VerdictOf(raw, compared, noise, probes int64, confidence float64, probing bool) Verdict {
	return verdictOf(raw, compared, noise, probes, zScore(confidence), probing)
}

// zScore is the one-sided standard normal quantile of confidence, 0.5 <
// confidence < 1 (Acklam's rational approximation refined by one Newton
// step: exact to 1e-9, far below what a verdict needs).
func zScore(confidence float64) float64 {
	p := confidence
	// Coefficients of Acklam's approximation of the inverse normal CDF.
	a := [...]float64{-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02, 1.383577518672690e+02, -3.066479806614716e+01, 2.506628277459239e+00}
	b := [...]float64{-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02, 6.680131188771972e+01, -1.328068155288572e+01}
	c := [...]float64{-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00, -2.549732539343734e+00, 4.374664141464968e+00, 2.938163982698783e+00}
	d := [...]float64{7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00, 3.754408661907416e+00}
	var x float64
	switch {
	case p < 0.02425:
		q := math.Sqrt(-2 * math.Log(p))
		x = (((((c[0]*q+c[1])*q+c[2])*q+c[3])*q+c[4])*q + c[5]) / ((((d[0]*q+d[1])*q+d[2])*q+d[3])*q + 1)
	case p > 1-0.02425:
		q := math.Sqrt(-2 * math.Log(1-p))
		x = -(((((c[0]*q+c[1])*q+c[2])*q+c[3])*q+c[4])*q + c[5]) / ((((d[0]*q+d[1])*q+d[2])*q+d[3])*q + 1)
	default:
		q := p - 0.5
		r := q * q
		x = (((((a[0]*r+a[1])*r+a[2])*r+a[3])*r+a[4])*r + a[5]) * q / (((((b[0]*r+b[1])*r+b[2])*r+b[3])*r+b[4])*r + 1)
	}
	// One Newton step on Φ(x) = p.
	e := 0.5*math.Erfc(-x/math.Sqrt2) - p
	return x - e*math.Sqrt(2*math.Pi)*math.Exp(x*x/2)
}

// wilson returns the Wilson score interval of k successes in n trials at
// z: the bounds a proportion's true value lies within, short of the
// confidence's tails. n = 0 knows nothing: [0, 1].
func wilson(k, n int64, z float64) (lower, upper float64) {
	if n <= 0 {
		return 0, 1
	}
	nf := float64(n)
	p := float64(k) / nf
	z2 := z * z
	center := p + z2/(2*nf)
	margin := z * math.Sqrt(p*(1-p)/nf+z2/(4*nf*nf))
	den := 1 + z2/nf
	return math.Max(0, (center-margin)/den), math.Min(1, (center+margin)/den)
}

// verdictOf judges r differences in n comparisons against s in m probes.
func verdictOf(r, n, s, m int64, z float64, probing bool) Verdict {
	switch {
	case r == 0 || n == 0:
		return VerdictMatch
	case !probing:
		return VerdictReal
	}
	rawLow, _ := wilson(r, n, z)
	_, noiseHigh := wilson(s, m, z)
	switch {
	case rawLow > noiseHigh:
		return VerdictReal
	case s > 0:
		// Noise is seen and the raw rate is not significantly above it.
		// (Asking more of noisy, such as the raw rate within the noise's
		// bound, makes a field of pure noise flap to undecided in a few
		// percent of windows.)
		return VerdictNoisy
	}
	return VerdictUndecided
}

// fieldKind is what verdicts are per: a field label and a kind of
// difference. A field that is noisy as a value is not noisy as missing.
type fieldKind struct {
	field string
	kind  diff.Kind
}

// fkCount are a field and kind's raw and noise differences.
type fkCount struct{ raw, noise int64 }

// verdictSlots is the resolution of the verdict window.
const verdictSlots = 30

// verdictWindow counts a route's comparisons, probes and differences by
// field and kind over a sliding window, with running totals, so that a
// verdict costs one lookup. It is guarded by the route's compareState.mu.
type verdictWindow struct {
	spanSet time.Duration // as reset was given it
	width   time.Duration // of a slot
	slots   [verdictSlots]verdictSlot
	totals  verdictSlot
}

type verdictSlot struct {
	start            time.Time
	compared, probes int64
	counts           map[fieldKind]*fkCount
}

func (w *verdictWindow) reset(span time.Duration) {
	*w = verdictWindow{spanSet: span, width: max(span/verdictSlots, time.Millisecond)}
}

// span is the window's width, as reset set it.
func (w *verdictWindow) span() time.Duration { return w.spanSet }

// expire takes the slots older than the window out of the totals.
func (w *verdictWindow) expire(now time.Time) {
	oldest := now.Add(-w.width * verdictSlots)
	for i := range w.slots {
		if s := &w.slots[i]; !s.start.IsZero() && !s.start.After(oldest) {
			w.drop(s)
		}
	}
}

func (w *verdictWindow) drop(s *verdictSlot) {
	w.totals.compared -= s.compared
	w.totals.probes -= s.probes
	for k, c := range s.counts {
		t := w.totals.counts[k]
		t.raw -= c.raw
		t.noise -= c.noise
		if t.raw == 0 && t.noise == 0 {
			delete(w.totals.counts, k)
		}
	}
	*s = verdictSlot{}
}

// slot returns now's slot, recycled if it held an older slice.
func (w *verdictWindow) slot(now time.Time) *verdictSlot {
	w.expire(now)
	start := now.Truncate(w.width)
	s := &w.slots[(start.UnixNano()/int64(w.width))%verdictSlots]
	if !s.start.Equal(start) {
		w.drop(s)
		s.start = start
	}
	return s
}

// add counts one comparison (and its probe) with the field and kinds of
// its raw and noise differences, each once.
func (w *verdictWindow) add(now time.Time, probed bool, raw, noise map[fieldKind]bool) {
	s := w.slot(now)
	s.compared++
	w.totals.compared++
	if probed {
		s.probes++
		w.totals.probes++
	}
	for k := range raw {
		w.bump(s, k, 1, 0)
	}
	for k := range noise {
		w.bump(s, k, 0, 1)
	}
}

func (w *verdictWindow) bump(s *verdictSlot, k fieldKind, raw, noise int64) {
	for _, m := range []*map[fieldKind]*fkCount{&s.counts, &w.totals.counts} {
		if *m == nil {
			*m = map[fieldKind]*fkCount{}
		}
		c := (*m)[k]
		if c == nil {
			c = &fkCount{}
			(*m)[k] = c
		}
		c.raw += raw
		c.noise += noise
	}
}

// verdict judges k over the window.
func (w *verdictWindow) verdict(k fieldKind, z float64, probing bool) Verdict {
	c := w.totals.counts[k]
	if c == nil {
		return VerdictMatch
	}
	return verdictOf(c.raw, w.totals.compared, c.noise, w.totals.probes, z, probing)
}

// verdict is the route's verdict on k: its window's, or where the window
// is undecided, that of its counts since start, which grow past any
// window. A fixed field has no difference in the window: match, whatever
// came before. c.mu is held.
func (c *compareState) verdict(k fieldKind) Verdict {
	v := c.window.verdict(k, c.z, c.probing())
	if v != VerdictUndecided {
		return v
	}
	if f := c.fields[k.field]; f != nil {
		n := f.counted(k.kind)
		v = verdictOf(n.raw, c.compared, n.noise, c.probes, c.z, c.probing())
	}
	return v
}

// probing says whether noise can be known on the route: it is set to
// probe, or has probed (a reload that stops the probes does not turn
// known noise into real differences). c.mu is held.
func (c *compareState) probing() bool { return c.probeNoise || c.probes > 0 }

// undecided names the route's fields and kinds whose verdict is undecided
// in the window, "field (kind)", sorted, at most five and a count of the
// rest.
func (c *compareState) undecided(now time.Time) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.window.expire(now)
	var out []string
	for k := range c.window.totals.counts {
		if c.verdict(k) == VerdictUndecided {
			out = append(out, k.field+" ("+string(k.kind)+")")
		}
	}
	slices.Sort(out)
	if len(out) > 5 {
		out = append(out[:5], fmt.Sprintf("and %d more", len(out)-5))
	}
	return out
}

// verdictCollector exports strangler_field_verdict, judged at scrape time
// from each route's verdict window: 0 match, 1 noisy, 2 undecided, 3 real,
// per field and kind seen in the window (at most the route's field labels
// times the kinds).
type verdictCollector struct {
	p    *Proxy
	desc *prometheus.Desc
}

func newVerdictCollector(p *Proxy) verdictCollector {
	return verdictCollector{p: p, desc: prometheus.NewDesc("strangler_field_verdict",
		"The verdict on a field's differences of one kind over the route's verdict window: 0 match (none), 1 noisy, 2 undecided, 3 real.",
		[]string{"route", "field", "kind"}, nil)}
}

func (c verdictCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c verdictCollector) Collect(ch chan<- prometheus.Metric) {
	now := c.p.now()
	type judged struct {
		k fieldKind
		v Verdict
	}
	for _, br := range c.p.state.Load().routes {
		// Judged under the lock, sent without it: a scrape must not hold
		// up the route's comparisons.
		cmp := &br.rt.cmp
		cmp.mu.Lock()
		cmp.window.expire(now)
		verdicts := make([]judged, 0, len(cmp.window.totals.counts))
		for k := range cmp.window.totals.counts {
			verdicts = append(verdicts, judged{k, cmp.verdict(k)})
		}
		cmp.mu.Unlock()
		for _, j := range verdicts {
			ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(j.v), br.rt.name, j.k.field, string(j.k.kind))
		}
	}
}
