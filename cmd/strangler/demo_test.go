package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestDemoServesTrafficAndReportsProgress(t *testing.T) {
	var stdout, stderr bytes.Buffer
	dir := t.TempDir()
	code := run(context.Background(), []string{"demo", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
		"--duration", "3s", "--rate", "100", "--dir", dir, "--backend-log-level", "info"}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("demo exited %d\nstdout: %s\nstderr: %s", code, &stdout, &stderr)
	}
	out := stdout.String()
	for _, want := range []string{"/metrics", "/admin/routes", "proxy         http://127.0.0.1:"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if !regexp.MustCompile(`last \ds: cancel-order \d+% of \d+ · create-order \d+% of \d+ · get-order \d+% of [1-9]\d*`).MatchString(out) {
		t.Errorf("no per-route split over the last seconds:\n%s", out)
	}
	m := regexp.MustCompile(`since start: requests (\d+)  legacy (\d+)  newpath (\d+)`).FindAllStringSubmatch(out, -1)
	if len(m) == 0 {
		t.Fatalf("no progress line:\n%s", out)
	}
	last := m[len(m)-1]
	total, _ := strconv.Atoi(last[1])
	newpath, _ := strconv.Atoi(last[3])
	if total == 0 || newpath == 0 {
		t.Errorf("progress %q: want traffic on both backends", last[0])
	}
	if !strings.Contains(out, "errors 0") {
		t.Errorf("demo traffic saw errors:\n%s", out)
	}

	// Every line of the demo's log names the service that wrote it.
	log, err := os.ReadFile(filepath.Join(dir, "demo.log"))
	if err != nil {
		t.Fatal(err)
	}
	services := map[string]int{}
	for line := range strings.Lines(string(log)) {
		var rec struct{ Service string }
		if err := json.Unmarshal([]byte(line), &rec); err != nil || rec.Service == "" {
			t.Fatalf("demo.log line without a service (%v): %s", err, line)
		}
		services[rec.Service]++
	}
	for name := range services {
		if !slices.Contains([]string{"strangler", "legacy", "downstream", "newpath", "relay", "store"}, name) {
			t.Errorf("a line names service %q, which the demo does not run", name)
		}
	}
	if services["strangler"] == 0 || services["newpath"] == 0 {
		t.Errorf("lines by service = %v; want the proxy's (strangler) and newpath's at info", services)
	}
}

func TestReportReadsTheAdminAPI(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addrs := make(chan string, 1)
	done := make(chan error, 1)
	opts := demoOptions{listen: "127.0.0.1:0", adminListen: "127.0.0.1:0", rate: 200, dir: dir,
		ready: func(a demoAddrs) { addrs <- a.admin }}
	var out bytes.Buffer
	go func() { done <- demo(ctx, opts, &out) }()
	admin := <-addrs
	var report bytes.Buffer
	deadline := time.Now().Add(20 * time.Second)
	for {
		report.Reset()
		if code := run(ctx, []string{"report", "--admin", "http://" + admin}, &report, &report); code != 0 {
			t.Fatalf("report exited %d: %s", code, &report)
		}
		if regexp.MustCompile(`get-order .* ready `).MatchString(report.String()) {
			break
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Every route has comparisons on /metrics.
	p, err := scrapeProgress(ctx, "http://"+admin+"/metrics")
	if err != nil {
		t.Fatal(err)
	}
	res, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(res.Body)
	res.Body.Close()
	for _, route := range []string{"get-order", "list-orders", "create-order", "cancel-order"} {
		if !regexp.MustCompile(`strangler_comparisons_total\{result="(match|mismatch|noise)",route="` + route + `"\} [1-9]`).Match(metrics) {
			t.Errorf("no comparisons of %s on /metrics", route)
		}
	}
	if p.compared == 0 {
		t.Error("no comparisons at all")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"UPSTREAM", "newpath   ", "ROUTE", "VERDICT", "get-order", "list-orders", "create-order", "insufficient_data"} {
		if !strings.Contains(report.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, &report)
		}
	}
	// cancel-order ramps; the other routes have none.
	if !regexp.MustCompile(`cancel-order +newpath +10% +\d+% +none +\d+% \([1-4]/4\)`).MatchString(report.String()) ||
		!regexp.MustCompile(`get-order +newpath +50% +50% +none +- `).MatchString(report.String()) {
		t.Errorf("report lacks cancel-order's ramp, or shows one for get-order:\n%s", &report)
	}
	t.Logf("report:\n%s", &report)
}

func TestProgressLineIsRecentAndEventsAreNamed(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	old := progress{at: t0, total: 1000, legacy: 900, newpath: 100, compared: 500,
		results:    map[string]int{"match": 500},
		routes:     map[string]routeProgress{"get-order": {legacy: 900, newpath: 100}},
		routeOrder: []string{"get-order"},
		reloads:    map[string]int{"success": 1}, trips: map[string]int{},
		tripped: map[string]bool{"list-orders": true}}
	// The weight went to 90 since: 90 of the last 100 requests, though 19%
	// of all since start.
	cur := progress{at: t0.Add(5 * time.Second), total: 1100, legacy: 910, newpath: 190, errors: 2, compared: 600, fields: 1,
		results:    map[string]int{"match": 590, "mismatch": 10},
		routes:     map[string]routeProgress{"get-order": {legacy: 910, newpath: 190}},
		routeOrder: []string{"get-order"},
		reloads:    map[string]int{"success": 2, "failure": 1}, trips: map[string]int{"get-order error_rate": 1},
		tripped: map[string]bool{"get-order": true}}
	line := progressLine(old, cur)
	for _, want := range []string{"last 5s: get-order 90% of 100 |", "errors 2", "compared 100: match 90.0%  noise 0.0%  mismatch 10.0%", "since start: requests 1100"} {
		if !strings.Contains(line, want) {
			t.Errorf("progress line %q lacks %q", line, want)
		}
	}
	events := strings.Join(progressEvents(old, cur), "\n")
	for _, want := range []string{"reload: the config was reloaded (1)", "reload: FAILED (1)", "guard: get-order tripped (error_rate)", "guard: list-orders re-armed"} {
		if !strings.Contains(events, want) {
			t.Errorf("events %q lack %q", events, want)
		}
	}
	if e := progressEvents(cur, cur); len(e) != 0 {
		t.Errorf("events between equal scrapes: %q; want none", e)
	}
}

func TestEditWeightTouchesOneRoute(t *testing.T) {
	cfg := fmt.Sprintf(demoRoutes, "127.0.0.1:1", "127.0.0.1:2", "http://l", "http://n", "/tmp/c.jsonl", 50)
	cfg = strings.Replace(cfg, "weight: 50", "weight: 60", 1) // a user's edit of get-order
	got, ok := editWeight(cfg, "list-orders", 50, 40)
	if !ok || strings.Count(got, "weight: 40") != 1 || !strings.Contains(got, "weight: 60") ||
		len(got) != len(cfg) {
		t.Fatalf("editWeight = %v:\n%s", ok, got)
	}
	if _, ok := editWeight(got, "list-orders", 50, 40); ok {
		t.Error("editWeight changed a weight that was no longer 50")
	}
}
