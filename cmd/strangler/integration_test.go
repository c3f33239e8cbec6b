package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// startDemo runs the demo without traffic and returns where it listens.
func startDemo(t *testing.T) demoAddrs {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan demoAddrs, 1)
	done := make(chan error, 1)
	opts := demoOptions{listen: "127.0.0.1:0", adminListen: "127.0.0.1:0", legacyListen: "127.0.0.1:0",
		newpathListen: "127.0.0.1:0", newpathMetricsListen: "127.0.0.1:0", dir: t.TempDir(),
		ready: func(a demoAddrs) { ready <- a }}
	go func() { done <- demo(ctx, opts, io.Discard) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("demo: %v", err)
		}
	})
	select {
	case a := <-ready:
		return a
	case err := <-done:
		t.Fatalf("demo did not start: %v", err)
	}
	return demoAddrs{}
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	if err := fetchJSON(url, v); err != nil {
		t.Fatal(err)
	}
}

// TestDryRunShadowOfAWriteThroughTheProxy sends a POST /orders through the
// proxy to legacy with a dry-run shadow to the real newpath: the
// comparison is recorded and newpath left no order, charge or event.
func TestDryRunShadowOfAWriteThroughTheProxy(t *testing.T) {
	a := startDemo(t)
	var before struct{ Charges, Reservations, Shipments int }
	getJSON(t, a.backends.downstream+"/_stats", &before)

	// User 777 is sticky-bucketed; weight 10 may send them to newpath as
	// primary, so force legacy with the override header (trusted from
	// loopback), which is the case this test is about.
	req, _ := http.NewRequest("POST", "http://"+a.proxy+"/orders", strings.NewReader(`{"user_id":777,"item_id":"sku-3","quantity":2}`))
	req.Header.Set("X-User-Id", "777")
	req.Header.Set("X-Strangler-Backend", "legacy")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusCreated {
		t.Fatalf("POST /orders = %d %s", res.StatusCode, body)
	}

	var routes struct {
		Routes []struct {
			Name        string
			Comparisons struct{ Match, Mismatch, Noise, Error, Skipped int }
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		getJSON(t, "http://"+a.admin+"/admin/routes", &routes)
		var c struct{ Match, Mismatch, Noise, Error, Skipped int }
		for _, r := range routes.Routes {
			if r.Name == "create-order" {
				c = r.Comparisons
			}
		}
		if c.Match+c.Mismatch+c.Noise+c.Error+c.Skipped > 0 {
			if c.Match != 1 {
				t.Errorf("create-order comparisons = %+v; want the one dry run to match legacy", c)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no comparison recorded for the POST")
		}
		time.Sleep(20 * time.Millisecond)
	}

	var orders struct{ Orders []json.RawMessage }
	getJSON(t, a.backends.legacy+"/orders?user_id=777", &orders)
	if len(orders.Orders) != 1 {
		t.Errorf("user 777 has %d orders; want legacy's one (the dry run stored none)", len(orders.Orders))
	}
	var after struct{ Charges, Reservations, Shipments int }
	getJSON(t, a.backends.downstream+"/_stats", &after)
	if after.Charges-before.Charges != 1 || after.Reservations-before.Reservations != 1 {
		t.Errorf("charges +%d, reservations +%d; want +1 each (legacy's order only)",
			after.Charges-before.Charges, after.Reservations-before.Reservations)
	}
	res, err = http.Get(a.backends.newpathMetrics)
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(res.Body)
	res.Body.Close()
	for _, want := range []string{`neworders_orders_total{outcome="dry_run"} 1`, "neworders_outbox_pending_events 0"} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("newpath metrics lack %q", want)
		}
	}
	if strings.Contains(string(metrics), `neworders_outbox_deliveries_total{result="delivered"} 1`) {
		t.Error("the dry run's events were delivered")
	}
}
