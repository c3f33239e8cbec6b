package newpath

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/strangler-proxy/strangler/newpath/pgtest"
)

// t0 is the suite's clock origin.
var t0 = time.Date(2025, time.March, 1, 12, 0, 0, 0, time.UTC)

// suiteSeed is a small seed in the shape of legacy's: three users, and
// orders whose ids do not sort like their numbers ("ord_10" < "ord_2").
func suiteSeed() Seed {
	users := []User{{1, "user-1", "user-1@example.com"}, {2, "user-2", "user-2@example.com"}, {3, "user-3", "user-3@example.com"}}
	mk := func(id string, user int64, status Status, created time.Time) Order {
		return Order{ID: id, UserID: user, ItemID: "sku-1", Quantity: 1, UnitPriceCents: 199, TotalCents: 199,
			Status: status, PaymentID: "pay_" + id[4:], CreatedAt: created, UpdatedAt: created}
	}
	return Seed{Users: users, Orders: []Order{
		mk("ord_1", 1, StatusFulfilled, t0),
		mk("ord_2", 1, StatusPaid, t0.Add(time.Hour)),
		mk("ord_10", 1, StatusPaid, t0.Add(time.Hour)),
		mk("ord_3", 2, StatusCancelled, t0),
	}}
}

// newStoreFunc builds a store holding seed, fresh for each test.
type newStoreFunc func(t *testing.T, seed Seed) Store

func newMemoryStoreForTest(t *testing.T, seed Seed) Store {
	t.Helper()
	s, err := NewMemoryStore(seed)
	if err != nil {
		t.Fatalf("NewMemoryStore: %v", err)
	}
	return s
}

func newPostgresStoreForTest(t *testing.T, seed Seed) Store {
	t.Helper()
	pool := pgtest.Pool(t)
	if _, err := Migrate(t.Context(), pool); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	s := NewPostgresStore(pool)
	if err := s.Seed(t.Context(), seed); err != nil {
		t.Fatalf("Seed: %v", err)
	}
	return s
}

// TestStores runs one suite against both implementations: the memory store
// is only trustworthy as a stand-in if it behaves as Postgres does.
func TestStores(t *testing.T) {
	for _, impl := range []struct {
		name string
		new  newStoreFunc
	}{
		{"memory", newMemoryStoreForTest},
		{"postgres", newPostgresStoreForTest},
	} {
		t.Run(impl.name, func(t *testing.T) {
			t.Parallel()
			for _, c := range storeSuite {
				t.Run(c.name, func(t *testing.T) { c.run(t, impl.new(t, suiteSeed())) })
			}
		})
	}
}

var storeSuite = []struct {
	name string
	run  func(t *testing.T, s Store)
}{
	{"read seed", testStoreReadSeed},
	{"create order", testStoreCreateOrder},
	{"transition", testStoreTransition},
	{"order transaction", testStoreOrderTx},
	{"idempotency key", testStoreIdempotencyKey},
	{"idempotency key takeover", testStoreKeyTakeover},
	{"concurrent claims of one key", testStoreConcurrentKey},
	{"outbox lease", testStoreOutboxLease},
	{"outbox delivery", testStoreOutboxDelivery},
	{"outbox concurrent claims", testStoreOutboxConcurrentClaims},
	{"prune", testStorePrune},
}

func ids(orders []Order) []string {
	out := make([]string, len(orders))
	for i, o := range orders {
		out[i] = o.ID
	}
	return out
}

func testStoreReadSeed(t *testing.T, s Store) {
	ctx := t.Context()
	if u, err := s.GetUser(ctx, 2); err != nil || u != (User{2, "user-2", "user-2@example.com"}) {
		t.Errorf("GetUser(2) = %+v, %v; want the seeded user", u, err)
	}
	if _, err := s.GetUser(ctx, 99); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetUser(99) error = %v; want ErrNotFound", err)
	}
	want := suiteSeed().Orders[0]
	if o, err := s.GetOrder(ctx, "ord_1"); err != nil || o != want {
		t.Errorf("GetOrder(ord_1) = %+v, %v; want %+v", o, err, want)
	}
	if _, err := s.GetOrder(ctx, "ord_99"); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetOrder(ord_99) error = %v; want ErrNotFound", err)
	}
	list, err := s.ListOrdersByUser(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	// Oldest first; the tie at t0+1h broken byte-wise: "ord_10" < "ord_2".
	if got, want := ids(list), []string{"ord_1", "ord_10", "ord_2"}; !slices.Equal(got, want) {
		t.Errorf("ListOrdersByUser(1) = %v; want %v", got, want)
	}
	if list, err := s.ListOrdersByUser(ctx, 99); err != nil || len(list) != 0 {
		t.Errorf("ListOrdersByUser(99) = %v, %v; want empty", list, err)
	}
}

