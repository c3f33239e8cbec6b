package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestParseMetrics(t *testing.T) {
	// A real scrape of strangler serve at weight 10 and shadow 100%, after
	// 51 requests with distinct user ids.
	f, err := os.Open(filepath.Join("testdata", "metrics-split-shadow.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, err := parseMetrics(f)
	if err != nil {
		t.Fatal(err)
	}
	want := counts{
		byBackend:   map[string]float64{"legacy": 45, "newpath": 6},
		comparisons: map[string]float64{"match": 51, "mismatch": 0, "noise": 0, "error": 0, "skipped": 0},
		shadows: map[string]float64{"sent": 51, "dropped_saturated": 0, "dropped_body_too_large": 0,
			"failed": 0, "skipped_unsafe": 0, "timeout": 0},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v; want %+v", got, want)
	}
	if problems := got.check(claim{weight: 10, shadowPercent: 100}); len(problems) > 0 {
		// 6 of 51 is 11.8%: within the tolerance.
		t.Errorf("check of the real scrape: got %q; want no problem", problems)
	}
}

func TestParseMetricsErrors(t *testing.T) {
	tests := []struct {
		name, text, wantErr string
	}{
		{"not strangler", "# TYPE up gauge\nup 1\n", "no strangler_requests_total"},
		{"not the text format", "strangler_requests_total{route=\"get-order\" 1\n", "parse /metrics"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseMetrics(strings.NewReader(tt.text))
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("got error %v; want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestParseMetricsCountsUnmatchedAndInFlight(t *testing.T) {
	text := `# TYPE strangler_requests_total counter
strangler_requests_total{backend="legacy",code="2xx",route="get-order"} 90
strangler_requests_total{backend="legacy",code="5xx",route="get-order"} 1
strangler_requests_total{backend="legacy",code="2xx",route="unmatched"} 7
# TYPE strangler_shadow_in_flight gauge
strangler_shadow_in_flight 3
`
	got, err := parseMetrics(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	if got.requests() != 91 || got.unmatched != 7 || got.inFlight != 3 {
		t.Errorf("got requests %v, unmatched %v, in flight %v; want 91, 7, 3", got.requests(), got.unmatched, got.inFlight)
	}
}

func TestCountsAdd(t *testing.T) {
	a := counts{byBackend: map[string]float64{"legacy": 9, "newpath": 1}, comparisons: map[string]float64{"match": 2}, unmatched: 1}
	b := counts{byBackend: map[string]float64{"legacy": 90}, shadows: map[string]float64{"sent": 5}, unmatched: 2}
	got := counts{}.add(a).add(b)
	want := counts{
		byBackend:   map[string]float64{"legacy": 99, "newpath": 1},
		comparisons: map[string]float64{"match": 2},
		shadows:     map[string]float64{"sent": 5},
		unmatched:   3,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v; want %+v", got, want)
	}
	if a.byBackend["legacy"] != 9 {
		t.Errorf("add changed its receiver: legacy %v; want 9", a.byBackend["legacy"])
	}
}

func TestCheck(t *testing.T) {
	tests := []struct {
		name  string
		claim claim
		c     counts
		want  []string // substrings of the problems, in order; none: ok
	}{
		{
			name:  "split as claimed",
			claim: claim{weight: 10},
			c:     counts{byBackend: map[string]float64{"legacy": 9010, "newpath": 990}},
		},
		{
			name:  "split not applied",
			claim: claim{weight: 10},
			c:     counts{byBackend: map[string]float64{"legacy": 10000}},
			want:  []string{"newpath served 0.0%, want 10% ± 2"},
		},
		{
			name:  "traffic missed the route",
			claim: claim{weight: 10},
			c:     counts{byBackend: map[string]float64{"legacy": 9, "newpath": 1}, unmatched: 5000},
			want:  []string{"5000 requests matched no route"},
		},
		{
			name:  "nothing counted",
			claim: claim{weight: 10},
			c:     counts{},
			want:  []string{"strangler counted no request"},
		},
		{
			name:  "shadowing with shadow off",
			claim: claim{},
			c:     counts{byBackend: map[string]float64{"legacy": 100}, shadows: map[string]float64{"sent": 100}, comparisons: map[string]float64{"match": 100}},
			want:  []string{"100 shadow calls and 100 comparisons with shadowing off"},
		},
		{
			name:  "shadow and compare all, a few left at wrk's stop",
			claim: claim{shadowPercent: 100},
			c: counts{byBackend: map[string]float64{"legacy": 10000}, shadows: map[string]float64{"sent": 10000},
				comparisons: map[string]float64{"match": 9970, "skipped": 30}},
		},
		{
			name:  "shadows dropped flatter the row",
			claim: claim{shadowPercent: 100},
			c: counts{byBackend: map[string]float64{"legacy": 10000}, shadows: map[string]float64{"sent": 5000, "dropped_saturated": 5000},
				comparisons: map[string]float64{"match": 5000, "skipped": 5000}},
			want: []string{"5000 shadows dropped_saturated", "compared 5000 of 10000"},
		},
		{
			name:  "identical backends disagree",
			claim: claim{shadowPercent: 100},
			c: counts{byBackend: map[string]float64{"legacy": 100}, shadows: map[string]float64{"sent": 100},
				comparisons: map[string]float64{"match": 90, "mismatch": 8, "error": 2}},
			want: []string{"8 comparisons mismatch", "2 comparisons error"},
		},
		{
			name:  "slow newpath: saturated by design, every sent one compared",
			claim: claim{shadowPercent: 100, saturates: true},
			c: counts{byBackend: map[string]float64{"legacy": 70000}, shadows: map[string]float64{"sent": 800, "dropped_saturated": 69200},
				comparisons: map[string]float64{"match": 800, "skipped": 69200}},
		},
		{
			name:  "slow newpath: shadows neither sent nor dropped",
			claim: claim{shadowPercent: 100, saturates: true},
			c: counts{byBackend: map[string]float64{"legacy": 70000}, shadows: map[string]float64{"sent": 800},
				comparisons: map[string]float64{"match": 800}},
			want: []string{"800 shadows sent or dropped_saturated of 70000 selected"},
		},
		{
			name:  "slow newpath: sent but timed out",
			claim: claim{shadowPercent: 100, saturates: true},
			c: counts{byBackend: map[string]float64{"legacy": 70000}, shadows: map[string]float64{"sent": 800, "timeout": 800, "dropped_saturated": 69200},
				comparisons: map[string]float64{"skipped": 70000}},
			want: []string{"compared 0 of 800"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.c.check(tt.claim)
			if len(got) != len(tt.want) {
				t.Fatalf("got %q; want %d problems like %q", got, len(tt.want), tt.want)
			}
			for i, w := range tt.want {
				if !strings.Contains(got[i], w) {
					t.Errorf("problem %d: got %q; want it to contain %q", i, got[i], w)
				}
			}
		})
	}
}

func TestLogShare(t *testing.T) {
	// nginx's bench log_format ends with $upstream_addr, HAProxy's with the
	// server name; HAProxy's own messages share its log.
	nginx := `127.0.0.1 [02/Dec/2026:12:21:16 +0000] "GET /orders/ord_1 HTTP/1.1" 200 221 0.001 127.0.0.1:26852
127.0.0.1 [02/Dec/2026:12:21:16 +0000] "GET /orders/ord_1 HTTP/1.1" 200 221 0.000 127.0.0.1:20408
127.0.0.1 [02/Dec/2026:12:21:16 +0000] "GET /orders/ord_1 HTTP/1.1" 200 221 0.000 127.0.0.1:26852
`
	haproxy := `[NOTICE]   (1234) : haproxy version is 2.6.12
127.0.0.1 [02/Dec/2026:12:21:21.156] "GET /orders/ord_1 HTTP/1.1" 200 333 4 newpath
127.0.0.1 [02/Dec/2026:12:21:21.161] "GET /orders/ord_1 HTTP/1.1" 200 333 0 legacy
127.0.0.1 [02/Dec/2026:12:21:21.172] "<BADREQ>" 400 0 0 <NOSRV>
`
	tests := []struct {
		name, text, upstream string
		hits, lines          int
	}{
		{"nginx", nginx, "127.0.0.1:20408", 1, 3},
		{"haproxy", haproxy, "newpath", 1, 2},
		{"empty", "", "newpath", 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hits, lines := logShare(tt.text, tt.upstream)
			if hits != tt.hits || lines != tt.lines {
				t.Errorf("got %d of %d lines; want %d of %d", hits, lines, tt.hits, tt.lines)
			}
		})
	}
}

func TestVmRSS(t *testing.T) {
	status := "Name:\tstrangler\nVmPeak:\t 2000000 kB\nVmHWM:\t   80000 kB\nVmRSS:\t   46592 kB\nThreads:\t9\n"
	got, err := vmRSS(strings.NewReader(status))
	if err != nil {
		t.Fatal(err)
	}
	if got != 45.5 {
		t.Errorf("got %v MB; want 45.5", got)
	}
	if _, err := vmRSS(strings.NewReader("Name:\tkthreadd\n")); err == nil {
		t.Error("got no error for a status without VmRSS; want one")
	}
}
