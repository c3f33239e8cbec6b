package proxy

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/strangler-proxy/strangler/config"
)

// readCaptures returns the samples of a capture file, failing on a line
// that is not one.
func readCaptures(t *testing.T, path string) []Sample {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []Sample
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var s Sample
		if err := json.Unmarshal(sc.Bytes(), &s); err != nil {
			t.Fatalf("%s: a line that is no sample (%v): %s", path, err, sc.Text())
		}
		out = append(out, s)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestCaptureRecordsEveryResult: with capture.percent 100, every compared
// request is captured with its result, matches too, its credentials
// redacted; what is queued when the proxy stops is written.
func TestCaptureRecordsEveryResult(t *testing.T) {
	file := filepath.Join(t.TempDir(), "captures.jsonl")
	differ := func(odd int) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			var id int
			fmt.Sscanf(strings.TrimPrefix(r.URL.Path, "/orders/"), "%d", &id)
			total := 1000
			if id%2 == 1 {
				total += odd
			}
			fmt.Fprintf(w, `{"id":%d,"total_cents":%d}`, id, total)
		}
	}
	h := newHarness(t, differ(0), differ(1), fmt.Sprintf(`
capture: { file: %q }
routes:
  - name: get-order
    match: "GET /orders/{id}"
    shadow: { percent: 100 }
    capture: { percent: 100 }
  - name: other
    match: "GET /other"
    shadow: { percent: 100 }
`, file))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { h.proxy.Run(ctx); close(done) }()
	for i := range 10 {
		h.get(fmt.Sprintf("/orders/%d?v=1", i), "Authorization", "Bearer top-secret")
		h.get("/other")
	}
	h.waitCompared("get-order", 10)
	h.waitCompared("other", 10)
	cancel()
	<-done

	caps := readCaptures(t, file)
	results := map[string]int{}
	for _, s := range caps {
		results[s.Result]++
		if s.Route != "get-order" || s.Query != "v=1" || s.RequestHeader["Authorization"][0] != RedactedValue {
			t.Errorf("capture %+v: want get-order's request, query kept, Authorization redacted", s)
		}
		if s.Result == "mismatch" && (len(s.Differences) != 1 || s.Differences[0].Path != "/body/total_cents") {
			t.Errorf("mismatch capture differences = %+v", s.Differences)
		}
	}
	if len(caps) != 10 || results["match"] != 5 || results["mismatch"] != 5 {
		t.Errorf("%d captures by result %v; want 10: 5 match, 5 mismatch (and none of the uncaptured route)", len(caps), results)
	}
	if raw, _ := os.ReadFile(file); strings.Contains(string(raw), "top-secret") {
		t.Error("a credential reached the capture file")
	}
	if v, _ := h.metric("strangler_capture_records_total", map[string]string{"result": "written"}); v != 10 {
		t.Errorf(`strangler_capture_records_total{result="written"} = %v; want 10`, v)
	}
}

func newTestSink(t *testing.T, cfg config.Capture) (*captureSink, *prometheus.CounterVec) {
	t.Helper()
	records := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "records"}, []string{"result"})
	sink, err := newCaptureSink(cfg, records, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return sink, records
}

// TestCaptureRotatesBySize: the file is rotated before it would pass
// max_file_bytes, keep rotated files stay, older ones go, and every line
// of every file is whole.
func TestCaptureRotatesBySize(t *testing.T) {
	file := filepath.Join(t.TempDir(), "c.jsonl")
	sink, records := newTestSink(t, config.Capture{File: file, MaxFileBytes: 4096, Keep: 2, Queue: 1000})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { sink.run(ctx); close(done) }()
	for i := range 200 {
		sink.add(Sample{Route: "r", Result: "match", Method: "GET", Path: fmt.Sprintf("/orders/%d", i), RequestBody: strings.Repeat("x", 100)})
	}
	eventually(t, 10*time.Second, "200 captures written", func() bool {
		return testutil.ToFloat64(records.WithLabelValues("written")) == 200
	})
	cancel()
	<-done
	total := 0
	for _, name := range []string{file, file + ".1", file + ".2"} {
		fi, err := os.Stat(name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if fi.Size() > 4096 {
			t.Errorf("%s is %d bytes; want at most max_file_bytes 4096", name, fi.Size())
		}
		total += len(readCaptures(t, name))
	}
	if _, err := os.Stat(file + ".3"); !os.IsNotExist(err) {
		t.Errorf("%s.3 exists (%v); keep is 2", file, err)
	}
	if total == 0 || total >= 200 {
		t.Errorf("%d captures in the kept files; want some, and the oldest rotated away", total)
	}
}

// TestCaptureNeverWaits: a sink whose writer is stuck drops what its
// queue cannot hold, at once, and counts it.
func TestCaptureNeverWaits(t *testing.T) {
	sink, records := newTestSink(t, config.Capture{File: filepath.Join(t.TempDir(), "c.jsonl"), MaxFileBytes: 1 << 20, Keep: 1, Queue: 3})
	defer sink.close()
	for range 10 { // no run: nothing drains the queue
		sink.add(Sample{Route: "r"})
	}
	if got := testutil.ToFloat64(records.WithLabelValues("dropped")); got != 7 {
		t.Errorf("dropped = %v; want 7 of 10 past a queue of 3", got)
	}
}

// A capture file that cannot be opened fails the proxy's start, naming
// the key.
func TestCaptureFileMustOpen(t *testing.T) {
	_, err := newCaptureSink(config.Capture{File: filepath.Join(t.TempDir(), "missing", "c.jsonl"), Queue: 1},
		prometheus.NewCounterVec(prometheus.CounterOpts{Name: "records"}, []string{"result"}), slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "capture.file") {
		t.Errorf("err = %v; want one naming capture.file", err)
	}
}
