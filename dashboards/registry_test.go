package dashboards_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/strangler-proxy/strangler/config"
	"github.com/strangler-proxy/strangler/newpath"
	"github.com/strangler-proxy/strangler/proxy"
	"github.com/strangler-proxy/strangler/proxy/proxytest"
)

// knownMetric is a metric some registry of the project exports.
type knownMetric struct {
	histogram bool
	labels    []string
}

// recordingRegisterer notes the name and labels of every collector
// registered through it. Describe, unlike Gather, also sees the vectors
// that have no series yet (the field differences before any comparison
// differed).
type recordingRegisterer struct {
	prometheus.Registerer
	mu      sync.Mutex
	metrics map[string]knownMetric
}

func newRecordingRegisterer() *recordingRegisterer {
	return &recordingRegisterer{Registerer: prometheus.NewRegistry(), metrics: map[string]knownMetric{}}
}

func (r *recordingRegisterer) Register(c prometheus.Collector) error {
	r.record(c)
	return r.Registerer.Register(c)
}

func (r *recordingRegisterer) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		r.record(c)
	}
	r.Registerer.MustRegister(cs...)
}

// descPattern reads prometheus.Desc.String(); the help text is skipped.
var descPattern = regexp.MustCompile(`^Desc\{fqName: ("(?:[^"\\]|\\.)*"), .*variableLabels: \{([^}]*)\}\}$`)

func (r *recordingRegisterer) record(c prometheus.Collector) {
	histogram := false
	switch c.(type) {
	case *prometheus.HistogramVec, prometheus.Histogram:
		histogram = true
	}
	ch := make(chan *prometheus.Desc, 16)
	go func() { c.Describe(ch); close(ch) }()
	r.mu.Lock()
	defer r.mu.Unlock()
	for d := range ch {
		m := descPattern.FindStringSubmatch(d.String())
		if m == nil {
			panic(fmt.Sprintf("unexpected prometheus.Desc format %q: update descPattern", d.String()))
		}
		name, err := strconv.Unquote(m[1])
		if err != nil {
			panic(err)
		}
		var labels []string
		for l := range strings.SplitSeq(m[2], ",") {
			if l = strings.TrimSuffix(strings.TrimPrefix(l, "c("), ")"); l != "" {
				labels = append(labels, l)
			}
		}
		r.metrics[name] = knownMetric{histogram: histogram, labels: labels}
	}
}

// lookup resolves a name as a query writes it (a histogram's _bucket,
// _sum or _count series included) to the registered metric.
func lookup(known map[string]knownMetric, name string) (knownMetric, bool) {
	if m, ok := known[name]; ok {
		return m, true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok {
			if m, ok := known[base]; ok && m.histogram {
				if suffix == "_bucket" {
					m.labels = append(append([]string(nil), m.labels...), "le")
				}
				return m, true
			}
		}
	}
	return knownMetric{}, false
}

// proxyMetrics builds a real proxy, the way `strangler serve` does (a
// config.Reloader and proxy.New on one registry), and returns every metric
// it registered.
func proxyMetrics(t *testing.T) map[string]knownMetric {
	t.Helper()
	rec := newRecordingRegisterer()
	newProxy(t, rec, `
upstreams:
  legacy: { url: "http://127.0.0.1:1" }
  newpath: { url: "http://127.0.0.1:1" }
routes:
  - name: get-order
    match: "GET /orders/{id}"
    weight: 10
    shadow: { percent: 100 }
    compare: { noise_percent: 10 }
    guard: { max_error_rate: 0.02, max_divergence_rate: 0.05, min_samples: 100, window: 2m }
`)
	return rec.metrics
}

// newpathMetrics builds the newpath's metrics the way `neworders` and
// `strangler demo` do: NewMetrics over the order store, whose outbox gauges
// are read at scrape time, and a server using them.
func newpathMetrics(t *testing.T) map[string]knownMetric {
	t.Helper()
	rec := newRecordingRegisterer()
	store, err := newpath.NewMemoryStore(newpath.Seed{})
	if err != nil {
		t.Fatal(err)
	}
	m := newpath.NewMetrics(rec, store, slog.New(slog.DiscardHandler))
	if _, err := newpath.NewServer(newpath.ServerOptions{Store: store, DownstreamURL: "http://127.0.0.1:1", Metrics: m}); err != nil {
		t.Fatal(err)
	}
	return rec.metrics
}

