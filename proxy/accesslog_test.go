package proxy

import (
	"bufio"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestAppendJSONString(t *testing.T) {
	for _, s := range []string{"", "/orders/1", `a"b\c`, "tab\tnl\ncr\r", "nul\x00bell\x07", "héllo ✓", "bad\xffutf8", "</script>"} {
		var got string
		if err := json.Unmarshal(appendJSONString(nil, s), &got); err != nil {
			t.Errorf("%q: not a JSON string: %v (%s)", s, err, appendJSONString(nil, s))
			continue
		}
		if want := strings.ToValidUTF8(s, string(utf8.RuneError)); got != want {
			t.Errorf("%q decodes to %q; want %q", s, got, want)
		}
	}
}

// The access line has the fields SPEC §10 names, as slog wrote them.
func TestAccessLineFields(t *testing.T) {
	h := newHarness(t, nil, nil, "")
	h.get("/orders/1%22x", "X-Request-Id", "req-1")
	var line map[string]any
	for _, l := range strings.Split(h.logs.String(), "\n") {
		if strings.Contains(l, `"msg":"request"`) {
			if err := json.Unmarshal([]byte(l), &line); err != nil {
				t.Fatalf("access line is not JSON: %v\n%s", err, l)
			}
		}
	}
	for _, k := range []string{"time", "level", "msg", "request_id", "trace_id", "route", "backend", "method", "path", "status", "duration_ms", "shadow", "fallback"} {
		if _, ok := line[k]; !ok {
			t.Errorf("access line has no %q: %v", k, line)
		}
	}
	if line["request_id"] != "req-1" || line["path"] != `/orders/1"x` || line["status"] != float64(200) || line["level"] != "INFO" {
		t.Errorf("access line = %v", line)
	}
}

// lineWrites keeps each Write it is given.
type lineWrites struct{ writes []string }

func (w *lineWrites) Write(p []byte) (int, error) {
	w.writes = append(w.writes, string(p))
	return len(p), nil
}

// Buffered access lines leave the buffer whole, however their lengths
// fall against its size.
func TestBufferedAccessLinesStayWhole(t *testing.T) {
	rec := &lineWrites{}
	p := &Proxy{accessOut: bufio.NewWriterSize(rec, 4096), accessFlush: time.Hour}
	for i := range 500 {
		p.writeAccessLine([]byte(fmt.Sprintf(`{"n":%d,"pad":%q}`+"\n", i, strings.Repeat("x", i%97))))
	}
	_ = p.accessOut.Flush()
	lines := 0
	for _, w := range rec.writes {
		if !strings.HasSuffix(w, "\n") {
			t.Fatalf("a write out of the buffer ends mid-line: …%q", w[max(0, len(w)-40):])
		}
		lines += strings.Count(w, "\n")
	}
	if lines != 500 || len(rec.writes) < 2 {
		t.Errorf("%d lines in %d writes; want 500 lines, the buffer flushed more than once", lines, len(rec.writes))
	}
}
