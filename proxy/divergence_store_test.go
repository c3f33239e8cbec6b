package proxy

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
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

// TestDivergenceRetentionPrunesOldSamplesInBatches: samples older than the
// retention go, in statements of at most a batch; younger ones stay; the
// metric counts what went.
func TestDivergenceRetentionPrunesOldSamplesInBatches(t *testing.T) {
	dbURL := pgtest.URL(t)
	h := newHarness(t, nil, nil, fmt.Sprintf(`
divergence_store: { database_url: %q, retention: 168h }
routes:
  - { name: get-order, match: "GET /orders/{id}" }
`, dbURL))
	d := h.proxy.divergences
	ctx := context.Background()
	if err := d.ensureTable(ctx); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	insert := func(n int, age time.Duration) {
		t.Helper()
		if _, err := conn.Exec(ctx, `INSERT INTO strangler_divergences (time, route, method, path, request_id, legacy_status, newpath_status, differences)
			SELECT $1, 'get-order', 'GET', '/orders/1', 'req-' || g, 200, 200, '[]' FROM generate_series(1, $2) g`, now.Add(-age), n); err != nil {
			t.Fatal(err)
		}
	}
	count := func() int {
		t.Helper()
		var n int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM strangler_divergences`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	insert(35, 8*24*time.Hour) // past the week
	insert(5, 24*time.Hour)

	deleted, err := d.prune(ctx, now.Add(-7*24*time.Hour), 10)
	if err != nil || deleted != 35 {
		t.Fatalf("prune with batches of 10: deleted %d, %v; want all 35 old samples, over four statements", deleted, err)
	}
	if n := count(); n != 5 {
		t.Errorf("%d samples left; want the 5 younger than the retention", n)
	}

	// The background pass reads the retention from the config in force.
	insert(3, 7*24*time.Hour+time.Minute)
	d.pruneOld(ctx, now)
	if n := count(); n != 5 {
		t.Errorf("after the background pass: %d samples left; want 5", n)
	}
	var indexed bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_indexes WHERE schemaname = current_schema() AND indexname = 'strangler_divergences_time')`).Scan(&indexed); err != nil || !indexed {
		t.Errorf("the background pass did not build the time index (%v)", err)
	}
	if v, _ := h.metric("strangler_divergence_samples_pruned_total", nil); v != 38 {
		t.Errorf("strangler_divergence_samples_pruned_total = %v; want 38", v)
	}

	// Retention 0 keeps everything.
	h.writeConfig(fmt.Sprintf(`
divergence_store: { database_url: %q, retention: 0s }
routes:
  - { name: get-order, match: "GET /orders/{id}" }
`, dbURL))
	if err := h.reloader.Reload(); err != nil {
		t.Fatal(err)
	}
	d.pruneOld(ctx, now.Add(365*24*time.Hour))
	if n := count(); n != 5 {
		t.Errorf("with retention 0: %d samples left; want all 5 kept", n)
	}
}

