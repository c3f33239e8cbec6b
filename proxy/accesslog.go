package proxy

import (
	"context"
	"log/slog"
	"time"
)

// accessLog writes the request's access line (SPEC §10).
func (p *Proxy) accessLog(x *exchange, status int, elapsed time.Duration) {
	attrs := [...]slog.Attr{
		slog.String("request_id", x.requestID),
		slog.String("trace_id", traceIDOf(x.in.Context())),
		slog.String("route", x.route),
		slog.String("backend", x.backend.String()),
		slog.String("method", x.in.Method),
		slog.String("path", x.in.URL.Path),
		slog.Int("status", status),
		slog.Float64("duration_ms", float64(elapsed.Microseconds())/1000),
		slog.String("shadow", x.shadow),
		slog.String("fallback", x.fallback),
	}
	p.logger.LogAttrs(context.Background(), slog.LevelInfo, "request", attrs[:]...)
}
