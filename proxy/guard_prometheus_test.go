package proxy

import (
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/strangler-proxy/strangler/router"
)

// prometheusGuardedRoute is a route whose guard reads Prometheus at %s
// every %s.
const prometheusGuardedRoute = `
routes:
  - name: get-order
    match: "GET /orders/{id}"
    weight: 50
    guard:
      max_error_rate: 0.1
      max_divergence_rate: 0.05
      min_samples: 50
      window: 90s
      source: prometheus
      prometheus_url: %q
      prometheus_matchers: 'job="strangler"'
      prometheus_interval: %s
`

// promVector is the API's answer to the guard query: one sample per
// name, value pair.
func promVector(pairs ...string) string {
	samples := make([]string, 0, len(pairs)/2)
	for i := 0; i+1 < len(pairs); i += 2 {
		samples = append(samples, fmt.Sprintf(`{"metric":{"signal":%q},"value":[1700000000.123,%q]}`, pairs[i], pairs[i+1]))
	}
	return `{"status":"success","data":{"resultType":"vector","result":[` + strings.Join(samples, ",") + `]}}`
}

// fakePrometheus answers /prom/api/v1/query with answer and records the
// queries it got.
type fakePrometheus struct {
	*httptest.Server
	mu      sync.Mutex
	queries []string
	answer  http.HandlerFunc
}

func newFakePrometheus(t *testing.T, answer http.HandlerFunc) *fakePrometheus {
	f := &fakePrometheus{answer: answer}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/prom/api/v1/query" {
			http.Error(w, "not the query API: "+r.Method+" "+r.URL.Path, http.StatusNotFound)
			return
		}
		if err := r.ParseForm(); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		f.mu.Lock()
		f.queries = append(f.queries, r.PostForm.Get("query"))
		answer := f.answer
		f.mu.Unlock()
		answer(w, r)
	}))
	t.Cleanup(f.Close)
	return f
}

func (f *fakePrometheus) setAnswer(answer http.HandlerFunc) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.answer = answer
}

func (f *fakePrometheus) received() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.queries...)
}

func answerWith(status int, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		io.WriteString(w, body)
	}
}

func TestGuardQuery(t *testing.T) {
	got := guardQuery("get-order", ` job="strangler", namespace=~"prod|canary", `, 90*time.Second)
	sel := `{route="get-order",job="strangler", namespace=~"prod|canary"`
	want := `label_replace(sum(increase(strangler_upstream_request_duration_seconds_count` + sel + `,backend="newpath"}[90000ms])), "signal", "calls", "", "")` +
		` or label_replace((sum(increase(strangler_upstream_errors_total` + sel + `,backend="newpath"}[90000ms])) or vector(0)), "signal", "errors", "", "")` +
		` or label_replace(sum(increase(strangler_comparisons_total` + sel + `,result=~"match|mismatch|noise"}[90000ms])), "signal", "compared", "", "")` +
		` or label_replace(sum(increase(strangler_comparisons_total` + sel + `,result="mismatch"}[90000ms])), "signal", "mismatches", "", "")`
	if got != want {
		t.Errorf("guardQuery:\ngot  %s\nwant %s", got, want)
	}
}

