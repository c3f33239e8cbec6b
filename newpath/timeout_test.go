package newpath_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/strangler-proxy/strangler/legacy"
	"github.com/strangler-proxy/strangler/newpath"
)

// hungReadStore never answers GetOrder: it waits for the caller's context.
type hungReadStore struct{ newpath.Store }

func (s hungReadStore) GetOrder(ctx context.Context, _ string) (newpath.Order, error) {
	<-ctx.Done()
	return newpath.Order{}, context.Cause(ctx)
}

// isJSONError reports whether body is the API's {"error":...} shape.
func isJSONError(body string) bool {
	var e struct {
		Error string `json:"error"`
	}
	return json.Unmarshal([]byte(body), &e) == nil && e.Error != ""
}

// TestRequestTimeout: RequestTimeout bounds a request whose store or
// downstream service hangs. Nothing here measures time: what hangs never
// answers until the test ends, so any answer is the timeout's.
func TestRequestTimeout(t *testing.T) {
	// A hung GET answers at the timeout; a POST must reach its payment or
	// its delivery before the last afterCharge (a quarter) of it, which on
	// a loaded machine under the race detector takes longer than it seems.
	const timeout, postTimeout = time.Second, 3 * time.Second
	for _, kind := range storeKinds {
		t.Run(string(kind)+"/GET with a hung store", func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, envOptions{kind: kind,
				wrapStore: func(s newpath.Store) newpath.Store { return hungReadStore{s} },
				server:    func(o *newpath.ServerOptions) { o.RequestTimeout = timeout }})
			r := send(t, "GET", e.newpathURL+"/orders/ord_1", "", nil)
			if r.status != http.StatusGatewayTimeout || r.body != `{"error":"request timed out"}`+"\n" || r.header.Get("Content-Type") != "application/json" {
				t.Errorf("GET with a hung store = %d %q; want 504 {\"error\":\"request timed out\"}", r.status, r.body)
			}
		})

		t.Run(string(kind)+"/POST with a hung payment", func(t *testing.T) {
			t.Parallel()
			var payments *legacy.Gate
			e := newEnv(t, envOptions{kind: kind,
				wrapDownstream: func(h http.Handler) http.Handler {
					payments = legacy.NewGate(h, "POST", "/payments")
					return payments
				},
				server: func(o *newpath.ServerOptions) { o.RequestTimeout = postTimeout }})
			t.Cleanup(payments.Open)
			key := map[string]string{"Idempotency-Key": "k-hung-payment"}
			r := send(t, "POST", e.newpathURL+"/orders", orderBody, key)
			if r.status < 500 || !isJSONError(r.body) {
				t.Errorf("POST with a hung payment = %d %s; want a 5xx JSON error", r.status, r.body)
			}
			if payments.Arrived() != 1 {
				t.Fatalf("payment calls = %d; want 1", payments.Arrived())
			}
			// The charge happened and its answer was lost: the claim was
			// released, so the retry runs again at once and the payment
			// service replays that charge.
			if _, err := e.stores.newpath.IdempotencyKey(t.Context(), "k-hung-payment"); !errors.Is(err, newpath.ErrNotFound) {
				t.Errorf("key after the timeout: error = %v; want it released (ErrNotFound)", err)
			}
			payments.Open()
			retry := send(t, "POST", e.newpathURL+"/orders", orderBody, key)
			if retry.status != http.StatusCreated || decodeOrder(t, retry.body).PaymentID != "pay_1001" {
				t.Errorf("retry = %d %s; want 201 with the first charge, pay_1001", retry.status, retry.body)
			}
			if n := e.downstream.Charges(42); n != 1 {
				t.Errorf("charges = %d; want 1", n)
			}
		})

		t.Run(string(kind)+"/POST with a hung warehouse", func(t *testing.T) {
			t.Parallel()
			var warehouse *legacy.Gate
			e := newEnv(t, envOptions{kind: kind,
				wrapDownstream: func(h http.Handler) http.Handler {
					warehouse = legacy.NewGate(h, "POST", "/warehouse/shipments")
					return warehouse
				},
				// The fulfil timeout is longer than the request's: the
				// request's time left bounds the delivery.
				server: func(o *newpath.ServerOptions) { o.RequestTimeout, o.FulfilTimeout = postTimeout, time.Hour }})
			t.Cleanup(warehouse.Open)
			key := map[string]string{"Idempotency-Key": "k-hung-warehouse"}
			r := send(t, "POST", e.newpathURL+"/orders", orderBody, key)
			if r.status != http.StatusCreated {
				t.Fatalf("POST with a hung warehouse = %d %s; want 201", r.status, r.body)
			}
			o := decodeOrder(t, r.body)
			if o.Status != newpath.StatusPaid {
				t.Errorf("answer status = %s; want paid, the delivery left to the relay", o.Status)
			}
			if warehouse.Arrived() != 1 {
				t.Errorf("warehouse calls = %d; want 1, the immediate delivery", warehouse.Arrived())
			}
			if stored, err := e.stores.newpath.GetOrder(t.Context(), o.ID); err != nil || stored.Status != newpath.StatusPaid {
				t.Errorf("stored order = %+v, %v; want committed, paid", stored, err)
			}
			if rec, err := e.stores.newpath.IdempotencyKey(t.Context(), "k-hung-warehouse"); err != nil || rec.Response == nil || string(rec.Response.Body)+"\n" != r.body {
				t.Errorf("key record = %+v, %v; want the answer stored", rec, err)
			}
		})

		t.Run(string(kind)+"/charged order when the client leaves", func(t *testing.T) {
			t.Parallel()
			gated := &gatedOrderStore{entered: make(chan struct{}), release: make(chan struct{})}
			e := newEnv(t, envOptions{kind: kind,
				wrapStore: func(s newpath.Store) newpath.Store { gated.Store = s; return gated },
				server:    func(o *newpath.ServerOptions) { o.RequestTimeout = time.Minute }})
			ctx, cancel := context.WithCancel(t.Context())
			gone := make(chan error, 1)
			go func() {
				_, err := trySend(ctx, "POST", e.newpathURL+"/orders", orderBody, map[string]string{"Idempotency-Key": "k-gone"})
				gone <- err
			}()
			select {
			case <-gated.entered:
			case err := <-gone:
				t.Fatalf("POST ended before its order was written: %v", err)
			}
			// Charged, the order not written yet: the client goes away.
			cancel()
			if err := <-gone; err == nil {
				t.Fatal("the client that left got an answer")
			}
			close(gated.release)
			waitFor(t, 10*time.Second, "the charged order to be committed and answered", func() bool {
				rec, err := e.stores.newpath.IdempotencyKey(t.Context(), "k-gone")
				return err == nil && rec.Response != nil
			})
			if orders, _ := e.stores.newpath.ListOrdersByUser(t.Context(), 42); len(orders) != 1 || orders[0].PaymentID != "pay_1001" {
				t.Errorf("orders of user 42 = %+v; want the one charged order", orders)
			}
			retry := send(t, "POST", e.newpathURL+"/orders", orderBody, map[string]string{"Idempotency-Key": "k-gone"})
			if retry.status != http.StatusCreated || retry.header.Get("Idempotent-Replayed") != "true" {
				t.Errorf("retry = %d %s; want the stored 201", retry.status, retry.body)
			}
			if n := e.downstream.Charges(42); n != 1 {
				t.Errorf("charges = %d; want 1", n)
			}
		})
	}
}

