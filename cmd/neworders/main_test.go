package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/strangler-proxy/strangler/legacy"
	"github.com/strangler-proxy/strangler/newpath"
	"github.com/strangler-proxy/strangler/newpath/pgtest"
)

// runMainEnv makes the test binary run neworders' main instead of the
// tests, so that a test can start, and SIGKILL, a real neworders process
// without building one.
const runMainEnv = "NEWORDERS_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(runMainEnv) == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// syncBuffer is an io.Writer the test reads while run writes to it.
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

var listening = regexp.MustCompile(`(?m)^(newpath order API|metrics) listening on (http://[^/\s]+)`)

// startRun runs neworders in-process with args on free ports and returns
// the order API and metrics base URLs and a stop function returning run's
// error.
func startRun(t *testing.T, args ...string) (apiURL, metricsURL string, stderr *syncBuffer, stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var stdout syncBuffer
	stderr = &syncBuffer{}
	done := make(chan error, 1)
	args = append([]string{"--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"}, args...)
	go func() { done <- run(ctx, args, &stdout, stderr) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		m := listening.FindAllStringSubmatch(stdout.String(), -1)
		if len(m) == 2 {
			apiURL, metricsURL = m[0][2], m[1][2]
			break
		}
		select {
		case err := <-done:
			cancel()
			t.Fatalf("run returned early: %v\nstderr:\n%s", err, stderr)
		default:
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("no listen addresses printed:\n%s", stdout.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	var once sync.Once
	var runErr error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case runErr = <-done:
			case <-time.After(20 * time.Second):
				t.Error("run did not return after cancellation")
			}
		})
		return runErr
	}
	t.Cleanup(func() { _ = stop() })
	return apiURL, metricsURL, stderr, stop
}

