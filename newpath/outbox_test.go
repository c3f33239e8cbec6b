package newpath_test

import (
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/strangler-proxy/strangler/legacy"
	"github.com/strangler-proxy/strangler/newpath"
)

var warehouseDown = legacy.Faults{Warehouse: legacy.ServiceFaults{Down: true}}

// TestWarehouseOutageThenRecovery is issue 4's proof: the warehouse is down
// while 500 orders are placed, and stays down while the relay retries
// every one of them; once it is back, all 500 order_paid events are
// delivered exactly once (deduplicated by event id), none lost. The outage
// is measured in retries, not wall time: the relay's backoff is shortened,
// the rest is production code.
//
// The two stores run one after the other: each is CPU-bound on two cores.
func TestWarehouseOutageThenRecovery(t *testing.T) {
	for _, kind := range storeKinds {
		t.Run(string(kind), func(t *testing.T) {
			// Backoff long enough that the relay's retries do not crowd out
			// the 500 POSTs on two cores, short enough to recover at once.
			retry := newpath.RetryPolicy{MaxAttempts: 50, BaseDelay: 400 * time.Millisecond, MaxDelay: 2 * time.Second}
			e := newEnv(t, envOptions{kind: kind, relay: true, faults: warehouseDown,
				relayO: func(o *newpath.RelayOptions) { o.Retry = retry }})
			const orders, clients = 500, 8
			start := time.Now()
			ids := make(chan string, orders)
			var wg sync.WaitGroup
			for c := range clients {
				wg.Go(func() {
					for i := c; i < orders; i += clients {
						body := fmt.Sprintf(`{"user_id":%d,"item_id":"sku-%d","quantity":1}`, 100+i, 1+i%50)
						r, err := trySend(t.Context(), "POST", e.newpathURL+"/orders", body, nil)
						if err != nil || r.status != http.StatusCreated {
							t.Errorf("POST %d = %+v, %v; want 201", i, r, err)
							return
						}
						var o newpath.Order
						if err := o.UnmarshalJSON([]byte(r.body)); err != nil || o.Status != newpath.StatusPaid {
							t.Errorf("POST %d answered %s; want status paid (the warehouse is down), as legacy answers", i, r.body)
						}
						ids <- o.ID
					}
				})
			}
			wg.Wait()
			close(ids)
			t.Logf("placed %d orders in %s", orders, time.Since(start))
			if t.Failed() {
				t.FailNow()
			}
			// The outage lasts until the relay has retried every event: each
			// failed at least twice (the immediate try and one relay retry).
			waitFor(t, 20*time.Second, "every order_paid event to fail twice", func() bool {
				return e.counter(t, "neworders_outbox_deliveries_total", "result", "failed") >= 2*orders
			})
			if got := e.counter(t, "neworders_outbox_pending_events"); got < orders {
				t.Errorf("neworders_outbox_pending_events = %v during the outage; want at least %d", got, orders)
			}
			if got := e.counter(t, "neworders_outbox_oldest_pending_age_seconds"); got <= 0 {
				t.Errorf("neworders_outbox_oldest_pending_age_seconds = %v during the outage; want > 0", got)
			}
			if st := e.downstream.Stats(); st.Shipments != 0 {
				t.Fatalf("shipments during the outage = %d", st.Shipments)
			}

			t.Logf("outage over after %s", time.Since(start))
			e.setFaults(t, `{"warehouse":{"down":false}}`)
			waitFor(t, 20*time.Second, "the outbox to drain", func() bool {
				st, err := e.stores.newpath.OutboxStats(t.Context())
				return err == nil && st.Pending == 0
			})
			t.Logf("drained after %s", time.Since(start))
			for id := range ids {
				if n := e.downstream.Shipments(id); n != 1 {
					t.Errorf("shipments of %s = %d; want exactly 1", id, n)
				}
				if n := e.downstream.Mails(id); n != 1 {
					t.Errorf("mails about %s = %d; want exactly 1", id, n)
				}
				if o, err := e.stores.newpath.GetOrder(t.Context(), id); err != nil || o.Status != newpath.StatusFulfilled {
					t.Errorf("order %s = %s, %v; want fulfilled after the recovery", id, o.Status, err)
				}
			}
			if st := e.downstream.Stats(); st.Shipments != orders {
				t.Errorf("warehouse shipments = %d; want %d", st.Shipments, orders)
			}
			if got := e.counter(t, "neworders_outbox_dead_events"); got != 0 {
				t.Errorf("dead events = %v; want 0", got)
			}
			// The relay counts a delivery just after marking it: a moment
			// after the drain that the store shows.
			waitFor(t, 10*time.Second, "every delivery to be counted", func() bool {
				return e.counter(t, "neworders_outbox_deliveries_total", "result", "delivered") >= 2*orders
			})
			if got := e.counter(t, "neworders_outbox_deliveries_total", "result", "delivered"); got != 2*orders {
				t.Errorf(`deliveries{result="delivered"} = %v; want %d (order_paid and order_confirmed)`, got, 2*orders)
			}
		})
	}
}

