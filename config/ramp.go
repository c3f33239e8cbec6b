package config

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Ramp raises a route's share of newpath traffic by itself, one step per
// interval, while the route's readiness (and guard) holds: the YAML says
// the plan, the proxy carries it out, and the file stays the truth ops
// edit. The route's Weight is the ceiling: the effective weight is
// min(current step, weight).
type Ramp struct {
	// Steps are the weights the ramp climbs through, in percent: strictly
	// increasing, each above 0 and at most 100, with at most two
	// decimals. Steps above the route's weight serve the weight.
	Steps []float64 `mapstructure:"steps" json:"steps"`
	// Every is the interval between two steps, at least 1s. The ramp is
	// judged at start + k × every.
	Every Duration `mapstructure:"every" json:"every"`
	// Require is what must hold at a tick for the ramp to climb: ready
	// (the route's readiness verdict is ready, and its guard has not
	// tripped) or none (time and the guard alone). Default: ready.
	Require string `mapstructure:"require" json:"require"`
	// Start, an RFC 3339 instant, anchors the ticks. Give every replica
	// the same start, a little in the future, and they climb in step
	// without talking to each other. Empty: the moment the process first
	// loads the ramp, aligned up to a multiple of every in Unix time.
	Start string `mapstructure:"start" json:"start,omitempty"`

	start           time.Time
	stepBasisPoints []int
	id              string
}

// The values of Ramp.Require.
const (
	RampRequireReady = "ready"
	RampRequireNone  = "none"
)

// StartTime returns Start parsed during validation; zero when Start is
// empty.
func (r *Ramp) StartTime() time.Time { return r.start }

// StepBasisPoints returns Steps × 100 as integers, the unit of the
// route's effective weight.
func (r *Ramp) StepBasisPoints() []int { return r.stepBasisPoints }

// ID identifies the ramp: a digest of the route's name and weight and of
// the ramp's steps, interval, requirement and start. A reload that keeps
// the ID keeps the ramp where it is; one that changes it restarts the
// ramp from its first step.
func (r *Ramp) ID() string { return r.id }

// rampDefaults are a ramp's values when its mapping leaves them out; like
// a guard's, they are merged only into a ramp that is there.
func rampDefaults() map[string]any {
	return map[string]any{
		"require": RampRequireReady,
		"start":   "",
	}
}

// checkRamp validates a route's ramp, warns of what is valid but does
// less than it reads, and computes its derived state.
func (c *Config) checkRamp(add func(string, string, ...any), path string, rt *Route) {
	r := rt.Ramp
	if len(r.Steps) == 0 {
		add(path+".steps", "required: the weights to climb through, such as [1, 5, 25, 50, 100]")
	}
	r.stepBasisPoints = make([]int, len(r.Steps))
	for i, s := range r.Steps {
		p := fmt.Sprintf("%s.steps[%d]", path, i)
		bp := int(math.Round(s * 100))
		r.stepBasisPoints[i] = bp
		switch {
		case math.IsNaN(s) || s <= 0 || s > 100:
			add(p, "must be above 0 and at most 100, got %v", s)
		case math.Abs(s*100-float64(bp)) > 1e-6:
			add(p, "at most two decimals, got %v", s)
		case i > 0 && !(s > r.Steps[i-1]):
			add(p, "%v is not above the previous step %v", s, r.Steps[i-1])
		}
	}
	if r.Every < Duration(time.Second) {
		add(path+".every", "must be at least 1s, got %s", r.Every)
	}
	switch r.Require {
	case RampRequireReady, RampRequireNone:
	default:
		add(path+".require", "must be ready or none, got %q", r.Require)
	}
	r.start = time.Time{}
	if r.Start != "" {
		t, err := time.Parse(time.RFC3339, r.Start)
		if err != nil {
			add(path+".start", "%q is not an RFC 3339 time such as 2026-03-02T10:00:00Z", r.Start)
		}
		r.start = t
	}
	for i, s := range r.Steps {
		if s > rt.Weight && rt.Weight > 0 {
			c.warnings = append(c.warnings, FieldError{Path: fmt.Sprintf("%s.steps[%d]", path, i), Problem: fmt.Sprintf(
				"route %q: step %v is above the route's weight %v, which is the ramp's ceiling: the step serves %v",
				rt.Name, s, rt.Weight, rt.Weight)})
			break
		}
	}
	if rt.Weight == 0 {
		c.warnings = append(c.warnings, FieldError{Path: path, Problem: fmt.Sprintf(
			"route %q: the weight is 0, the ramp's ceiling: the ramp never sends newpath any traffic; set weight to where it should end",
			rt.Name)})
	}
	r.id = rampID(rt)
}

// rampID digests what a ramp's position depends on. Steps are written in
// basis points, so 25 and 25.0 are one ramp.
func rampID(rt *Route) string {
	r := rt.Ramp
	var b strings.Builder
	to := rt.To
	if to == "" {
		to = DefaultUpstream
	}
	// A route moved to another service restarts its ramp: what the old
	// one earned says nothing of the new one.
	fmt.Fprintf(&b, "route=%s\nto=%s\nweight=%d\nevery=%d\nrequire=%s\nstart=", rt.Name, to, int(math.Round(rt.Weight*100)), int64(r.Every), r.Require)
	if !r.start.IsZero() {
		b.WriteString(strconv.FormatInt(r.start.UnixNano(), 10))
	}
	b.WriteString("\nsteps=")
	for _, s := range r.stepBasisPoints {
		b.WriteString(strconv.Itoa(s) + ",")
	}
	sum := sha256.Sum256([]byte(b.String()))
	return hex.EncodeToString(sum[:8])
}
