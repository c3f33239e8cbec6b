package newpath_test

import (
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/strangler-proxy/strangler/newpath"
)

// traceParents records the traceparent of every request that reaches the
// fake services, by path.
type traceParents struct {
	mu     sync.Mutex
	byPath map[string][]string
}

func (tp *traceParents) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tp.mu.Lock()
		if tp.byPath == nil {
			tp.byPath = map[string][]string{}
		}
		tp.byPath[r.URL.Path] = append(tp.byPath[r.URL.Path], r.Header.Get("Traceparent"))
		tp.mu.Unlock()
		next.ServeHTTP(w, r)
	})
}

func (tp *traceParents) of(path string) []string {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	return append([]string(nil), tp.byPath[path]...)
}

// recordingProvider records every span newpath ends.
func recordingProvider(t *testing.T) (*tracetest.SpanRecorder, trace.TracerProvider) {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(t.Context()) })
	return rec, tp
}

// spansNamed returns the ended spans called name.
func spansNamed(spans []sdktrace.ReadOnlySpan, name string) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range spans {
		if s.Name() == name {
			out = append(out, s)
		}
	}
	return out
}

func attrsOf(s sdktrace.ReadOnlySpan) map[string]string {
	out := map[string]string{}
	for _, kv := range s.Attributes() {
		out[string(kv.Key)] = kv.Value.String()
	}
	return out
}

func spanNames(spans []sdktrace.ReadOnlySpan) []string {
	out := make([]string, len(spans))
	for i, s := range spans {
		out[i] = s.Name()
	}
	return out
}

// traceParentOf is the traceparent a service receives from span.
func traceParentOf(span sdktrace.ReadOnlySpan) string {
	return "00-" + span.SpanContext().TraceID().String() + "-" + span.SpanContext().SpanID().String() + "-01"
}

