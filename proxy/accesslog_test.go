package proxy

import (
	"encoding/json"
	"strings"
	"testing"
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
