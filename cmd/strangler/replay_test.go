package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/strangler-proxy/strangler/newpath/pgtest"
)

// orderAPI is a test backend of orders. Every fourth order's total is
// off by one while broken is set (a newpath bug), and it remembers the
// requests it was sent.
type orderAPI struct {
	broken atomic.Bool
	mu     sync.Mutex
	seen   []*http.Request
}

func (o *orderAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	o.mu.Lock()
	o.seen = append(o.seen, r.Clone(context.Background()))
	o.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	if r.Method == http.MethodPost {
		w.WriteHeader(http.StatusCreated)
		fmt.Fprint(w, `{"id":"ord_new","total_cents":500,"status":"paid"}`)
		return
	}
	id, _ := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/orders/"))
	total := 1000 + id
	if o.broken.Load() && id%4 == 0 {
		total++
	}
	fmt.Fprintf(w, `{"id":"ord_%d","total_cents":%d,"status":"paid"}`, id, total)
}

// take returns the requests seen since the last take.
func (o *orderAPI) take() []*http.Request {
	o.mu.Lock()
	defer o.mu.Unlock()
	seen := o.seen
	o.seen = nil
	return seen
}

const replayConfig = `
listen: "127.0.0.1:0"
admin: { listen: "127.0.0.1:0" }
log: { access: false }
upstreams:
  legacy: { url: %q }
  newpath: { url: %q }
divergence_store: { database_url: %q }
capture: { file: %q }
routes:
  - name: get-order
    match: "GET /orders/{id}"
    shadow: { percent: 100 }
    capture: { percent: 100 }
  - name: create-order
    match: "POST /orders"
    shadow: { percent: 100, dry_run: true }
    capture: { percent: 100 }
`

