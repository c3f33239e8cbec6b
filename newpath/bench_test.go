package newpath_test

import (
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/strangler-proxy/strangler/newpath"
)

// BenchmarkCreateOrder measures POST /orders end to end, over real
// sockets, with an Idempotency-Key: claim, reservation, charge, commit of
// the order and its outbox events, the immediate delivery to the
// warehouse, and the stored answer. The fake services run in the same
// process, so the number is the newpath's own cost plus theirs.
//
//	go test -run '^$' -bench CreateOrder ./newpath/   (make test's Postgres: .ci/testdb.sh go test ...)
func BenchmarkCreateOrder(b *testing.B) {
	for _, kind := range storeKinds {
		b.Run(string(kind), func(b *testing.B) {
			e := newEnv(b, envOptions{kind: kind})
			var seq atomic.Int64
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					n := seq.Add(1)
					body := fmt.Sprintf(`{"user_id":%d,"item_id":"sku-%d","quantity":1}`, 1+n%1000, 1+n%50)
					r, err := trySend(b.Context(), "POST", e.newpathURL+"/orders", body, map[string]string{"Idempotency-Key": fmt.Sprintf("bench-%d", n)})
					if err != nil || r.status != http.StatusCreated {
						b.Fatalf("POST /orders = %+v, %v", r, err)
					}
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "orders/s")
		})
	}
}

// BenchmarkRelay measures how fast one relay drains a backlog: b.N
// events, due at once, delivered to the fake warehouse and mail services
// and marked delivered (order_paid also fulfils its order).
func BenchmarkRelay(b *testing.B) {
	for _, kind := range storeKinds {
		b.Run(string(kind), func(b *testing.B) {
			e := newEnv(b, envOptions{kind: kind})
			store := e.stores.newpath
			now := time.Now()
			for i := 0; i < b.N; i += 2 {
				tx, err := store.BeginOrder(b.Context(), nil)
				if err != nil {
					b.Fatal(err)
				}
				o, err := tx.CreateOrder(b.Context(), newpath.Order{UserID: int64(1 + i%1000), ItemID: "sku-1", Quantity: 1, UnitPriceCents: 199,
					TotalCents: 199, Status: newpath.StatusPaid, PaymentID: "pay_x", CreatedAt: now, UpdatedAt: now})
				if err != nil {
					b.Fatal(err)
				}
				ship := fmt.Sprintf(`{"order_id":%q,"user_id":1,"item_id":"sku-1","quantity":1}`, o.ID)
				mail := fmt.Sprintf(`{"to":"user-1@example.com","template":"order_confirmation","order_id":%q}`, o.ID)
				if err := tx.AddEvents(b.Context(),
					newpath.Event{ID: o.ID + "-paid", Kind: newpath.EventOrderPaid, OrderID: o.ID, Payload: []byte(ship), CreatedAt: now, AvailableAt: now},
					newpath.Event{ID: o.ID + "-confirmed", Kind: newpath.EventOrderConfirmed, OrderID: o.ID, Payload: []byte(mail), CreatedAt: now, AvailableAt: now},
				); err != nil {
					b.Fatal(err)
				}
				if err := tx.Commit(b.Context()); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			start := time.Now()
			for {
				n, err := e.relay.RunOnce(b.Context())
				if err != nil {
					b.Fatal(err)
				}
				if n == 0 {
					break
				}
			}
			elapsed := time.Since(start)
			b.StopTimer()
			st, _ := store.OutboxStats(b.Context())
			if st.Pending != 0 || st.Dead != 0 {
				b.Fatalf("outbox after the drain: %+v", st)
			}
			events := 2 * ((b.N + 1) / 2)
			b.ReportMetric(float64(events)/elapsed.Seconds(), "events/s")
		})
	}
}
