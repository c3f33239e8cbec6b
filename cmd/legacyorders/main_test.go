package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/strangler-proxy/strangler/newpath/pgtest"
)

// syncBuffer is an io.Writer the test can read while run writes to it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

var listeningLine = regexp.MustCompile(`(?m)^(legacy order API|downstream services) listening on (http://\S+)$`)

// startRun runs legacyorders with args on ephemeral ports and returns the
// two base URLs and a function that stops it and returns run's error.
func startRun(t *testing.T, args ...string) (ordersURL, downstreamURL string, stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	var stdout, stderr syncBuffer
	done := make(chan error, 1)
	args = append([]string{"--listen", "127.0.0.1:0", "--downstream-listen", "127.0.0.1:0"}, args...)
	go func() { done <- run(ctx, args, &stdout, &stderr) }()

	deadline := time.Now().Add(5 * time.Second)
	for {
		matches := listeningLine.FindAllStringSubmatch(stdout.String(), -1)
		if len(matches) == 2 {
			ordersURL, downstreamURL = matches[0][2], matches[1][2]
			break
		}
		select {
		case err := <-done:
			cancel()
			t.Fatalf("run returned early: %v\nstderr:\n%s", err, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("no listen addresses printed; stdout:\n%s", stdout.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	stop = func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(10 * time.Second):
			t.Fatal("run did not return after cancellation")
			return nil
		}
	}
	return ordersURL, downstreamURL, stop
}

func get(t *testing.T, method, url, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestRunServesAndShutsDown(t *testing.T) {
	orders, downstream, stop := startRun(t, "--warehouse-down", "--payment-latency", "1ms")
	if code, body := get(t, "GET", orders+"/orders/ord_1", ""); code != http.StatusOK || !strings.Contains(body, `"id":"ord_1"`) {
		t.Errorf("GET seeded order = %d %s", code, body)
	}
	// The failure flags reach the fake services: the warehouse is down, so
	// the new order stays paid.
	if code, body := get(t, "POST", orders+"/orders", `{"user_id":1,"item_id":"sku-1","quantity":1}`); code != http.StatusCreated || !strings.Contains(body, `"status":"paid"`) {
		t.Errorf("POST /orders with --warehouse-down = %d %s; want 201 and status paid", code, body)
	}
	if code, body := get(t, "GET", downstream+"/_control", ""); code != http.StatusOK || !strings.Contains(body, `"warehouse":{"down":true`) || !strings.Contains(body, `"payments":{"down":false,"latency":"1ms"`) {
		t.Errorf("GET /_control = %d %s; want the flags' faults", code, body)
	}
	if err := stop(); err != nil {
		t.Errorf("run after cancellation = %v; want nil", err)
	}
	if resp, err := http.Get(orders + "/healthz"); err == nil {
		resp.Body.Close()
		t.Error("the order API still answers after shutdown")
	}
}

func TestRunDemoNoise(t *testing.T) {
	orders, _, stop := startRun(t, "--demo-noise")
	defer stop()
	if code, body := get(t, "GET", orders+"/orders?user_id=1", ""); code != http.StatusOK || !strings.Contains(body, `"served_at":`) || !strings.Contains(body, `"request_ref":"ref_`) {
		t.Errorf("GET /orders with --demo-noise = %d %s; want served_at and request_ref", code, body)
	}
}

func TestRunRejects(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"invalid database url", []string{"--database-url", "postgres://%zz"}, "--database-url: open postgres: invalid database URL"},
		{"error rate out of range", []string{"--warehouse-error-rate", "1.5"}, "warehouse.error_rate: must be between 0 and 1"},
		{"negative latency", []string{"--latency", "-1s"}, "latency must not be negative"},
		{"unknown flag", []string{"--wearhouse-down"}, "flag provided but not defined"},
		{"positional argument", []string{"serve"}, "unexpected arguments"},
		{"invalid listen address", []string{"--listen", "256.0.0.1:1"}, "order API listener"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"--downstream-listen", "127.0.0.1:0"}, tt.args...)
			err := run(t.Context(), args, io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("run(%q) = %v; want an error containing %q", tt.args, err, tt.want)
			}
		})
	}
}

func TestRunHelp(t *testing.T) {
	var stderr bytes.Buffer
	if err := run(t.Context(), []string{"-h"}, io.Discard, &stderr); err != nil {
		t.Errorf("run(-h) = %v; want nil", err)
	}
	for _, flag := range []string{"-listen", "-downstream-listen", "-database-url", "-payment-latency", "-warehouse-down", "-warehouse-error-rate"} {
		if !strings.Contains(stderr.String(), flag) {
			t.Errorf("usage does not mention %s", flag)
		}
	}
}

// TestRunOnPostgres: legacyorders on a database migrates and seeds it, and
// what it writes survives a restart.
func TestRunOnPostgres(t *testing.T) {
	url := pgtest.URL(t)
	orders, _, stop := startRun(t, "--database-url", url)
	code, created := get(t, "POST", orders+"/orders", `{"user_id":1,"item_id":"sku-1","quantity":1}`)
	if code != http.StatusCreated || !strings.Contains(created, `"id":"ord_11"`) {
		t.Fatalf("POST /orders = %d %s; want 201 ord_11", code, created)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	orders, _, stop = startRun(t, "--database-url", url)
	defer stop()
	if code, got := get(t, "GET", orders+"/orders/ord_11", ""); code != http.StatusOK || got != created {
		t.Errorf("GET ord_11 after a restart = %d %s; want %s", code, got, created)
	}
	if code, got := get(t, "GET", orders+"/orders?user_id=1", ""); code != http.StatusOK || strings.Count(got, `"id":`) != 3 {
		t.Errorf("user 1's orders after a restart = %d %s; want ord_1, ord_2, ord_11", code, got)
	}
}

// TestReadyzFollowsPostgres: /healthz says the process is alive, /readyz
// whether its Postgres answers. The first probe after Postgres goes away
// answers 503, within the probe's own one-second bound; once Postgres is
// back, 200 again.
func TestReadyzFollowsPostgres(t *testing.T) {
	relay, dbURL := pgtest.NewRelay(t, pgtest.URL(t))
	orders, _, stop := startRun(t, "--database-url", dbURL)
	defer stop()
	probe := &http.Client{Timeout: 2 * time.Second}
	readyz := func() int {
		t.Helper()
		res, err := probe.Get(orders + "/readyz")
		if err != nil {
			t.Fatalf("GET /readyz: %v", err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	if code := readyz(); code != http.StatusOK {
		t.Fatalf("/readyz with Postgres up = %d; want 200", code)
	}

	relay.SetDown(true)
	if code := readyz(); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz with Postgres down = %d; want 503", code)
	}
	if code, _ := get(t, "GET", orders+"/healthz", ""); code != http.StatusOK {
		t.Errorf("/healthz with Postgres down = %d; want 200 (alive)", code)
	}

	relay.SetDown(false)
	deadline := time.Now().Add(10 * time.Second)
	for readyz() != http.StatusOK {
		if time.Now().After(deadline) {
			t.Fatal("/readyz still fails after Postgres came back")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