func do(t *testing.T, method, url, body string) (int, string) {
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

func newDownstream(t *testing.T) (*legacy.Downstream, string) {
	t.Helper()
	ds, err := legacy.NewDownstream(legacy.DownstreamOptions{})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(ds)
	t.Cleanup(srv.Close)
	return ds, srv.URL
}

func TestRunInMemory(t *testing.T) {
	t.Setenv("DATABASE_URL", "")
	ds, dsURL := newDownstream(t)
	api, metrics, stderr, stop := startRun(t, "--downstream-url", dsURL)
	if code, body := do(t, "GET", api+"/orders/ord_1", ""); code != 200 || !strings.Contains(body, `"payment_id":"pay_1"`) {
		t.Errorf("GET seeded ord_1 = %d %s", code, body)
	}
	code, body := do(t, "POST", api+"/orders", `{"user_id":3,"item_id":"sku-9","quantity":1}`)
	if code != http.StatusCreated || !strings.Contains(body, `"status":"fulfilled"`) {
		t.Errorf("POST /orders = %d %s; want 201 fulfilled", code, body)
	}
	// The relay in the process sends the confirmation mail.
	deadline := time.Now().Add(10 * time.Second)
	for ds.Stats().Mails == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if st := ds.Stats(); st.Mails != 1 || st.Shipments != 1 {
		t.Errorf("downstream stats = %+v; want 1 shipment, 1 mail", st)
	}
	// /metrics is not on the order API, whose URL space is legacy's.
	if code, body := do(t, "GET", api+"/metrics", ""); code != 404 || body != `{"error":"not found"}`+"\n" {
		t.Errorf("GET /metrics on the order API = %d %s; want the contract's 404", code, body)
	}
	// The relay counts a delivery once the downstream has answered, so
	// the mail can be in before its count is: wait for both.
	wants := []string{`neworders_orders_total{outcome="created"} 1`, `neworders_outbox_deliveries_total{result="delivered"} 2`, "neworders_outbox_pending_events 0",
		`neworders_pruned_rows_total{table="outbox_events"} 0`, "go_goroutines"}
	var m string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		_, m = do(t, "GET", metrics+"/metrics", "")
		if !slices.ContainsFunc(wants, func(w string) bool { return !strings.Contains(m, w) }) || time.Now().After(deadline) {
			break
		}
	}
	for _, want := range wants {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if !strings.Contains(stderr.String(), "using the in-memory store") {
		t.Errorf("the log does not say the in-memory store is used:\n%s", stderr)
	}
	if err := stop(); err != nil {
		t.Errorf("run after SIGTERM-like cancellation = %v; want nil", err)
	}
	if resp, err := http.Get(api + "/healthz"); err == nil {
		resp.Body.Close()
		t.Error("the order API still answers after shutdown")
	}
}

func TestRunDemoFlags(t *testing.T) {
	t.Setenv("DATABASE_URL", "")
	_, dsURL := newDownstream(t)
	api, _, _, _ := startRun(t, "--downstream-url", dsURL, "--demo-noise", "--demo-divergence")
	if code, body := do(t, "POST", api+"/orders/ord_7/cancel", ""); code != http.StatusOK || !strings.Contains(body, `"served_at":`) {
		t.Fatalf("cancel with --demo-noise = %d %s; want 200 with served_at", code, body)
	}
	if code, body := do(t, "GET", api+"/orders/ord_7", ""); code != http.StatusOK || !strings.Contains(body, `"status":"canceled"`) {
		t.Errorf("GET of a cancelled order with --demo-divergence = %d %s; want status canceled", code, body)
	}
}

func TestRunOnPostgres(t *testing.T) {
	url := pgtest.URL(t)
	_, dsURL := newDownstream(t)
	api, _, _, stop := startRun(t, "--downstream-url", dsURL, "--database-url", url)
	code, body := do(t, "POST", api+"/orders", `{"user_id":3,"item_id":"sku-9","quantity":1}`)
	if code != http.StatusCreated {
		t.Fatalf("POST /orders = %d %s", code, body)
	}
	if code, body := do(t, "POST", api+"/orders/ord_7/cancel", ""); code != 200 {
		t.Fatalf("cancel ord_7 = %d %s", code, body)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	// A restart on the same database migrates and seeds nothing twice and
	// keeps what the first run did.
	api, _, _, _ = startRun(t, "--downstream-url", dsURL, "--database-url", url)
	if code, got := do(t, "GET", api+"/orders/ord_11", ""); code != 200 || got != body {
		t.Errorf("GET ord_11 after a restart = %d %s; want %s", code, got, body)
	}
	if _, got := do(t, "GET", api+"/orders/ord_7", ""); !strings.Contains(got, `"status":"cancelled"`) {
		t.Errorf("ord_7 after a restart = %s; want still cancelled", got)
	}
}

func TestRunRejects(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"relay-only without a database", []string{"--relay-only", "--database-url", ""}, "--relay-only needs --database-url"},
		{"bad downstream url", []string{"--downstream-url", "localhost:9003"}, "want an absolute http or https URL"},
		{"lease shorter than a delivery", []string{"--relay-lease", "1s", "--relay-delivery-timeout", "2s"}, "must be shorter than the lease"},
		{"negative request timeout", []string{"--request-timeout", "-1s"}, "request timeout must not be negative"},
		{"negative retention", []string{"--idempotency-retention", "-1h"}, "idempotency retention must not be negative"},
		{"unknown flag", []string{"--wearhouse"}, "flag provided but not defined"},
		{"positional argument", []string{"serve"}, "unexpected arguments"},
		{"bad database url", []string{"--database-url", "postgres://%zz"}, "invalid database URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := run(t.Context(), append([]string{"--listen", "127.0.0.1:0", "--metrics-listen", ""}, tt.args...), io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("run(%q) = %v; want an error containing %q", tt.args, err, tt.want)
			}
		})
	}
}

