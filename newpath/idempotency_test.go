package newpath_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/strangler-proxy/strangler/legacy"
	"github.com/strangler-proxy/strangler/newpath"
)

// TestConcurrentRequestsWithOneKey is issue 4's proof: 20 concurrent POSTs
// with one Idempotency-Key place one order, charge once and get 20 equal
// answers.
func TestConcurrentRequestsWithOneKey(t *testing.T) {
	for _, kind := range storeKinds {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, envOptions{kind: kind, relay: true})
			const clients = 20
			body := `{"user_id":77,"item_id":"sku-4","quantity":3}`
			header := map[string]string{"Idempotency-Key": "checkout-77-1"}
			responses := make([]response, clients)
			errs := make([]error, clients)
			var wg sync.WaitGroup
			start := make(chan struct{})
			for i := range clients {
				wg.Go(func() {
					<-start
					responses[i], errs[i] = trySend(t.Context(), "POST", e.newpathURL+"/orders", body, header)
				})
			}
			close(start)
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
			}
			first := responses[0]
			if first.status != http.StatusCreated {
				t.Fatalf("status = %d %s; want 201", first.status, first.body)
			}
			replayed := 0
			for i, r := range responses {
				if r.status != first.status || r.body != first.body {
					t.Errorf("response %d = %d %s; want %d %s", i, r.status, r.body, first.status, first.body)
				}
				if r.header.Get("Idempotent-Replayed") == "true" {
					replayed++
				}
			}
			if replayed != clients-1 {
				t.Errorf("%d responses marked Idempotent-Replayed; want %d", replayed, clients-1)
			}
			if o := decodeOrder(t, first.body); o.Status != newpath.StatusFulfilled || o.TotalCents != 3*499 {
				t.Errorf("order = %+v; want fulfilled, 1497 cents", o)
			}
			orders, err := e.stores.newpath.ListOrdersByUser(t.Context(), 77)
			if err != nil || len(orders) != 1 {
				t.Errorf("orders of user 77 = %v, %v; want exactly 1 row", orders, err)
			}
			if n := e.downstream.Charges(77); n != 1 {
				t.Errorf("charges = %d; want 1", n)
			}
			if st := e.downstream.Stats(); st.Reservations != 1 {
				t.Errorf("reservations = %d; want 1", st.Reservations)
			}
			if got := e.counter(t, "neworders_idempotent_replays_total"); got != clients-1 {
				t.Errorf("neworders_idempotent_replays_total = %v; want %d", got, clients-1)
			}
			if got := e.counter(t, "neworders_orders_total", "outcome", "created"); got != 1 {
				t.Errorf(`neworders_orders_total{outcome="created"} = %v; want 1`, got)
			}
		})
	}
}

// TestIdempotencyKeyRules: a later retry gets the stored answer even after
// the order changed; another body under the key is 422; a key is bounded;
// without a key every POST is a new order, as in legacy.
func TestIdempotencyKeyRules(t *testing.T) {
	for _, kind := range storeKinds {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, envOptions{kind: kind, faults: warehouseDown})
			key := map[string]string{"Idempotency-Key": "k-rules"}
			first := send(t, "POST", e.newpathURL+"/orders", orderBody, key)
			if first.status != http.StatusCreated {
				t.Fatalf("first POST = %d %s", first.status, first.body)
			}
			o := decodeOrder(t, first.body)
			if r := send(t, "POST", e.newpathURL+"/orders/"+o.ID+"/cancel", "", nil); r.status != http.StatusOK {
				t.Fatalf("cancel = %d %s", r.status, r.body)
			}
			// Whitespace and key order do not make a different request.
			again := send(t, "POST", e.newpathURL+"/orders", `{ "quantity": 2, "item_id": "sku-3", "user_id": 42 }`, key)
			if again.status != first.status || again.body != first.body {
				t.Errorf("retry = %d %s; want the stored %d %s", again.status, again.body, first.status, first.body)
			}
			other := send(t, "POST", e.newpathURL+"/orders", `{"user_id":42,"item_id":"sku-3","quantity":3}`, key)
			if other.status != http.StatusUnprocessableEntity || other.body != `{"error":"idempotency key reused with a different request"}`+"\n" {
				t.Errorf("another body under the key = %d %s; want 422", other.status, other.body)
			}
			long := send(t, "POST", e.newpathURL+"/orders", orderBody, map[string]string{"Idempotency-Key": strings.Repeat("k", 256)})
			if long.status != http.StatusBadRequest {
				t.Errorf("256-character key = %d %s; want 400", long.status, long.body)
			}
			if n := e.downstream.Charges(42); n != 1 {
				t.Errorf("charges = %d; want 1", n)
			}
			for range 2 {
				send(t, "POST", e.newpathURL+"/orders", orderBody, nil)
			}
			if n := e.downstream.Charges(42); n != 3 {
				t.Errorf("charges after two POSTs without a key = %d; want 3", n)
			}
		})
	}
}

