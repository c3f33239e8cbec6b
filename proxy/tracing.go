package proxy

import (
	"context"
	"errors"

	"github.com/valyala/fasthttp"

	"github.com/strangler-proxy/strangler/config"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// propagator carries W3C traceparent and tracestate.
var propagator = propagation.TraceContext{}

// tracerName is the instrumentation scope of the proxy's spans.
const tracerName = "github.com/strangler-proxy/strangler/proxy"

// startClientSpan starts the span of one upstream call and writes its
// context into the outbound headers, so the upstream continues the trace.
// Without tracing it returns a nil span: the outbound request carries the
// client's traceparent and tracestate as they came, which is all a no-op
// provider would have written.
func (p *Proxy) startClientSpan(ctx context.Context, out propagation.TextMapCarrier, backend, role string, links ...trace.Link) (context.Context, trace.Span) {
	if !p.tracing {
		return ctx, nil
	}
	ctx, span := p.tracer.Start(ctx, role+" "+backend,
		trace.WithSpanKind(trace.SpanKindClient),
		trace.WithLinks(links...),
		trace.WithAttributes(attribute.String("backend", backend), attribute.String("role", role)))
	propagator.Inject(ctx, out)
	return ctx, span
}

// endSpan records an upstream call's status or error and ends its span.
func endSpan(span trace.Span, status int, err error) {
	if span == nil {
		return
	}
	if err != nil {
		// Spans leave the proxy: the error's text is redacted like a log's.
		msg := config.Redact(err.Error())
		span.RecordError(errors.New(msg))
		span.SetStatus(codes.Error, msg)
	} else {
		span.SetAttributes(semconv.HTTPResponseStatusCode(status))
		if status >= 500 {
			span.SetStatus(codes.Error, "")
		}
	}
	span.End()
}

// traceIDOf returns the trace id of ctx's span, or "".
func traceIDOf(ctx context.Context) string {
	if sc := trace.SpanContextFromContext(ctx); sc.HasTraceID() {
		return sc.TraceID().String()
	}
	return ""
}

// requestCarrier carries trace context in a fasthttp request header.
type requestCarrier struct{ h *fasthttp.RequestHeader }

func (c requestCarrier) Get(key string) string { return string(c.h.Peek(key)) }
func (c requestCarrier) Set(key, value string) { c.h.Set(key, value) }

func (c requestCarrier) Keys() []string {
	var keys []string
	for k := range c.h.All() {
		keys = append(keys, string(k))
	}
	return keys
}
