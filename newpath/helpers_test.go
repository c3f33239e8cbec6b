package newpath_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/strangler-proxy/strangler/legacy"
	"github.com/strangler-proxy/strangler/newpath"
	"github.com/strangler-proxy/strangler/newpath/pgtest"
)

// storeKind names the storage a test runs on.
type storeKind string

const (
	memoryKind   storeKind = "memory"
	postgresKind storeKind = "postgres"
)

var storeKinds = []storeKind{memoryKind, postgresKind}

// testClock is a deterministic clock, as legacy's tests use: every reading
// is one second after the previous one, so timestamps are distinct.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func newTestClock() *testClock {
	return &testClock{now: time.Date(2025, time.June, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(time.Second)
	return c.now
}

// manualClock is a clock that moves only when the test says, so that a
// lease ends without waiting for it.
type manualClock struct {
	mu  sync.Mutex
	now time.Time
}

func newManualClock() *manualClock {
	return &manualClock{now: time.Date(2025, time.June, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *manualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *manualClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// newpathSeed is legacy's seed in newpath's types: the data both services
// share.
func newpathSeed() newpath.Seed {
	seed := legacy.DefaultSeed()
	out := newpath.Seed{Users: make([]newpath.User, len(seed.Users)), Orders: make([]newpath.Order, len(seed.Orders))}
	for i, u := range seed.Users {
		out.Users[i] = newpath.User(u)
	}
	for i, o := range seed.Orders {
		out.Orders[i] = toNewpathOrder(o)
	}
	return out
}

func toNewpathOrder(o legacy.Order) newpath.Order {
	return newpath.Order{ID: o.ID, UserID: o.UserID, ItemID: o.ItemID, Quantity: o.Quantity, UnitPriceCents: o.UnitPriceCents,
		TotalCents: o.TotalCents, Status: newpath.Status(o.Status), PaymentID: o.PaymentID, CreatedAt: o.CreatedAt, UpdatedAt: o.UpdatedAt}
}

func toLegacyOrder(o newpath.Order) legacy.Order {
	return legacy.Order{ID: o.ID, UserID: o.UserID, ItemID: o.ItemID, Quantity: o.Quantity, UnitPriceCents: o.UnitPriceCents,
		TotalCents: o.TotalCents, Status: legacy.Status(o.Status), PaymentID: o.PaymentID, CreatedAt: o.CreatedAt, UpdatedAt: o.UpdatedAt}
}

// legacyView lets the legacy simulator run on a newpath store, so that
// both services share one in-memory store (strangler demo): legacy's Store
// contract is a subset of newpath's, and only the types differ.
type legacyView struct{ s newpath.Store }

var _ legacy.Store = legacyView{}

func (v legacyView) GetUser(ctx context.Context, id int64) (legacy.User, error) {
	u, err := v.s.GetUser(ctx, id)
	return legacy.User(u), legacyErr(err)
}

func (v legacyView) GetOrder(ctx context.Context, id string) (legacy.Order, error) {
	o, err := v.s.GetOrder(ctx, id)
	return toLegacyOrder(o), legacyErr(err)
}

func (v legacyView) ListOrdersByUser(ctx context.Context, userID int64) ([]legacy.Order, error) {
	orders, err := v.s.ListOrdersByUser(ctx, userID)
	out := make([]legacy.Order, len(orders))
	for i, o := range orders {
		out[i] = toLegacyOrder(o)
	}
	return out, legacyErr(err)
}

func (v legacyView) CreateOrder(ctx context.Context, o legacy.Order) (legacy.Order, error) {
	created, err := v.s.CreateOrder(ctx, toNewpathOrder(o))
	return toLegacyOrder(created), legacyErr(err)
}

func (v legacyView) TransitionOrder(ctx context.Context, id string, from, to legacy.Status, at time.Time) (legacy.Order, error) {
	o, err := v.s.TransitionOrder(ctx, id, newpath.Status(from), newpath.Status(to), at)
	return toLegacyOrder(o), legacyErr(err)
}

// legacyErr maps newpath's sentinels onto legacy's, which the legacy
// handlers check with errors.Is.
func legacyErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, newpath.ErrNotFound):
		return fmt.Errorf("%w (%w)", legacy.ErrNotFound, err)
	case errors.Is(err, newpath.ErrDuplicate):
		return fmt.Errorf("%w (%w)", legacy.ErrDuplicate, err)
	case errors.Is(err, newpath.ErrStatusConflict):
		return fmt.Errorf("%w (%w)", legacy.ErrStatusConflict, err)
	}
	return err
}

// stores is one test's storage: newpath's store and the legacy store,
// either separate (each service with its own data, as in the parity
// cases) or shared (one data set, as in production).
type stores struct {
	newpath newpath.Store
	legacy  legacy.Store
}

// newStores returns fresh, seeded stores of o.kind; o.shared puts both
// services on the same data. o.tracerProvider, when not nil, traces
// newpath's SQL; with it or o.productionPool, newpath's pool is the one
// OpenPool makes in production.
func newStores(t testing.TB, o envOptions) stores {
	t.Helper()
	kind, shared, tp := o.kind, o.shared, o.tracerProvider
	switch kind {
	case memoryKind:
		np, err := newpath.NewMemoryStore(newpathSeed())
		if err != nil {
			t.Fatal(err)
		}
		if shared {
			return stores{newpath: np, legacy: legacyView{np}}
		}
		lg, err := legacy.NewMemoryStore(legacy.DefaultSeed())
		if err != nil {
			t.Fatal(err)
		}
		return stores{newpath: np, legacy: lg}
	case postgresKind:
		npURL := pgtest.URL(t)
		lgURL := npURL
		if !shared {
			lgURL = pgtest.URL(t)
		}
		var npPool *pgxpool.Pool
		if tp != nil || o.productionPool {
			var err error
			npPool, err = newpath.OpenPoolWith(t.Context(), npURL, newpath.PoolOptions{TracerProvider: tp})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(npPool.Close)
		} else {
			npPool = pgtest.PoolOn(t, npURL)
		}
		if _, err := newpath.Migrate(t.Context(), npPool); err != nil {
			t.Fatalf("Migrate: %v", err)
		}
		np := newpath.NewPostgresStore(npPool)
		lg, err := legacy.NewPostgresStore(migratedPool(t, lgURL))
		if err != nil {
			t.Fatal(err)
		}
		if err := lg.Seed(t.Context(), legacy.DefaultSeed()); err != nil {
			t.Fatal(err)
		}
		if !shared {
			seeder, err := legacy.NewPostgresStore(pgtest.PoolOn(t, npURL))
			if err != nil {
				t.Fatal(err)
			}
			if err := seeder.Seed(t.Context(), legacy.DefaultSeed()); err != nil {
				t.Fatal(err)
			}
		}
		return stores{newpath: np, legacy: lg}
	}
	t.Fatalf("unknown store kind %q", kind)
	return stores{}
}

func migratedPool(t testing.TB, url string) *pgxpool.Pool {
	t.Helper()
	pool := pgtest.PoolOn(t, url)
	if _, err := newpath.Migrate(t.Context(), pool); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	return pool
}

// env is the fake downstream services, legacy and newpath, each on a real
// socket.
type env struct {
	stores        stores
	downstream    *legacy.Downstream
	downstreamURL string
	legacyURL     string
	newpathURL    string
	registry      *prometheus.Registry
	metrics       *newpath.Metrics
	relay         *newpath.Relay
	logs          *syncBuffer
}

// envOptions adjust newEnv.
type envOptions struct {
	kind   storeKind
	shared bool
	// relay starts a relay for the test's duration.
	relay bool
	// tickingClock gives newpath legacy's test clock, one second per
	// reading, so that every timestamp of a response is distinct; only for
	// tests without a relay, whose leases would run on it too.
	tickingClock bool
	faults       legacy.Faults
	server       func(*newpath.ServerOptions)
	relayO       func(*newpath.RelayOptions)
	// wrapStore lets a test interpose on newpath's store.
	wrapStore func(newpath.Store) newpath.Store
	// wrapDownstream lets a test see what reaches the fake services.
	wrapDownstream func(http.Handler) http.Handler
	// tracerProvider is given to newpath's server, relay and Postgres pool.
	tracerProvider trace.TracerProvider
	// productionPool gives newpath a Postgres pool of the production size
	// (newpath.DefaultMaxConns) rather than pgtest's.
	productionPool bool
}

// fastRetry retries within tens of milliseconds, so that an outage and its
// recovery fit in a test.
var fastRetry = newpath.RetryPolicy{MaxAttempts: 50, BaseDelay: 10 * time.Millisecond, MaxDelay: 200 * time.Millisecond}

func newEnv(t testing.TB, o envOptions) *env {
	t.Helper()
	if o.kind == "" {
		o.kind = memoryKind
	}
	st := newStores(t, o)
	ds, err := legacy.NewDownstream(legacy.DownstreamOptions{Faults: o.faults})
	if err != nil {
		t.Fatal(err)
	}
	var dsHandler http.Handler = ds
	if o.wrapDownstream != nil {
		dsHandler = o.wrapDownstream(ds)
	}
	dsSrv := httptest.NewServer(dsHandler)
	t.Cleanup(dsSrv.Close)

	lg, err := legacy.NewServer(legacy.Options{Store: st.legacy, DownstreamURL: dsSrv.URL, Clock: newTestClock().Now})
	if err != nil {
		t.Fatal(err)
	}
	lgSrv := httptest.NewServer(lg)
	t.Cleanup(lgSrv.Close)

	e := &env{stores: st, downstream: ds, downstreamURL: dsSrv.URL, legacyURL: lgSrv.URL, registry: prometheus.NewRegistry(), logs: &syncBuffer{}}
	npStore := st.newpath
	if o.wrapStore != nil {
		npStore = o.wrapStore(npStore)
	}
	logger := slog.New(slog.NewJSONHandler(e.logs, nil))
	e.metrics = newpath.NewMetrics(e.registry, npStore, logger)
	ro := newpath.RelayOptions{Store: npStore, DownstreamURL: dsSrv.URL, Metrics: e.metrics, Logger: logger,
		Retry: fastRetry, PollInterval: 20 * time.Millisecond, Lease: 5 * time.Second, DeliveryTimeout: 2 * time.Second,
		TracerProvider: o.tracerProvider}
	if o.relayO != nil {
		o.relayO(&ro)
	}
	e.relay, err = newpath.NewRelay(ro)
	if err != nil {
		t.Fatal(err)
	}
	so := newpath.ServerOptions{Store: npStore, DownstreamURL: dsSrv.URL, Metrics: e.metrics, Logger: logger,
		Retry: ro.Retry, Notify: e.relay.Notify, TracerProvider: o.tracerProvider}
	if o.tickingClock {
		so.Clock = newTestClock().Now
	}
	if o.server != nil {
		o.server(&so)
	}
	np, err := newpath.NewServer(so)
	if err != nil {
		t.Fatal(err)
	}
	npSrv := httptest.NewServer(np)
	t.Cleanup(npSrv.Close)
	e.newpathURL = npSrv.URL

	if o.relay {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = e.relay.Run(ctx)
		}()
		t.Cleanup(func() { cancel(); <-done })
	}
	return e
}

