package main

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func TestSummarize(t *testing.T) {
	tests := []struct {
		name   string
		values []float64
		want   spread
	}{
		{"none", nil, spread{}},
		{"one round", []float64{7}, spread{median: 7, min: 7, max: 7}},
		{"odd count, unsorted", []float64{30, 10, 20}, spread{median: 20, min: 10, max: 30}},
		{"even count: mean of the middle two", []float64{4, 1, 3, 2}, spread{median: 2.5, min: 1, max: 4}},
		{"an outlier moves the range, not the median", []float64{100, 101, 5, 99, 102}, spread{median: 100, min: 5, max: 102}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := summarize(tt.values); got != tt.want {
				t.Errorf("got %+v; want %+v", got, tt.want)
			}
		})
	}
}

func TestSummarizeLeavesItsInputAlone(t *testing.T) {
	v := []float64{3, 1, 2}
	summarize(v)
	if v[0] != 3 || v[1] != 1 || v[2] != 2 {
		t.Errorf("got %v after summarize; want [3 1 2]", v)
	}
}

func TestRatio(t *testing.T) {
	tests := []struct {
		a, b   float64
		want   float64
		wantOK bool
	}{
		{12000, 15000, 0.8, true},
		{1, 0, 0, false},  // the base row measured nothing
		{1, -1, 0, false}, // nor a negative one
	}
	for _, tt := range tests {
		got, ok := ratio(tt.a, tt.b)
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("ratio(%v, %v): got %v, %v; want %v, %v", tt.a, tt.b, got, ok, tt.want, tt.wantOK)
		}
	}
}

func TestTargetVerdict(t *testing.T) {
	atLeast := func(v float64) condition {
		return condition{label: "req/s", value: v, measured: true, op: "≥", limit: 0.8, unit: "×"}
	}
	tests := []struct {
		name   string
		target target
		want   string
	}{
		{"met", target{name: "split", conditions: []condition{atLeast(0.8)}},
			"PASS split: req/s 0.800× (target ≥ 0.8×)"},
		{"missed", target{name: "split", conditions: []condition{atLeast(0.79)}},
			"MISS split: req/s 0.790× (target ≥ 0.8×)"},
		{"missed by a hair shows as missed", target{name: "split", conditions: []condition{atLeast(0.7956)}},
			"MISS split: req/s 0.796× (target ≥ 0.8×)"},
		{"one of two missed", target{name: "split", conditions: []condition{atLeast(1.2),
			{label: "p99", value: 1.51, measured: true, op: "≤", limit: 1.5, unit: "×"}}},
			"MISS split: req/s 1.200× (target ≥ 0.8×), p99 1.510× (target ≤ 1.5×)"},
		{"at the limit of ≤", target{name: "p99", conditions: []condition{{label: "p99", value: 1.1, measured: true, op: "≤", limit: 1.1, unit: "×"}}},
			"PASS p99: p99 1.100× (target ≤ 1.1×)"},
		{"at the limit of <", target{name: "rss", conditions: []condition{{label: "VmRSS", value: 150, measured: true, op: "<", limit: 150, unit: " MB"}}},
			"MISS rss: VmRSS 150.0 MB (target < 150 MB)"},
		{"a row did not run", target{name: "split", conditions: []condition{atLeast(2), {label: "p99", op: "≤", limit: 1.5, unit: "×"}}},
			"n/a split: req/s 2.000× (target ≥ 0.8×), p99 n/a (target ≤ 1.5×)"},
		{"a PASS keeps its caveat", target{name: "split", conditions: []condition{atLeast(1)}, caveat: "but the check of x failed (see notes)"},
			"PASS split: req/s 1.000× (target ≥ 0.8×); but the check of x failed (see notes)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.target.line(); got != tt.want {
				t.Errorf("got %q; want %q", got, tt.want)
			}
		})
	}
}

// sampled is a row result of wrk runs with the given req/s and p99 in ms.
func sampled(key, name string, runs ...[2]float64) *rowResult {
	r := &rowResult{row: row{key: key, name: name}}
	for _, run := range runs {
		p99 := time.Duration(run[1] * float64(time.Millisecond))
		r.samples = append(r.samples, wrkResult{rps: run[0], p50: p99 / 3, p99: p99})
	}
	return r
}

func testOptions() options {
	return options{rounds: 3, soak: time.Minute, slowLatency: 2 * time.Second}
}

