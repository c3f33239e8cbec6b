package proxy

import (
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/strangler-proxy/strangler/config"
	"github.com/strangler-proxy/strangler/router"
)

// durationBuckets span 1 ms to 10 s (SPEC §8).
var durationBuckets = [...]float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// codeClasses are the values of the code label; codeError is a request that
// got no upstream answer.
var codeClasses = [...]string{"1xx", "2xx", "3xx", "4xx", "5xx", "error"}

const codeError = 5

// codeClass maps a status to its index in codeClasses.
func codeClass(status int) int {
	if status < 100 || status > 599 {
		return codeError
	}
	return status/100 - 1
}

// Fallback reasons: why legacy answered a request assigned to newpath.
const (
	reasonConnectError   = "connect_error"
	reasonTimeout        = "timeout"
	reasonTransportError = "transport_error"
	reasonStatus502      = "status_502"
	reasonStatus503      = "status_503"
	reasonStatus504      = "status_504"
)

var fallbackReasons = []string{reasonConnectError, reasonTimeout, reasonTransportError, reasonStatus502, reasonStatus503, reasonStatus504}

var backends = [...]router.Backend{router.Legacy, router.Newpath}

// Roles of an upstream call, the values of the role label.
const (
	rolePrimary = iota
	roleShadow
	roleNoise
)

var roles = [...]string{"primary", "shadow", "noise"}

// Comparison results, the values of strangler_comparisons_total{result}.
const (
	resultMatch = iota
	resultMismatch
	resultNoise
	resultError
	resultSkipped
)

var results = [...]string{"match", "mismatch", "noise", "error", "skipped"}

// metrics are the proxy's Prometheus metrics (SPEC §8), registered on an
// injected registry.
type metrics struct {
	requests  *prometheus.CounterVec
	duration  *prometheus.HistogramVec
	upstream  *prometheus.HistogramVec
	uperrors  *prometheus.CounterVec // upstream's calls that failed, as the guard's window counts them
	fallbacks *prometheus.CounterVec
	weight    *prometheus.GaugeVec
	effective *prometheus.GaugeVec

	shadowRequests   *prometheus.CounterVec
	shadowInFlight   prometheus.Gauge
	comparisons      *prometheus.CounterVec
	fieldDifferences *prometheus.CounterVec
	noiseDifferences *prometheus.CounterVec
	noiseProbes      *prometheus.CounterVec
	guardConfigured  *prometheus.GaugeVec
	guardTripped     *prometheus.GaugeVec
	guardTrips       *prometheus.CounterVec
	samplesDropped   prometheus.Counter
	samplesPruned    prometheus.Counter
	captures         *prometheus.CounterVec
	upstreamUp       *prometheus.GaugeVec // by upstream name
}

func newMetrics(reg prometheus.Registerer, version string) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "strangler_requests_total",
			Help: "Client requests by route, serving backend and status class (error: no upstream answer).",
		}, []string{"route", "backend", "upstream", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "strangler_request_duration_seconds",
			Help:    "Client request duration as the proxy saw it, to the end of the response body.",
			Buckets: durationBuckets[:],
		}, []string{"route", "backend", "upstream"}),
		upstream: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "strangler_upstream_request_duration_seconds",
			Help:    "Upstream call duration by role: primary to the response headers; shadow and noise to the end of the (capped) body.",
			Buckets: durationBuckets[:],
		}, []string{"route", "backend", "upstream", "role"}),
		uperrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "strangler_upstream_errors_total",
			Help: "Upstream calls by role that failed: no answer, a 5xx, or an answer broken off mid-body (the calls are strangler_upstream_request_duration_seconds_count).",
		}, []string{"route", "backend", "upstream", "role"}),
		fallbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "strangler_fallbacks_total",
			Help: "Safe-method requests assigned to newpath that legacy answered, by reason.",
		}, []string{"route", "reason"}),
		weight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "strangler_route_weight_ratio",
			Help: "Configured share of the route's traffic served by newpath (weight / 100).",
		}, []string{"route"}),
		effective: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "strangler_route_effective_weight_ratio",
			Help: "Share of the route's traffic served by newpath after guards.",
		}, []string{"route"}),
		shadowRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "strangler_shadow_requests_total",
			Help: "Requests selected for shadowing by route, shadow target and outcome (exclusive).",
		}, []string{"route", "target", "upstream", "outcome"}),
		shadowInFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "strangler_shadow_in_flight",
			Help: "Shadow calls and comparisons in flight.",
		}),
		comparisons: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "strangler_comparisons_total",
			Help: "Requests selected for comparison by route and result.",
		}, []string{"route", "result"}),
		fieldDifferences: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "strangler_field_differences_total",
			Help: "Comparisons (legacy vs newpath) in which a field differed, by schema path and kind.",
		}, []string{"route", "field", "kind"}),
		noiseDifferences: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "strangler_noise_differences_total",
			Help: "Noise probes (legacy vs legacy) in which a field differed, by schema path and kind.",
		}, []string{"route", "field", "kind"}),
		noiseProbes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "strangler_noise_probes_total",
			Help: "Requests sent to legacy a second time to measure noise.",
		}, []string{"route"}),
		guardConfigured: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "strangler_guard_configured",
			Help: "Whether the route has a guard (1) or none (0): with none, strangler_guard_tripped is always 0 and says nothing.",
		}, []string{"route"}),
		guardTripped: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "strangler_guard_tripped",
			Help: "Whether the route's guard has tripped (1): newpath serves none of its traffic until re-armed.",
		}, []string{"route"}),
		guardTrips: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "strangler_guard_trips_total",
			Help: "Guard trips by route and reason (error_rate, divergence).",
		}, []string{"route", "reason"}),
		samplesDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "strangler_divergence_samples_dropped_total",
			Help: "Divergence samples not written to Postgres: queue full or the write failed.",
		}),
	}
	m.samplesPruned = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "strangler_divergence_samples_pruned_total",
		Help: "Divergence samples deleted from Postgres because they were older than divergence_store.retention.",
	})
	m.captures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "strangler_capture_records_total",
		Help: "Captured comparisons (capture.file) by result: written, dropped (the queue was full) or failed (the write failed).",
	}, []string{"result"})
	for _, r := range []string{"written", "dropped", "failed"} {
		m.captures.WithLabelValues(r)
	}
	m.upstreamUp = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "strangler_upstream_up",
		Help: "Whether the upstream accepted a TCP connection at the last probe (1) or not (0); 0 before the first probe.",
	}, []string{"upstream"})
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "strangler_build_info",
		Help: "Build information; always 1.",
	}, []string{"version", "goversion"})
	buildInfo.WithLabelValues(version, runtime.Version()).Set(1)
	reg.MustRegister(m.requests, m.duration, m.upstream, m.uperrors, m.fallbacks, m.weight, m.effective, buildInfo,
		m.shadowRequests, m.shadowInFlight, m.comparisons, m.fieldDifferences, m.noiseDifferences, m.noiseProbes,
		m.guardConfigured, m.guardTripped, m.guardTrips, m.samplesDropped, m.samplesPruned, m.captures, m.upstreamUp)
	return m
}