func testStoreCreateOrder(t *testing.T, s Store) {
	ctx := t.Context()
	at := time.Date(2025, 1, 2, 3, 4, 5, 678_901_234, time.FixedZone("x", 3600))
	o, err := s.CreateOrder(ctx, Order{UserID: 3, ItemID: "sku-2", Quantity: 2, Status: StatusPaid, PaymentID: "pay_x", CreatedAt: at, UpdatedAt: at})
	if err != nil {
		t.Fatal(err)
	}
	// The sequence skips the seeded ord_1, ord_2 and ord_3.
	if o.ID != "ord_4" {
		t.Errorf("first generated id = %s; want ord_4", o.ID)
	}
	if want := time.Date(2025, 1, 2, 2, 4, 5, 678_000_000, time.UTC); !o.CreatedAt.Equal(want) || o.CreatedAt.Location() != time.UTC {
		t.Errorf("CreatedAt = %v; want %v (UTC, whole milliseconds)", o.CreatedAt, want)
	}
	if got, err := s.GetOrder(ctx, o.ID); err != nil || got != o {
		t.Errorf("GetOrder = %+v, %v; want %+v", got, err, o)
	}
	if _, err := s.CreateOrder(ctx, Order{ID: "ord_5", UserID: 3, Status: StatusPaid, CreatedAt: at, UpdatedAt: at}); err != nil {
		t.Fatal(err)
	}
	if next, err := s.CreateOrder(ctx, Order{UserID: 3, Status: StatusPaid, CreatedAt: at, UpdatedAt: at}); err != nil || next.ID != "ord_6" {
		t.Errorf("id after an explicit ord_5 = %s, %v; want ord_6", next.ID, err)
	}
	if _, err := s.CreateOrder(ctx, Order{ID: "ord_1", UserID: 3, Status: StatusPaid, CreatedAt: at, UpdatedAt: at}); !errors.Is(err, ErrDuplicate) {
		t.Errorf("CreateOrder(ord_1) error = %v; want ErrDuplicate", err)
	}
}