// TestRelayOnlyPrunes: neworders --relay-only runs the pruner too: a
// delivered event past --outbox-retention is deleted, a pending one kept.
func TestRelayOnlyPrunes(t *testing.T) {
	url := pgtest.URL(t)
	pool := pgtest.PoolOn(t, url)
	if _, err := newpath.Migrate(t.Context(), pool); err != nil {
		t.Fatal(err)
	}
	store := newpath.NewPostgresStore(pool)
	_, dsURL := newDownstream(t)
	old := time.Now().Add(-2 * time.Hour)
	tx, err := store.BeginOrder(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.AddEvents(t.Context(),
		newpath.Event{ID: "delivered", Kind: newpath.EventOrderConfirmed, OrderID: "ord_x", Payload: []byte(`{}`), CreatedAt: old, AvailableAt: old},
		newpath.Event{ID: "pending", Kind: newpath.EventOrderConfirmed, OrderID: "ord_x", Payload: []byte(`{}`), CreatedAt: old, AvailableAt: time.Now().Add(time.Hour)},
	); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := store.ClaimEvents(t.Context(), "test", 10, old, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := store.MarkDelivered(t.Context(), "delivered", old); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--relay-only", "--database-url", url, "--downstream-url", dsURL, "--metrics-listen", "",
			"--outbox-retention", "1h", "--prune-interval", "20ms"}, io.Discard, io.Discard)
	}()
	waitUntil(t, 30*time.Second, "the delivered event to be pruned", func() bool {
		events, err := store.OrderEvents(t.Context(), "ord_x")
		return err == nil && len(events) == 1
	})
	cancel()
	if err := <-done; err != nil {
		t.Errorf("run = %v", err)
	}
	if events, _ := store.OrderEvents(t.Context(), "ord_x"); len(events) != 1 || events[0].ID != "pending" {
		t.Errorf("events left = %+v; want the pending one", events)
	}
}

// gatedWarehouse lets the first open shipments through, then holds every
// other one until release is closed, dropping it (undelivered) if its
// caller goes away first, as a killed relay's connections do.
type gatedWarehouse struct {
	next    http.Handler
	open    int32
	passed  atomic.Int32
	held    atomic.Int32
	release chan struct{}
}

func (g *gatedWarehouse) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/warehouse/shipments" && g.passed.Add(1) > g.open {
		select {
		case <-g.release:
		default:
			g.held.Add(1)
			select {
			case <-g.release:
			case <-r.Context().Done():
				return
			}
		}
	}
	g.next.ServeHTTP(w, r)
}

// childProcess starts neworders with args as a real child process, its
// output collected, killed when the test ends if still running.
func childProcess(t *testing.T, args ...string) (*exec.Cmd, *syncBuffer) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), runMainEnv+"=1")
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return cmd, &out
}

// relayProcess starts `neworders --relay-only` as a real child process.
func relayProcess(t *testing.T, dbURL, dsURL string) (*exec.Cmd, *syncBuffer) {
	t.Helper()
	return childProcess(t, "--relay-only", "--database-url", dbURL, "--downstream-url", dsURL,
		"--metrics-listen", "", "--relay-lease", "3s", "--relay-delivery-timeout", "2s", "--relay-concurrency", "4",
		"--relay-poll", "50ms", "--relay-backoff", "50ms", "--log-level", "debug")
}

