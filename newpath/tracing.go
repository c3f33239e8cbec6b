package newpath

import (
	"context"
	"net/http"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// tracerName is the instrumentation scope of newpath's spans.
const tracerName = "github.com/strangler-proxy/strangler/newpath"

// propagator carries W3C traceparent and tracestate, in and out.
var propagator = propagation.TraceContext{}

// Attributes of newpath's spans that no semantic convention names.
const (
	attrDryRun         = attribute.Key("dry_run")
	attrReplayed       = attribute.Key("idempotent_replayed")
	attrEventID        = attribute.Key("event.id")
	attrEventKind      = attribute.Key("event.kind")
	attrOrderID        = attribute.Key("order.id")
	attrAttempt        = attribute.Key("event.attempt")
	attrDeliveryResult = attribute.Key("outbox.result")
	attrRelay          = attribute.Key("outbox.relay")
)

// tracerFrom returns the tracer of tp, or a no-op one for nil. A no-op
// tracer still hands the inbound span context on, so the downstream calls
// and the outbox rows carry the caller's trace even when nothing records.
func tracerFrom(tp trace.TracerProvider) trace.Tracer {
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	return tp.Tracer(tracerName)
}

// traceParentOf returns the W3C traceparent of ctx's span, or "" when ctx
// holds none: what an outbox row stores so that its delivery joins the
// trace of the request that wrote it.
func traceParentOf(ctx context.Context) string {
	carrier := propagation.MapCarrier{}
	propagator.Inject(ctx, carrier)
	return carrier.Get("traceparent")
}

// withTraceParent returns ctx carrying the remote span context of
// traceParent; an empty or malformed one leaves ctx as it is.
func withTraceParent(ctx context.Context, traceParent string) context.Context {
	if traceParent == "" {
		return ctx
	}
	return propagator.Extract(ctx, propagation.MapCarrier{"traceparent": traceParent})
}

// spanName is a server span's name by the semantic conventions: the method
// and the route pattern, or the method alone for an unrouted request, and
// HTTP for a method outside the standard ones, so that names stay few
// whatever clients send.
func spanName(method, route string) string {
	if methodAttr(method).Value.AsString() == "_OTHER" {
		method = "HTTP"
	}
	if route == "" {
		return method
	}
	return method + " " + route
}

// routeOf is the path template of a ServeMux pattern ("POST /orders/{id}"
// → "/orders/{id}"); "" for the catch-all, which routes nothing.
func routeOf(pattern string) string {
	if i := strings.IndexByte(pattern, ' '); i >= 0 {
		pattern = pattern[i+1:]
	}
	if pattern == "/" {
		return ""
	}
	return pattern
}

// methodAttr is http.request.method, with methods outside RFC 9110 and
// PATCH folded into _OTHER as the conventions ask, to bound the values.
func methodAttr(method string) attribute.KeyValue {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace:
		return semconv.HTTPRequestMethodKey.String(method)
	}
	return semconv.HTTPRequestMethodKey.String("_OTHER")
}

// endHTTPSpan records an HTTP exchange's status (0: no answer) and error
// and ends span. As in the proxy, only a 5xx or a failed exchange marks
// the span failed: a 404 item or a 409 reservation is an answer the order
// flow expects.
func endHTTPSpan(span trace.Span, status int, err error) {
	if status > 0 {
		span.SetAttributes(semconv.HTTPResponseStatusCode(status))
	}
	switch {
	case err != nil:
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	case status >= 500:
		span.SetStatus(codes.Error, "")
	}
	span.End()
}