func TestPrometheusGuardJudgesTheAnswer(t *testing.T) {
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()
	hang := func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }
	tests := []struct {
		name    string
		answer  http.HandlerFunc
		url     string // instead of the fake's
		wantErr string // in the error; "" for none
		want    string // guard state
		reason  string
	}{
		{"error rate across replicas trips", answerWith(200, promVector("calls", "80", "errors", "20", "compared", "0", "mismatches", "0")), "", "", "tripped", "error_rate"},
		{"real divergence trips", answerWith(200, promVector("calls", "120", "errors", "0", "compared", "100", "mismatches", "10")), "", "", "tripped", "divergence"},
		{"error rate at the limit holds", answerWith(200, promVector("calls", "100", "errors", "10", "compared", "100", "mismatches", "5")), "", "", "armed", ""},
		{"below min_samples nothing trips", answerWith(200, promVector("calls", "49.9", "errors", "49.9", "compared", "49", "mismatches", "49")), "", "", "armed", ""},
		{"NaN and Inf are no evidence", answerWith(200, promVector("calls", "100", "errors", "+Inf", "compared", "NaN", "mismatches", "NaN")), "", "", "armed", ""},
		{"no series over the window", answerWith(200, promVector("errors", "0")), "", "no strangler_upstream_request_duration_seconds_count series", "armed", ""},
		{"empty result", answerWith(200, promVector()), "", "no strangler_upstream_request_duration_seconds_count series", "armed", ""},
		{"query refused", answerWith(400, `{"status":"error","errorType":"bad_data","error":"1:1: parse error"}`), "", "400 Bad Request: bad_data: 1:1: parse error", "armed", ""},
		{"not the API", answerWith(502, `<html>bad gateway</html>`), "", "502 Bad Gateway, not the API's JSON", "armed", ""},
		{"not a vector", answerWith(200, `{"status":"success","data":{"resultType":"scalar","result":[1700000000,"1"]}}`), "", `a "scalar" result`, "armed", ""},
		{"value not a number", answerWith(200, promVector("calls", "many")), "", `sample value "many"`, "armed", ""},
		{"prometheus down", nil, down.URL + "/prom", "connection refused", "armed", ""},
		{"prometheus hangs", hang, "", "context deadline exceeded", "armed", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake := newFakePrometheus(t, tt.answer)
			base := fake.URL + "/prom"
			if tt.url != "" {
				base = tt.url
			}
			h := newHarness(t, nil, nil, fmt.Sprintf(prometheusGuardedRoute, base, "200ms"))
			br := h.proxy.state.Load().routes[0]
			start := time.Now()
			err := h.proxy.checkPrometheusGuard(context.Background(), &http.Client{}, br)
			if elapsed := time.Since(start); elapsed > 2*time.Second {
				t.Errorf("query took %v; want it bounded by prometheus_interval (200ms)", elapsed)
			}
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("err = %v; want none", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("err = %v; want one containing %q", err, tt.wantErr)
			}
			st := h.routeState("get-order")
			if st.Guard.State != tt.want || st.Guard.Reason != tt.reason {
				t.Errorf("guard %+v; want %s %s", st.Guard, tt.want, tt.reason)
			}
			if tt.want == "tripped" {
				if st.EffectiveWeight != 0 || !strings.Contains(h.logs.String(), `"source":"prometheus"`) {
					t.Errorf("tripped: effective weight %v, logs %s; want 0 and an error line with source prometheus", st.EffectiveWeight, h.logs)
				}
			}
			if tt.url == "" {
				want := guardQuery("get-order", `job="strangler"`, 90*time.Second)
				if q := fake.received(); len(q) != 1 || q[0] != want {
					t.Errorf("queries %q; want exactly %q", q, want)
				}
			}
		})
	}
}

// TestPrometheusGuardRearm: a re-armed guard asks Prometheus only about the
// time since, and evidence read before a re-arm never trips it after.
func TestPrometheusGuardRearm(t *testing.T) {
	t.Setenv("STRANGLER_ADMIN_TOKEN", "s3cret")
	bad := answerWith(200, promVector("calls", "80", "errors", "20"))
	fake := newFakePrometheus(t, bad)
	h := newHarness(t, nil, nil, fmt.Sprintf(prometheusGuardedRoute, fake.URL+"/prom", "200ms"))
	br := h.proxy.state.Load().routes[0]
	var clock atomic.Int64 // the proxy's clock: unix nanoseconds
	clock.Store(time.Now().UnixNano())
	h.proxy.now = func() time.Time { return time.Unix(0, clock.Load()) }
	check := func() {
		t.Helper()
		clock.Add(int64(10 * time.Second))
		if err := h.proxy.checkPrometheusGuard(context.Background(), &http.Client{}, br); err != nil {
			t.Fatal(err)
		}
	}
	check()
	if st := h.routeState("get-order").Guard.State; st != "tripped" {
		t.Fatalf("guard %s; want tripped", st)
	}
	if code, body := h.adminPost("/admin/routes/get-order/rearm", "s3cret"); code != http.StatusOK {
		t.Fatalf("rearm: %d %s", code, body)
	}

	// The old evidence arrives after a re-arm that happened while it was
	// being read: it must not trip the guard.
	fake.setAnswer(func(w http.ResponseWriter, r *http.Request) {
		h.proxy.rearm(br, "test", false)
		h.proxy.trip(br, time.Now(), br.rt.guard.rearms.Load(), "local", tripErrorRate, "tripped again for the test")
		h.proxy.rearm(br, "test", false)
		bad(w, r)
	})
	check()
	if st := h.routeState("get-order").Guard.State; st != "armed" {
		t.Errorf("evidence read across a re-arm: guard %s; want armed", st)
	}
	queries := fake.received()
	if len(queries) != 2 || !strings.Contains(queries[1], "[10000ms]") {
		t.Errorf("queries %q; want a second one over the 10s since the re-arm", queries)
	}
}