// routeMetrics are one route's series, resolved once so the request path
// does no label lookups.
type routeMetrics struct {
	requests    [2][len(codeClasses)]prometheus.Counter
	duration    [2]prometheus.Observer
	upstream    [2][len(roles)]prometheus.Observer
	errors      [2][len(roles)]prometheus.Counter          // of upstream's calls
	shadow      [2][len(shadowOutcomes)]prometheus.Counter // by target
	comparisons [len(results)]prometheus.Counter
	noiseProbes prometheus.Counter
}

// call records one upstream call to b in role: its latency, and whether
// it failed (no answer, a 5xx), as the guard's window counts it.
func (rm *routeMetrics) call(b router.Backend, role int, latency time.Duration, failed bool) {
	rm.upstream[b][role].Observe(latency.Seconds())
	if failed {
		rm.errors[b][role].Inc()
	}
}

// forRoute resolves, and so exports at 0, every series of a route whose
// newpath side is the upstream named to. The upstream label repeats what
// route and backend already decide, so it adds no series; it is there to
// be read (which service answered) and aggregated (a service's load over
// all its routes).
func (m *metrics) forRoute(route, to string) *routeMetrics {
	rm := &routeMetrics{}
	for _, b := range backends {
		upstream := config.LegacyUpstream
		if b == router.Newpath {
			upstream = to
		}
		for c, class := range codeClasses {
			rm.requests[b][c] = m.requests.WithLabelValues(route, b.String(), upstream, class)
		}
		rm.duration[b] = m.duration.WithLabelValues(route, b.String(), upstream)
		for r, role := range roles {
			rm.upstream[b][r] = m.upstream.WithLabelValues(route, b.String(), upstream, role)
			rm.errors[b][r] = m.uperrors.WithLabelValues(route, b.String(), upstream, role)
		}
		for o, outcome := range shadowOutcomes {
			rm.shadow[b][o] = m.shadowRequests.WithLabelValues(route, b.String(), upstream, outcome)
		}
	}
	for r, result := range results {
		rm.comparisons[r] = m.comparisons.WithLabelValues(route, result)
	}
	rm.noiseProbes = m.noiseProbes.WithLabelValues(route)
	if route != "unmatched" {
		m.guardTripped.WithLabelValues(route)
		for _, reason := range tripReasons {
			m.guardTrips.WithLabelValues(route, reason)
		}
	}
	if route != "unmatched" { // unmatched requests never fall back
		for _, reason := range fallbackReasons {
			m.fallbacks.WithLabelValues(route, reason)
		}
	}
	return rm
}

// forgetUpstream deletes a route's series of the new service named
// upstream, once a reload pointed the route at another one.
func (m *metrics) forgetUpstream(route, upstream string) {
	l := prometheus.Labels{"route": route, "upstream": upstream}
	m.requests.DeletePartialMatch(l)
	m.duration.DeletePartialMatch(l)
	m.upstream.DeletePartialMatch(l)
	m.uperrors.DeletePartialMatch(l)
	m.shadowRequests.DeletePartialMatch(l)
}

// forget deletes the series of a route that a reload removed.
func (m *metrics) forget(route string) {
	l := prometheus.Labels{"route": route}
	m.requests.DeletePartialMatch(l)
	m.duration.DeletePartialMatch(l)
	m.upstream.DeletePartialMatch(l)
	m.uperrors.DeletePartialMatch(l)
	m.fallbacks.DeletePartialMatch(l)
	m.weight.DeletePartialMatch(l)
	m.effective.DeletePartialMatch(l)
	m.shadowRequests.DeletePartialMatch(l)
	m.comparisons.DeletePartialMatch(l)
	m.fieldDifferences.DeletePartialMatch(l)
	m.noiseDifferences.DeletePartialMatch(l)
	m.noiseProbes.DeletePartialMatch(l)
	m.guardConfigured.DeletePartialMatch(l)
	m.guardTripped.DeletePartialMatch(l)
	m.guardTrips.DeletePartialMatch(l)
}