func TestPairedRatios(t *testing.T) {
	// A slow second round halves both rows: their medians are 9000 and
	// 3000 (3×), yet a is 2× b in every round.
	got, ok := pairedRatios([]float64{10000, 5000, 9000}, []float64{5000, 2500, 3000})
	if want := (spread{median: 2, min: 2, max: 3}); !ok || got != want {
		t.Errorf("pairedRatios: got %+v, %v; want %+v, true", got, ok, want)
	}
	for _, c := range []struct {
		name string
		a, b []float64
	}{
		{"no rounds", nil, nil},
		{"rounds differ", []float64{1, 2}, []float64{1}},
		{"b not measured", []float64{1, 2}, []float64{1, 0}},
	} {
		if got, ok := pairedRatios(c.a, c.b); ok {
			t.Errorf("%s: got %+v, true; want false", c.name, got)
		}
	}
}

func TestTargets(t *testing.T) {
	byKey := map[string]*rowResult{
		rowNginxSplit:      sampled(rowNginxSplit, "nginx split", [2]float64{16000, 4}, [2]float64{15000, 5}, [2]float64{14000, 6}),
		rowStranglerSplit:  sampled(rowStranglerSplit, "strangler split", [2]float64{13000, 7}, [2]float64{11900, 7.5}, [2]float64{1000, 90}),
		rowNginxMirror:     sampled(rowNginxMirror, "nginx mirror", [2]float64{4000, 15}),
		rowStranglerShadow: sampled(rowStranglerShadow, "strangler shadow", [2]float64{7000, 12}),
		rowSlowOff:         sampled(rowSlowOff, "slow off", [2]float64{13000, 7}),
		rowSlowShadow:      sampled(rowSlowShadow, "slow shadow", [2]float64{12500, 7.7}),
	}
	byKey[rowStranglerShadow].problems = []string{"5000 shadows dropped_saturated"}
	soak := &slowShadowSoak{rssMB: 46.5}
	got := targets(byKey, soak, testOptions())
	want := []string{
		// Paired by round: 13000/16000, 11900/15000 and 1000/14000; the
		// slow third round is one ratio of three, and the median drops it.
		"MISS strangler split 10% vs nginx split_clients 10%: req/s 0.793× (rounds 0.071–0.812; target ≥ 0.8×), p99 1.750× (rounds 1.500–15.000; target ≤ 1.5×)",
		"MISS strangler shadow 100% + compare vs nginx mirror 100%: req/s 1.750× (target ≥ 2×); but the check of strangler shadow failed (see notes)",
		"PASS client p99 with a 2s newpath, shadow 100% vs shadow off: p99 1.100× (target ≤ 1.1×)",
		"PASS strangler VmRSS after 60s of shadow 100% to the 2s newpath: VmRSS 46.5 MB (target < 150 MB)",
	}
	if len(got) != len(want) {
		t.Fatalf("got %d targets; want %d", len(got), len(want))
	}
	for i := range want {
		if line := got[i].line(); line != want[i] {
			t.Errorf("target %d:\ngot  %q\nwant %q", i, line, want[i])
		}
	}
	if v := targets(map[string]*rowResult{}, nil, testOptions())[0].verdict(); v != "n/a" {
		t.Errorf("verdict with no rows: got %q; want n/a", v)
	}
}

func TestReportGolden(t *testing.T) {
	nginxSplit := sampled(rowNginxSplit, "nginx split_clients 10%", [2]float64{16000, 4}, [2]float64{15000, 5}, [2]float64{14000, 6})
	nginxSplit.wantShare, nginxSplit.logLines, nginxSplit.logNewpath = 10, 1000, 100
	nginxSplit.check()
	split := sampled(rowStranglerSplit, "strangler split 10%", [2]float64{13000, 7}, [2]float64{12000, 7.5}, [2]float64{1000, 90})
	split.claim, split.scraped, split.rssMB = claim{weight: 10}, true, []float64{30.5, 31, 30.8}
	split.counts = counts{byBackend: map[string]float64{"legacy": 9000, "newpath": 4000}}
	split.check()
	rows := []*rowResult{
		sampled(rowDirect, "direct backend", [2]float64{31000, 5.9}, [2]float64{30000, 6}, [2]float64{29000, 6.1}),
		nginxSplit,
		split,
	}
	got := report("header", rows, nil, testOptions())
	golden := filepath.Join("testdata", "report.golden")
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Errorf("report differs from %s (go test -update to accept):\ngot\n%s\nwant\n%s", golden, got, want)
	}
	if !strings.Contains(got, "strangler split 10% (check failed)") {
		t.Error("a row whose check failed is not marked in the table")
	}
}

func TestBusyWarning(t *testing.T) {
	tests := []struct {
		before, after float64
		warn          bool
	}{
		{0, 1, false},
		{10, 10, false},
		{24, 98, true}, // a make test ran during the rounds
		{0, 50, true},
		{-1, -1, false}, // unknown: /proc/stat unreadable
	}
	for _, tt := range tests {
		if got := busyWarning(tt.before, tt.after); (got != "") != tt.warn {
			t.Errorf("busyWarning(%v, %v) = %q; want a warning: %v", tt.before, tt.after, got, tt.warn)
		}
	}
}
