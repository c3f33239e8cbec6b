package newpath_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/strangler-proxy/strangler/newpath"
)

// batchCountingStore records what each prune statement deleted.
type batchCountingStore struct {
	newpath.Store
	mu      sync.Mutex
	batches map[string][]int
}

func (s *batchCountingStore) record(table string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.batches[table] = append(s.batches[table], n)
}

func (s *batchCountingStore) of(table string) []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]int(nil), s.batches[table]...)
}

func (s *batchCountingStore) PruneIdempotencyKeys(ctx context.Context, before time.Time, limit int) (int, error) {
	n, err := s.Store.PruneIdempotencyKeys(ctx, before, limit)
	s.record("idempotency_keys", n)
	return n, err
}

func (s *batchCountingStore) PruneOutboxEvents(ctx context.Context, before time.Time, limit int) (int, error) {
	n, err := s.Store.PruneOutboxEvents(ctx, before, limit)
	s.record("outbox_events", n)
	return n, err
}

// TestPruner: keys past their retention (answered 25 hours ago, or
// abandoned claims created 30 hours ago) and events delivered 8 days ago
// are deleted, more of each than one batch holds, in batches of at most
// 10; younger keys and events, and pending and dead events however old,
// stay; the metric counts what went. Every time is on the injected clock.
func TestPruner(t *testing.T) {
	for _, kind := range storeKinds {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, envOptions{kind: kind})
			store := e.stores.newpath
			ctx := t.Context()
			now := time.Date(2025, time.June, 1, 12, 0, 0, 0, time.UTC)
			ago := func(d time.Duration) time.Time { return now.Add(-d) }

			key := func(name string, created time.Time, completed *time.Time) {
				t.Helper()
				until := created.Add(time.Minute)
				if _, ok, err := store.ClaimIdempotencyKey(ctx, newpath.KeyClaim{Key: name, Fingerprint: "fp", Owner: name, ClaimedUntil: until, RespondBy: until}, created); err != nil || !ok {
					t.Fatalf("claim %s = %v, %v", name, ok, err)
				}
				if completed != nil {
					if _, err := store.CompleteIdempotencyKey(ctx, name, newpath.StoredResponse{Status: 201, Body: []byte(`{}`)}, *completed); err != nil {
						t.Fatal(err)
					}
				}
			}
			oldDone, youngDone := ago(25*time.Hour), ago(time.Hour)
			const oldKeys, abandoned = 35, 2
			for i := range oldKeys {
				key(fmt.Sprintf("old-%d", i), ago(48*time.Hour), &oldDone)
			}
			for i := range abandoned {
				key(fmt.Sprintf("abandoned-%d", i), ago(30*time.Hour), nil)
			}
			young := []string{"young-0", "young-1", "young-2", "young-abandoned"}
			for _, k := range young[:3] {
				key(k, ago(2*time.Hour), &youngDone)
			}
			key(young[3], ago(time.Hour), nil)

			// Events: 35 delivered 8 days ago, 4 delivered 6 days ago, 3
			// pending and 2 dead, all a month old.
			const oldEvents = 35
			groups := map[string]int{"old": oldEvents, "young": 4, "pending": 3, "dead": 2}
			var events []newpath.Event
			group := map[string]string{}
			for g, n := range groups {
				for i := range n {
					ev := newpath.Event{ID: fmt.Sprintf("%s-%d", g, i), Kind: newpath.EventOrderConfirmed, OrderID: "ord_" + g,
						Payload: []byte(`{}`), CreatedAt: ago(30 * 24 * time.Hour), AvailableAt: ago(30 * 24 * time.Hour)}
					if g == "pending" {
						ev.AvailableAt = now.Add(time.Hour) // not due: stays pending
					}
					events = append(events, ev)
					group[ev.ID] = g
				}
			}
			tx, err := store.BeginOrder(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := tx.AddEvents(ctx, events...); err != nil {
				t.Fatal(err)
			}
			if err := tx.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			claimed, err := store.ClaimEvents(ctx, "test", 100, ago(10*24*time.Hour), time.Minute)
			if err != nil || len(claimed) != oldEvents+4+2 {
				t.Fatalf("claimed %d events, %v; want %d", len(claimed), err, oldEvents+4+2)
			}
			for _, ev := range claimed {
				switch group[ev.ID] {
				case "old":
					err = store.MarkDelivered(ctx, ev.ID, ago(8*24*time.Hour))
				case "young":
					err = store.MarkDelivered(ctx, ev.ID, ago(6*24*time.Hour))
				case "dead":
					err = store.MarkFailed(ctx, ev.ID, "test", now, "refused", true)
				}
				if err != nil {
					t.Fatal(err)
				}
			}

			for _, table := range []string{"idempotency_keys", "outbox_events"} {
				if got := e.counter(t, "neworders_pruned_rows_total", "table", table); got != 0 {
					t.Errorf("neworders_pruned_rows_total{table=%q} before pruning = %v; want 0", table, got)
				}
			}
			counting := &batchCountingStore{Store: store, batches: map[string][]int{}}
			pruner, err := newpath.NewPruner(newpath.PrunerOptions{Store: counting, Metrics: e.metrics, BatchSize: 10,
				IdempotencyRetention: 24 * time.Hour, OutboxRetention: 7 * 24 * time.Hour, Interval: time.Hour,
				Clock: func() time.Time { return now }})
			if err != nil {
				t.Fatal(err)
			}
			runCtx, stop := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- pruner.Run(runCtx) }()
			waitFor(t, 10*time.Second, "the first run to prune everything past retention", func() bool {
				return e.counter(t, "neworders_pruned_rows_total", "table", "idempotency_keys") == oldKeys+abandoned &&
					e.counter(t, "neworders_pruned_rows_total", "table", "outbox_events") == oldEvents
			})
			stop()
			if err := <-done; err != nil {
				t.Errorf("Run = %v; want nil", err)
			}

			for table, want := range map[string]int{"idempotency_keys": oldKeys + abandoned, "outbox_events": oldEvents} {
				batches := counting.of(table)
				sum, full := 0, 0
				for _, n := range batches {
					if n > 10 {
						t.Errorf("%s: a batch deleted %d rows; want at most 10", table, n)
					}
					if n == 10 {
						full++
					}
					sum += n
				}
				if sum != want || full != want/10 || len(batches) != want/10+1 {
					t.Errorf("%s batches = %v; want %d rows in %d full batches of 10 and one of %d", table, batches, want, want/10, want%10)
				}
			}
			for _, k := range young {
				if _, err := store.IdempotencyKey(ctx, k); err != nil {
					t.Errorf("key %s within retention: %v; want kept", k, err)
				}
			}
			if _, err := store.IdempotencyKey(ctx, "old-0"); err == nil {
				t.Error("key old-0 past retention is still there")
			}
			for g, want := range map[string]int{"old": 0, "young": 4, "pending": 3, "dead": 2} {
				if got, _ := store.OrderEvents(ctx, "ord_"+g); len(got) != want {
					t.Errorf("%s events after pruning = %d; want %d", g, len(got), want)
				}
			}
			if st, err := store.OutboxStats(ctx); err != nil || st.Pending != 3 || st.Dead != 2 {
				t.Errorf("OutboxStats = %+v, %v; want 3 pending, 2 dead", st, err)
			}
			// Nothing left to prune: one short batch each.
			if keys, evs, err := pruner.PruneOnce(ctx); err != nil || keys != 0 || evs != 0 {
				t.Errorf("second PruneOnce = %d keys, %d events, %v; want nothing", keys, evs, err)
			}
			if got := e.counter(t, "neworders_pruned_rows_total", "table", "idempotency_keys"); got != oldKeys+abandoned {
				t.Errorf("neworders_pruned_rows_total{table=\"idempotency_keys\"} = %v; want %d", got, oldKeys+abandoned)
			}
		})
	}
}

func TestNewPrunerRejects(t *testing.T) {
	store, err := newpath.NewMemoryStore(newpath.Seed{})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		opts newpath.PrunerOptions
	}{
		{"no store", newpath.PrunerOptions{}},
		{"negative retention", newpath.PrunerOptions{Store: store, IdempotencyRetention: -time.Hour}},
		{"negative interval", newpath.PrunerOptions{Store: store, Interval: -time.Second}},
		{"negative batch", newpath.PrunerOptions{Store: store, BatchSize: -1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := newpath.NewPruner(tt.opts); err == nil {
				t.Errorf("NewPruner(%+v) = nil error; want one", tt.opts)
			}
		})
	}
}