// failingCommitStore fails the first order commit, as a crash between the
// charge and the commit would: the transaction rolls back, and the request
// releases its claim of the key.
type failingCommitStore struct {
	newpath.Store
	failures atomic.Int32
}

func (s *failingCommitStore) BeginOrder(ctx context.Context, claim *newpath.KeyClaim) (newpath.OrderTx, error) {
	tx, err := s.Store.BeginOrder(ctx, claim)
	if err != nil {
		return nil, err
	}
	return &failingCommitTx{OrderTx: tx, s: s}, nil
}

type failingCommitTx struct {
	newpath.OrderTx
	s *failingCommitStore
}

func (tx *failingCommitTx) Commit(ctx context.Context) error {
	if tx.s.failures.Add(-1) >= 0 {
		_ = tx.OrderTx.Rollback(ctx)
		return errors.New("injected: connection lost at commit")
	}
	return tx.OrderTx.Commit(ctx)
}

// newFailingCommitEnv is an env whose first order commit fails after the
// charge, as a crash between the two would leave it.
func newFailingCommitEnv(t *testing.T, kind storeKind) *env {
	t.Helper()
	wrapped := &failingCommitStore{}
	wrapped.failures.Store(1)
	return newEnv(t, envOptions{kind: kind, wrapStore: func(s newpath.Store) newpath.Store {
		wrapped.Store = s
		return wrapped
	}})
}

// TestCrashAfterChargeRetried: the card is charged, then the commit fails.
// The client's retry with its key completes the order with that same
// charge: charged once, not twice, and the charge is not lost.
func TestCrashAfterChargeRetried(t *testing.T) {
	for _, kind := range storeKinds {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			e := newFailingCommitEnv(t, kind)
			key := map[string]string{"Idempotency-Key": "k-crash"}
			if r := send(t, "POST", e.newpathURL+"/orders", orderBody, key); r.status != http.StatusInternalServerError {
				t.Fatalf("POST with a failing commit = %d %s; want 500", r.status, r.body)
			}
			if n := e.downstream.Charges(42); n != 1 {
				t.Fatalf("charges after the failed commit = %d; want 1", n)
			}
			retry := send(t, "POST", e.newpathURL+"/orders", orderBody, key)
			if retry.status != http.StatusCreated {
				t.Fatalf("retry = %d %s; want 201", retry.status, retry.body)
			}
			o := decodeOrder(t, retry.body)
			if n := e.downstream.Charges(42); n != 1 {
				t.Errorf("charges after the retry = %d; want still 1", n)
			}
			if o.PaymentID != "pay_1001" {
				t.Errorf("payment id = %s; want pay_1001, the charge made before the failed commit", o.PaymentID)
			}
			if st := e.downstream.Stats(); st.Reservations != 1 || st.IdempotentReplays != 2 {
				t.Errorf("stats = %+v; want 1 reservation, and the reservation and the charge replayed", st)
			}
			if orders, _ := e.stores.newpath.ListOrdersByUser(t.Context(), 42); len(orders) != 1 {
				t.Errorf("orders = %d; want 1", len(orders))
			}
		})
	}
}