// setFaults changes the fake services' failure injection.
func (e *env) setFaults(t testing.TB, patch string) {
	t.Helper()
	if r := send(t, "PUT", e.downstreamURL+"/_control", patch, nil); r.status != http.StatusOK {
		t.Fatalf("PUT /_control %s = %d %s", patch, r.status, r.body)
	}
}

// counter reads a neworders_* counter or gauge.
func (e *env) counter(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := e.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue metrics
				}
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("metric %s%v not found", name, labels)
	return 0
}

// response is a fully read HTTP answer.
type response struct {
	status int
	header http.Header
	body   string
}

var client = &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}

// send performs one request; any transport error fails the test. Safe off
// the test goroutine only through trySend.
func send(t testing.TB, method, url, body string, header map[string]string) response {
	t.Helper()
	r, err := trySend(context.Background(), method, url, body, header)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func trySend(ctx context.Context, method, url, body string, header map[string]string) (response, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return response{}, err
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		return response{}, fmt.Errorf("%s %s: %w", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return response{}, fmt.Errorf("%s %s: read body: %w", method, url, err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: string(b)}, nil
}

func decodeOrder(t testing.TB, body string) newpath.Order {
	t.Helper()
	var o newpath.Order
	if err := json.Unmarshal([]byte(body), &o); err != nil {
		t.Fatalf("decode order %q: %v", body, err)
	}
	return o
}

// waitFor polls cond until it holds or the deadline passes: tests wait on
// conditions, never on bare sleeps.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// syncBuffer is a log sink the test can read while servers write to it.
type syncBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
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
