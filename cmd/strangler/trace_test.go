package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/strangler-proxy/strangler/config"
	"github.com/strangler-proxy/strangler/legacy"
	"github.com/strangler-proxy/strangler/newpath"
	"github.com/strangler-proxy/strangler/newpath/pgtest"
	"github.com/strangler-proxy/strangler/proxy"
	"github.com/strangler-proxy/strangler/proxy/proxytest"
)

// tracedStack is the proxy, legacy and the newpath on Postgres, all
// recording spans into one recorder.
type tracedStack struct {
	spans      *tracetest.SpanRecorder
	front      *proxytest.Front
	relay      *newpath.Relay
	downstream *legacy.Downstream
}

func newTracedStack(t *testing.T) *tracedStack {
	t.Helper()
	ctx := context.Background()
	s := &tracedStack{spans: tracetest.NewSpanRecorder()}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(s.spans))
	logger := slog.New(slog.NewJSONHandler(io.Discard, nil))

	pool, err := newpath.OpenPoolWith(ctx, pgtest.URL(t), newpath.PoolOptions{TracerProvider: tp})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if _, err := newpath.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	lg, err := legacy.NewPostgresStore(pool)
	if err != nil {
		t.Fatal(err)
	}
	if err := lg.Seed(ctx, legacy.DefaultSeed()); err != nil {
		t.Fatal(err)
	}
	np := newpath.NewPostgresStore(pool)

	if s.downstream, err = legacy.NewDownstream(legacy.DownstreamOptions{Logger: logger}); err != nil {
		t.Fatal(err)
	}
	ds := httptest.NewServer(s.downstream)
	t.Cleanup(ds.Close)
	legacyAPI, err := legacy.NewServer(legacy.Options{Store: lg, DownstreamURL: ds.URL, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	legacySrv := httptest.NewServer(legacyAPI)
	t.Cleanup(legacySrv.Close)
	metrics := newpath.NewMetrics(prometheus.NewRegistry(), np, logger)
	if s.relay, err = newpath.NewRelay(newpath.RelayOptions{Store: np, DownstreamURL: ds.URL, Logger: logger, Metrics: metrics, TracerProvider: tp}); err != nil {
		t.Fatal(err)
	}
	newpathAPI, err := newpath.NewServer(newpath.ServerOptions{Store: np, DownstreamURL: ds.URL, Logger: logger, Metrics: metrics, TracerProvider: tp})
	if err != nil {
		t.Fatal(err)
	}
	newpathSrv := httptest.NewServer(newpathAPI)
	t.Cleanup(newpathSrv.Close)

	path := filepath.Join(t.TempDir(), "strangler.yaml")
	yaml := fmt.Sprintf(`
upstreams:
  legacy: { url: %q }
  newpath: { url: %q }
routes:
  - { name: get-order, match: "GET /orders/{id}", shadow: { percent: 100 } }
  - { name: create-order, match: "POST /orders" }
`, legacySrv.URL, newpathSrv.URL)
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	rl, err := config.NewReloader(path, config.ReloaderOptions{Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	p, err := proxy.New(rl.Current(), proxy.Options{Logger: logger, AccessLog: io.Discard, TracerProvider: tp})
	if err != nil {
		t.Fatal(err)
	}
	s.front = proxytest.Start(t, p.Server())
	return s
}

// inTrace returns the names of the ended spans of trace, waiting until
// want are all there.
func (s *tracedStack) inTrace(t *testing.T, trace string, want ...string) map[string]sdktrace.ReadOnlySpan {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := map[string]sdktrace.ReadOnlySpan{}
		for _, sp := range s.spans.Ended() {
			if sp.SpanContext().TraceID().String() == trace {
				got[sp.Name()] = sp
			}
		}
		missing := []string{}
		for _, w := range want {
			if got[w] == nil {
				missing = append(missing, w)
			}
		}
		if len(missing) == 0 {
			return got
		}
		if time.Now().After(deadline) {
			names := []string{}
			for n := range got {
				names = append(names, n)
			}
			t.Fatalf("trace %s lacks %v; has %v", trace, missing, names)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestOneTraceAcrossProxyAndNewpath follows requests from the client
// through the proxy, both backends, the newpath's SQL and, for a write,
// the outbox relay's later delivery. A shadowed read and a newpath-served
// write are two requests: writes are shadowed only as dry runs, which
// commit nothing and so never reach the outbox.
func TestOneTraceAcrossProxyAndNewpath(t *testing.T) {
	s := newTracedStack(t)
	send := func(method, path, body, trace string, header ...string) {
		t.Helper()
		req, _ := http.NewRequest(method, s.front.URL+path, strings.NewReader(body))
		req.Header.Set("Traceparent", "00-"+trace+"-00f067aa0ba902b7-01")
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode >= 300 {
			t.Fatalf("%s %s: %d", method, path, res.StatusCode)
		}
	}

	t.Run("shadowed read", func(t *testing.T) {
		const trace = "4bf92f3577b34da6a3ce929d0e0e4736"
		send("GET", "/orders/ord_1", "", trace)
		spans := s.inTrace(t, trace, "GET get-order", "primary legacy", "shadow newpath", "compare",
			"GET /orders/{id}", "get_order")
		server, shadow, handler := spans["GET get-order"], spans["shadow newpath"], spans["GET /orders/{id}"]
		if shadow.Parent().SpanID() != server.SpanContext().SpanID() || len(shadow.Links()) != 1 ||
			shadow.Links()[0].SpanContext.SpanID() != server.SpanContext().SpanID() {
			t.Error("the shadow span is not a child of, and linked to, the proxy's request span")
		}
		if handler.Parent().SpanID() != shadow.SpanContext().SpanID() {
			t.Error("the newpath handler span does not continue from the shadow span")
		}
		if sql := spans["get_order"]; sql.Parent().SpanID() != handler.SpanContext().SpanID() {
			t.Error("the SQL span is not under the newpath handler span")
		}
	})

	t.Run("newpath-served write and its outbox delivery", func(t *testing.T) {
		const trace = "5bf92f3577b34da6a3ce929d0e0e4737"
		// The warehouse is down during the request, so the relay delivers
		// order_paid later, after it recovers.
		if err := s.downstream.SetFaults(legacy.Faults{Warehouse: legacy.ServiceFaults{Down: true}}); err != nil {
			t.Fatal(err)
		}
		send("POST", "/orders", `{"user_id":7,"item_id":"sku-2","quantity":1}`, trace, "X-Strangler-Backend", "newpath")
		if err := s.downstream.SetFaults(legacy.Faults{}); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(15 * time.Second)
		for {
			if _, err := s.relay.RunOnce(context.Background()); err != nil {
				t.Fatal(err)
			}
			delivered := false
			for _, sp := range s.spans.Ended() {
				if sp.Name() == "deliver order_paid" && sp.SpanContext().TraceID().String() == trace && sp.SpanKind().String() == "consumer" {
					delivered = true
				}
			}
			if delivered {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the relay did not deliver order_paid")
			}
			time.Sleep(50 * time.Millisecond) // the relay's backoff runs on the wall clock
		}
		spans := s.inTrace(t, trace, "POST create-order", "primary newpath", "POST /orders", "insert_order_next_id", "deliver order_paid")
		if spans["POST /orders"].Parent().SpanID() != spans["primary newpath"].SpanContext().SpanID() {
			t.Error("the newpath handler span does not continue from the proxy's client span")
		}
	})
}
