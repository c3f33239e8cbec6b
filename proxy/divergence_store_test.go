package proxy

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/strangler-proxy/strangler/newpath/pgtest" // a test helper: a schema per test
)

func TestDivergenceSamplesReachPostgresAndAnOutageOnlyDropsThem(t *testing.T) {
	dbURL := pgtest.URL(t)
	relay, viaRelay := pgtest.NewRelay(t, dbURL)

	differ := func(total int) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) { fmt.Fprintf(w, `{"total_cents":%d}`, total) }
	}
	h := newHarness(t, differ(1000), differ(1001), fmt.Sprintf(`
divergence_store: { database_url: %q }
routes:
  - name: get-order
    match: "GET /orders/{id}"
    shadow: { percent: 100 }
`, viaRelay))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { h.proxy.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	conn, err := pgx.Connect(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	rows := func() int {
		var n int
		if err := conn.QueryRow(context.Background(), "SELECT count(*) FROM strangler_divergences").Scan(&n); err != nil {
			return -1 // the table is not there yet
		}
		return n
	}

	sendOrders(t, h, 20)
	eventually(t, 10*time.Second, "20 samples in Postgres", func() bool { return rows() == 20 })
	var route, legacyValue string
	if err := conn.QueryRow(context.Background(),
		`SELECT route, differences->0->>'legacy' FROM strangler_divergences LIMIT 1`).Scan(&route, &legacyValue); err != nil {
		t.Fatal(err)
	}
	if route != "get-order" || legacyValue != "1000" {
		t.Errorf("stored sample: route %q legacy value %q; want get-order and 1000", route, legacyValue)
	}

	// Postgres goes away: requests keep being served, samples are dropped
	// and counted.
	relay.SetDown(true)
	for i := 0; i < 30; i++ {
		if res, _ := h.get(fmt.Sprintf("/orders/%d", i)); res.StatusCode != http.StatusOK {
			t.Fatalf("request %d during the outage: %d", i, res.StatusCode)
		}
	}
	eventually(t, 20*time.Second, "drops counted", func() bool {
		v, _ := h.metric("strangler_divergence_samples_dropped_total", nil)
		return v > 0
	})
	if v, ok := h.metric("strangler_comparisons_total", map[string]string{"route": "get-order", "result": "mismatch"}); !ok || v < 50 {
		t.Errorf("mismatches = %v; want all 50 still compared", v)
	}
}