// TestRetryAfterChargeOnTheLastStock: the order that failed after its
// charge had reserved the last units. Its retry must not read its own
// reservation as missing stock and answer out_of_stock, leaving the charge
// without an order: the keyed reservation replays, and the order is
// written with the one charge.
func TestRetryAfterChargeOnTheLastStock(t *testing.T) {
	for _, kind := range storeKinds {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			e := newFailingCommitEnv(t, kind)
			// Leave exactly the order's 2 units of sku-3.
			left, _ := e.downstream.Available("sku-3")
			if r := send(t, "POST", e.downstreamURL+"/inventory/sku-3/reserve", fmt.Sprintf(`{"quantity":%d}`, left-2), nil); r.status != http.StatusOK {
				t.Fatalf("draining the stock: %d %s", r.status, r.body)
			}
			key := map[string]string{"Idempotency-Key": "k-last-stock"}
			if r := send(t, "POST", e.newpathURL+"/orders", orderBody, key); r.status != http.StatusInternalServerError {
				t.Fatalf("POST with a failing commit = %d %s; want 500", r.status, r.body)
			}
			if n, _ := e.downstream.Available("sku-3"); n != 0 {
				t.Fatalf("stock after the charged attempt = %d; want 0, its reservation", n)
			}
			retry := send(t, "POST", e.newpathURL+"/orders", orderBody, key)
			if retry.status != http.StatusCreated {
				t.Fatalf("retry = %d %s; want 201 with the order the charge paid for", retry.status, retry.body)
			}
			if n := e.downstream.Charges(42); n != 1 {
				t.Errorf("charges = %d; want 1", n)
			}
			if orders, _ := e.stores.newpath.ListOrdersByUser(t.Context(), 42); len(orders) != 1 {
				t.Errorf("orders = %d; want 1", len(orders))
			}
			// Without the key the stock check stands: out of stock.
			if r := send(t, "POST", e.newpathURL+"/orders", orderBody, nil); r.status != http.StatusOK || !strings.Contains(r.body, "out_of_stock") {
				t.Errorf("a new POST with no stock left = %d %s; want the out_of_stock answer", r.status, r.body)
			}
		})
	}
}

// TestExpiredClaimTakenOver: a request holding a key hangs on its payment
// past its lease; the next request with the key takes the key over, and
// the payment service gives it the same charge. When the first request
// comes back, its claim is lost: it writes nothing and answers what the
// second stored. One charge, one order, the same answer twice. The lease
// ends on the injected clock, not by waiting.
func TestExpiredClaimTakenOver(t *testing.T) {
	for _, kind := range storeKinds {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			clock := newManualClock()
			var payments *legacy.Gate
			e := newEnv(t, envOptions{kind: kind,
				wrapDownstream: func(h http.Handler) http.Handler {
					payments = legacy.NewGate(h, "POST", "/payments")
					return payments
				},
				server: func(o *newpath.ServerOptions) { o.Clock, o.RequestTimeout = clock.Now, time.Minute }})
			t.Cleanup(payments.Open)
			key := map[string]string{"Idempotency-Key": "k-takeover"}
			type result struct {
				r   response
				err error
			}
			post := func() chan result {
				c := make(chan result, 1)
				go func() {
					r, err := trySend(t.Context(), "POST", e.newpathURL+"/orders", orderBody, key)
					c <- result{r, err}
				}()
				return c
			}
			first := post()
			waitFor(t, 10*time.Second, "the first request's charge to hang", func() bool { return payments.Held() == 1 })
			clock.Advance(time.Hour) // the first request's lease ends
			second := post()
			waitFor(t, 10*time.Second, "the second request to take the key over and reach the payment service", func() bool { return payments.Held() == 2 })
			payments.Open()
			r1, r2 := <-first, <-second
			if r1.err != nil || r2.err != nil {
				t.Fatalf("answers: %v, %v", r1.err, r2.err)
			}
			if r2.r.status != http.StatusCreated || r2.r.header.Get("Idempotent-Replayed") != "" {
				t.Errorf("second (the new owner) = %d %s, replayed %q; want 201, its own", r2.r.status, r2.r.body, r2.r.header.Get("Idempotent-Replayed"))
			}
			if r1.r.status != r2.r.status || r1.r.body != r2.r.body || r1.r.header.Get("Idempotent-Replayed") != "true" {
				t.Errorf("first (claim lost) = %d %s; want the second's answer replayed: %d %s", r1.r.status, r1.r.body, r2.r.status, r2.r.body)
			}
			if orders, _ := e.stores.newpath.ListOrdersByUser(t.Context(), 42); len(orders) != 1 {
				t.Errorf("orders = %d; want 1", len(orders))
			}
			if n := e.downstream.Charges(42); n != 1 {
				t.Errorf("charges = %d; want 1", n)
			}
		})
	}
}