// TestPrometheusGuardLoop: Proxy.Run queries every interval, warns once
// about a failing Prometheus rather than at every query, says when it reads
// again, trips on the evidence, and returns when its context ends.
func TestPrometheusGuardLoop(t *testing.T) {
	fake := newFakePrometheus(t, answerWith(503, `{"status":"error","errorType":"unavailable","error":"TSDB not ready"}`))
	h := newHarness(t, nil, nil, fmt.Sprintf(prometheusGuardedRoute, fake.URL+"/prom", "50ms"))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { h.proxy.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	eventually(t, 10*time.Second, "5 failing queries", func() bool { return len(fake.received()) >= 5 })
	if n := strings.Count(h.logs.String(), "guard cannot read prometheus"); n != 1 {
		t.Errorf("%d warnings for %d failing queries; want 1 (rate-limited)\n%s", n, len(fake.received()), h.logs)
	}
	if !strings.Contains(h.logs.String(), `"level":"WARN"`) || !strings.Contains(h.logs.String(), "TSDB not ready") {
		t.Errorf("the warning does not say why at warn level: %s", h.logs)
	}
	if st := h.routeState("get-order").Guard.State; st != "armed" {
		t.Errorf("guard %s while prometheus fails; want armed", st)
	}

	fake.setAnswer(answerWith(200, promVector("calls", "10", "errors", "10")))
	eventually(t, 10*time.Second, "the recovery logged", func() bool {
		return strings.Contains(h.logs.String(), "guard reads prometheus again")
	})
	fake.setAnswer(answerWith(200, promVector("calls", "80", "errors", "20")))
	eventually(t, 10*time.Second, "guard trips", func() bool { return h.routeState("get-order").Guard.State == "tripped" })

	// Re-armed from the YAML, it asks again.
	fake.setAnswer(answerWith(200, promVector("calls", "80", "errors", "0")))
	n := len(fake.received())
	h.writeConfig(strings.Replace(fmt.Sprintf(prometheusGuardedRoute, fake.URL+"/prom", "50ms"), "weight: 50", "weight: 40", 1))
	if err := h.reloader.Reload(); err != nil {
		t.Fatal(err)
	}
	if st := h.routeState("get-order"); st.Guard.State != "armed" || st.EffectiveWeight != 40 {
		t.Errorf("after a weight edit: guard %+v effective %v; want armed at 40", st.Guard, st.EffectiveWeight)
	}
	eventually(t, 10*time.Second, "queries again after the re-arm", func() bool { return len(fake.received()) > n })

	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}

// prometheusServer is a real Prometheus scraping the targets a test gives
// it through a file_sd file.
type prometheusServer struct {
	url     *url.URL
	targets string // the file_sd file
	client  *http.Client
}

// startPrometheus starts the prometheus binary on a free loopback port with
// a temporary storage directory and a 1s scrape interval of job
// strangler-test. Without the binary the test is skipped, unless CI=true.
func startPrometheus(t *testing.T) *prometheusServer {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		const hint = "prometheus is not on PATH: run `bash .ci/prometheus.sh` (Debian package prometheus)"
		if os.Getenv("CI") == "true" {
			t.Fatal(hint)
		}
		t.Skip(hint + "; CI=true makes this a failure")
	}
	dir := t.TempDir()
	ps := &prometheusServer{targets: filepath.Join(dir, "targets.json"), client: &http.Client{Timeout: 5 * time.Second}}
	if err := os.WriteFile(ps.targets, []byte("[]"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`
global: { scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s }
scrape_configs:
  - job_name: strangler-test
    file_sd_configs: [{ files: [%q], refresh_interval: 1s }]
`, ps.targets)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	// The free port is probed, then bound by Prometheus: another process
	// may take it in between, so a Prometheus that exits is started again.
	for attempt := 0; attempt < 3; attempt++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		var out syncBuffer
		cmd := exec.Command(bin, "--config.file="+filepath.Join(dir, "prometheus.yml"),
			"--storage.tsdb.path="+filepath.Join(dir, fmt.Sprint("data", attempt)),
			"--web.listen-address="+addr, "--log.level=warn")
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		ps.url = &url.URL{Scheme: "http", Host: addr}
		deadline := time.Now().Add(20 * time.Second)
		for {
			select {
			case <-exited:
				t.Logf("prometheus exited (attempt %d):\n%s", attempt+1, &out)
			default:
				if res, err := ps.client.Get(ps.url.JoinPath("-/ready").String()); err == nil {
					res.Body.Close()
					if res.StatusCode == http.StatusOK {
						t.Cleanup(func() {
							_ = cmd.Process.Kill()
							<-exited
							if t.Failed() && out.String() != "" {
								t.Logf("prometheus output:\n%s", &out)
							}
						})
						return ps
					}
				}
				if time.Now().After(deadline) {
					_ = cmd.Process.Kill()
					<-exited
					t.Fatalf("prometheus not ready on %s within 20s:\n%s", addr, &out)
				}
				time.Sleep(50 * time.Millisecond) // poll interval
				continue
			}
			break
		}
	}
	t.Fatal("prometheus did not start in 3 attempts")
	return nil
}

