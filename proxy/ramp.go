package proxy

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/strangler-proxy/strangler/config"
)

// A ramp (routes[].ramp) raises a route's effective weight one step per
// interval while the route holds: ready (with require: ready) and its
// guard not tripped. Its ticks are origin + k × every, and the position
// at tick k is a pure function of the steps and of what held at ticks
// 1..k (rampPosition.next), so replicas that load the same ramp in the
// same interval, or before its explicit start, and read the same
// readiness, agree on the step at every tick without talking to each
// other. With guard.source prometheus every replica reads the readiness
// of the whole fleet from Prometheus at the tick's own instant, so they
// read the same answer.

// rampTickInterval is how often Run looks for due ticks: a step is taken
// at most this late.
const rampTickInterval = time.Second

// Why a ramp does not climb: the values of strangler_ramp_paused{reason}.
const (
	rampNotStarted            = "not_started"            // before ramp.start
	rampNotReady              = "not_ready"              // readiness was not ready at the tick
	rampGuardTripped          = "guard_tripped"          // the guard had tripped at the tick
	rampPrometheusUnavailable = "prometheus_unavailable" // the tick cannot be judged yet
)

// guardTrippedDetail says what a ramp paused by its guard waits for.
const guardTrippedDetail = "effective weight 0 until the guard is re-armed; the ramp then climbs again from its first step"

var rampPauseReasons = []string{rampNotStarted, rampNotReady, rampGuardTripped, rampPrometheusUnavailable}

// rampAnswer is what held at one tick: holds, or the reason it did not
// (one of rampPauseReasons) and the detail an operator reads.
type rampAnswer struct {
	holds          bool
	reason, detail string
}

// rampPosition is where a ramp is: the index of its current step, and
// whether the last tick held.
type rampPosition struct {
	index          int
	paused         bool
	reason, detail string
}

// next is the ramp rule: a tick that holds climbs one step (up to the
// last), one that does not stays on the step, paused with its reason.
func (pos rampPosition) next(steps int, a rampAnswer) rampPosition {
	if !a.holds {
		return rampPosition{index: pos.index, paused: true, reason: a.reason, detail: a.detail}
	}
	if pos.index+1 < steps {
		pos.index++
	}
	return rampPosition{index: pos.index}
}

// rampPositionAfter folds the answers of ticks 1..k from the first step:
// the position at tick k.
func rampPositionAfter(steps int, answers []rampAnswer) rampPosition {
	var pos rampPosition
	for _, a := range answers {
		pos = pos.next(steps, a)
	}
	return pos
}

// rampOrigin is the tick a ramp counts from when a process takes it up
// (or restarts it) at seen: the first tick of its grid at or after seen,
// so that the first step is served for a whole interval at least (a
// re-arm a second before a tick must not climb a second later). The grid
// is anchored at ramp.start when given, else at the Unix epoch, so every
// process that takes the ramp up in the same interval counts from the
// same tick. An explicit start after seen is the origin itself: the ramp
// waits for it, serving nothing.
func rampOrigin(start time.Time, every time.Duration, seen time.Time) time.Time {
	anchor := start
	if anchor.IsZero() {
		anchor = time.Unix(0, 0)
	}
	if seen.Before(anchor) {
		return anchor
	}
	return anchor.Add((seen.Sub(anchor) + every - 1) / every * every)
}

// rampTicksDue is how many ticks after origin have come by now.
func rampTicksDue(origin time.Time, every time.Duration, now time.Time) int64 {
	if now.Before(origin) {
		return 0
	}
	return int64(now.Sub(origin) / every)
}

