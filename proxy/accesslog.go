package proxy

import (
	"context"
	"io"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// accessLog writes the request's access line (SPEC §10) to the access
// log: the JSON object slog's JSON handler writes for
// logger.Info("request", ...), encoded by hand. The line is on every
// request, and slog's general encoder cost the proxy a sixth of its
// throughput. It is written when the logger is enabled at info.
func (p *Proxy) accessLog(x *exchange, method string, status int, elapsed time.Duration) {
	if !p.logger.Enabled(context.Background(), slog.LevelInfo) {
		return
	}
	bp := lineBuffers.Get().(*[]byte)
	b := (*bp)[:0]
	b = append(b, `{"time":"`...)
	b = p.now().AppendFormat(b, "2006-01-02T15:04:05.000000000Z07:00")
	b = append(b, `","level":"INFO","msg":"request","request_id":`...)
	b = appendJSONString(b, x.id.requestID)
	b = append(b, `,"trace_id":`...)
	b = appendJSONString(b, traceIDOf(x.traceCtx))
	b = append(b, `,"route":`...)
	b = appendJSONString(b, x.route)
	b = append(b, `,"backend":`...)
	b = appendJSONString(b, x.backend.String())
	b = append(b, `,"method":`...)
	b = appendJSONString(b, method)
	b = append(b, `,"path":`...)
	b = appendJSONString(b, b2s(x.ctx.Path()))
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, `,"duration_ms":`...)
	b = strconv.AppendFloat(b, float64(elapsed.Microseconds())/1000, 'g', -1, 64)
	b = append(b, `,"shadow":`...)
	b = appendJSONString(b, x.shadow)
	b = append(b, `,"fallback":`...)
	b = appendJSONString(b, x.fallback)
	b = append(b, "}\n"...)
	p.writeAccessLine(b)
	*bp = b
	lineBuffers.Put(bp)
}

// writeAccessLine writes one line to the access log. A line never
// straddles two writes out of the buffer: bufio would cut it where the
// buffer fills, and the logger's lines, written to the same file
// directly, could land between the halves.
func (p *Proxy) writeAccessLine(line []byte) {
	p.accessMu.Lock()
	defer p.accessMu.Unlock()
	if len(line) > p.accessOut.Available() && p.accessOut.Buffered() > 0 {
		_ = p.accessOut.Flush()
	}
	_, _ = p.accessOut.Write(line)
	if p.accessFlush <= 0 {
		_ = p.accessOut.Flush()
	}
}

var lineBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// appendJSONString appends s as a JSON string: control characters,
// quotes and backslashes escaped, invalid UTF-8 replaced by U+FFFD.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// flushAccessLog writes buffered access lines out every accessFlush until
// ctx is done, and once more then.
func (p *Proxy) flushAccessLog(ctx context.Context) {
	tick := time.NewTicker(p.accessFlush)
	defer tick.Stop()
	flush := func() {
		p.accessMu.Lock()
		_ = p.accessOut.Flush()
		p.accessMu.Unlock()
	}
	defer flush()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			flush()
		}
	}
}

// accessWriter is where access lines go: Options.AccessLog, else
// standard error, where slog's default logger writes.
func accessWriter(w io.Writer) io.Writer {
	if w == nil {
		return os.Stderr
	}
	return w
}