// TestRelayKilledMidBatch is issue 4's proof: a relay process killed with
// SIGKILL while it delivers a batch leaves its claimed events leased; when
// the lease ends, another relay process claims and delivers them. Every
// event reaches the warehouse exactly once (the events the first relay
// delivered are not delivered again, or are deduplicated by event id).
func TestRelayKilledMidBatch(t *testing.T) {
	url := pgtest.URL(t)
	pool := pgtest.PoolOn(t, url)
	if _, err := newpath.Migrate(t.Context(), pool); err != nil {
		t.Fatal(err)
	}
	seeder, err := legacy.NewPostgresStore(pool)
	if err != nil {
		t.Fatal(err)
	}
	if err := seeder.Seed(t.Context(), legacy.DefaultSeed()); err != nil {
		t.Fatal(err)
	}
	store := newpath.NewPostgresStore(pool)

	ds, err := legacy.NewDownstream(legacy.DownstreamOptions{})
	if err != nil {
		t.Fatal(err)
	}
	gate := &gatedWarehouse{next: ds, open: 5, release: make(chan struct{})}
	dsSrv := httptest.NewServer(gate)
	t.Cleanup(dsSrv.Close)

	// 40 committed orders, each with its two events due now.
	const orders = 40
	var ids []string
	now := time.Now()
	for i := range orders {
		tx, err := store.BeginOrder(t.Context(), nil)
		if err != nil {
			t.Fatal(err)
		}
		o, err := tx.CreateOrder(t.Context(), newpath.Order{UserID: int64(200 + i), ItemID: "sku-1", Quantity: 1, UnitPriceCents: 199,
			TotalCents: 199, Status: newpath.StatusPaid, PaymentID: "pay_x", CreatedAt: now, UpdatedAt: now})
		if err != nil {
			t.Fatal(err)
		}
		ship := `{"order_id":"` + o.ID + `","user_id":1,"item_id":"sku-1","quantity":1}`
		mail := `{"to":"user-1@example.com","template":"order_confirmation","order_id":"` + o.ID + `"}`
		if err := tx.AddEvents(t.Context(),
			newpath.Event{ID: o.ID + "-paid", Kind: newpath.EventOrderPaid, OrderID: o.ID, Payload: []byte(ship), CreatedAt: now, AvailableAt: now},
			newpath.Event{ID: o.ID + "-confirmed", Kind: newpath.EventOrderConfirmed, OrderID: o.ID, Payload: []byte(mail), CreatedAt: now, AvailableAt: now},
		); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(t.Context()); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, o.ID)
	}

	first, firstOut := relayProcess(t, url, dsSrv.URL)
	waitUntil(t, 30*time.Second, "the first relay to deliver some shipments and block mid-batch", func() bool {
		return ds.Stats().Shipments >= int(gate.open) && gate.held.Load() > 0
	})
	var claimedByFirst int
	if err := pool.QueryRow(t.Context(), `SELECT count(*) FROM outbox_events WHERE status = 'pending' AND claimed_by LIKE 'relay-%'`).Scan(&claimedByFirst); err != nil {
		t.Fatal(err)
	}
	if claimedByFirst == 0 {
		t.Fatalf("no pending event is leased to the first relay; its log:\n%s", firstOut)
	}
	if err := first.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = first.Wait()
	delivered := ds.Stats().Shipments
	t.Logf("killed the first relay with %d events leased and %d shipments delivered", claimedByFirst, delivered)
	close(gate.release)

	second, secondOut := relayProcess(t, url, dsSrv.URL)
	waitUntil(t, 30*time.Second, "the second relay to drain the outbox", func() bool {
		st, err := store.OutboxStats(t.Context())
		return err == nil && st.Pending == 0
	})
	for _, id := range ids {
		if n := ds.Shipments(id); n != 1 {
			t.Errorf("shipments of %s = %d; want exactly 1", id, n)
		}
		if n := ds.Mails(id); n != 1 {
			t.Errorf("mails about %s = %d; want exactly 1", id, n)
		}
		if o, err := store.GetOrder(t.Context(), id); err != nil || o.Status != newpath.StatusFulfilled {
			t.Errorf("order %s = %s, %v; want fulfilled", id, o.Status, err)
		}
	}
	var retaken int
	if err := pool.QueryRow(t.Context(), `SELECT count(*) FROM outbox_events WHERE attempts >= 2`).Scan(&retaken); err != nil {
		t.Fatal(err)
	}
	if retaken == 0 {
		t.Error("no event was claimed twice; the second relay did not take over leased events")
	}
	// SIGTERM stops a relay cleanly.
	if err := second.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := second.Wait(); err != nil {
		t.Errorf("second relay after SIGTERM: %v; log:\n%s", err, secondOut)
	}
	sc := bufio.NewScanner(strings.NewReader(secondOut.String()))
	for sc.Scan() {
		if strings.Contains(sc.Text(), `"level":"ERROR"`) {
			t.Errorf("second relay logged an error: %s", sc.Text())
		}
	}
}