// TestSamplesRecordTheRequestRedacted: a sample keeps what replay needs of
// its request (method, path, query, header, body, dry run), in memory and
// in Postgres, on a table created before those columns existed; the
// credentials and the configured headers are never kept, anywhere.
func TestSamplesRecordTheRequestRedacted(t *testing.T) {
	dbURL := pgtest.URL(t)
	conn, err := pgx.Connect(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	// The table as the first release made it.
	if _, err := conn.Exec(context.Background(), `CREATE TABLE strangler_divergences (
    id bigserial PRIMARY KEY, time timestamptz NOT NULL, route text NOT NULL, method text NOT NULL,
    path text NOT NULL, request_id text NOT NULL, trace_id text NOT NULL DEFAULT '',
    legacy_status integer NOT NULL, newpath_status integer NOT NULL, differences jsonb NOT NULL)`); err != nil {
		t.Fatal(err)
	}

	differ := func(total int) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) { fmt.Fprintf(w, `{"total_cents":%d}`, total) }
	}
	h := newHarness(t, differ(1000), differ(1001), fmt.Sprintf(`
divergence_store: { database_url: %q, redact_headers: [x-api-key] }
routes:
  - name: create-order
    match: "POST /orders"
    shadow: { percent: 100, dry_run: true }
`, dbURL))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { h.proxy.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	const secret = "s3cr3t-value"
	req, _ := http.NewRequest("POST", h.front.URL+"/orders?source=app&access_token="+secret+"&v=2", strings.NewReader(`{"item":"sku-1"}`))
	req.Header.Set("Authorization", "Bearer "+secret)
	req.Header.Set("Proxy-Authorization", "Basic "+secret)
	req.Header.Set("Cookie", "session="+secret)
	req.Header.Set("X-Api-Key", secret)
	req.Header.Set("X-Client", "mobile")
	req.Header.Set("Content-Type", "application/json")
	h.do(req)

	var s Sample
	eventually(t, 10*time.Second, "a sample", func() bool {
		h.proxy.boundRoute("create-order").rt.cmp.mu.Lock()
		defer h.proxy.boundRoute("create-order").rt.cmp.mu.Unlock()
		samples := h.proxy.boundRoute("create-order").rt.cmp.samples.newest(1)
		if len(samples) == 1 {
			s = samples[0]
		}
		return len(samples) == 1
	})
	if s.Method != "POST" || s.Path != "/orders" || s.Query != "source=app&access_token=%5Bredacted%5D&v=2" || s.RequestBody != `{"item":"sku-1"}` || !s.DryRun {
		t.Errorf("sample request = %s %s?%s body %q dry run %v", s.Method, s.Path, s.Query, s.RequestBody, s.DryRun)
	}
	// Proxy-Authorization is hop-by-hop: it never leaves the proxy at all.
	for name, want := range map[string]string{"Authorization": "[redacted]", "Cookie": "[redacted]",
		"X-Api-Key": "[redacted]", "X-Client": "mobile", "Content-Type": "application/json"} {
		if got := s.RequestHeader[name]; len(got) != 1 || got[0] != want {
			t.Errorf("recorded %s = %q; want %q", name, got, want)
		}
	}
	for _, name := range []string{"X-Strangler-Shadow", "X-Strangler-Dry-Run", "Traceparent", "X-Forwarded-For", "X-Real-Ip", "Host", "Content-Length", "Proxy-Authorization"} {
		if _, ok := s.RequestHeader[name]; ok {
			t.Errorf("recorded %s, which a replay sets anew", name)
		}
	}

	admin := httptest.NewServer(h.proxy.AdminHandler(AdminOptions{Gatherer: h.reg, Config: h.reloader}))
	defer admin.Close()
	res, err := http.Get(admin.URL + "/admin/divergences")
	if err != nil {
		t.Fatal(err)
	}
	api, _ := io.ReadAll(res.Body)
	res.Body.Close()
	var listed struct{ Samples []Sample }
	if err := json.Unmarshal(api, &listed); err != nil || len(listed.Samples) != 1 || listed.Samples[0].Query != s.Query || strings.Contains(string(api), secret) {
		t.Errorf("GET /admin/divergences (%v): the request is missing or a secret is there:\n%s", err, api)
	}

	var row string
	eventually(t, 10*time.Second, "the sample in Postgres", func() bool {
		err := conn.QueryRow(context.Background(),
			`SELECT concat_ws(' ', method, path, query, request_header::text, request_body, dry_run) FROM strangler_divergences`).Scan(&row)
		return err == nil
	})
	if strings.Contains(row, secret) || !strings.Contains(row, `"X-Client": ["mobile"]`) || !strings.Contains(row, "source=app&access_token=%5Bredacted%5D&v=2") ||
		!strings.Contains(row, `{"item":"sku-1"} t`) {
		t.Errorf("stored request: %s", row)
	}
}