// newProxy starts a proxy from a YAML config on reg, as `strangler serve`
// wires it, and serves it on a loopback test server. The proxy's
// background work and its shadows end with the test.
func newProxy(t *testing.T, reg prometheus.Registerer, yaml string) (*proxy.Proxy, *proxytest.Front) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "strangler.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.DiscardHandler)
	rl, err := config.NewReloader(path, config.ReloaderOptions{Registerer: reg, Logger: logger, PollInterval: time.Hour})
	if err != nil {
		t.Fatalf("load config: %v", err)
	}
	p, err := proxy.New(rl.Current(), proxy.Options{Registerer: reg, Logger: logger, AccessLog: io.Discard, Version: "dashboards-test"})
	if err != nil {
		t.Fatalf("provision config: %v", err)
	}
	rl.AddProvisioner(p.Prepare)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	front := proxytest.Start(t, p.Server())
	t.Cleanup(func() {
		front.Close()
		dctx, dcancel := context.WithTimeout(context.Background(), 5*time.Second)
		p.DrainShadows(dctx)
		dcancel()
		cancel()
		<-done
	})
	return p, front
}

// divergentRoute is the route of the divergent fixture.
const divergentRoute = "divergent-get"

// divergentFixture is a proxy in front of two backends that disagree the
// way a real migration does: on /body/status always (a real divergence:
// legacy says fulfilled, newpath paid) and on /body/served_at always,
// which legacy also changes between two answers to the same request (noise).
// The demo cannot show this: its newpath agrees with legacy on every field.
type divergentFixture struct {
	proxy   *proxytest.Front
	metrics *httptest.Server // the fixture's /metrics
}

// fixtureFields are the fields the fixture makes differ, with the proxy's
// verdict on them (strangler_field_verdict): real (3) or noisy (1).
var fixtureFields = map[string]float64{"/body/status": 3, "/body/served_at": 1}

func newDivergentFixture(t *testing.T, extraYAML string) *divergentFixture {
	t.Helper()
	var seq sync.Mutex
	n := 0
	backend := func(status string) *httptest.Server {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			seq.Lock()
			n++
			at := n
			seq.Unlock()
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"id":%q,"status":%q,"served_at":"2026-01-01T00:00:00.%09dZ"}`, path.Base(r.URL.Path), status, at)
		}))
		t.Cleanup(s.Close)
		return s
	}
	legacyServer, newpathServer := backend("fulfilled"), backend("paid")
	reg := prometheus.NewRegistry()
	_, front := newProxy(t, reg, fmt.Sprintf(`
upstreams:
  legacy: { url: %q }
  newpath: { url: %q }
routes:
  - name: %s
    match: "GET /orders/{id}"
    weight: 0
    shadow: { percent: 100 }
    compare: { noise_percent: 100 }
%s`, legacyServer.URL, newpathServer.URL, divergentRoute, extraYAML))
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	metrics := httptest.NewServer(mux)
	t.Cleanup(metrics.Close)
	return &divergentFixture{proxy: front, metrics: metrics}
}

// send makes n requests through the fixture proxy.
func (f *divergentFixture) send(t *testing.T, n int) {
	t.Helper()
	for i := range n {
		res, err := f.proxy.Client().Get(fmt.Sprintf("%s/orders/ord_%d", f.proxy.URL, i%10+1))
		if err != nil {
			t.Errorf("fixture request: %v", err)
			return
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
	}
}

// keepSending sends a request every interval until the test ends, so the
// fixture's rates are not zero when Prometheus looks.
func (f *divergentFixture) keepSending(t *testing.T, interval time.Duration) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			req, _ := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("%s/orders/ord_%d", f.proxy.URL, i%10+1), nil)
			if res, err := f.proxy.Client().Do(req); err == nil {
				_, _ = io.Copy(io.Discard, res.Body)
				res.Body.Close()
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
}