// TestDeadEvents: an event that keeps failing is parked as dead after
// MaxAttempts, visible in the metrics, and never retried; a permanent
// refusal (4xx) is parked at once.
func TestDeadEvents(t *testing.T) {
	for _, kind := range storeKinds {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			retry := newpath.RetryPolicy{MaxAttempts: 3, BaseDelay: time.Millisecond, MaxDelay: 5 * time.Millisecond}
			e := newEnv(t, envOptions{kind: kind, relay: true, faults: warehouseDown,
				relayO: func(o *newpath.RelayOptions) { o.Retry = retry }})
			o := decodeOrder(t, send(t, "POST", e.newpathURL+"/orders", orderBody, nil).body)
			waitFor(t, 10*time.Second, "the order_paid event to be parked", func() bool {
				return e.counter(t, "neworders_outbox_dead_events") == 1
			})
			events, err := e.stores.newpath.OrderEvents(t.Context(), o.ID)
			if err != nil || len(events) != 2 {
				t.Fatalf("events = %v, %v", events, err)
			}
			paid := events[0]
			if paid.Kind != newpath.EventOrderPaid || paid.Status != newpath.EventDead || paid.Attempts != 3 || paid.LastError == "" {
				t.Errorf("order_paid event = %+v; want dead after 3 attempts with its last error", paid)
			}
			if got := e.counter(t, "neworders_outbox_deliveries_total", "result", "dead"); got != 1 {
				t.Errorf(`deliveries{result="dead"} = %v; want 1`, got)
			}
			e.setFaults(t, `{"warehouse":{"down":false}}`)
			if n, err := e.relay.RunOnce(t.Context()); err != nil || n != 0 {
				t.Errorf("RunOnce after the recovery claimed %d, %v; a dead event stays parked", n, err)
			}
			if got, _ := e.stores.newpath.GetOrder(t.Context(), o.ID); got.Status != newpath.StatusPaid {
				t.Errorf("order status = %s; want paid (its shipment is parked)", got.Status)
			}
		})
	}
}

// TestCancelledOrderIsNotShipped: an order cancelled while its order_paid
// event waits is not shipped when the warehouse comes back.
func TestCancelledOrderIsNotShipped(t *testing.T) {
	e := newEnv(t, envOptions{kind: memoryKind, faults: warehouseDown})
	o := decodeOrder(t, send(t, "POST", e.newpathURL+"/orders", orderBody, nil).body)
	if r := send(t, "POST", e.newpathURL+"/orders/"+o.ID+"/cancel", "", nil); r.status != http.StatusOK {
		t.Fatalf("cancel = %d %s", r.status, r.body)
	}
	e.setFaults(t, `{"warehouse":{"down":false}}`)
	waitFor(t, 10*time.Second, "the outbox to drain", func() bool {
		_, _ = e.relay.RunOnce(t.Context())
		st, _ := e.stores.newpath.OutboxStats(t.Context())
		return st.Pending == 0
	})
	if n := e.downstream.Shipments(o.ID); n != 0 {
		t.Errorf("shipments of the cancelled %s = %d; want 0", o.ID, n)
	}
	if got := e.counter(t, "neworders_outbox_deliveries_total", "result", "skipped"); got != 1 {
		t.Errorf(`deliveries{result="skipped"} = %v; want 1`, got)
	}
	if got, _ := e.stores.newpath.GetOrder(t.Context(), o.ID); got.Status != newpath.StatusCancelled {
		t.Errorf("status = %s; want cancelled", got.Status)
	}
}
