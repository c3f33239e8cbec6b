package dashboards_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// mayBeEmpty lists the queries that may return no series from a healthy
// demo, with the reason. Every other panel, annotation and variable query
// must return at least one series. It is empty: the demo's story (noise,
// a real divergence, a guard trip, a reload) gives every panel data.
var mayBeEmpty = map[string]string{}

// TestQueriesReturnDataFromARealPrometheus runs `strangler demo`, a real
// Prometheus scraping it every second with the alert rules loaded, and
// sends every query of every dashboard (variables substituted as Grafana
// would) and every alert expression to Prometheus' HTTP API.
func TestQueriesReturnDataFromARealPrometheus(t *testing.T) {
	promBin, promtool := requirePrometheus(t)
	start := time.Now()
	dir := t.TempDir()

	// The doc's files first: they are what an engineer runs.
	run(t, promtool, "check", "rules", rulesFile, recordingFile)
	run(t, promtool, "check", "config", scrapeFile)

	bin := buildStrangler(t, dir)
	checkScrapeConfigMatchesDemoDefaults(t, bin)
	demo := startDemo(t, bin, filepath.Join(dir, "demo"))
	fixture := newDivergentFixture(t, "")
	fixture.keepSending(t, 50*time.Millisecond)

	rules, err := filepath.Abs(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	recording, err := filepath.Abs(recordingFile)
	if err != nil {
		t.Fatal(err)
	}
	// The fixture's target carries a namespace label, as a shared
	// Prometheus's service discovery adds it; the demo's do not, as a
	// plain scrape config does. The dashboards must work with both.
	cfg := filepath.Join(dir, "prometheus.yml")
	writeFile(t, cfg, fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [%q, %q]
scrape_configs:
  - job_name: strangler
    static_configs: [{ targets: [%q] }]
  - job_name: neworders
    static_configs: [{ targets: [%q] }]
  - job_name: strangler-fixture
    static_configs: [{ targets: [%q], labels: { namespace: %q } }]
`, rules, recording, demo.admin, demo.newpathMetrics, strings.TrimPrefix(fixture.metrics.URL, "http://"), fixtureNamespace))
	run(t, promtool, "check", "config", cfg)
	prom := startPrometheus(t, promBin, cfg, filepath.Join(dir, "tsdb"))

	// A live weight edit, once Prometheus has seen the first config: the
	// reload panels and the reload annotation then have something to show.
	prom.waitFor(t, "a first scrape of the demo", `up{job="strangler"} == 1`)
	demo.editWeight(t, "get-order", 50, 60)
	prom.waitFor(t, "the demo's reload", `strangler_config_reloads_total{job="strangler",result="success"} >= 1`)
	prom.waitFor(t, "three scrapes of every target", `min(count_over_time(up[1m])) >= 3 and min(up) == 1`)
	prom.waitFor(t, "demo traffic", `sum(strangler_requests_total{job="strangler"}) > 50`)
	prom.waitFor(t, "outbox deliveries", `sum(neworders_outbox_deliveries_total{result="delivered"}) > 0`)
	// The demo's story trips list-orders' guard some 15 s in.
	prom.waitFor(t, "the story's guard trip", `sum(strangler_guard_trips_total{job="strangler"}) >= 1`)
	prom.waitFor(t, "fixture divergences", `sum(strangler_noise_differences_total{job="strangler-fixture"}) > 0`)
	prom.waitFor(t, "fixture rates over two scrapes", `count_over_time(strangler_noise_differences_total{job="strangler-fixture"}[1m]) >= 3`)

	demoRoutes := prom.labelValues(t, "route", `strangler_requests_total{job="strangler"}`)
	if len(demoRoutes) < 2 {
		t.Fatalf("demo routes %v; want the demo's order routes", demoRoutes)
	}
	// Over the demo: its two jobs selected, as Grafana formats a
	// multi-value selection, and namespace "All" (.*), which must match
	// the demo's series that have no namespace label. Over the fixture:
	// one job and its namespace.
	onDemo := substitution{route: promRegex(demoRoutes), field: ".*", job: promRegex([]string{"strangler", "neworders"}), ns: ".*"}
	onFixture := substitution{route: promRegex([]string{divergentRoute}), field: ".*", job: "strangler-fixture", ns: fixtureNamespace}
	prom.waitFor(t, "the fixture's recorded noise verdicts",
		`count(strangler_field_verdict{job="strangler-fixture",namespace="`+fixtureNamespace+`"}) >= 2`)

	recorded := loadRecordingRules(t)
	n, emptyOK := 0, 0
	for _, d := range loadDashboards(t) {
		for _, q := range d.queries() {
			if q.kind == "sql" {
				continue // TestRecentSamplesQueryReadsTheDivergenceStore
			}
			n++
			series, err := prom.evaluate(q, onDemo)
			if err != nil {
				t.Errorf("%s: %v", q.where, err)
				continue
			}
			if series > 0 {
				continue
			}
			if why, ok := mayBeEmpty[q.where]; ok {
				emptyOK++
				t.Logf("%s: empty, allowed: %s", q.where, why)
				continue
			}
			t.Errorf("%s: no series from the demo\n%s", q.where, onDemo.expand(q.text))
		}
	}
	for _, r := range loadRules(t) {
		n++
		if _, err := prom.evaluate(query{where: rulesFile + " / " + r.Alert, kind: "promql", text: r.Expr}, substitution{}); err != nil {
			t.Errorf("alert %s: %v", r.Alert, err)
		}
	}
	prom.checkRulesHealthy(t, "alert", len(loadRules(t)))
	prom.checkRulesHealthy(t, "record", len(recorded))
	checkRecordedMatchesRaw(t, prom, onFixture)
	checkVerdicts(t, prom, onFixture)
	t.Logf("%d queries evaluated (%d empty as allowed) in %v", n, emptyOK, time.Since(start).Round(time.Millisecond))
}

// checkVerdicts asks the Noise verdicts panel about the fixture, whose
// /body/status differs for real and /body/served_at only as legacy's own
// noise does (SPEC §6).
func checkVerdicts(t *testing.T, prom *prometheusServer, s substitution) {
	t.Helper()
	var expr string
	for _, d := range loadDashboards(t) {
		for _, p := range d.allPanels() {
			for _, tg := range p.Targets {
				if p.Title == "Noise verdicts" && tg.RefID == "D" {
					expr = tg.Expr
				}
			}
		}
	}
	if expr == "" {
		t.Fatal("no Noise verdicts panel with a verdict query D")
	}
	// The verdicts are recorded series: poll until the recording rules
	// have judged both fields, for at most 30 s.
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, err := verdicts(prom, s.expand(expr))
		if err == nil && maps.Equal(got, fixtureFields) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("verdicts %v (err %v); want %v (3 real, 1 noisy)", got, err, fixtureFields)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// verdicts returns the value of each field of a verdict query.
func verdicts(prom *prometheusServer, expr string) (map[string]float64, error) {
	res, err := prom.query(expr)
	if err != nil {
		return nil, err
	}
	got := map[string]float64{}
	for _, r := range res {
		v, err := strconv.ParseFloat(r.Value[1].(string), 64)
		if err != nil {
			return nil, fmt.Errorf("verdict %v: %w", r, err)
		}
		got[r.Metric["field"]] = v
	}
	return got, nil
}

// checkRecordedMatchesRaw compares the recorded raw difference rate of the
// fixture's fields with the same rate computed from the raw counters: the
// recording rules must say what the dashboards used to compute themselves.
// The recorded value is up to one evaluation (1 s) older, hence the
// tolerance.
func checkRecordedMatchesRaw(t *testing.T, prom *prometheusServer, s substitution) {
	t.Helper()
	byField := func(expr string) map[string]float64 {
		res, err := prom.query(s.expand(expr))
		if err != nil {
			t.Fatalf("%s: %v", expr, err)
		}
		out := map[string]float64{}
		for _, r := range res {
			v, err := strconv.ParseFloat(r.Value[1].(string), 64)
			if err != nil {
				t.Fatalf("%v: %v", r, err)
			}
			out[r.Metric["field"]] = v
		}
		return out
	}
	recorded := byField(`route_field:strangler_raw_difference:ratio_rate10m{job=~"$job",namespace=~"$namespace",route=~"$route"}`)
	raw := byField(`sum by (field) (rate(strangler_field_differences_total{job=~"$job",namespace=~"$namespace",route=~"$route"}[10m])) / scalar(sum(rate(strangler_comparisons_total{job=~"$job",namespace=~"$namespace",route=~"$route",result=~"match|mismatch|noise"}[10m])))`)
	if len(recorded) == 0 || len(recorded) != len(raw) {
		t.Fatalf("recorded raw rates %v; the raw counters give %v", recorded, raw)
	}
	for field, want := range raw {
		if got, ok := recorded[field]; !ok || math.Abs(got-want) > 0.05 {
			t.Errorf("recorded raw rate of %s = %v (present %v); the raw counters say %v", field, got, ok, want)
		}
	}
}

// fixtureNamespace is the namespace label of the fixture's scrape target.
const fixtureNamespace = "fixture-ns"

// promRegex formats values the way Grafana formats a multi-value variable
// for Prometheus: an escaped alternation.
func promRegex(values []string) string {
	quoted := make([]string, len(values))
	for i, v := range values {
		quoted[i] = regexp.QuoteMeta(v)
	}
	return "(" + strings.Join(quoted, "|") + ")"
}

// requirePrometheus returns the prometheus and promtool binaries. Without
// them the test is skipped, except in CI, where it fails.
func requirePrometheus(t *testing.T) (string, string) {
	t.Helper()
	promBin, err1 := exec.LookPath("prometheus")
	promtool, err2 := exec.LookPath("promtool")
	if err1 != nil || err2 != nil {
		const hint = "prometheus and promtool are not on PATH: run dashboards/check.sh, or apt-get install -y prometheus"
		if os.Getenv("CI") == "true" {
			t.Fatal(hint)
		}
		t.Skip(hint)
	}
	return promBin, promtool
}

// run runs a command to completion and fails the test with its output if
// it fails.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func buildStrangler(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "strangler")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/strangler")
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/strangler: %v\n%s", err, out)
	}
	return bin
}

// checkScrapeConfigMatchesDemoDefaults compares the targets of
// prometheus/prometheus.yml with the demo's default addresses, so the doc's
// config keeps scraping `make run`.
func checkScrapeConfigMatchesDemoDefaults(t *testing.T, bin string) {
	t.Helper()
	help := run(t, bin, "demo", "--help")
	var cfg struct {
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	readYAML(t, scrapeFile, &cfg)
	targets := map[string][]string{}
	for _, sc := range cfg.ScrapeConfigs {
		for _, s := range sc.StaticConfigs {
			targets[sc.JobName] = append(targets[sc.JobName], s.Targets...)
		}
	}
	for job, flag := range map[string]string{"strangler": "admin-listen", "neworders": "newpath-metrics-listen"} {
		m := regexp.MustCompile(`--` + flag + ` string .*\(default "([^"]+)"\)`).FindStringSubmatch(help)
		if m == nil {
			t.Errorf("strangler demo --help has no --%s with a default", flag)
			continue
		}
		if !slices.Contains(targets[job], m[1]) {
			t.Errorf("%s: job %s scrapes %v; the demo's --%s default is %s", scrapeFile, job, targets[job], flag, m[1])
		}
	}
}