// scrape points Prometheus at the /metrics of these admin servers.
func (ps *prometheusServer) scrape(t *testing.T, admins ...*httptest.Server) {
	t.Helper()
	hosts := make([]string, len(admins))
	for i, a := range admins {
		hosts[i] = strconv.Quote(strings.TrimPrefix(a.URL, "http://"))
	}
	// Written aside and renamed, so Prometheus never reads half a file.
	tmp := ps.targets + ".tmp"
	if err := os.WriteFile(tmp, []byte(`[{"targets":[`+strings.Join(hosts, ",")+`]}]`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, ps.targets); err != nil {
		t.Fatal(err)
	}
}

// value runs an instant query whose answer is one unlabelled sample; NaN
// when the answer is empty or the query fails.
func (ps *prometheusServer) value(query string) float64 {
	labelled := `label_replace(` + query + `, "signal", "v", "", "")`
	got, err := queryPrometheus(context.Background(), ps.client, ps.url, labelled, 5*time.Second)
	if v, ok := got["v"]; err == nil && ok {
		return v
	}
	return math.NaN()
}

// apiQueries is how many instant queries Prometheus has answered, from
// its own /metrics: the guards' queries, once the test stops asking.
func (ps *prometheusServer) apiQueries(t *testing.T) float64 {
	t.Helper()
	res, err := ps.client.Get(ps.url.JoinPath("metrics").String())
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	const series = `prometheus_http_requests_total{code="200",handler="/api/v1/query"} `
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, series); ok {
			n, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	return 0
}

// TestPrometheusGuardAcrossReplicas: two replicas whose guards read a real
// Prometheus trip together on newpath errors that only their combined
// traffic has enough samples of; one replica's share alone trips neither.
func TestPrometheusGuardAcrossReplicas(t *testing.T) {
	prom := startPrometheus(t)
	const minSamples, perReplica = 50, 30
	yaml := fmt.Sprintf(`
routes:
  - name: get-order
    match: "GET /orders/{id}"
    weight: 100
    guard:
      max_error_rate: 0.1
      max_divergence_rate: 0.5
      min_samples: %d
      window: 30s
      source: prometheus
      prometheus_url: %q
      prometheus_matchers: 'job="strangler-test"'
      prometheus_interval: 250ms
`, minSamples, prom.url.String())
	// Two in five newpath answers fail: a 500 the client gets, and a 503
	// that legacy answers instead (a fallback).
	var n atomic.Int64
	newpath := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch n.Add(1) % 5 {
		case 0:
			http.Error(w, "boom", http.StatusInternalServerError)
		case 1:
			http.Error(w, "overloaded", http.StatusServiceUnavailable)
		default:
			w.Header().Set("X-Served-By", "newpath")
			io.WriteString(w, `{"id":1}`)
		}
	})
	var replicas [2]*harness
	var admins [2]*httptest.Server
	for i := range replicas {
		h := newHarness(t, nil, newpath, yaml)
		admins[i] = httptest.NewServer(h.proxy.AdminHandler(AdminOptions{Gatherer: h.reg, Config: h.reloader}))
		t.Cleanup(admins[i].Close)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { h.proxy.Run(ctx); close(done) }()
		t.Cleanup(func() { cancel(); <-done })
		replicas[i] = h
	}
	prom.scrape(t, admins[:]...)
	// Five scrapes of each before any traffic: increase() then extrapolates
	// a burst by at most a fifth, so 30 answers cannot pass for 50.
	eventually(t, 20*time.Second, "five scrapes of both replicas", func() bool {
		return prom.value(`count(count_over_time(up{job="strangler-test"}[1m]) >= 5)`) == 2
	})

	tripped := func(h *harness) bool { return h.routeState("get-order").Guard.State == "tripped" }
	local := func(h *harness) int64 {
		return h.proxy.state.Load().routes[0].rt.win.sum(time.Now()).calls[router.Newpath]
	}

	// One replica's share: below min_samples, even summed with the other's
	// nothing. Neither trips over several rounds of both guards.
	sendOrders(t, replicas[0], perReplica)
	eventually(t, 10*time.Second, "the first replica's traffic in prometheus", func() bool {
		return prom.value(`sum(strangler_requests_total{job="strangler-test",route="get-order"})`) == perReplica
	})
	asked := prom.apiQueries(t)
	eventually(t, 10*time.Second, "eight more guard queries", func() bool {
		return prom.apiQueries(t) >= asked+8 || tripped(replicas[0]) || tripped(replicas[1]) // a tripped guard asks no more
	})
	if tripped(replicas[0]) || tripped(replicas[1]) {
		t.Fatalf("a guard tripped on one replica's %d answers; min_samples is %d", perReplica, minSamples)
	}

	// The other replica's share: together they cross min_samples.
	sendOrders(t, replicas[1], perReplica)
	for i, h := range replicas {
		if got := local(h); got >= minSamples {
			t.Fatalf("replica %d saw %d newpath answers itself; the test needs fewer than min_samples (%d)", i, got, minSamples)
		}
	}
	eventually(t, 20*time.Second, "both replicas trip", func() bool { return tripped(replicas[0]) && tripped(replicas[1]) })
	for i, h := range replicas {
		st := h.routeState("get-order")
		if st.Guard.Reason != tripErrorRate || st.EffectiveWeight != 0 {
			t.Errorf("replica %d: guard %+v effective %v; want tripped on error_rate at 0", i, st.Guard, st.EffectiveWeight)
		}
		if !strings.Contains(h.logs.String(), `"source":"prometheus"`) || !strings.Contains(h.logs.String(), "across replicas") {
			t.Errorf("replica %d: no error line for a trip on prometheus' evidence:\n%s", i, h.logs)
		}
		if res, _ := h.get("/orders/7", "X-User-Id", "7"); res.Header.Get("X-Served-By") != "legacy" {
			t.Errorf("replica %d: served by %q after the trip; want legacy", i, res.Header.Get("X-Served-By"))
		}
	}
}