// failingCompleteStore loses the first stored answer, as a request that
// dies right after its commit would.
type failingCompleteStore struct {
	newpath.Store
	failures atomic.Int32
}

func (s *failingCompleteStore) CompleteIdempotencyKey(ctx context.Context, key string, resp newpath.StoredResponse, at time.Time) (newpath.StoredResponse, error) {
	if s.failures.Add(-1) >= 0 {
		return newpath.StoredResponse{}, errors.New("injected: died before storing the answer")
	}
	return s.Store.CompleteIdempotencyKey(ctx, key, resp, at)
}

// TestHolderDiedAfterCommit: the order is committed but its answer never
// stored. A retry waits for it at most until its own deadline (409), and
// once the holder's respond_by has passed it answers from the order's
// state and stores that.
func TestHolderDiedAfterCommit(t *testing.T) {
	for _, kind := range storeKinds {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			clock := newManualClock()
			wrapped := &failingCompleteStore{}
			wrapped.failures.Store(1)
			e := newEnv(t, envOptions{kind: kind, faults: warehouseDown,
				wrapStore: func(s newpath.Store) newpath.Store { wrapped.Store = s; return wrapped },
				server:    func(o *newpath.ServerOptions) { o.Clock, o.RequestTimeout = clock.Now, time.Second }})
			key := map[string]string{"Idempotency-Key": "k-died"}
			first := send(t, "POST", e.newpathURL+"/orders", orderBody, key)
			if first.status != http.StatusCreated {
				t.Fatalf("first POST = %d %s", first.status, first.body)
			}
			o := decodeOrder(t, first.body)
			if r := send(t, "POST", e.newpathURL+"/orders", orderBody, key); r.status != http.StatusConflict || !isJSONError(r.body) {
				t.Errorf("retry before respond_by = %d %s; want 409 at its own deadline", r.status, r.body)
			}
			if _, err := e.stores.newpath.TransitionOrder(t.Context(), o.ID, newpath.StatusPaid, newpath.StatusCancelled, clock.Now()); err != nil {
				t.Fatal(err)
			}
			clock.Advance(time.Hour)
			retry := send(t, "POST", e.newpathURL+"/orders", orderBody, key)
			if got := decodeOrder(t, retry.body); retry.status != http.StatusCreated || got.ID != o.ID || got.Status != newpath.StatusCancelled || retry.header.Get("Idempotent-Replayed") != "true" {
				t.Errorf("retry after respond_by = %d %s; want order %s as it is now (cancelled), replayed", retry.status, retry.body, o.ID)
			}
			if again := send(t, "POST", e.newpathURL+"/orders", orderBody, key); again.body != retry.body {
				t.Errorf("next retry = %s; want the stored %s", again.body, retry.body)
			}
			if n := e.downstream.Charges(42); n != 1 {
				t.Errorf("charges = %d; want 1", n)
			}
		})
	}
}