// demoProcess is a running `strangler demo`.
type demoProcess struct {
	admin          string // host:port of /metrics
	newpathMetrics string
	config         string // the YAML the demo reloads
}

// startDemo starts the demo on free ports and reads its addresses from
// what it prints.
func startDemo(t *testing.T, bin, dir string) *demoProcess {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "stdout")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const freePort = "127.0.0.1:0"
	cmd := exec.Command(bin, "demo", "--listen", freePort, "--admin-listen", freePort, "--legacy-listen", freePort,
		"--newpath-listen", freePort, "--newpath-metrics-listen", freePort, "--duration", "0", "--rate", "50", "--dir", dir)
	cmd.Stdout, cmd.Stderr = f, f
	exited := startProcess(t, cmd, "strangler demo", out)

	admin := regexp.MustCompile(`metrics +http://([^/\s]+)/metrics`)
	newpathMetrics := regexp.MustCompile(`newpath +http://\S+ +\(metrics http://([^/\s]+)/metrics\)`)
	config := regexp.MustCompile(`\(edit (\S+): weights reload live\)`)
	deadline := time.Now().Add(20 * time.Second)
	for {
		text, _ := os.ReadFile(out)
		a, n, c := admin.FindSubmatch(text), newpathMetrics.FindSubmatch(text), config.FindSubmatch(text)
		if a != nil && n != nil && c != nil {
			return &demoProcess{admin: string(a[1]), newpathMetrics: string(n[1]), config: string(c[1])}
		}
		select {
		case <-exited:
			t.Fatalf("strangler demo exited:\n%s", text)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("strangler demo did not print its admin, newpath metrics and config addresses:\n%s", text)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// editWeight rewrites a route's weight in the demo's config file, as an
// operator would.
func (d *demoProcess) editWeight(t *testing.T, route string, from, to int) {
	t.Helper()
	data, err := os.ReadFile(d.config)
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`(?m)(- name: ` + regexp.QuoteMeta(route) + `\n(?:[ \t]+.*\n)*?[ \t]+weight: )` + strconv.Itoa(from) + `\b`)
	edited := re.ReplaceAll(data, []byte("${1}"+strconv.Itoa(to)))
	if bytes.Equal(edited, data) {
		t.Fatalf("%s: no weight %d on route %s to edit:\n%s", d.config, from, route, data)
	}
	writeFile(t, d.config, string(edited))
}

// startProcess starts cmd and stops it when the test ends: SIGTERM, then
// SIGKILL if it is still running five seconds later. Its output file is
// logged if the test failed. The returned channel is closed when the
// process exits.
func startProcess(t *testing.T, cmd *exec.Cmd, name, outFile string) <-chan struct{} {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			t.Errorf("%s ignored SIGTERM for 5s and was killed", name)
		}
		if t.Failed() {
			out, _ := os.ReadFile(outFile)
			if len(out) > 8000 {
				out = out[len(out)-8000:]
			}
			t.Logf("%s output (tail):\n%s", name, out)
		}
	})
	return exited
}

