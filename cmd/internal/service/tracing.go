package service

import (
	"context"
	"fmt"
	"io"
	"os"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/strangler-proxy/strangler/config"
)

// NewTracerProvider builds the tracer provider tracing configures: none is
// a no-op (trace context still propagates), stdout pretty-prints spans to
// w, otlp exports over HTTP with the OTEL_EXPORTER_OTLP_* environment
// respected. OTEL_EXPORTER_OTLP_ENDPOINT alone also selects otlp. The
// returned shutdown flushes what is buffered.
func NewTracerProvider(ctx context.Context, cfg config.Tracing, service, version string, w io.Writer) (trace.TracerProvider, func(context.Context) error, error) {
	exporter := cfg.Exporter
	if exporter == "none" && (os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "") {
		exporter = "otlp"
	}
	var exp sdktrace.SpanExporter
	var err error
	switch exporter {
	case "none":
		return noop.NewTracerProvider(), func(context.Context) error { return nil }, nil
	case "stdout":
		exp, err = stdouttrace.New(stdouttrace.WithWriter(w), stdouttrace.WithPrettyPrint())
	case "otlp":
		exp, err = otlptracehttp.New(ctx)
	default:
		return nil, nil, fmt.Errorf("unknown trace exporter %q", exporter)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("trace exporter %s: %w", exporter, err)
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(
		semconv.ServiceName(service), semconv.ServiceVersion(version)))
	if err != nil {
		return nil, nil, fmt.Errorf("trace resource: %w", err)
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(cfg.SampleRatio))),
	)
	return tp, tp.Shutdown, nil
}