// TestOrderTraceFollowsTheOutbox is SPEC §10's newpath trace: a POST
// /orders that arrives with a traceparent is one trace, its server span a
// child of the caller's, with a client span per downstream call and, on
// Postgres, a span per SQL statement; the warehouse is down, so the
// relay delivers order_paid later, and that delivery joins the same trace
// as a child of the request's span and hands the trace on to the
// warehouse.
func TestOrderTraceFollowsTheOutbox(t *testing.T) {
	const (
		clientTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
		clientSpan  = "00f067aa0ba902b7"
	)
	for _, kind := range storeKinds {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			rec, tp := recordingProvider(t)
			var got traceParents
			e := newEnv(t, envOptions{kind: kind, faults: warehouseDown, tracerProvider: tp, wrapDownstream: got.wrap})

			r := send(t, "POST", e.newpathURL+"/orders", orderBody, map[string]string{"Traceparent": "00-" + clientTrace + "-" + clientSpan + "-01"})
			if r.status != http.StatusCreated {
				t.Fatalf("POST /orders = %d %s", r.status, r.body)
			}
			order := decodeOrder(t, r.body)
			var spans []sdktrace.ReadOnlySpan
			waitFor(t, 5*time.Second, "the server span to end", func() bool {
				spans = rec.Ended()
				return len(spansNamed(spans, "POST /orders")) == 1
			})
			server := spansNamed(spans, "POST /orders")[0]
			if server.SpanKind() != trace.SpanKindServer {
				t.Errorf("server span kind = %v; want server", server.SpanKind())
			}
			if got := server.Parent().SpanID().String(); got != clientSpan || !server.Parent().IsRemote() {
				t.Errorf("server span parent = %s (remote %v); want the caller's span %s", got, server.Parent().IsRemote(), clientSpan)
			}
			for k, want := range map[string]string{"http.request.method": "POST", "http.route": "/orders", "http.response.status_code": "201",
				"dry_run": "false", "idempotent_replayed": "false"} {
				if got := attrsOf(server)[k]; got != want {
					t.Errorf("server span %s = %q; want %q", k, got, want)
				}
			}
			for _, name := range []string{"GET /inventory/{item_id}", "POST /inventory/{item_id}/reserve", "POST /payments"} {
				calls := spansNamed(spans, name)
				if len(calls) != 1 {
					t.Errorf("%d spans %q; want 1 in %v", len(calls), name, spanNames(spans))
					continue
				}
				if calls[0].SpanKind() != trace.SpanKindClient || calls[0].Parent().SpanID() != server.SpanContext().SpanID() {
					t.Errorf("span %q: kind %v, parent %s; want a client span under the server span", name, calls[0].SpanKind(), calls[0].Parent().SpanID())
				}
			}
			// The immediate delivery fails: the warehouse is down.
			if ds := spansNamed(spans, "deliver order_paid"); len(ds) != 1 || ds[0].Parent().SpanID() != server.SpanContext().SpanID() ||
				ds[0].Status().Code != codes.Error || attrsOf(ds[0])["outbox.result"] != "failed" {
				t.Errorf("immediate delivery spans = %v; want one failed, under the server span", ds)
			}

			var sqlSpans []sdktrace.ReadOnlySpan
			for _, s := range spans {
				if _, ok := attrsOf(s)["db.system"]; ok {
					sqlSpans = append(sqlSpans, s)
				}
			}
			if kind == memoryKind && len(sqlSpans) != 0 {
				t.Errorf("SQL spans on the memory store: %v", spanNames(sqlSpans))
			}
			if kind == postgresKind {
				for _, name := range []string{"get_user", "BEGIN", "insert_order_next_id", "BATCH insert_event", "COMMIT", "mark_failed"} {
					if len(spansNamed(sqlSpans, name)) == 0 {
						t.Errorf("no SQL span %q in %v", name, spanNames(sqlSpans))
					}
				}
				for _, s := range sqlSpans {
					a := attrsOf(s)
					if s.SpanKind() != trace.SpanKindClient || a["db.system"] != "postgresql" || a["db.system.name"] != "postgresql" {
						t.Errorf("SQL span %q: kind %v, attributes %v; want a client span with db.system postgresql", s.Name(), s.SpanKind(), a)
					}
					for k, v := range a {
						if strings.Contains(v, "$1") || strings.Contains(v, order.ItemID) || strings.Contains(v, "FROM") {
							t.Errorf("SQL span %q attribute %s = %q: SQL text or a value leaked", s.Name(), k, v)
						}
					}
				}
			}

			// The warehouse is back: the relay delivers order_paid.
			e.setFaults(t, `{"warehouse":{"down":false}}`)
			waitFor(t, 10*time.Second, "the relay to ship the order", func() bool {
				if _, err := e.relay.RunOnce(t.Context()); err != nil {
					t.Fatal(err)
				}
				return e.downstream.Shipments(order.ID) == 1
			})
			var relayed sdktrace.ReadOnlySpan
			waitFor(t, 5*time.Second, "the relay's delivery span to end", func() bool {
				spans = rec.Ended()
				for _, s := range spansNamed(spans, "deliver order_paid") {
					if attrsOf(s)["outbox.result"] == "delivered" {
						relayed = s
					}
				}
				return relayed != nil
			})
			if relayed.SpanKind() != trace.SpanKindConsumer || relayed.Parent().SpanID() != server.SpanContext().SpanID() {
				t.Errorf("relay delivery span: kind %v, parent %s; want a consumer span under the request's span %s",
					relayed.SpanKind(), relayed.Parent().SpanID(), server.SpanContext().SpanID())
			}
			if a := attrsOf(relayed); a["event.kind"] != "order_paid" || a["order.id"] != order.ID || a["event.attempt"] != "2" {
				t.Errorf("relay delivery span attributes = %v; want order_paid of %s, attempt 2", a, order.ID)
			}
			var call sdktrace.ReadOnlySpan
			for _, s := range spansNamed(spans, "POST /warehouse/shipments") {
				if s.Parent().SpanID() == relayed.SpanContext().SpanID() {
					call = s
				}
			}
			if call == nil {
				t.Fatalf("no warehouse call span under the relay's delivery span in %v", spanNames(spans))
			}
			shipments := got.of("/warehouse/shipments")
			if len(shipments) != 2 || shipments[1] != traceParentOf(call) {
				t.Errorf("warehouse got traceparents %q; want the failed try's, then %s", shipments, traceParentOf(call))
			}
			if kind == postgresKind {
				// The relay may mark the mail's delivery too: look for the
				// warehouse delivery's mark among them.
				marks := spansNamed(spans, "mark_delivered")
				under := false
				for _, m := range marks {
					under = under || m.Parent().SpanID() == relayed.SpanContext().SpanID()
				}
				if !under {
					t.Errorf("mark_delivered spans %v; want one under the relay's delivery span", spanNames(marks))
				}
			}

			// The confirmation mail went out in the same trace too, and the
			// relay's polling made no trace of its own.
			if mails := got.of("/mail/send"); len(mails) != 1 || !strings.HasPrefix(mails[0], "00-"+clientTrace+"-") {
				t.Errorf("mail service got traceparents %q; want one of trace %s", mails, clientTrace)
			}
			for _, s := range spans {
				if got := s.SpanContext().TraceID().String(); got != clientTrace {
					t.Errorf("span %q in trace %s; want the caller's trace %s", s.Name(), got, clientTrace)
				}
			}
		})
	}
}

