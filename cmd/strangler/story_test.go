package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/strangler-proxy/strangler/proxy"
)

// TestDemoTellsTheStory runs make run's demo, with its default timings,
// and checks that within 90 s everything its story promises (README.md,
// "The demo's story") can be seen: noise told from a real divergence, a
// sample with both bodies, a guard tripped by the error burst, then
// re-armed by the weight edit, each step on the progress output.
func TestDemoTellsTheStory(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	addrs := make(chan demoAddrs, 1)
	done := make(chan error, 1)
	var stdout lockedBuffer
	opts := demoOptions{listen: "127.0.0.1:0", adminListen: "127.0.0.1:0", legacyListen: "127.0.0.1:0",
		newpathListen: "127.0.0.1:0", newpathMetricsListen: "127.0.0.1:0", rate: 50, dir: t.TempDir(),
		story: &defaultStory, ready: func(a demoAddrs) { addrs <- a }}
	go func() { done <- demo(ctx, opts, &stdout) }()
	var admin string
	select {
	case a := <-addrs:
		admin = "http://" + a.admin
	case err := <-done:
		t.Fatalf("demo returned early: %v\n%s", err, &stdout)
	}

	deadline := time.Now().Add(90 * time.Second)
	// eventually polls check until it returns "" or the story's 90 s are
	// over; then the test fails with check's last complaint.
	eventually := func(what string, check func() string) {
		t.Helper()
		for {
			complaint := check()
			if complaint == "" {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %s\nstdout:\n%s", what, complaint, &stdout)
			}
			time.Sleep(250 * time.Millisecond)
		}
	}

	eventually("get-order's fields", func() string {
		var res struct {
			Routes []struct {
				Name   string
				Fields []struct{ Field, Verdict string }
			}
		}
		if err := fetchJSON(admin+"/admin/routes", &res); err != nil {
			return err.Error()
		}
		verdicts := map[string]string{}
		for _, r := range res.Routes {
			for _, f := range r.Fields {
				if r.Name == "get-order" {
					verdicts[f.Field] = f.Verdict
				}
			}
		}
		if verdicts["/body/served_at"] != "noisy" || verdicts["/headers/x-served-at"] != "noisy" || verdicts["/body/status"] != "real" {
			return fmt.Sprintf("verdicts %v; want served_at and x-served-at noisy, status real", verdicts)
		}
		return ""
	})
	eventually("a get-order sample", func() string {
		var res struct{ Samples []proxy.Sample }
		if err := fetchJSON(admin+"/admin/divergences?route=get-order", &res); err != nil {
			return err.Error()
		}
		for _, s := range res.Samples {
			if strings.Contains(s.LegacyBody, `"status":"cancelled"`) && strings.Contains(s.NewpathBody, `"status":"canceled"`) {
				return ""
			}
		}
		return fmt.Sprintf("%d samples, none with both bodies of a cancelled order", len(res.Samples))
	})
	eventually("list-orders' guard trips", func() string {
		if n := metricFloat(t, admin, `strangler_guard_trips_total{reason="error_rate",route="list-orders"}`); n < 1 {
			return fmt.Sprintf("trips %v", n)
		}
		return ""
	})
	eventually("the weight edit re-arms it", func() string {
		if n := metricFloat(t, admin, `strangler_config_reloads_total{result="success"}`); n < 1 {
			return fmt.Sprintf("reloads %v", n)
		}
		if n := metricFloat(t, admin, `strangler_guard_tripped{route="list-orders"}`); n != 0 {
			return fmt.Sprintf("tripped %v", n)
		}
		if n := metricFloat(t, admin, `strangler_route_weight_ratio{route="list-orders"}`); n != 0.4 {
			return fmt.Sprintf("weight %v; want 0.4", n)
		}
		return ""
	})
	eventually("the progress output", func() string {
		for _, want := range []string{"The story", "story: newpath starts failing GET /orders",
			"guard: list-orders tripped (error_rate)", "story: ops edit the YAML: list-orders weight 50 -> 40",
			"reload: the config was reloaded (1)", "guard: list-orders re-armed"} {
			if !strings.Contains(stdout.String(), want) {
				return fmt.Sprintf("no %q", want)
			}
		}
		return ""
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// fetchJSON decodes the 200 answer to GET url into v.
func fetchJSON(url string, v any) error {
	res, err := http.Get(url)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(res.Body)
		return fmt.Errorf("GET %s: %d %s", url, res.StatusCode, body)
	}
	if err := json.NewDecoder(res.Body).Decode(v); err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	return nil
}

// metricFloat is metricValue as a number, -1 when the series is absent.
func metricFloat(t *testing.T, admin, series string) float64 {
	t.Helper()
	v, err := strconv.ParseFloat(metricValue(t, admin, series), 64)
	if err != nil {
		return -1
	}
	return v
}