// prometheusServer is a running Prometheus and its HTTP API.
type prometheusServer struct {
	url    string
	client *http.Client
}

func startPrometheus(t *testing.T, bin, cfg, tsdb string) *prometheusServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	log := filepath.Join(filepath.Dir(tsdb), "prometheus.log")
	f, err := os.Create(log)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(bin, "--config.file="+cfg, "--storage.tsdb.path="+tsdb, "--web.listen-address="+addr,
		"--storage.tsdb.retention.time=1h", "--log.level=warn")
	cmd.Stdout, cmd.Stderr = f, f
	startProcess(t, cmd, "prometheus", log)
	p := &prometheusServer{url: "http://" + addr, client: &http.Client{Timeout: 10 * time.Second}}
	deadline := time.Now().Add(20 * time.Second)
	for {
		res, err := p.client.Get(p.url + "/-/ready")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return p
			}
		}
		if time.Now().After(deadline) {
			out, _ := os.ReadFile(log)
			t.Fatalf("prometheus not ready on %s within 20s: %v\n%s", addr, err, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// apiResponse is the envelope of Prometheus' HTTP API.
type apiResponse struct {
	Status    string          `json:"status"`
	ErrorType string          `json:"errorType"`
	Error     string          `json:"error"`
	Data      json.RawMessage `json:"data"`
}

type vectorSample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

func (p *prometheusServer) api(path string, form url.Values) (json.RawMessage, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// POST for queries, which can be long; GET where Prometheus 2.42
	// accepts nothing else (labels, rules).
	var req *http.Request
	var err error
	if path != "/api/v1/query" {
		req, err = http.NewRequestWithContext(ctx, "GET", p.url+path+"?"+form.Encode(), nil)
	} else {
		req, err = http.NewRequestWithContext(ctx, "POST", p.url+path, strings.NewReader(form.Encode()))
		if req != nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
	}
	if err != nil {
		return nil, err
	}
	res, err := p.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	var r apiResponse
	if err := json.NewDecoder(res.Body).Decode(&r); err != nil {
		return nil, fmt.Errorf("%s: HTTP %d, undecodable answer: %w", path, res.StatusCode, err)
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("status %s: %s: %s", r.Status, r.ErrorType, r.Error)
	}
	return r.Data, nil
}

// query evaluates an instant query now.
func (p *prometheusServer) query(expr string) ([]vectorSample, error) {
	data, err := p.api("/api/v1/query", url.Values{"query": {expr}})
	if err != nil {
		return nil, err
	}
	var d struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	}
	if err := json.Unmarshal(data, &d); err != nil {
		return nil, err
	}
	switch d.ResultType {
	case "vector":
		var v []vectorSample
		return v, json.Unmarshal(d.Result, &v)
	case "scalar":
		return []vectorSample{{}}, nil
	default:
		return nil, fmt.Errorf("result type %s; want a vector", d.ResultType)
	}
}

// labelValues returns the values of label on the series of selector.
func (p *prometheusServer) labelValues(t *testing.T, label, selector string) []string {
	t.Helper()
	data, err := p.api("/api/v1/label/"+label+"/values", url.Values{"match[]": {selector}})
	if err != nil {
		t.Fatalf("label values %s of %s: %v", label, selector, err)
	}
	var values []string
	if err := json.Unmarshal(data, &values); err != nil {
		t.Fatal(err)
	}
	return values
}

// labelValuesPattern is the variable query Grafana's Prometheus data
// source answers from the series API.
var labelValuesPattern = regexp.MustCompile(`^label_values\((.+), *(\w+)\)$`)

// evaluate sends one dashboard or rule query, variables substituted, and
// returns how many series it answered. A query that leaves a variable
// unsubstituted is an error.
func (p *prometheusServer) evaluate(q query, s substitution) (int, error) {
	expr := s.expand(q.text)
	if strings.Contains(expr, "$") {
		return 0, fmt.Errorf("unsubstituted variable in %q", expr)
	}
	if q.kind == "label_values" {
		m := labelValuesPattern.FindStringSubmatch(expr)
		if m == nil {
			return 0, fmt.Errorf("%q is not label_values(selector, label)", expr)
		}
		data, err := p.api("/api/v1/label/"+m[2]+"/values", url.Values{"match[]": {m[1]}})
		if err != nil {
			return 0, err
		}
		var values []string
		if err := json.Unmarshal(data, &values); err != nil {
			return 0, err
		}
		return len(values), nil
	}
	res, err := p.query(expr)
	if err != nil {
		return 0, fmt.Errorf("%w\n%s", err, expr)
	}
	return len(res), nil
}

// waitFor polls until expr returns a series, for at most 30 s.
func (p *prometheusServer) waitFor(t *testing.T, what, expr string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		res, err := p.query(expr)
		if err == nil && len(res) > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s (%s): not within 30s (last error %v)", what, expr, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// checkRulesHealthy waits until Prometheus has evaluated all n rules of a
// type (alert or record) and requires each to have evaluated without
// error.
func (p *prometheusServer) checkRulesHealthy(t *testing.T, typ string, n int) {
	t.Helper()
	type ruleState struct {
		Name           string `json:"name"`
		Health         string `json:"health"`
		LastError      string `json:"lastError"`
		LastEvaluation string `json:"lastEvaluation"`
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		data, err := p.api("/api/v1/rules", url.Values{"type": {typ}})
		if err != nil {
			t.Fatalf("rules: %v", err)
		}
		var d struct {
			Groups []struct {
				Rules []ruleState `json:"rules"`
			} `json:"groups"`
		}
		if err := json.Unmarshal(data, &d); err != nil {
			t.Fatal(err)
		}
		var rules []ruleState
		for _, g := range d.Groups {
			rules = append(rules, g.Rules...)
		}
		evaluated := 0
		for _, r := range rules {
			if r.Health == "ok" {
				evaluated++
			}
		}
		if len(rules) == n && evaluated == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s rules loaded %d of %d, healthy %d: %+v", typ, len(rules), n, evaluated, rules)
		}
		time.Sleep(250 * time.Millisecond)
	}
}