// rampRun is a route's ramp in force. It lives in the routeRuntime and
// survives reloads that keep its ID; its mutable fields are guarded by
// the route's guard.mu, which also serializes trips and re-arms, so that
// the effective weight is decided in one place at a time.
type rampRun struct {
	id      string
	steps   []int // basis points
	every   time.Duration
	start   time.Time // ramp.start; zero: anchored at the Unix epoch
	require string
	// settle is how long after a tick Prometheus is asked about it, so
	// that every replica's scrape of the tick's instant is in; 0 with a
	// local source.
	settle time.Duration

	origin  time.Time
	serves  time.Time // the first step is served from: the take-up, or a start ahead
	ticks   int64     // ticks after origin judged
	pos     rampPosition
	restart uint64 // counts restarts: an answer read for an older origin is dropped
}

func newRampRun(br *boundRoute, now time.Time) *rampRun {
	rc := br.cfg.Ramp
	r := &rampRun{
		id: rc.ID(), steps: rc.StepBasisPoints(), every: time.Duration(rc.Every),
		start: rc.StartTime(), require: rc.Require,
	}
	if g := br.cfg.Guard; g != nil && g.Source == config.GuardSourcePrometheus && rc.Require == config.RampRequireReady {
		r.settle = time.Duration(g.PrometheusInterval)
	}
	r.restartAt(now)
	return r
}

// restartAt puts the ramp back on its first step, counting from the tick
// of now: a new ramp, or a re-armed guard.
func (r *rampRun) restartAt(now time.Time) {
	r.origin = rampOrigin(r.start, r.every, now)
	r.serves = now
	if now.Before(r.start) {
		r.serves = r.origin
	}
	r.ticks = 0
	r.pos = rampPosition{}
	r.restart++
}

func (r *rampRun) started(now time.Time) bool { return !now.Before(r.serves) }

func (r *rampRun) complete() bool { return r.pos.index == len(r.steps)-1 }

func (r *rampRun) tick(k int64) time.Time { return r.origin.Add(time.Duration(k) * r.every) }

// weight is the ramp's weight in basis points under the route's weight
// ceiling, before the guard: 0 until the ramp starts.
func (r *rampRun) weight(ceiling int, now time.Time) int {
	if !r.started(now) {
		return 0
	}
	return min(r.steps[r.pos.index], ceiling)
}

// status is the position as /admin/routes and the metrics show it: the
// wait for an explicit start, and a tripped guard, are pauses too, from
// the moment they begin.
func (r *rampRun) status(tripped bool, now time.Time) rampPosition {
	if tripped {
		return rampPosition{index: r.pos.index, paused: true, reason: rampGuardTripped, detail: guardTrippedDetail}
	}
	if !r.started(now) {
		return rampPosition{paused: true, reason: rampNotStarted, detail: "ramp.start is " + r.origin.UTC().Format(time.RFC3339)}
	}
	return r.pos
}

// bindRamp takes up the ramp of a route (re)configured by activate: a
// ramp whose ID is unchanged keeps its position; a new or changed one
// starts from its first step; a removed one is dropped. It is called
// before rearm, which applies the weight.
func (p *Proxy) bindRamp(br *boundRoute, now time.Time) {
	rt := br.rt
	rt.guard.mu.Lock()
	defer rt.guard.mu.Unlock()
	switch {
	case br.cfg.Ramp == nil:
		if rt.ramp != nil {
			rt.ramp = nil
			p.rampMetrics.forget(rt.name)
		}
	case rt.ramp == nil || rt.ramp.id != br.cfg.Ramp.ID():
		rt.ramp = newRampRun(br, now)
		p.rampMetrics.forRoute(rt.name, len(rt.ramp.steps))
		// rearm, which sets them, returns early for a guard a reload
		// keeps tripped.
		p.rampMetrics.set(rt.name, rt.ramp, rt.guard.tripped.Load(), now)
	default:
		// The same ramp; its guard's source may have changed.
		rt.ramp.settle = newRampRun(br, now).settle
	}
}