// apiProcess starts neworders with its order API as a real child process
// on dbURL, and returns it with the API's base URL.
func apiProcess(t *testing.T, dbURL, dsURL string, args ...string) (*exec.Cmd, string, *syncBuffer) {
	t.Helper()
	cmd, out := childProcess(t, append([]string{"--listen", "127.0.0.1:0", "--metrics-listen", "", "--database-url", dbURL,
		"--downstream-url", dsURL, "--relay=false"}, args...)...)
	var api string
	waitUntil(t, 30*time.Second, "the order API to listen", func() bool {
		m := listening.FindStringSubmatch(out.String())
		if m != nil {
			api = m[2]
		}
		return api != ""
	})
	return cmd, api, out
}

// postOrder sends POST /orders with an Idempotency-Key and reads the
// answer; a transport error (a killed process) is returned, not fatal.
func postOrder(ctx context.Context, api, body, key string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, "POST", api+"/orders", strings.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Idempotency-Key", key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// TestKilledBetweenChargeAndOrder: a neworders process is killed with
// SIGKILL after the payment service charged the card and before the order
// was written. Its claim of the key stays until its lease ends; then a
// retry with the key, on a new process, takes the key over, gets the same
// charge replayed, and writes the one order.
func TestKilledBetweenChargeAndOrder(t *testing.T) {
	url := pgtest.URL(t)
	ds, err := legacy.NewDownstream(legacy.DownstreamOptions{})
	if err != nil {
		t.Fatal(err)
	}
	payments := legacy.NewGate(ds, "POST", "/payments")
	dsSrv := httptest.NewServer(payments)
	t.Cleanup(dsSrv.Close)
	t.Cleanup(payments.Open)
	// A short request timeout, hence a short lease: the retry takes over
	// within seconds. The charge is held far less long than the request's
	// pre-charge time (2.25s), so the process dies with its call in flight.
	timeout := []string{"--request-timeout", "3s"}
	const body, key = `{"user_id":501,"item_id":"sku-2","quantity":1}`, "k-killed"

	first, api, firstOut := apiProcess(t, url, dsSrv.URL, timeout...)
	answered := make(chan string, 1)
	go func() {
		code, got, err := postOrder(context.Background(), api, body, key)
		if err != nil {
			answered <- ""
			return
		}
		answered <- fmt.Sprintf("%d %s", code, got)
	}()
	waitUntil(t, 30*time.Second, "the charge to reach the payment service", func() bool { return payments.Held() == 1 })
	if err := first.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = first.Wait()
	if a := <-answered; a != "" {
		t.Fatalf("the first process answered %s before it was killed; it was to die with the charge in flight; its log:\n%s", a, firstOut)
	}
	if n := ds.Charges(501); n != 1 {
		t.Fatalf("charges before the retry = %d; want 1", n)
	}
	payments.Open()

	_, api, secondOut := apiProcess(t, url, dsSrv.URL, timeout...)
	var code int
	var got string
	waitUntil(t, 30*time.Second, "a retry with the key to answer 201", func() bool {
		code, got, err = postOrder(t.Context(), api, body, key)
		return err == nil && code == http.StatusCreated
	})
	if n := ds.Charges(501); n != 1 {
		t.Errorf("charges after the retry = %d; want 1", n)
	}
	if st := ds.Stats(); st.Reservations != 1 || st.IdempotentReplays != 2 {
		t.Errorf("downstream stats = %+v; want 1 reservation, and the retry's reservation and charge replayed", st)
	}
	if !strings.Contains(got, `"payment_id":"pay_1001"`) {
		t.Errorf("retry answered %s; want the first charge, pay_1001", got)
	}
	pool := pgtest.PoolOn(t, url)
	var orders int
	if err := pool.QueryRow(t.Context(), `SELECT count(*) FROM orders WHERE user_id = 501`).Scan(&orders); err != nil {
		t.Fatal(err)
	}
	if orders != 1 {
		t.Errorf("orders of user 501 = %d; want 1", orders)
	}
	var status int
	if err := pool.QueryRow(t.Context(), `SELECT response_status FROM idempotency_keys WHERE key = $1 AND order_id IS NOT NULL`, key).Scan(&status); err != nil || status != http.StatusCreated {
		t.Errorf("stored answer of %s = %d, %v; want 201 with its order; log:\n%s", key, status, err, secondOut)
	}
	if again, err := func() (string, error) { _, b, err := postOrder(t.Context(), api, body, key); return b, err }(); err != nil || again != got {
		t.Errorf("another retry = %s, %v; want the stored %s", again, err, got)
	}
}

func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRunExportsTraces: with OTEL_EXPORTER_OTLP_ENDPOINT set, neworders
// sends its spans over OTLP/HTTP, in the caller's trace, and flushes them
// when it shuts down.
func TestRunExportsTraces(t *testing.T) {
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	var (
		mu      sync.Mutex
		exports [][]byte
	)
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body io.Reader = r.Body
		if r.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			body = zr
		}
		b, _ := io.ReadAll(body)
		if r.URL.Path == "/v1/traces" {
			mu.Lock()
			exports = append(exports, b)
			mu.Unlock()
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	t.Cleanup(collector.Close)
	t.Setenv("DATABASE_URL", "")
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.URL)
	_, dsURL := newDownstream(t)
	api, _, _, stop := startRun(t, "--downstream-url", dsURL)

	req, err := http.NewRequestWithContext(t.Context(), "POST", api+"/orders", strings.NewReader(`{"user_id":3,"item_id":"sku-9","quantity":1}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST /orders = %d", resp.StatusCode)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	// The spans are protobuf: the trace id is there as its 16 raw bytes,
	// the span names as strings.
	id, _ := hex.DecodeString(traceID)
	mu.Lock()
	all := bytes.Join(exports, nil)
	mu.Unlock()
	for _, want := range [][]byte{id, []byte("POST /orders"), []byte("POST /payments"), []byte("neworders")} {
		if !bytes.Contains(all, want) {
			t.Errorf("the collector got %d exports without %q", len(exports), want)
		}
	}
}

// TestReadyzFollowsPostgres: /healthz says the process is alive, /readyz
// (on the order API and on the metrics listener) whether its Postgres
// answers. The first probe after Postgres goes away answers 503, within
// the probe's own one-second bound; once Postgres is back, 200 again.
func TestReadyzFollowsPostgres(t *testing.T) {
	relay, dbURL := pgtest.NewRelay(t, pgtest.URL(t))
	_, dsURL := newDownstream(t)
	api, metrics, _, _ := startRun(t, "--database-url", dbURL, "--downstream-url", dsURL)
	probe := &http.Client{Timeout: 2 * time.Second}
	readyz := func(base string) int {
		t.Helper()
		res, err := probe.Get(base + "/readyz")
		if err != nil {
			t.Fatalf("GET %s/readyz: %v", base, err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	for _, base := range []string{api, metrics} {
		if code := readyz(base); code != http.StatusOK {
			t.Fatalf("%s/readyz with Postgres up = %d; want 200", base, code)
		}
	}

	relay.SetDown(true)
	for _, base := range []string{api, metrics} {
		if code := readyz(base); code != http.StatusServiceUnavailable {
			t.Errorf("%s/readyz with Postgres down = %d; want 503", base, code)
		}
	}
	if code, _ := do(t, "GET", api+"/healthz", ""); code != http.StatusOK {
		t.Errorf("/healthz with Postgres down = %d; want 200 (alive)", code)
	}

	relay.SetDown(false)
	deadline := time.Now().Add(10 * time.Second)
	for readyz(api) != http.StatusOK || readyz(metrics) != http.StatusOK {
		if time.Now().After(deadline) {
			t.Fatal("/readyz still fails after Postgres came back")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
