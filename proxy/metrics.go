package proxy

import (
	"runtime"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/strangler-proxy/strangler/router"
)

// durationBuckets span 1 ms to 10 s (SPEC §8).
var durationBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

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

// metrics are the proxy's Prometheus metrics (SPEC §8), registered on an
// injected registry.
type metrics struct {
	requests  *prometheus.CounterVec
	duration  *prometheus.HistogramVec
	upstream  *prometheus.HistogramVec
	fallbacks *prometheus.CounterVec
	weight    *prometheus.GaugeVec
	effective *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer, version string) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "strangler_requests_total",
			Help: "Client requests by route, serving backend and status class (error: no upstream answer).",
		}, []string{"route", "backend", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "strangler_request_duration_seconds",
			Help:    "Client request duration as the proxy saw it, to the end of the response body.",
			Buckets: durationBuckets,
		}, []string{"route", "backend"}),
		upstream: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "strangler_upstream_request_duration_seconds",
			Help:    "Upstream call duration, to the response headers, by role (primary, shadow, noise).",
			Buckets: durationBuckets,
		}, []string{"route", "backend", "role"}),
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
	}
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "strangler_build_info",
		Help: "Build information; always 1.",
	}, []string{"version", "goversion"})
	buildInfo.WithLabelValues(version, runtime.Version()).Set(1)
	reg.MustRegister(m.requests, m.duration, m.upstream, m.fallbacks, m.weight, m.effective, buildInfo)
	return m
}

// routeMetrics are one route's series, resolved once so the request path
// does no label lookups.
type routeMetrics struct {
	requests [2][len(codeClasses)]prometheus.Counter
	duration [2]prometheus.Observer
	primary  [2]prometheus.Observer
}

// forRoute resolves, and so exports at 0, every series of a route.
func (m *metrics) forRoute(route string) *routeMetrics {
	rm := &routeMetrics{}
	for _, b := range backends {
		for c, class := range codeClasses {
			rm.requests[b][c] = m.requests.WithLabelValues(route, b.String(), class)
		}
		rm.duration[b] = m.duration.WithLabelValues(route, b.String())
		rm.primary[b] = m.upstream.WithLabelValues(route, b.String(), "primary")
	}
	for _, reason := range fallbackReasons {
		m.fallbacks.WithLabelValues(route, reason)
	}
	return rm
}

// forget deletes the series of a route that a reload removed.
func (m *metrics) forget(route string) {
	l := prometheus.Labels{"route": route}
	m.requests.DeletePartialMatch(l)
	m.duration.DeletePartialMatch(l)
	m.upstream.DeletePartialMatch(l)
	m.fallbacks.DeletePartialMatch(l)
	m.weight.DeletePartialMatch(l)
	m.effective.DeletePartialMatch(l)
}
