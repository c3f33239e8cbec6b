package proxy

import (
	"context"
	"log/slog"
	"time"
)

// accessLog writes the request's access line (SPEC §10).
func (p *Proxy) accessLog(x *exchange, method string, status int, elapsed time.Duration) {
	attrs := [...]slog.Attr{
		slog.String("request_id", x.id.requestID),
		slog.String("trace_id", traceIDOf(x.traceCtx)),
		slog.String("route", x.route),
		slog.String("backend", x.backend.String()),
		slog.String("method", method),
		slog.String("path", string(x.ctx.Path())),
		slog.Int("status", status),
		slog.Float64("duration_ms", float64(elapsed.Microseconds())/1000),
		slog.String("shadow", x.shadow),
		slog.String("fallback", x.fallback),
	}
	p.logger.LogAttrs(context.Background(), slog.LevelInfo, "request", attrs[:]...)
}