func testStoreTransition(t *testing.T, s Store) {
	ctx := t.Context()
	at := t0.Add(48 * time.Hour)
	got, err := s.TransitionOrder(ctx, "ord_2", StatusPaid, StatusCancelled, at)
	if err != nil || got.Status != StatusCancelled || !got.UpdatedAt.Equal(at) || !got.CreatedAt.Equal(t0.Add(time.Hour)) {
		t.Fatalf("TransitionOrder(ord_2) = %+v, %v; want cancelled at %v", got, err, at)
	}
	if stored, _ := s.GetOrder(ctx, "ord_2"); stored != got {
		t.Errorf("stored %+v; want %+v", stored, got)
	}
	if _, err := s.TransitionOrder(ctx, "ord_2", StatusPaid, StatusCancelled, at); !errors.Is(err, ErrStatusConflict) {
		t.Errorf("second transition error = %v; want ErrStatusConflict", err)
	}
	if _, err := s.TransitionOrder(ctx, "ord_99", StatusPaid, StatusCancelled, at); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown order error = %v; want ErrNotFound", err)
	}
	// Exactly one of many concurrent cancels wins.
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for range 20 {
		wg.Go(func() {
			_, err := s.TransitionOrder(ctx, "ord_10", StatusPaid, StatusCancelled, at)
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	won := 0
	for err := range errs {
		if err == nil {
			won++
		} else if !errors.Is(err, ErrStatusConflict) {
			t.Errorf("concurrent cancel error = %v", err)
		}
	}
	if won != 1 {
		t.Errorf("%d concurrent cancels won; want 1", won)
	}
}

// newTestOrder is an order for user 3 as the API would create it.
func newTestOrder(at time.Time) Order {
	return Order{UserID: 3, ItemID: "sku-7", Quantity: 1, UnitPriceCents: 799, TotalCents: 799, Status: StatusPaid, PaymentID: "pay_1001", CreatedAt: at, UpdatedAt: at}
}

func newTestEvent(kind EventKind, orderID string, at time.Time) Event {
	return Event{ID: newEventID(), Kind: kind, OrderID: orderID, Payload: []byte(`{"order_id":"` + orderID + `"}`), CreatedAt: at, AvailableAt: at}
}

// placeTestOrder commits an order with an order_paid and an order_confirmed
// event, due at at.
func placeTestOrder(t *testing.T, s Store, at time.Time) (Order, []Event) {
	t.Helper()
	ctx := t.Context()
	tx, err := s.BeginOrder(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	o, err := tx.CreateOrder(ctx, newTestOrder(at))
	if err != nil {
		t.Fatal(err)
	}
	events := []Event{newTestEvent(EventOrderPaid, o.ID, at), newTestEvent(EventOrderConfirmed, o.ID, at)}
	if err := tx.AddEvents(ctx, events...); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	return o, events
}

func testStoreOrderTx(t *testing.T, s Store) {
	ctx := t.Context()
	// Rolled back: nothing visible, and the id drawn is not handed out again.
	tx, err := s.BeginOrder(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	gone, err := tx.CreateOrder(ctx, newTestOrder(t0))
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.AddEvents(ctx, newTestEvent(EventOrderPaid, gone.ID, t0)); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetOrder(ctx, gone.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("rolled-back order %s: error = %v; want ErrNotFound", gone.ID, err)
	}
	if ev, _ := s.OrderEvents(ctx, gone.ID); len(ev) != 0 {
		t.Errorf("rolled-back order has events %v", ev)
	}

	o, events := placeTestOrder(t, s, t0)
	if o.ID == gone.ID {
		t.Errorf("id %s of a rolled-back order handed out again", o.ID)
	}
	if got, err := s.GetOrder(ctx, o.ID); err != nil || got != o {
		t.Errorf("committed order = %+v, %v; want %+v", got, err, o)
	}
	stored, err := s.OrderEvents(ctx, o.ID)
	if err != nil || len(stored) != 2 {
		t.Fatalf("OrderEvents = %v, %v; want 2 events", stored, err)
	}
	for i, e := range stored {
		if e.ID != events[i].ID || e.Kind != events[i].Kind || e.Status != EventPending || string(e.Payload) != string(events[i].Payload) || !e.CreatedAt.Equal(t0) {
			t.Errorf("event %d = %+v; want %+v, pending", i, e, events[i])
		}
	}
	if st, err := s.OutboxStats(ctx); err != nil || st.Pending != 2 || !st.OldestPending.Equal(t0) || st.Dead != 0 {
		t.Errorf("OutboxStats = %+v, %v; want 2 pending since %v", st, err, t0)
	}
	// Rollback after Commit is a no-op, so that it can always be deferred.
	tx2, _ := s.BeginOrder(ctx, nil)
	if err := tx2.Commit(ctx); err != nil {
		t.Errorf("empty commit: %v", err)
	}
	if err := tx2.Rollback(ctx); err != nil {
		t.Errorf("Rollback after Commit = %v; want nil", err)
	}
}

func testStoreIdempotencyKey(t *testing.T, s Store) {
	ctx := t.Context()
	lease := t0.Add(time.Minute)
	claim := KeyClaim{Key: "k-1", Fingerprint: "fp-1", Owner: "a", ClaimedUntil: lease, RespondBy: lease}
	if _, err := s.IdempotencyKey(ctx, "k-1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown key error = %v; want ErrNotFound", err)
	}
	if rec, ok, err := s.ClaimIdempotencyKey(ctx, claim, t0); err != nil || !ok || rec.Owner != "a" {
		t.Fatalf("first claim = %+v, %v, %v; want claimed by a", rec, ok, err)
	}
	// The claim is committed: visible at once, with its lease.
	rec, err := s.IdempotencyKey(ctx, "k-1")
	if err != nil || rec.Owner != "a" || rec.Fingerprint != "fp-1" || !rec.ClaimedUntil.Equal(lease) || !rec.RespondBy.Equal(lease) || rec.OrderID != "" || rec.Response != nil {
		t.Fatalf("claimed record = %+v, %v; want owner a until %v, no order", rec, err, lease)
	}
	tests := []struct {
		name  string
		claim KeyClaim
		now   time.Time
	}{
		{"a live lease", KeyClaim{Key: "k-1", Fingerprint: "fp-1", Owner: "b", ClaimedUntil: lease.Add(time.Minute)}, lease.Add(-time.Millisecond)},
		{"another request after the lease", KeyClaim{Key: "k-1", Fingerprint: "fp-other", Owner: "b", ClaimedUntil: lease.Add(time.Minute)}, lease.Add(time.Hour)},
	}
	for _, tt := range tests {
		if rec, ok, err := s.ClaimIdempotencyKey(ctx, tt.claim, tt.now); err != nil || ok || rec.Owner != "a" || rec.Fingerprint != "fp-1" {
			t.Errorf("claim against %s = %+v, %v, %v; want not claimed, a's record", tt.name, rec, ok, err)
		}
	}

	tx, err := s.BeginOrder(ctx, &claim)
	if err != nil {
		t.Fatal(err)
	}
	o, err := tx.CreateOrder(ctx, newTestOrder(t0))
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	rec, err = s.IdempotencyKey(ctx, "k-1")
	if err != nil || rec.OrderID != o.ID || rec.Response != nil {
		t.Fatalf("record = %+v, %v; want order %s, no response yet", rec, err, o.ID)
	}
	// With an order written, the key is never taken over nor released.
	if rec, ok, err := s.ClaimIdempotencyKey(ctx, KeyClaim{Key: "k-1", Fingerprint: "fp-1", Owner: "b", ClaimedUntil: lease.Add(time.Hour)}, lease.Add(time.Hour)); err != nil || ok || rec.OrderID != o.ID {
		t.Errorf("claim of a key with an order after its lease = %+v, %v, %v; want not claimed", rec, ok, err)
	}
	if err := s.ReleaseIdempotencyKey(ctx, "k-1", "a"); err != nil {
		t.Fatal(err)
	}
	if rec, err := s.IdempotencyKey(ctx, "k-1"); err != nil || rec.OrderID != o.ID {
		t.Errorf("after releasing a key with an order: %+v, %v; want it kept", rec, err)
	}

	if !rec.CreatedAt.Equal(t0) || !rec.CompletedAt.IsZero() {
		t.Errorf("record times = created %v, completed %v; want created %v, not completed", rec.CreatedAt, rec.CompletedAt, t0)
	}
	done := t0.Add(2 * time.Second)
	first, err := s.CompleteIdempotencyKey(ctx, "k-1", StoredResponse{Status: 201, Body: []byte(`{"a":1}`)}, done)
	if err != nil || first.Status != 201 || string(first.Body) != `{"a":1}` {
		t.Fatalf("CompleteIdempotencyKey = %+v, %v", first, err)
	}
	// The first answer stored wins.
	second, err := s.CompleteIdempotencyKey(ctx, "k-1", StoredResponse{Status: 500, Body: []byte(`{"b":2}`)}, done.Add(time.Hour))
	if err != nil || second.Status != 201 || string(second.Body) != `{"a":1}` {
		t.Errorf("second CompleteIdempotencyKey = %+v, %v; want the first answer", second, err)
	}
	if rec, _ := s.IdempotencyKey(ctx, "k-1"); rec.Response == nil || string(rec.Response.Body) != `{"a":1}` || !rec.CompletedAt.Equal(done) {
		t.Errorf("stored response = %+v, completed at %v; want the first, at %v", rec.Response, rec.CompletedAt, done)
	}
	if _, err := s.CompleteIdempotencyKey(ctx, "k-unknown", StoredResponse{Status: 201}, done); !errors.Is(err, ErrNotFound) {
		t.Errorf("completing an unknown key: error = %v; want ErrNotFound", err)
	}

	// A rolled-back order leaves the claim as it was; only its owner
	// releases it, and then anyone claims it.
	k2 := KeyClaim{Key: "k-2", Fingerprint: "fp", Owner: "a", ClaimedUntil: lease, RespondBy: lease}
	if _, ok, err := s.ClaimIdempotencyKey(ctx, k2, t0); err != nil || !ok {
		t.Fatalf("claim k-2 = %v, %v", ok, err)
	}
	tx, err = s.BeginOrder(ctx, &k2)
	if err != nil {
		t.Fatal(err)
	}
	gone, err := tx.CreateOrder(ctx, newTestOrder(t0))
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if rec, err := s.IdempotencyKey(ctx, "k-2"); err != nil || rec.Owner != "a" || rec.OrderID != "" {
		t.Errorf("k-2 after a rollback = %+v, %v; want still a's claim, no order", rec, err)
	}
	if _, err := s.GetOrder(ctx, gone.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("rolled-back order %s: error = %v; want ErrNotFound", gone.ID, err)
	}
	if err := s.ReleaseIdempotencyKey(ctx, "k-2", "b"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.IdempotencyKey(ctx, "k-2"); err != nil {
		t.Errorf("k-2 after another owner's release: %v; want a's claim kept", err)
	}
	if err := s.ReleaseIdempotencyKey(ctx, "k-2", "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.IdempotencyKey(ctx, "k-2"); !errors.Is(err, ErrNotFound) {
		t.Errorf("k-2 after its owner's release: error = %v; want ErrNotFound", err)
	}
	if _, ok, err := s.ClaimIdempotencyKey(ctx, KeyClaim{Key: "k-2", Fingerprint: "fp", Owner: "b", ClaimedUntil: lease}, t0); err != nil || !ok {
		t.Errorf("claim after a release = %v, %v; want claimed", ok, err)
	}
}

// testStoreKeyTakeover: a lease that ended with no order is taken over by
// the next request with the key; the old owner can then neither write its
// order nor release the key.
func testStoreKeyTakeover(t *testing.T, s Store) {
	ctx := t.Context()
	lease := t0.Add(time.Minute)
	a := KeyClaim{Key: "k-take", Fingerprint: "fp", Owner: "a", ClaimedUntil: lease, RespondBy: lease}
	if _, ok, err := s.ClaimIdempotencyKey(ctx, a, t0); err != nil || !ok {
		t.Fatalf("claim by a = %v, %v", ok, err)
	}
	b := KeyClaim{Key: "k-take", Fingerprint: "fp", Owner: "b", ClaimedUntil: lease.Add(time.Minute), RespondBy: lease.Add(time.Minute)}
	rec, ok, err := s.ClaimIdempotencyKey(ctx, b, lease)
	if err != nil || !ok || rec.Owner != "b" || !rec.ClaimedUntil.Equal(b.ClaimedUntil) {
		t.Fatalf("takeover at the end of the lease = %+v, %v, %v; want claimed by b until %v", rec, ok, err, b.ClaimedUntil)
	}
	before, _ := s.ListOrdersByUser(ctx, 3)
	tx, err := s.BeginOrder(ctx, &a)
	if err != nil {
		t.Fatal(err)
	}
	_, err = tx.CreateOrder(ctx, newTestOrder(t0))
	if err == nil {
		err = tx.Commit(ctx)
	}
	_ = tx.Rollback(ctx)
	if !errors.Is(err, ErrClaimLost) {
		t.Errorf("order of the old owner: error = %v; want ErrClaimLost", err)
	}
	if after, _ := s.ListOrdersByUser(ctx, 3); len(after) != len(before) {
		t.Errorf("the old owner's lost claim wrote an order: %d orders, want %d", len(after), len(before))
	}
	if err := s.ReleaseIdempotencyKey(ctx, "k-take", "a"); err != nil {
		t.Fatal(err)
	}
	if rec, err := s.IdempotencyKey(ctx, "k-take"); err != nil || rec.Owner != "b" {
		t.Errorf("after the old owner's release: %+v, %v; want b's claim kept", rec, err)
	}
	tx, err = s.BeginOrder(ctx, &b)
	if err != nil {
		t.Fatal(err)
	}
	o, err := tx.CreateOrder(ctx, newTestOrder(t0))
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatalf("the new owner's order: %v", err)
	}
	if rec, _ := s.IdempotencyKey(ctx, "k-take"); rec.OrderID != o.ID {
		t.Errorf("key records order %q; want %s", rec.OrderID, o.ID)
	}
}

// testStoreConcurrentKey: of many concurrent claims of one key, and of
// many concurrent takeovers of an ended lease, exactly one wins; an order
// being written and a takeover never both succeed.
func testStoreConcurrentKey(t *testing.T, s Store) {
	ctx := t.Context()
	lease := t0.Add(time.Minute)
	race := func(now time.Time) (winners int, owner string) {
		var wg sync.WaitGroup
		results := make(chan string, 20)
		for i := range 20 {
			c := KeyClaim{Key: "k-race", Fingerprint: "fp", Owner: fmt.Sprintf("r%d-%s", i, now.Format("150405")), ClaimedUntil: now.Add(time.Minute), RespondBy: now.Add(time.Minute)}
			wg.Go(func() {
				rec, ok, err := s.ClaimIdempotencyKey(ctx, c, now)
				if err != nil {
					t.Errorf("concurrent claim: %v", err)
					return
				}
				if ok {
					results <- c.Owner
				} else if rec.Owner == c.Owner {
					t.Errorf("claim of %s not won but the record names it", c.Owner)
				}
			})
		}
		wg.Wait()
		close(results)
		for o := range results {
			winners++
			owner = o
		}
		return winners, owner
	}
	if n, owner := race(t0); n != 1 {
		t.Fatalf("%d of 20 concurrent claims won; want 1", n)
	} else if rec, _ := s.IdempotencyKey(ctx, "k-race"); rec.Owner != owner {
		t.Errorf("record owner = %s; want the winner %s", rec.Owner, owner)
	}
	if n, _ := race(lease); n != 1 {
		t.Errorf("%d of 20 concurrent takeovers of an ended lease won; want 1", n)
	}

	// An order being written races a takeover once its lease has ended.
	a := KeyClaim{Key: "k-write", Fingerprint: "fp", Owner: "a", ClaimedUntil: lease, RespondBy: lease}
	if _, ok, err := s.ClaimIdempotencyKey(ctx, a, t0); err != nil || !ok {
		t.Fatalf("claim = %v, %v", ok, err)
	}
	tx, err := s.BeginOrder(ctx, &a)
	if err != nil {
		t.Fatal(err)
	}
	_, err = tx.CreateOrder(ctx, newTestOrder(t0))
	taken := make(chan bool, 1)
	go func() {
		_, ok, err := s.ClaimIdempotencyKey(ctx, KeyClaim{Key: "k-write", Fingerprint: "fp", Owner: "b", ClaimedUntil: lease.Add(time.Minute)}, lease.Add(time.Second))
		if err != nil {
			t.Errorf("takeover: %v", err)
		}
		taken <- ok
	}()
	if err == nil {
		err = tx.Commit(ctx)
	}
	_ = tx.Rollback(ctx)
	var tookOver bool
	select {
	case tookOver = <-taken:
	case <-time.After(10 * time.Second):
		t.Fatal("takeover still waiting after the order's transaction ended")
	}
	committed := err == nil
	if err != nil && !errors.Is(err, ErrClaimLost) {
		t.Fatalf("order: %v", err)
	}
	if committed == tookOver {
		t.Errorf("order committed %v, takeover won %v; want exactly one of them", committed, tookOver)
	}
}

func testStoreOutboxLease(t *testing.T, s Store) {
	ctx := t.Context()
	o, events := placeTestOrder(t, s, t0)
	// Not due before available_at.
	if got, err := s.ClaimEvents(ctx, "a", 10, t0.Add(-time.Second), time.Minute); err != nil || len(got) != 0 {
		t.Fatalf("claim before due = %v, %v; want none", got, err)
	}
	got, err := s.ClaimEvents(ctx, "a", 1, t0, time.Minute)
	if err != nil || len(got) != 1 {
		t.Fatalf("claim limit 1 = %v, %v; want 1 event", got, err)
	}
	rest, err := s.ClaimEvents(ctx, "a", 10, t0, time.Minute)
	if err != nil || len(rest) != 1 {
		t.Fatalf("second claim = %v, %v; want the other event", rest, err)
	}
	claimed := append(got, rest...)
	for _, e := range claimed {
		if e.Attempts != 1 || e.ClaimedBy != "a" || !e.ClaimedUntil.Equal(t0.Add(time.Minute)) || e.OrderID != o.ID {
			t.Errorf("claimed event = %+v; want attempt 1, leased to a until %v", e, t0.Add(time.Minute))
		}
	}
	if got := []string{claimed[0].ID, claimed[1].ID}; !slices.Contains(got, events[0].ID) || !slices.Contains(got, events[1].ID) {
		t.Errorf("claimed %v; want both events of the order", got)
	}
	// Leased: another relay gets nothing until the lease ends...
	if got, _ := s.ClaimEvents(ctx, "b", 10, t0.Add(59*time.Second), time.Minute); len(got) != 0 {
		t.Errorf("claim during the lease = %v; want none", got)
	}
	// ...then takes both over, as from a relay that died.
	taken, err := s.ClaimEvents(ctx, "b", 10, t0.Add(time.Minute), time.Minute)
	if err != nil || len(taken) != 2 {
		t.Fatalf("claim after the lease = %v, %v; want both events", taken, err)
	}
	for _, e := range taken {
		if e.Attempts != 2 || e.ClaimedBy != "b" {
			t.Errorf("re-claimed event = %+v; want attempt 2, leased to b", e)
		}
	}
	// The late relay's failure report changes nothing: b holds the lease.
	if err := s.MarkFailed(ctx, taken[0].ID, "a", t0, "late", false); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.ClaimEvents(ctx, "c", 10, t0.Add(90*time.Second), time.Minute); len(got) != 0 {
		t.Errorf("a stale owner's MarkFailed released the event: claimed %v", got)
	}
	// The owner's failure schedules a retry.
	retryAt := t0.Add(5 * time.Minute)
	if err := s.MarkFailed(ctx, taken[0].ID, "b", retryAt, "warehouse unavailable", false); err != nil {
		t.Fatal(err)
	}
	if err := s.MarkDelivered(ctx, taken[1].ID, t0.Add(90*time.Second)); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.ClaimEvents(ctx, "c", 10, retryAt.Add(-time.Millisecond), time.Minute); len(got) != 0 {
		t.Errorf("claimed before retry_at: %v", got)
	}
	if got, _ := s.ClaimEvents(ctx, "c", 10, retryAt, time.Minute); len(got) != 1 || got[0].ID != taken[0].ID || got[0].Attempts != 3 || got[0].LastError != "warehouse unavailable" {
		t.Errorf("claim at retry_at = %+v; want the event, attempt 3, with its last error", got)
	}
}

func testStoreOutboxDelivery(t *testing.T, s Store) {
	ctx := t.Context()
	o, events := placeTestOrder(t, s, t0)
	claimed, err := s.ClaimEvents(ctx, "a", 10, t0, time.Minute)
	if err != nil || len(claimed) != 2 {
		t.Fatalf("claim = %v, %v", claimed, err)
	}
	at := t0.Add(3 * time.Second)
	// Delivering order_paid fulfils the order, in the same transaction.
	if err := s.MarkDelivered(ctx, events[0].ID, at); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.GetOrder(ctx, o.ID); got.Status != StatusFulfilled || !got.UpdatedAt.Equal(at) || !got.CreatedAt.Equal(t0) {
		t.Errorf("order after order_paid delivered = %+v; want fulfilled, updated at %v", got, at)
	}
	// Idempotent: a second delivery (a relay whose lease ended) changes nothing.
	if err := s.MarkDelivered(ctx, events[0].ID, at.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.GetOrder(ctx, o.ID); !got.UpdatedAt.Equal(at) {
		t.Errorf("a repeated MarkDelivered moved updated_at to %v", got.UpdatedAt)
	}
	// Parked as dead: never claimed again, counted.
	if err := s.MarkFailed(ctx, events[1].ID, "a", t0, "mail refused", true); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.ClaimEvents(ctx, "b", 10, t0.Add(time.Hour), time.Minute); len(got) != 0 {
		t.Errorf("claimed %v; want no event (one delivered, one dead)", got)
	}
	st, err := s.OutboxStats(ctx)
	if err != nil || st.Pending != 0 || st.Dead != 1 || !st.OldestPending.IsZero() {
		t.Errorf("OutboxStats = %+v, %v; want 0 pending, 1 dead", st, err)
	}
	stored, _ := s.OrderEvents(ctx, o.ID)
	if len(stored) != 2 || stored[0].Status != EventDelivered || !stored[0].DeliveredAt.Equal(at) || stored[1].Status != EventDead || stored[1].LastError != "mail refused" {
		t.Errorf("events = %+v; want delivered at %v, then dead", stored, at)
	}

	// order_paid of a cancelled order does not resurrect it.
	c, cevents := placeTestOrder(t, s, t0)
	if _, err := s.TransitionOrder(ctx, c.ID, StatusPaid, StatusCancelled, at); err != nil {
		t.Fatal(err)
	}
	if err := s.MarkDelivered(ctx, cevents[0].ID, at.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.GetOrder(ctx, c.ID); got.Status != StatusCancelled {
		t.Errorf("cancelled order after order_paid delivered = %s; want cancelled", got.Status)
	}
}

// testStoreOutboxConcurrentClaims: relays claiming at once never share an
// event.
func testStoreOutboxConcurrentClaims(t *testing.T, s Store) {
	ctx := t.Context()
	const orders = 50
	for range orders {
		placeTestOrder(t, s, t0)
	}
	var (
		mu   sync.Mutex
		seen = map[string]string{}
		wg   sync.WaitGroup
	)
	for r := range 6 {
		owner := fmt.Sprintf("relay-%d", r)
		wg.Go(func() {
			for {
				got, err := s.ClaimEvents(ctx, owner, 7, t0, time.Hour)
				if err != nil {
					t.Errorf("%s: %v", owner, err)
					return
				}
				if len(got) == 0 {
					return
				}
				mu.Lock()
				for _, e := range got {
					if prev, dup := seen[e.ID]; dup {
						t.Errorf("event %s claimed by %s and %s", e.ID, prev, owner)
					}
					seen[e.ID] = owner
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(seen) != 2*orders {
		t.Errorf("claimed %d events; want %d", len(seen), 2*orders)
	}
}

// testStorePrune: one call deletes at most its limit, and only what is
// past the cutoff: keys answered before it, keys never answered created
// before it unless their lease still runs, events delivered before it;
// never a pending or dead event.
func testStorePrune(t *testing.T, s Store) {
	ctx := t.Context()
	cutoff := t0.Add(24 * time.Hour)
	claim := func(key string, created, until time.Time) {
		t.Helper()
		if _, ok, err := s.ClaimIdempotencyKey(ctx, KeyClaim{Key: key, Fingerprint: "fp", Owner: key, ClaimedUntil: until, RespondBy: until}, created); err != nil || !ok {
			t.Fatalf("claim %s = %v, %v", key, ok, err)
		}
	}
	complete := func(key string, at time.Time) {
		t.Helper()
		if _, err := s.CompleteIdempotencyKey(ctx, key, StoredResponse{Status: 201, Body: []byte(`{}`)}, at); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 {
		claim(fmt.Sprintf("old-%d", i), t0, t0.Add(time.Minute))
		complete(fmt.Sprintf("old-%d", i), t0.Add(time.Second))
	}
	claim("abandoned", t0, t0.Add(time.Minute))
	// Created before the cutoff but answered after it, or never answered
	// and leased past it (taken over just now): kept.
	claim("answered-late", t0, t0.Add(time.Minute))
	complete("answered-late", cutoff.Add(time.Second))
	claim("live", t0, t0.Add(time.Minute))
	if _, ok, err := s.ClaimIdempotencyKey(ctx, KeyClaim{Key: "live", Fingerprint: "fp", Owner: "new", ClaimedUntil: cutoff.Add(time.Minute)}, cutoff); err != nil || !ok {
		t.Fatalf("takeover of live = %v, %v", ok, err)
	}
	claim("young", cutoff, cutoff.Add(time.Minute))

	if n, err := s.PruneIdempotencyKeys(ctx, cutoff, 3); err != nil || n != 3 {
		t.Fatalf("first batch of 3 = %d, %v; want 3", n, err)
	}
	if n, err := s.PruneIdempotencyKeys(ctx, cutoff, 3); err != nil || n != 1 {
		t.Fatalf("second batch = %d, %v; want the 1 left", n, err)
	}
	for _, key := range []string{"old-0", "old-1", "old-2", "abandoned"} {
		if _, err := s.IdempotencyKey(ctx, key); !errors.Is(err, ErrNotFound) {
			t.Errorf("key %s after pruning: %v; want ErrNotFound", key, err)
		}
	}
	for _, key := range []string{"answered-late", "live", "young"} {
		if _, err := s.IdempotencyKey(ctx, key); err != nil {
			t.Errorf("key %s after pruning: %v; want kept", key, err)
		}
	}

	_, old := placeTestOrder(t, s, t0)
	_, young := placeTestOrder(t, s, t0)
	_, kept := placeTestOrder(t, s, t0)
	if _, err := s.ClaimEvents(ctx, "r", 10, t0, time.Minute); err != nil {
		t.Fatal(err)
	}
	for _, e := range old {
		if err := s.MarkDelivered(ctx, e.ID, t0.Add(time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	for _, e := range young {
		if err := s.MarkDelivered(ctx, e.ID, cutoff); err != nil {
			t.Fatal(err)
		}
	}
	// kept[0] stays pending (leased), kept[1] is dead.
	if err := s.MarkFailed(ctx, kept[1].ID, "r", t0, "refused", true); err != nil {
		t.Fatal(err)
	}
	if n, err := s.PruneOutboxEvents(ctx, cutoff, 1); err != nil || n != 1 {
		t.Fatalf("first event batch of 1 = %d, %v; want 1", n, err)
	}
	if n, err := s.PruneOutboxEvents(ctx, cutoff, 10); err != nil || n != 1 {
		t.Fatalf("second event batch = %d, %v; want the 1 left", n, err)
	}
	if ev, _ := s.OrderEvents(ctx, old[0].OrderID); len(ev) != 0 {
		t.Errorf("events of the old order after pruning: %v; want none", ev)
	}
	if ev, _ := s.OrderEvents(ctx, young[0].OrderID); len(ev) != 2 {
		t.Errorf("events of the young order after pruning: %d; want 2", len(ev))
	}
	if ev, _ := s.OrderEvents(ctx, kept[0].OrderID); len(ev) != 2 {
		t.Errorf("pending and dead events after pruning: %d; want 2", len(ev))
	}
	if st, _ := s.OutboxStats(ctx); st.Pending != 1 || st.Dead != 1 {
		t.Errorf("OutboxStats = %+v; want 1 pending, 1 dead", st)
	}
}

func TestMigrate(t *testing.T) {
	url := pgtest.URL(t)
	all, err := migrations()
	if err != nil || len(all) == 0 {
		t.Fatalf("embedded migrations = %v, %v", all, err)
	}
	// Two processes starting at once: both succeed, the migrations run once.
	var wg sync.WaitGroup
	applied := make([][]int, 3)
	errs := make([]error, 3)
	for i := range applied {
		pool := pgtest.PoolOn(t, url)
		wg.Go(func() { applied[i], errs[i] = Migrate(t.Context(), pool) })
	}
	wg.Wait()
	total := 0
	for i, err := range errs {
		if err != nil {
			t.Fatalf("concurrent Migrate %d: %v", i, err)
		}
		total += len(applied[i])
	}
	if total != len(all) {
		t.Errorf("concurrent Migrate calls applied %v; want %d migrations applied once in all", applied, len(all))
	}
	pool := pgtest.PoolOn(t, url)
	again, err := Migrate(t.Context(), pool)
	if err != nil || len(again) != 0 {
		t.Errorf("Migrate on an up-to-date schema = %v, %v; want nothing applied", again, err)
	}
	var recorded int
	if err := pool.QueryRow(t.Context(), "SELECT count(*) FROM schema_migrations").Scan(&recorded); err != nil || recorded != len(all) {
		t.Errorf("schema_migrations rows = %d, %v; want %d", recorded, err, len(all))
	}
	// Seeding twice is harmless too.
	s := NewPostgresStore(pool)
	for range 2 {
		if err := s.Seed(t.Context(), suiteSeed()); err != nil {
			t.Fatal(err)
		}
	}
	if list, _ := s.ListOrdersByUser(t.Context(), 1); len(list) != 3 {
		t.Errorf("user 1 has %d orders after seeding twice; want 3", len(list))
	}
}
