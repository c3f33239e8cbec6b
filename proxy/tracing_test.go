package proxy

import (
	"net/http"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

func TestOneRequestIsOneTrace(t *testing.T) {
	var newpathParent, legacyParent string
	legacy := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		legacyParent = r.Header.Get("Traceparent")
		w.Write([]byte(`{"id":1}`))
	})
	newpath := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		newpathParent = r.Header.Get("Traceparent")
		w.Write([]byte(`{"id":1}`))
	})
	h := newHarness(t, legacy, newpath, shadowAll)
	const clientTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	h.get("/orders/1", "Traceparent", "00-"+clientTrace+"-00f067aa0ba902b7-01")
	h.waitCompared("get-order", 1)

	var spans []sdktrace.ReadOnlySpan
	eventually(t, 5*time.Second, "compare span ended", func() bool {
		spans = h.spans.Ended()
		return len(spans) >= 4
	})
	byName := map[string]sdktrace.ReadOnlySpan{}
	for _, s := range spans {
		byName[s.Name()] = s
		if got := s.SpanContext().TraceID().String(); got != clientTrace {
			t.Errorf("span %q in trace %s; want the client's trace %s", s.Name(), got, clientTrace)
		}
	}
	server, primary, shadow, compare := byName["GET get-order"], byName["primary legacy"], byName["shadow newpath"], byName["compare"]
	if server == nil || primary == nil || shadow == nil || compare == nil {
		t.Fatalf("spans %v; want the server, primary, shadow and compare spans", names(spans))
	}
	if server.SpanKind() != trace.SpanKindServer || primary.SpanKind() != trace.SpanKindClient || shadow.SpanKind() != trace.SpanKindClient {
		t.Error("wrong span kinds")
	}
	for _, child := range []sdktrace.ReadOnlySpan{primary, shadow, compare} {
		if child.Parent().SpanID() != server.SpanContext().SpanID() {
			t.Errorf("span %q is not a child of the server span", child.Name())
		}
	}
	if links := shadow.Links(); len(links) != 1 || links[0].SpanContext.SpanID() != server.SpanContext().SpanID() {
		t.Errorf("shadow span links = %v; want a link to the request span", links)
	}
	attrs := map[string]string{}
	for _, kv := range append(server.Attributes(), compare.Attributes()...) {
		attrs[string(kv.Key)] = kv.Value.String()
	}
	for k, v := range map[string]string{"route": "get-order", "backend": "legacy", "shadowed": "true", "result": "match"} {
		if attrs[k] != v {
			t.Errorf("attribute %s = %q; want %q", k, attrs[k], v)
		}
	}
	// Each upstream continues from its own client span.
	if want := "00-" + clientTrace + "-" + primary.SpanContext().SpanID().String() + "-01"; legacyParent != want {
		t.Errorf("legacy got traceparent %q; want %q", legacyParent, want)
	}
	if want := "00-" + clientTrace + "-" + shadow.SpanContext().SpanID().String() + "-01"; newpathParent != want {
		t.Errorf("newpath got traceparent %q; want %q", newpathParent, want)
	}
}

func names(spans []sdktrace.ReadOnlySpan) []string {
	out := make([]string, len(spans))
	for i, s := range spans {
		out[i] = s.Name()
	}
	return out
}
