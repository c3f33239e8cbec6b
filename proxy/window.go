package proxy

import (
	"math"
	"sync"
	"time"

	"github.com/strangler-proxy/strangler/router"
)

// windowSlots is the resolution of a sliding window: it forgets its oldest
// 1/windowSlots at a time, in bounded memory whatever the traffic.
const windowSlots = 60

// window counts a route's recent upstream answers and comparisons over a
// sliding time window, for guards and readiness (SPEC §7).
type window struct {
	mu    sync.Mutex
	width time.Duration // of one slot
	slots [windowSlots]windowSlot
}

// windowSlot holds the counts of one slice of time.
type windowSlot struct {
	start time.Time
	windowCounts
}

// windowCounts are the sums the verdicts need.
type windowCounts struct {
	calls     [2]int64 // upstream answers (any role), by backend
	errors    [2]int64 // 5xx or no answer, by backend
	latency   [2][len(durationBuckets) + 1]int64
	compared  int64 // match + mismatch + noise
	mismatch  int64
	noiseOnly int64
}

func newWindow(span time.Duration) *window {
	w := &window{}
	w.reset(span)
	return w
}

// reset empties the window and sets its span.
func (w *window) reset(span time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.width = span / windowSlots
	if w.width <= 0 {
		w.width = time.Millisecond
	}
	w.slots = [windowSlots]windowSlot{}
}

// slot returns the slot of now, emptied if it held an older slice. w.mu is
// held.
func (w *window) slot(now time.Time) *windowSlot {
	start := now.Truncate(w.width)
	s := &w.slots[(start.UnixNano()/int64(w.width))%windowSlots]
	if !s.start.Equal(start) {
		*s = windowSlot{start: start}
	}
	return s
}

// call records one upstream answer: failed is a 5xx or no answer at all.
func (w *window) call(now time.Time, b router.Backend, latency time.Duration, failed bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.slot(now)
	s.calls[b]++
	if failed {
		s.errors[b]++
	}
	s.latency[b][latencyBucket(latency.Seconds())]++
}

// broke records that an answer already counted by call broke off mid-body.
func (w *window) broke(now time.Time, b router.Backend) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.slot(now).errors[b]++
}

// comparison records one comparison result.
func (w *window) comparison(now time.Time, result int) {
	if result != resultMatch && result != resultMismatch && result != resultNoise {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.slot(now)
	s.compared++
	switch result {
	case resultMismatch:
		s.mismatch++
	case resultNoise:
		s.noiseOnly++
	}
}

// sum adds up the slots inside the window ending at now.
func (w *window) sum(now time.Time) windowCounts {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out windowCounts
	oldest := now.Add(-w.width * windowSlots)
	for i := range w.slots {
		s := &w.slots[i]
		if !s.start.After(oldest) {
			continue
		}
		for b := range out.calls {
			out.calls[b] += s.calls[b]
			out.errors[b] += s.errors[b]
			for j := range s.latency[b] {
				out.latency[b][j] += s.latency[b][j]
			}
		}
		out.compared += s.compared
		out.mismatch += s.mismatch
		out.noiseOnly += s.noiseOnly
	}
	return out
}

func latencyBucket(seconds float64) int {
	for i, le := range durationBuckets {
		if seconds <= le {
			return i
		}
	}
	return len(durationBuckets)
}

// errorRate is errors / calls of backend b, 0 without calls.
func (c windowCounts) errorRate(b router.Backend) float64 {
	if c.calls[b] == 0 {
		return 0
	}
	return float64(c.errors[b]) / float64(c.calls[b])
}

// mismatchRate is real mismatches / comparisons, 0 without comparisons.
func (c windowCounts) mismatchRate() float64 {
	if c.compared == 0 {
		return 0
	}
	return float64(c.mismatch) / float64(c.compared)
}

// noiseRate is noise-only comparisons / comparisons.
func (c windowCounts) noiseRate() float64 {
	if c.compared == 0 {
		return 0
	}
	return float64(c.noiseOnly) / float64(c.compared)
}

// p99 estimates backend b's 99th percentile latency in seconds from the
// bucket counts, interpolating inside the bucket as Prometheus'
// histogram_quantile does; NaN without calls.
func (c windowCounts) p99(b router.Backend) float64 {
	var total int64
	for _, n := range c.latency[b] {
		total += n
	}
	if total == 0 {
		return math.NaN()
	}
	rank := 0.99 * float64(total)
	var cum int64
	for i, n := range c.latency[b] {
		if float64(cum+n) < rank {
			cum += n
			continue
		}
		if i == len(durationBuckets) {
			return durationBuckets[len(durationBuckets)-1]
		}
		lower := 0.0
		if i > 0 {
			lower = durationBuckets[i-1]
		}
		return lower + (durationBuckets[i]-lower)*(rank-float64(cum))/float64(n)
	}
	return durationBuckets[len(durationBuckets)-1]
}

// series returns the window's slots ending at now, oldest first, one per
// slot width: an empty slice of time is a zero slot. The console draws
// its sparklines from it.
func (w *window) series(now time.Time) []windowCounts {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]windowCounts, windowSlots)
	newest := now.Truncate(w.width)
	for i := range out {
		start := newest.Add(-w.width * time.Duration(windowSlots-1-i))
		if s := &w.slots[(start.UnixNano()/int64(w.width))%windowSlots]; s.start.Equal(start) {
			out[i] = s.windowCounts
		}
	}
	return out
}