// weightInForce is the route's effective weight in basis points when its
// guard has not tripped: the configured weight, or the ramp's step under
// it. rt.guard.mu is held.
func (br *boundRoute) weightInForce(now time.Time) int {
	if r := br.rt.ramp; r != nil {
		return r.weight(br.cfg.WeightBasisPoints(), now)
	}
	return br.cfg.WeightBasisPoints()
}

// storeEffective sets the effective weight the router assigns by.
// rt.guard.mu is held.
func (p *Proxy) storeEffective(rt *routeRuntime, basisPoints int) {
	rt.effectiveBasisPoints.Store(int64(basisPoints))
	p.metrics.effective.WithLabelValues(rt.name).Set(float64(basisPoints) / 10000)
}

// runRamps judges the routes' ramps every rampTickInterval until ctx is
// done. Run owns it.
func (p *Proxy) runRamps(ctx context.Context) {
	t := time.NewTicker(rampTickInterval)
	defer t.Stop()
	defer p.rampClient.CloseIdleConnections()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			p.tickRamps(ctx, p.now())
		}
	}
}

// tickRamps judges every tick of every ramp that has come by now, in
// order, and applies the weights. Routes are judged concurrently: a slow
// Prometheus delays no other route. Tests call it with their own clock.
func (p *Proxy) tickRamps(ctx context.Context, now time.Time) {
	var wg sync.WaitGroup
	for _, br := range p.state.Load().routes {
		if br.cfg.Ramp == nil {
			continue
		}
		wg.Go(func() { p.tickRamp(ctx, br, now) })
	}
	wg.Wait()
}

// tickRamp judges a route's due ticks one at a time: each answer is read
// without the lock (it may be a query), then applied only if the ramp
// was not restarted or replaced meanwhile. A tick that cannot be judged
// yet (Prometheus) stops the round; it is asked again at the next.
func (p *Proxy) tickRamp(ctx context.Context, br *boundRoute, now time.Time) {
	rt := br.rt
	// The guard's checks run as evidence comes, throttled: what came last
	// is judged before a step is, on the limits in force (br may be of a
	// config a reload just replaced).
	if cur := p.current(rt); cur != nil {
		p.evaluateGuard(cur, now)
	}
	for {
		rt.guard.mu.Lock()
		r := rt.ramp
		if r == nil || br.cfg.Ramp == nil || br.cfg.Ramp.ID() != r.id {
			// br is of a state a reload replaced: the next round judges
			// the new one.
			rt.guard.mu.Unlock()
			return
		}
		restart, k, dueTicks := r.restart, r.ticks+1, rampTicksDue(r.origin, r.every, now)
		due := r.started(now) && !r.complete() && k <= dueTicks && !now.Before(r.tick(k).Add(r.settle))
		tripped := rt.guard.tripped.Load()
		if !due {
			p.applyRamp(br, r, now)
			rt.guard.mu.Unlock()
			return
		}
		rt.guard.mu.Unlock()

		a := rampAnswer{reason: rampGuardTripped, detail: guardTrippedDetail}
		switch {
		case tripped:
		case k < dueTicks && r.settle == 0 && r.require != config.RampRequireNone:
			// Local readiness is read now, which says nothing of a tick
			// that went by unjudged (the process was held up): only the
			// latest climbs, the others hold.
			a = rampAnswer{reason: rampNotReady, detail: "a tick went by unjudged; local readiness judges only the latest"}
		default:
			a = p.rampAnswer(ctx, br, r, r.tick(k), now)
		}

		rt.guard.mu.Lock()
		if rt.ramp != r || r.restart != restart || r.ticks+1 != k {
			rt.guard.mu.Unlock()
			continue // restarted or replaced meanwhile: judge it afresh
		}
		if rt.guard.tripped.Load() && a.holds {
			a = rampAnswer{reason: rampGuardTripped, detail: guardTrippedDetail}
		}
		if a.reason == rampPrometheusUnavailable {
			// Not an answer: the tick waits, so that no replica decides
			// it on less than the others will.
			r.pos.paused, r.pos.reason, r.pos.detail = true, a.reason, a.detail
			p.applyRamp(br, r, now)
			rt.guard.mu.Unlock()
			return
		}
		was := r.pos
		r.ticks = k
		r.pos = r.pos.next(len(r.steps), a)
		p.logRampTick(br, r, was, now)
		rt.guard.mu.Unlock()
	}
}