// TestReplayTellsFixedFromStillDiverging records 200 compared requests
// through a running proxy, 50 of them diverging on one field, fixes the
// newpath, and replays them from the capture file, from Postgres and from
// the admin API: 50 fixed, nothing diverging. With the bug back, the 50
// are still diverging and replay exits 1. A replayed write reaches only
// newpath, as a dry run; no recorded credential is sent.
func TestReplayTellsFixedFromStillDiverging(t *testing.T) {
	dbURL := pgtest.URL(t)
	legacy, newpath := &orderAPI{}, &orderAPI{}
	newpath.broken.Store(true)
	legacySrv, newpathSrv := httptest.NewServer(legacy), httptest.NewServer(newpath)
	t.Cleanup(legacySrv.Close)
	t.Cleanup(newpathSrv.Close)
	dir := t.TempDir()
	captures := filepath.Join(dir, "captures.jsonl")
	cfgPath := filepath.Join(dir, "strangler.yaml")
	if err := os.WriteFile(cfgPath, fmt.Appendf(nil, replayConfig, legacySrv.URL, newpathSrv.URL, dbURL, captures), 0o644); err != nil {
		t.Fatal(err)
	}
	front, admin := serveInProcess(t, cfgPath)

	for i := range 200 {
		req, _ := http.NewRequest("GET", fmt.Sprintf("%s/orders/%d?expand=items", front, i), nil)
		req.Header.Set("Authorization", "Bearer recorded-secret")
		mustDo(t, req)
	}
	post, _ := http.NewRequest("POST", front+"/orders", strings.NewReader(`{"item_id":"sku-1","quantity":1}`))
	post.Header.Set("Content-Type", "application/json")
	post.Header.Set("Authorization", "Bearer recorded-secret")
	mustDo(t, post)

	conn, err := pgx.Connect(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var lines, stored int
	defer func() {
		if t.Failed() {
			t.Logf("%d captures, %d stored samples", lines, stored)
		}
	}()
	waitUntil(t, "201 captures and 50 samples in Postgres", func() bool {
		data, _ := os.ReadFile(captures)
		_ = conn.QueryRow(context.Background(), "SELECT count(*) FROM strangler_divergences").Scan(&stored)
		lines = bytes.Count(data, []byte("\n"))
		return lines == 201 && stored == 50
	})
	if data, _ := os.ReadFile(captures); bytes.Contains(data, []byte("recorded-secret")) {
		t.Fatal("a credential reached the capture file")
	}

	replayFrom := func(from string, extra ...string) (int, string, string) {
		t.Helper()
		var stdout, stderr bytes.Buffer
		args := append([]string{"replay", "--from", from, "--legacy", legacySrv.URL, "--newpath", newpathSrv.URL, "--config", cfgPath}, extra...)
		code := run(context.Background(), args, &stdout, &stderr)
		return code, stdout.String(), stderr.String()
	}
	type row struct{ replayed, matching, fixed, still, newly, errors int }
	summary := func(out string) map[string]row {
		t.Helper()
		var rep struct {
			Routes []struct {
				Route                                                             string
				Replayed, Matching, Fixed, StillDiverging, NewlyDiverging, Errors int
			}
		}
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("replay --output json: %v\n%s", err, out)
		}
		got := map[string]row{}
		for _, r := range rep.Routes {
			got[r.Route] = row{r.Replayed, r.Matching, r.Fixed, r.StillDiverging, r.NewlyDiverging, r.Errors}
		}
		return got
	}

	// The newpath is fixed.
	newpath.broken.Store(false)
	legacy.take()
	newpath.take()
	for _, tc := range []struct {
		name, from string
		want       map[string]row
	}{
		// The file has every comparison, the write among them; Postgres
		// and the admin API the mismatches only.
		{"file", captures, map[string]row{"get-order": {200, 150, 50, 0, 0, 0}, "create-order": {1, 1, 0, 0, 0, 0}}},
		{"postgres", dbURL, map[string]row{"get-order": {50, 0, 50, 0, 0, 0}}},
		{"admin", admin, map[string]row{"get-order": {50, 0, 50, 0, 0, 0}}},
	} {
		code, stdout, stderr := replayFrom(tc.from, "--output", "json")
		if got := summary(stdout); code != 0 || fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("replay from %s: exit %d, %v; want exit 0, %v\nstderr: %s", tc.name, code, got, tc.want, stderr)
		}
	}

	// Writes reached newpath only, as dry runs; no replay carried the
	// recorded credential.
	for _, r := range legacy.take() {
		if r.Method != http.MethodGet {
			t.Errorf("legacy received a replayed %s %s", r.Method, r.URL)
		}
		if r.Header.Get("Authorization") != "" || r.Header.Get("X-Strangler-Shadow") != "1" {
			t.Errorf("legacy got a replay with Authorization %q, X-Strangler-Shadow %q", r.Header.Get("Authorization"), r.Header.Get("X-Strangler-Shadow"))
		}
	}
	writes := 0
	for _, r := range newpath.take() {
		if r.Header.Get("Authorization") != "" || r.Header.Get("X-Strangler-Shadow") != "1" {
			t.Errorf("newpath got a replay with Authorization %q, X-Strangler-Shadow %q", r.Header.Get("Authorization"), r.Header.Get("X-Strangler-Shadow"))
		}
		if r.Method == http.MethodPost {
			writes++
			if r.Header.Get("X-Strangler-Dry-Run") != "1" {
				t.Errorf("newpath got a replayed write without X-Strangler-Dry-Run: 1")
			}
		}
		if r.Method == http.MethodGet && r.URL.RawQuery != "expand=items" {
			t.Errorf("replayed %s lost its query", r.URL)
		}
	}
	if writes != 1 {
		t.Errorf("newpath got %d replayed writes; want the one captured", writes)
	}

	// The bug is back: the same 50 still diverge, on their one field.
	newpath.broken.Store(true)
	code, stdout, stderr := replayFrom(captures, "--route", "get-order")
	if code != 1 || !strings.Contains(stdout, "get-order diverges in: /body/total_cents (50)") ||
		!regexp.MustCompile(`get-order\s+200\s+150\s+0\s+50\s+0\s+0`).MatchString(stdout) {
		t.Errorf("replay with the bug back: exit %d\n%s\nstderr: %s; want exit 1 and 50 still diverging on /body/total_cents", code, stdout, stderr)
	}
	// And a source that is not there is no gate that passed.
	if code, _, stderr := replayFrom(filepath.Join(dir, "missing.jsonl")); code != 2 || !strings.Contains(stderr, "--from") {
		t.Errorf("replay from a missing file: exit %d, %s; want 2 naming --from", code, stderr)
	}
}

// serveInProcess runs serve on the config at path, in this process, and
// returns the proxy's and the admin listener's base URLs; the test's end
// stops it.
func serveInProcess(t *testing.T, path string) (proxyURL, adminURL string) {
	t.Helper()
	logs := &lockedBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	addrs := make(chan [2]string, 1)
	done := make(chan error, 1)
	go func() {
		done <- serve(ctx, path, 10*time.Second, logs, func(p, a string) { addrs <- [2]string{p, a} })
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v\n%s", err, logs)
		}
	})
	select {
	case a := <-addrs:
		return "http://" + a[0], "http://" + a[1]
	case err := <-done:
		t.Fatalf("serve: %v\n%s", err, logs)
	}
	return "", ""
}

func mustDo(t *testing.T, req *http.Request) {
	t.Helper()
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
}

func TestUsageErrorsExit2(t *testing.T) {
	for _, args := range [][]string{
		{"replay", "--noise", "abc"},
		{"replay", "--from", "x"},
		{"report", "--bogus"},
	} {
		var out bytes.Buffer
		if code := run(context.Background(), args, &out, &out); code != 2 {
			t.Errorf("strangler %v: exit %d (%s); want 2", args, code, &out)
		}
	}
}
