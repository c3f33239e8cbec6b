package proxy

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/strangler-proxy/strangler/config"
	"github.com/strangler-proxy/strangler/proxy/proxytest"
)

// harness is a proxy between two real upstream servers, all on loopback.
type harness struct {
	t        *testing.T
	legacy   *httptest.Server
	newpath  *httptest.Server
	front    *proxytest.Front
	proxy    *Proxy
	reg      *prometheus.Registry
	logs     *syncBuffer
	reloader *config.Reloader
	cfgPath  string
	spans    *tracetest.SpanRecorder
}

// syncBuffer is a bytes.Buffer safe for the logger and the test to share.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// backendHandler answers with the backend's name, so a test can see who served.
func backendHandler(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Served-By", name)
		fmt.Fprintf(w, "%s %s %s\n", name, r.Method, r.URL.Path)
	})
}

// newHarness starts legacy and newpath servers (nil: a default handler
// naming the backend) and a proxy whose config is the given YAML with
// {{legacy}} and {{newpath}} replaced by the servers' URLs.
func newHarness(t *testing.T, legacy, newpath http.Handler, yaml string) *harness {
	t.Helper()
	return newClockedHarness(t, nil, legacy, newpath, yaml)
}

// newClockedHarness is newHarness with the proxy's clock (nil: time.Now).
func newClockedHarness(t *testing.T, now func() time.Time, legacy, newpath http.Handler, yaml string) *harness {
	t.Helper()
	if legacy == nil {
		legacy = backendHandler("legacy")
	}
	if newpath == nil {
		newpath = backendHandler("newpath")
	}
	h := &harness{t: t, reg: prometheus.NewRegistry(), logs: &syncBuffer{}}
	h.legacy = httptest.NewServer(legacy)
	t.Cleanup(h.legacy.Close)
	h.newpath = httptest.NewServer(newpath)
	t.Cleanup(h.newpath.Close)

	h.cfgPath = filepath.Join(t.TempDir(), "strangler.yaml")
	h.writeConfig(yaml)
	logger := slog.New(slog.NewJSONHandler(h.logs, nil))
	rl, err := config.NewReloader(h.cfgPath, config.ReloaderOptions{Registerer: h.reg, Logger: logger, PollInterval: time.Hour})
	if err != nil {
		t.Fatalf("load config: %v", err)
	}
	h.reloader = rl
	h.spans = tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(h.spans))
	// The probes run only in tests that call h.proxy.Run.
	h.proxy, err = New(rl.Current(), Options{Registerer: h.reg, Logger: logger, AccessLog: h.logs, Version: "test", TracerProvider: tp, ProbeInterval: 10 * time.Millisecond, Now: now})
	if err != nil {
		t.Fatalf("provision config: %v", err)
	}
	rl.AddProvisioner(h.proxy.Prepare)
	// The daemons' server limits and framing check are
	// cmd/internal/service's, tested there.
	h.front = proxytest.Start(t, h.proxy.Server())
	return h
}

func (h *harness) expand(yaml string) string {
	if !strings.Contains(yaml, "upstreams:") {
		yaml = "upstreams:\n  legacy: { url: \"{{legacy}}\" }\n  newpath: { url: \"{{newpath}}\" }\n" + yaml
	}
	yaml = strings.ReplaceAll(yaml, "{{legacy}}", h.legacy.URL)
	return strings.ReplaceAll(yaml, "{{newpath}}", h.newpath.URL)
}

// writeConfig writes the config file in place.
func (h *harness) writeConfig(yaml string) {
	h.t.Helper()
	if err := os.WriteFile(h.cfgPath, []byte(h.expand(yaml)), 0o644); err != nil {
		h.t.Fatal(err)
	}
}

// do sends a request through the proxy and returns the response with its
// body read.
func (h *harness) do(req *http.Request) (*http.Response, string) {
	h.t.Helper()
	res, err := h.front.Client().Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		h.t.Fatalf("read body: %v", err)
	}
	return res, string(body)
}

func (h *harness) get(path string, header ...string) (*http.Response, string) {
	h.t.Helper()
	req, err := http.NewRequest("GET", h.front.URL+path, nil)
	if err != nil {
		h.t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	return h.do(req)
}

// metric returns the value of the series of name whose labels include
// labels (a counter, gauge, or a histogram's sample count), and whether it
// exists.
func (h *harness) metric(name string, labels map[string]string) (float64, bool) {
	h.t.Helper()
	families, err := h.reg.Gather()
	if err != nil {
		h.t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			if hasLabels(m, labels) {
				switch {
				case m.Counter != nil:
					return m.Counter.GetValue(), true
				case m.Gauge != nil:
					return m.Gauge.GetValue(), true
				case m.Histogram != nil:
					return float64(m.Histogram.GetSampleCount()), true
				}
			}
		}
	}
	return 0, false
}

func hasLabels(m *dto.Metric, want map[string]string) bool {
	n := 0
	for _, lp := range m.GetLabel() {
		if v, ok := want[lp.GetName()]; ok {
			if v != lp.GetValue() {
				return false
			}
			n++
		}
	}
	return n == len(want)
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