// logRampTick logs what a tick changed: a step climbed (at info), or a
// pause beginning or changing its reason (at warn, with the detail).
func (p *Proxy) logRampTick(br *boundRoute, r *rampRun, was rampPosition, now time.Time) {
	name := br.rt.name
	weight := float64(r.weight(br.cfg.WeightBasisPoints(), now)) / 100
	switch pos := r.pos; {
	case pos.index != was.index:
		p.logger.Info("ramp climbed a step", "route", name, "step", pos.index+1, "steps", len(r.steps),
			"weight", weight, "complete", r.complete())
	case pos.paused && (!was.paused || was.reason != pos.reason):
		p.logger.Warn("ramp paused", "route", name, "reason", pos.reason, "detail", pos.detail,
			"step", pos.index+1, "steps", len(r.steps), "weight", weight)
	case !pos.paused && was.paused:
		p.logger.Info("ramp holds again", "route", name, "step", pos.index+1, "weight", weight)
	}
}

// applyRamp sets the effective weight and the ramp's metrics from its
// position; a tripped guard keeps the weight at 0. rt.guard.mu is held.
func (p *Proxy) applyRamp(br *boundRoute, r *rampRun, now time.Time) {
	rt := br.rt
	if rt.removed.Load() {
		return // its series are gone, and must stay gone
	}
	if !rt.guard.tripped.Load() {
		p.storeEffective(rt, r.weight(br.cfg.WeightBasisPoints(), now))
	}
	p.rampMetrics.set(rt.name, r, rt.guard.tripped.Load(), now)
}

// rampAnswer reads what holds at tick at for a route that has not
// tripped: always with require: none; else its readiness, local at now
// (right after the tick) or fleet-wide from Prometheus at the tick.
func (p *Proxy) rampAnswer(ctx context.Context, br *boundRoute, r *rampRun, at, now time.Time) rampAnswer {
	if r.require == config.RampRequireNone {
		return rampAnswer{holds: true}
	}
	var rd Readiness
	if r.settle > 0 {
		var err error
		if rd, err = p.prometheusReadiness(ctx, br, at); err != nil {
			return rampAnswer{reason: rampPrometheusUnavailable, detail: config.Redact(err.Error())}
		}
	} else {
		rd = readiness(br.cfg, br.rt.win.sum(now), br.rt.cmp.undecided(now))
	}
	if rd.Verdict == "ready" {
		return rampAnswer{holds: true}
	}
	return rampAnswer{reason: rampNotReady, detail: rd.Verdict + ": " + strings.Join(rd.Reasons, "; ")}
}

// RampView is a route's ramp in /admin/routes.
type RampView struct {
	// ID changes with the route's weight and the ramp's keys: a reload
	// that keeps it keeps the position.
	ID      string    `json:"id"`
	Steps   []float64 `json:"steps"`
	Every   string    `json:"every"`
	Require string    `json:"require"`
	// Start is the tick the ramp counts from: ramp.start, or the tick
	// this process took the ramp up (or last restarted it) in.
	Start time.Time `json:"start"`
	// StepIndex is the current step's index in Steps (0-based), and
	// StepWeight its weight: the effective weight is at most it, and 0
	// before the start or after a guard trip.
	StepIndex  int     `json:"step_index"`
	StepWeight float64 `json:"step_weight"`
	// NextStepAt is the next tick; absent once on the last step.
	NextStepAt *time.Time `json:"next_step_at,omitempty"`
	Complete   bool       `json:"complete"`
	Paused     bool       `json:"paused"`
	// Reason is why it paused: not_started, not_ready: <readiness
	// reasons>, guard_tripped, prometheus_unavailable: <error>.
	Reason string `json:"reason,omitempty"`
}