// gatedOrderStore holds the first order transaction until release is
// closed, telling the test when it got there: after the charge, before the
// order is written. Then it refuses a cancelled context, as Postgres would,
// on either store: an order written on the request's own context, which
// the client cancelled, fails.
type gatedOrderStore struct {
	newpath.Store
	once    sync.Once
	entered chan struct{}
	release chan struct{}
}

func (s *gatedOrderStore) BeginOrder(ctx context.Context, claim *newpath.KeyClaim) (newpath.OrderTx, error) {
	s.once.Do(func() {
		close(s.entered)
		<-s.release
	})
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return s.Store.BeginOrder(ctx, claim)
}

// deadlineStore records the deadline of every context a POST's store
// calls get.
type deadlineStore struct {
	newpath.Store
	mu        sync.Mutex
	deadlines map[string]time.Time // by method; the latest call's
	missing   []string             // methods called without a deadline
}

func (s *deadlineStore) note(method string, ctx context.Context) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := ctx.Deadline()
	if !ok {
		s.missing = append(s.missing, method)
		return
	}
	s.deadlines[method] = d
}

func (s *deadlineStore) ClaimIdempotencyKey(ctx context.Context, c newpath.KeyClaim, now time.Time) (newpath.IdempotencyRecord, bool, error) {
	s.note("ClaimIdempotencyKey", ctx)
	return s.Store.ClaimIdempotencyKey(ctx, c, now)
}

