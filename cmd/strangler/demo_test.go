package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestDemoServesTrafficAndReportsProgress(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"demo", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
		"--duration", "3s", "--rate", "100", "--dir", t.TempDir()}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("demo exited %d\nstdout: %s\nstderr: %s", code, &stdout, &stderr)
	}
	out := stdout.String()
	for _, want := range []string{"/metrics", "/admin/routes", "proxy         http://127.0.0.1:"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	m := regexp.MustCompile(`requests (\d+)  legacy (\d+)  newpath (\d+)`).FindAllStringSubmatch(out, -1)
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
	t.Logf("report:\n%s", &report)
}