// rampView is the route's ramp for /admin/routes; nil without one.
func (br *boundRoute) rampView(now time.Time) *RampView {
	rt := br.rt
	rt.guard.mu.Lock()
	defer rt.guard.mu.Unlock()
	r := rt.ramp
	if r == nil {
		return nil
	}
	st := r.status(rt.guard.tripped.Load(), now)
	v := &RampView{
		ID: r.id, Every: r.every.String(), Require: r.require, Start: r.origin,
		StepIndex: st.index, StepWeight: float64(r.steps[st.index]) / 100,
		Complete: r.complete() && r.started(now), Paused: st.paused,
	}
	for _, s := range r.steps {
		v.Steps = append(v.Steps, float64(s)/100)
	}
	if st.paused {
		v.Reason = st.reason
		if st.detail != "" {
			v.Reason += ": " + st.detail
		}
	}
	if !v.Complete {
		next := r.tick(r.ticks + 1)
		if !r.started(now) {
			next = r.origin
		}
		v.NextStepAt = &next
	}
	return v
}

// rampMetrics are the ramps' series, which exist only for routes with a
// ramp.
type rampMetrics struct {
	step     *prometheus.GaugeVec
	steps    *prometheus.GaugeVec
	paused   *prometheus.GaugeVec
	nextStep *prometheus.GaugeVec
}

func newRampMetrics(reg prometheus.Registerer) *rampMetrics {
	m := &rampMetrics{
		step: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "strangler_ramp_step",
			Help: "The ramp's current step, counted from 1 (0 before ramp.start); strangler_ramp_steps is the last.",
		}, []string{"route"}),
		steps: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "strangler_ramp_steps",
			Help: "How many steps the route's ramp has.",
		}, []string{"route"}),
		paused: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "strangler_ramp_paused",
			Help: "Whether the ramp is paused (1) for the reason: not_started, not_ready, guard_tripped, prometheus_unavailable.",
		}, []string{"route", "reason"}),
		nextStep: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "strangler_ramp_next_step_timestamp_seconds",
			Help: "Unix time of the ramp's next tick, when it climbs if the route holds; 0 once on the last step.",
		}, []string{"route"}),
	}
	reg.MustRegister(m.step, m.steps, m.paused, m.nextStep)
	return m
}

// forRoute exports a new ramp's series at 0.
func (m *rampMetrics) forRoute(route string, steps int) {
	m.forget(route)
	m.steps.WithLabelValues(route).Set(float64(steps))
	m.step.WithLabelValues(route)
	m.nextStep.WithLabelValues(route)
	for _, reason := range rampPauseReasons {
		m.paused.WithLabelValues(route, reason)
	}
}

func (m *rampMetrics) set(route string, r *rampRun, tripped bool, now time.Time) {
	st := r.status(tripped, now)
	step := float64(st.index + 1)
	if !r.started(now) {
		step = 0
	}
	m.step.WithLabelValues(route).Set(step)
	for _, reason := range rampPauseReasons {
		v := 0.0
		if st.paused && st.reason == reason {
			v = 1
		}
		m.paused.WithLabelValues(route, reason).Set(v)
	}
	next := 0.0
	switch {
	case !r.started(now):
		next = float64(r.origin.Unix())
	case !r.complete():
		next = float64(r.tick(r.ticks + 1).Unix())
	}
	m.nextStep.WithLabelValues(route).Set(next)
}

func (m *rampMetrics) forget(route string) {
	l := prometheus.Labels{"route": route}
	m.step.DeletePartialMatch(l)
	m.steps.DeletePartialMatch(l)
	m.paused.DeletePartialMatch(l)
	m.nextStep.DeletePartialMatch(l)
}
