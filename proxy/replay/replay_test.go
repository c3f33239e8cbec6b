package replay

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/strangler-proxy/strangler/proxy"
)

// stamped answers with a served_at no two answers share: noise.
func stamped(total int) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"total":%d,"served_at":"%d"}`, total, rand.Int64())
	})
}

func records(n int, result string) []proxy.Sample {
	out := make([]proxy.Sample, n)
	for i := range out {
		out[i] = proxy.Sample{Route: "r", Result: result, Method: "GET", Path: fmt.Sprintf("/orders/%d", i),
			RequestHeader: map[string][]string{"Authorization": {proxy.RedactedValue}}}
	}
	return out
}

// With noise probes, a field that differs between two legacy answers is
// noise, not a divergence; without them it is real.
func TestNoiseProbesTellNoiseFromDivergence(t *testing.T) {
	legacy, newpath := httptest.NewServer(stamped(10)), httptest.NewServer(stamped(10))
	defer legacy.Close()
	defer newpath.Close()
	opts := Options{Legacy: legacy.URL, Newpath: newpath.URL}

	rep := Run(context.Background(), records(20, "mismatch"), opts)
	if s := rep.Routes[0]; s.StillDiverging != 20 || s.Fields["/body/served_at"] != 20 || !rep.Failed() {
		t.Errorf("without probes: %+v; want 20 still diverging on served_at", s)
	}
	opts.Noise = 1
	rep = Run(context.Background(), records(20, "mismatch"), opts)
	if s := rep.Routes[0]; s.Fixed != 20 || rep.Failed() {
		t.Errorf("with a probe each: %+v; want all 20 fixed (served_at is noise)", s)
	}
	// A real difference stays real beside the noise.
	broken := httptest.NewServer(stamped(11))
	defer broken.Close()
	opts.Newpath = broken.URL
	rep = Run(context.Background(), records(20, "match"), opts)
	if s := rep.Routes[0]; s.NewlyDiverging != 20 || len(s.Fields) != 1 || s.Fields["/body/total"] != 20 {
		t.Errorf("a broken total: %+v; want 20 newly diverging on /body/total only", s)
	}
}

// A write without its recorded legacy answer cannot be replayed, and is
// sent nowhere.
func TestWriteWithoutRecordedAnswerIsAnError(t *testing.T) {
	sent := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { sent++ }))
	defer srv.Close()
	rec := proxy.Sample{Route: "w", Result: "mismatch", Method: "POST", Path: "/orders", LegacyStatus: 201, DryRun: true} // from Postgres: no bodies kept
	rep := Run(context.Background(), []proxy.Sample{rec}, Options{Legacy: srv.URL, Newpath: srv.URL})
	if s := rep.Routes[0]; s.Errors != 1 || sent != 0 || !strings.Contains(rep.Results[0].Err, "recorded legacy answer") {
		t.Errorf("%+v, %d sent, err %q; want one error, nothing sent", s, sent, rep.Results[0].Err)
	}
}

func TestLoadFileNamesABadLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.jsonl")
	if err := os.WriteFile(path, []byte(`{"route":"r","method":"GET","path":"/a"}`+"\n\n"+`{"route":`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(context.Background(), path, Filter{}); err == nil || !strings.Contains(err.Error(), "c.jsonl:3") {
		t.Errorf("err = %v; want one naming line 3", err)
	}
	if err := os.WriteFile(path, []byte(`{"route":"r","time":"2026-01-01T00:00:00Z"}`+"\n"+`{"route":"s","time":"2026-06-01T00:00:00Z"}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := Load(context.Background(), path, Filter{Since: time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)})
	if err != nil || len(got) != 1 || got[0].Route != "s" {
		t.Errorf("since March: %v, %v; want route s only", got, err)
	}
}
