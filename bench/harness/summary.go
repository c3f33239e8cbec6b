package main

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// spread is one measure of a row over its rounds: the median, which the
// ratios and targets use, and the range, which says how far to trust it.
type spread struct {
	median, min, max float64
}

// summarize returns the spread of values; the median of an even count is
// the mean of the middle two. No values give the zero spread.
func summarize(values []float64) spread {
	if len(values) == 0 {
		return spread{}
	}
	v := slices.Sorted(slices.Values(values))
	n := len(v)
	median := v[n/2]
	if n%2 == 0 {
		median = (v[n/2-1] + v[n/2]) / 2
	}
	return spread{median: median, min: v[0], max: v[n-1]}
}

// ratio is a/b, and false when b is not a measured positive number.
func ratio(a, b float64) (float64, bool) {
	if b <= 0 {
		return 0, false
	}
	return a / b, true
}

// pairedRatios is the spread of a[i]/b[i], the ratio of two rows within
// each round, and false unless both have the same positive number of
// rounds with every b measured. The rows of a round run back to back, so
// the two samples of a pair saw the same machine: a slow minute moves both
// and drops out of their ratio, where it would move one median of a ratio
// of medians and not the other.
func pairedRatios(a, b []float64) (spread, bool) {
	if len(a) == 0 || len(a) != len(b) {
		return spread{}, false
	}
	q := make([]float64, len(a))
	for i := range a {
		var ok bool
		if q[i], ok = ratio(a[i], b[i]); !ok {
			return spread{}, false
		}
	}
	return summarize(q), true
}

// A condition is one number a target is judged on, against its limit.
type condition struct {
	label    string  // what the value is, e.g. "req/s"
	value    float64 // the measured value
	measured bool    // false: a row it needs did not run
	// rounds > 1: value is the median of that many paired ratios, which
	// ranged from lowest to highest.
	rounds          int
	lowest, highest float64
	op              string // "≥", "≤" or "<": how value must compare with limit
	limit           float64
	unit            string // "×" for ratios, " MB", ...
}

func (c condition) met() bool {
	switch c.op {
	case "≥":
		return c.value >= c.limit
	case "≤":
		return c.value <= c.limit
	case "<":
		return c.value < c.limit
	}
	return false
}

func (c condition) String() string {
	limit := fmt.Sprintf("target %s %s%s", c.op, strconv.FormatFloat(c.limit, 'f', -1, 64), c.unit)
	if !c.measured {
		return fmt.Sprintf("%s n/a (%s)", c.label, limit)
	}
	// Three decimals for ratios, so that a MISS by a hair (0.796× of a 0.8×
	// target) does not print as the limit itself.
	if c.unit != "×" {
		return fmt.Sprintf("%s %.1f%s (%s)", c.label, c.value, c.unit, limit)
	}
	if c.rounds > 1 {
		return fmt.Sprintf("%s %.3f× (rounds %.3f–%.3f; %s)", c.label, c.value, c.lowest, c.highest, limit)
	}
	return fmt.Sprintf("%s %.3f× (%s)", c.label, c.value, limit)
}

// A target is a goal of issue 11 for one run: it passes when every one of
// its conditions is met.
type target struct {
	name       string
	conditions []condition
	// caveat is appended to the verdict line, e.g. when a row's check of
	// its own /metrics failed, so that a PASS cannot hide it.
	caveat string
}

// verdict is "PASS", "MISS" or, when a row it needs did not run, "n/a".
func (t target) verdict() string {
	for _, c := range t.conditions {
		if !c.measured {
			return "n/a"
		}
	}
	for _, c := range t.conditions {
		if !c.met() {
			return "MISS"
		}
	}
	return "PASS"
}

// line is the verdict line printed under the table.
func (t target) line() string {
	parts := make([]string, len(t.conditions))
	for i, c := range t.conditions {
		parts[i] = c.String()
	}
	s := fmt.Sprintf("%s %s: %s", t.verdict(), t.name, strings.Join(parts, ", "))
	if t.caveat != "" {
		s += "; " + t.caveat
	}
	return s
}
