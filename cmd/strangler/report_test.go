package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/strangler-proxy/strangler/proxy"
)

// gateConfig has three shadowed routes: newpath answers good as legacy
// does and bad differently, and quiet gets no traffic. min_samples is
// small so that a few requests decide the verdicts.
const gateConfig = `
listen: "127.0.0.1:0"
admin: { listen: "127.0.0.1:0" }
log: { access: false }
upstreams:
  legacy: { url: %q }
  newpath: { url: %q }
routes:
  - name: good
    match: "GET /good/{id}"
    shadow: { percent: 100 }
    guard: { max_error_rate: 0.5, max_divergence_rate: 0.05, min_samples: 5, window: 1m }
  - name: bad
    match: "GET /bad/{id}"
    shadow: { percent: 100 }
    guard: { max_error_rate: 0.5, max_divergence_rate: 0.05, min_samples: 5, window: 1m }
  - name: quiet
    match: "GET /quiet/{id}"
    shadow: { percent: 100 }
    guard: { max_error_rate: 0.5, max_divergence_rate: 0.05, min_samples: 5, window: 1m }
`

// startGateProxy runs serve on gateConfig against two httptest backends
// and returns the proxy's and the admin listener's base URLs.
func startGateProxy(t *testing.T) (proxyURL, adminURL string) {
	t.Helper()
	legacy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"path":%q,"status":"shipped"}`, r.URL.Path)
	}))
	t.Cleanup(legacy.Close)
	newpath := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		status := "shipped"
		if strings.HasPrefix(r.URL.Path, "/bad/") {
			status = "lost"
		}
		fmt.Fprintf(w, `{"path":%q,"status":%q}`, r.URL.Path, status)
	}))
	t.Cleanup(newpath.Close)

	path := filepath.Join(t.TempDir(), "strangler.yaml")
	if err := os.WriteFile(path, fmt.Appendf(nil, gateConfig, legacy.URL, newpath.URL), 0o644); err != nil {
		t.Fatal(err)
	}
	return serveInProcess(t, path)
}

// runReport runs `strangler report` with args and returns its exit code,
// stdout and stderr.
func runReport(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), append([]string{"report"}, args...), &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// verdicts runs report --output json and returns each route's verdict.
func verdicts(t *testing.T, admin string) (map[string]string, routesReport) {
	t.Helper()
	code, stdout, stderr := runReport(t, "--admin", admin, "--output", "json")
	if code != 0 {
		t.Fatalf("report --output json exited %d: %s", code, stderr)
	}
	var out routesReport
	if err := json.Unmarshal([]byte(stdout), &out); err != nil {
		t.Fatalf("report --output json: %v\n%s", err, stdout)
	}
	v := map[string]string{}
	for _, r := range out.Routes {
		v[r.Name] = r.Readiness.Verdict
	}
	return v, out
}

// TestReportGatesPromotionOnReadiness drives traffic through a running
// proxy until good is ready and bad is not, then runs report as a
// pipeline would.
func TestReportGatesPromotionOnReadiness(t *testing.T) {
	proxyURL, admin := startGateProxy(t)

	deadline := time.Now().Add(30 * time.Second)
	for i := 0; ; i++ {
		// A batch per round: the window needs min_samples comparisons, and
		// more of them drown a slow outlier that would otherwise hold
		// good's newpath p99 above 1.5 × legacy's.
		for j := range 10 {
			for _, route := range []string{"good", "bad"} {
				res, err := http.Get(fmt.Sprintf("%s/%s/%d", proxyURL, route, 10*i+j))
				if err != nil {
					t.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, res.Body)
				res.Body.Close()
			}
		}
		v, _ := verdicts(t, admin)
		if v["good"] == "ready" && v["bad"] == "not_ready" {
			break
		}
		if time.Now().After(deadline) {
			_, stdout, _ := runReport(t, "--admin", admin)
			t.Fatalf("verdicts %v; want good ready and bad not_ready\n%s", v, stdout)
		}
	}

	t.Run("ready route passes", func(t *testing.T) {
		code, stdout, stderr := runReport(t, "--admin", admin, "--require-ready", "good")
		if code != 0 {
			t.Fatalf("exit %d; want 0\nstderr: %s", code, stderr)
		}
		if stderr != "" {
			t.Errorf("stderr %q; want nothing", stderr)
		}
		if !strings.Contains(stdout, "VERDICT") {
			t.Errorf("the table is not printed with the gate:\n%s", stdout)
		}
	})
	t.Run("not ready route fails naming it and why", func(t *testing.T) {
		code, stdout, stderr := runReport(t, "--admin", admin, "--require-ready", "good,bad")
		if code != 1 {
			t.Fatalf("exit %d; want 1\nstderr: %s", code, stderr)
		}
		// Latency may add a reason of its own (p99 under the race
		// detector): the mismatch rate must be there, on bad's one line.
		if want := "strangler report: route bad is not_ready: real mismatch rate 1.0000 > 0.05"; !strings.HasPrefix(stderr, want) || strings.Count(stderr, "\n") != 1 {
			t.Errorf("stderr %q; want one line, for bad only, starting %q", stderr, want)
		}
		if !strings.Contains(stdout, "bad ") {
			t.Errorf("a failed gate still prints the table first:\n%s", stdout)
		}
	})
	t.Run("insufficient data fails", func(t *testing.T) {
		code, _, stderr := runReport(t, "--admin", admin, "--require-ready", "good", "--require-ready", "quiet")
		if code != 1 || !strings.Contains(stderr, "route quiet is insufficient_data: 0 comparisons in the last 1m0s, need 5") {
			t.Errorf("exit %d, stderr %q; want 1 saying quiet has too few comparisons", code, stderr)
		}
	})
	t.Run("routes as arguments after the flag", func(t *testing.T) {
		code, _, stderr := runReport(t, "--admin", admin, "--require-ready", "good", "bad", "quiet")
		if code != 1 || strings.Count(stderr, "\n") != 2 || !strings.Contains(stderr, "route bad ") || !strings.Contains(stderr, "route quiet ") {
			t.Errorf("exit %d, stderr %q; want 1 with a line each for bad and quiet", code, stderr)
		}
		code, stdout, stderr := runReport(t, "--admin", admin, "good")
		if code == 0 || !strings.Contains(stderr, "need --require-ready") || stdout != "" {
			t.Errorf("a route name without --require-ready: exit %d, stderr %q; want a usage error", code, stderr)
		}
	})
	t.Run("unknown route fails", func(t *testing.T) {
		code, _, stderr := runReport(t, "--admin", admin, "--require-ready", "nope")
		if code != 1 || stderr != "strangler report: no route named \"nope\"\n" {
			t.Errorf("exit %d, stderr %q; want 1 and no route named \"nope\"", code, stderr)
		}
	})
	t.Run("json holds every route with its verdict", func(t *testing.T) {
		v, out := verdicts(t, admin)
		want := map[string]string{"good": "ready", "bad": "not_ready", "quiet": "insufficient_data"}
		if fmt.Sprint(v) != fmt.Sprint(want) {
			t.Errorf("verdicts %v; want %v", v, want)
		}
		for _, r := range out.Routes {
			if r.Name == "bad" && (len(r.Readiness.Reasons) == 0 || r.Readiness.Comparisons < 5 || r.Guard.State == "") {
				t.Errorf("bad in JSON = %+v; want its reasons, comparisons and guard state", r)
			}
		}
		if u := out.Upstreams["newpath"]; u.URL == "" {
			t.Errorf("upstreams in JSON = %+v; want legacy and newpath", out.Upstreams)
		}
	})
	t.Run("json passes the gate too", func(t *testing.T) {
		code, stdout, stderr := runReport(t, "--admin", admin, "-o", "json", "--require-ready", "bad")
		if code != 1 || !strings.Contains(stderr, "route bad is not_ready") || !json.Valid([]byte(stdout)) {
			t.Errorf("exit %d, stderr %q; want 1 about bad after valid JSON on stdout:\n%s", code, stderr, stdout)
		}
	})
	t.Run("unknown output is refused", func(t *testing.T) {
		code, stdout, stderr := runReport(t, "--admin", admin, "--output", "yaml")
		if code != 2 || !strings.Contains(stderr, `--output "yaml": want text or json`) || stdout != "" {
			t.Errorf("exit %d, stdout %q, stderr %q; want a usage error and no report", code, stdout, stderr)
		}
	})
}

// TestReportUnreachableAdminFails: a gate must never pass on a proxy it
// could not ask.
func TestReportUnreachableAdminFails(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	admin := "http://" + l.Addr().String()
	l.Close() // nothing listens there now: connection refused
	for _, args := range [][]string{{}, {"--require-ready", "good"}, {"--output", "json"}} {
		code, stdout, stderr := runReport(t, append([]string{"--admin", admin}, args...)...)
		if code != 2 || !strings.Contains(stderr, "read readiness") || stdout != "" {
			t.Errorf("report %v against a closed port: exit %d, stdout %q, stderr %q; want 2 (nothing judged), no report, read readiness",
				args, code, stdout, stderr)
		}
	}
}

// TestReportNamesEachRoutesService: the upstream table lists every
// service the proxy probes, and each route row its to.
func TestReportNamesEachRoutesService(t *testing.T) {
	body := &routesReport{
		Upstreams: map[string]proxy.UpstreamHealth{
			"legacy":   {URL: "http://legacy:9001", Up: true, CheckedAt: time.Unix(1, 0)},
			"newpath":  {URL: "http://orders:9002", Up: true, CheckedAt: time.Unix(1, 0)},
			"payments": {URL: "http://payments:9003", Error: "connection refused", CheckedAt: time.Unix(1, 0)},
		},
		Routes: []routeReport{
			{Name: "get-order", To: "newpath", Readiness: proxy.Readiness{Verdict: "ready"}},
			{Name: "charge", To: "payments", Readiness: proxy.Readiness{Verdict: "insufficient_data"}},
		},
	}
	var out bytes.Buffer
	if err := printReport(&out, body); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(out.String(), "\n")
	for _, want := range []string{
		"payments http://payments:9003 DOWN: connection refused",
		"ROUTE UPSTREAM WEIGHT",
		"get-order newpath ",
		"charge payments ",
	} {
		if !slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(strings.Join(strings.Fields(l), " ")+" ", want) }) {
			t.Errorf("no line starting %q in:\n%s", want, out.String())
		}
	}
}

func TestRampColumn(t *testing.T) {
	next := time.Date(2026, 3, 2, 10, 20, 0, 0, time.UTC)
	steps := []float64{1, 5, 25, 50, 100}
	tests := []struct {
		name string
		ramp *proxy.RampView
		want string
	}{
		{"no ramp", nil, "-"},
		{"climbing", &proxy.RampView{Steps: steps, StepIndex: 2, StepWeight: 25, NextStepAt: &next}, "25% (3/5), next 10:20:00"},
		{"paused", &proxy.RampView{Steps: steps, StepIndex: 2, StepWeight: 25, NextStepAt: &next, Paused: true,
			Reason: "not_ready: insufficient_data: 3 comparisons in the last 2m0s, need 100"}, "25% (3/5), paused: not_ready"},
		{"tripped", &proxy.RampView{Steps: steps, StepIndex: 1, StepWeight: 5, Paused: true, Reason: "guard_tripped: effective weight 0"}, "5% (2/5), paused: guard_tripped"},
		{"complete", &proxy.RampView{Steps: steps, StepIndex: 4, StepWeight: 100, Complete: true}, "100% (5/5), complete"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := rampColumn(tt.ramp); got != tt.want {
				t.Errorf("got %q; want %q", got, tt.want)
			}
		})
	}
}
