package dashboards_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/strangler-proxy/strangler/newpath/pgtest"
)

// TestRecentSamplesQueryReadsTheDivergenceStore runs the divergence
// dashboard's samples query, macros expanded as Grafana expands them,
// against the table a real proxy writes its mismatch samples to.
func TestRecentSamplesQueryReadsTheDivergenceStore(t *testing.T) {
	dbURL := pgtest.URL(t)
	f := newDivergentFixture(t, fmt.Sprintf("divergence_store: { database_url: %q }\n", dbURL))
	from := time.Now().Add(-time.Minute)
	// A few more than the verdicts need to call its status real (with
	// every request probed: 6; README, "How verdicts are reached").
	f.send(t, 20)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	deadline := time.Now().Add(10 * time.Second)
	for {
		var n int
		err := conn.QueryRow(ctx, "SELECT count(*) FROM strangler_divergences").Scan(&n)
		if err == nil && n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the proxy wrote no sample to strangler_divergences within 10s (last: %d rows, %v)", n, err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	sql := samplesQuery(t)
	// What Grafana sends for the last hour and route = divergent-get:
	// $__timeFilter(time) becomes a BETWEEN on RFC 3339 instants, a
	// multi-value variable a quoted, comma-separated list.
	to := time.Now().Add(time.Minute)
	expanded := strings.NewReplacer(
		"$__timeFilter(time)", fmt.Sprintf("time BETWEEN '%s' AND '%s'", from.UTC().Format(time.RFC3339), to.UTC().Format(time.RFC3339)),
		"$route", "'"+divergentRoute+"','get-order'",
	).Replace(sql)
	if strings.Contains(expanded, "$") {
		t.Fatalf("unexpanded macro or variable in\n%s", expanded)
	}
	rows, err := conn.Query(ctx, expanded)
	if err != nil {
		t.Fatalf("samples query: %v\n%s", err, expanded)
	}
	records, err := pgx.CollectRows(rows, pgx.RowToMap)
	if err != nil {
		t.Fatalf("samples query: %v\n%s", err, expanded)
	}
	if len(records) == 0 {
		t.Fatalf("samples query returned no row\n%s", expanded)
	}
	r := records[0]
	if r["route"] != divergentRoute || r["method"] != "GET" || !strings.HasPrefix(fmt.Sprint(r["path"]), "/orders/ord_") {
		t.Errorf("first row route, method, path = %v, %v, %v; want %s, GET, /orders/ord_…", r["route"], r["method"], r["path"], divergentRoute)
	}
	if r["legacy_status"] != int32(200) || r["newpath_status"] != int32(200) {
		t.Errorf("statuses = %v, %v; want 200, 200", r["legacy_status"], r["newpath_status"])
	}
	// Noise is masked from a sample: only the real divergence is listed.
	if got := r["fields"]; got != "/body/status" {
		t.Errorf("fields = %q; want %q", got, "/body/status")
	}
	if id, _ := r["request_id"].(string); id == "" {
		t.Errorf("request_id is empty")
	}

	// Another route's samples stay out.
	other := strings.Replace(expanded, "'"+divergentRoute+"',", "", 1)
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM ("+other+") AS samples").Scan(&n); err != nil || n != 0 {
		t.Errorf("samples of route get-order only: %d rows (%v); want 0", n, err)
	}
}

// samplesQuery returns the SQL of the divergence dashboard's samples panel.
func samplesQuery(t *testing.T) string {
	t.Helper()
	for _, d := range loadDashboards(t) {
		for _, q := range d.queries() {
			if q.kind == "sql" {
				return q.text
			}
		}
	}
	t.Fatal("no dashboard has a SQL query")
	return ""
}