func (s *deadlineStore) BeginOrder(ctx context.Context, claim *newpath.KeyClaim) (newpath.OrderTx, error) {
	s.note("BeginOrder", ctx)
	return s.Store.BeginOrder(ctx, claim)
}

func (s *deadlineStore) MarkDelivered(ctx context.Context, id string, now time.Time) error {
	s.note("MarkDelivered", ctx)
	return s.Store.MarkDelivered(ctx, id, now)
}

func (s *deadlineStore) GetOrder(ctx context.Context, id string) (newpath.Order, error) {
	s.note("GetOrder", ctx)
	return s.Store.GetOrder(ctx, id)
}

func (s *deadlineStore) CompleteIdempotencyKey(ctx context.Context, key string, resp newpath.StoredResponse, at time.Time) (newpath.StoredResponse, error) {
	s.note("CompleteIdempotencyKey", ctx)
	return s.Store.CompleteIdempotencyKey(ctx, key, resp, at)
}

// TestPostAnswersWithinTheRequestTimeout: after the charge, every store
// call of a POST (the order's transaction, marking its delivery, reading
// it back, storing the answer) is bounded by the request's own deadline,
// so the answer never comes after RequestTimeout, when the proxy may have
// given up on an order that was committed. The claim runs before the last
// afterCharge (a quarter of the timeout) of it, which gives the request's
// deadline without measuring time.
func TestPostAnswersWithinTheRequestTimeout(t *testing.T) {
	for _, kind := range storeKinds {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			const timeout = 4 * time.Second
			const afterCharge = timeout / 4
			recorded := &deadlineStore{deadlines: map[string]time.Time{}}
			e := newEnv(t, envOptions{kind: kind,
				wrapStore: func(s newpath.Store) newpath.Store { recorded.Store = s; return recorded },
				server:    func(o *newpath.ServerOptions) { o.RequestTimeout = timeout }})
			r := send(t, "POST", e.newpathURL+"/orders", orderBody, map[string]string{"Idempotency-Key": "k-bounded"})
			if r.status != http.StatusCreated || decodeOrder(t, r.body).Status != newpath.StatusFulfilled {
				t.Fatalf("POST = %d %s; want 201, fulfilled at once", r.status, r.body)
			}
			recorded.mu.Lock()
			defer recorded.mu.Unlock()
			if len(recorded.missing) > 0 {
				t.Errorf("store calls without a deadline: %v", recorded.missing)
			}
			claim, ok := recorded.deadlines["ClaimIdempotencyKey"]
			if !ok {
				t.Fatal("the key was never claimed")
			}
			requestDeadline := claim.Add(afterCharge)
			for _, m := range []string{"BeginOrder", "MarkDelivered", "GetOrder", "CompleteIdempotencyKey"} {
				d, ok := recorded.deadlines[m]
				switch {
				case !ok:
					t.Errorf("%s was not called", m)
				case d.After(requestDeadline):
					t.Errorf("%s may run until %s after the request's deadline", m, d.Sub(requestDeadline))
				}
			}
		})
	}
}