// TestServerSpans: every request's span is named after its route, and
// says whether it was a dry run or an idempotent replay.
func TestServerSpans(t *testing.T) {
	rec, tp := recordingProvider(t)
	e := newEnv(t, envOptions{kind: memoryKind, tracerProvider: tp})
	tests := []struct {
		name   string
		method string
		path   string
		body   string
		header map[string]string
		want   string
		attrs  map[string]string
	}{
		{name: "create", method: "POST", path: "/orders", body: orderBody, header: map[string]string{"Idempotency-Key": "k-1"},
			want: "POST /orders", attrs: map[string]string{"http.route": "/orders", "http.response.status_code": "201", "idempotent_replayed": "false"}},
		{name: "replay", method: "POST", path: "/orders", body: orderBody, header: map[string]string{"Idempotency-Key": "k-1"},
			want: "POST /orders", attrs: map[string]string{"http.response.status_code": "201", "idempotent_replayed": "true"}},
		{name: "dry run", method: "POST", path: "/orders", body: orderBody, header: map[string]string{newpath.DryRunHeader: "1"},
			want: "POST /orders", attrs: map[string]string{"dry_run": "true", "idempotent_replayed": "false"}},
		{name: "get", method: "GET", path: "/orders/ord_1",
			want: "GET /orders/{id}", attrs: map[string]string{"http.route": "/orders/{id}", "http.response.status_code": "200", "dry_run": "false"}},
		{name: "wrong method", method: "DELETE", path: "/orders/ord_1",
			want: "DELETE /orders/{id}", attrs: map[string]string{"http.response.status_code": "405"}},
		{name: "no route", method: "GET", path: "/nowhere/1",
			want: "GET", attrs: map[string]string{"http.route": "", "http.response.status_code": "404"}},
		{name: "unknown method", method: "BREW", path: "/nowhere",
			want: "HTTP", attrs: map[string]string{"http.request.method": "_OTHER"}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			traceID := strings.Repeat("0", 31) + string(rune('1'+i))
			header := map[string]string{"Traceparent": "00-" + traceID + "-00f067aa0ba902b7-01"}
			for k, v := range tt.header {
				header[k] = v
			}
			send(t, tt.method, e.newpathURL+tt.path, tt.body, header)
			var server sdktrace.ReadOnlySpan
			waitFor(t, 5*time.Second, "the server span to end", func() bool {
				for _, s := range rec.Ended() {
					if s.SpanKind() == trace.SpanKindServer && s.SpanContext().TraceID().String() == traceID {
						server = s
					}
				}
				return server != nil
			})
			if server.Name() != tt.want {
				t.Errorf("span name = %q; want %q", server.Name(), tt.want)
			}
			attrs := attrsOf(server)
			for k, want := range tt.attrs {
				if attrs[k] != want {
					t.Errorf("%s = %q; want %q", k, attrs[k], want)
				}
			}
		})
	}
}

// TestTraceContextPropagatesWithoutTracer: with no tracer provider nothing
// is recorded, but the caller's trace still reaches the downstream
// services, now and from the outbox, so that their spans join it.
func TestTraceContextPropagatesWithoutTracer(t *testing.T) {
	const inbound = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	var got traceParents
	e := newEnv(t, envOptions{kind: memoryKind, wrapDownstream: got.wrap})
	o := decodeOrder(t, send(t, "POST", e.newpathURL+"/orders", orderBody, map[string]string{"Traceparent": inbound}).body)
	waitFor(t, 10*time.Second, "the relay to send the mail", func() bool {
		if _, err := e.relay.RunOnce(t.Context()); err != nil {
			t.Fatal(err)
		}
		return e.downstream.Mails(o.ID) == 1
	})
	for _, path := range []string{"/inventory/sku-3", "/payments", "/warehouse/shipments", "/mail/send"} {
		if tps := got.of(path); len(tps) != 1 || tps[0] != inbound {
			t.Errorf("%s got traceparents %q; want the caller's %q", path, tps, inbound)
		}
	}
	events, err := e.stores.newpath.OrderEvents(t.Context(), o.ID)
	if err != nil || len(events) != 2 {
		t.Fatalf("events = %v, %v", events, err)
	}
	for _, ev := range events {
		if ev.TraceParent != inbound {
			t.Errorf("%s event stores traceparent %q; want %q", ev.Kind, ev.TraceParent, inbound)
		}
	}
}
