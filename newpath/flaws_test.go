package newpath_test

import (
	"encoding/json"
	"fmt"
	"go/parser"
	"go/token"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/strangler-proxy/strangler/legacy"
	"github.com/strangler-proxy/strangler/newpath"
)

// TestLegacyFlawsFixed runs the scenarios of legacy's flaws against both
// services: where legacy leaves an order paid forever and charges a
// retried POST twice, newpath fulfils the order once the warehouse is back
// and charges once.
func TestLegacyFlawsFixed(t *testing.T) {
	for _, kind := range storeKinds {
		t.Run(string(kind)+"/warehouse failure after payment", func(t *testing.T) {
			t.Parallel()
			// One shared store, so that the two orders get distinct ids and
			// the warehouse's per-order counts tell them apart.
			e := newEnv(t, envOptions{kind: kind, shared: true, relay: true, faults: warehouseDown})
			lg := send(t, "POST", e.legacyURL+"/orders", orderBody, nil)
			np := send(t, "POST", e.newpathURL+"/orders", orderBody, nil)
			// During the outage both answer alike: 201, paid.
			if normalise(render(np)) != normalise(render(lg)) {
				t.Errorf("answers during the outage differ:\nnewpath %s\nlegacy  %s", np.body, lg.body)
			}
			lgOrder, npOrder := decodeOrder(t, lg.body), decodeOrder(t, np.body)
			if lgOrder.Status != newpath.StatusPaid || npOrder.Status != newpath.StatusPaid {
				t.Fatalf("statuses = %s (legacy), %s (newpath); want paid, paid", lgOrder.Status, npOrder.Status)
			}
			e.setFaults(t, `{"warehouse":{"down":false}}`)
			waitFor(t, 10*time.Second, "newpath's order to be fulfilled", func() bool {
				return decodeOrder(t, send(t, "GET", e.newpathURL+"/orders/"+npOrder.ID, "", nil).body).Status == newpath.StatusFulfilled
			})
			if n := e.downstream.Shipments(npOrder.ID); n != 1 {
				t.Errorf("newpath shipments = %d; want 1", n)
			}
			// Legacy never retries: its order is still paid, never shipped.
			if got := decodeOrder(t, send(t, "GET", e.legacyURL+"/orders/"+lgOrder.ID, "", nil).body); got.Status != newpath.StatusPaid {
				t.Errorf("legacy order after recovery = %s; want paid (flaw 1)", got.Status)
			}
			if n := e.downstream.Shipments(lgOrder.ID); n != 0 {
				t.Errorf("legacy shipments = %d; want 0", n)
			}
			if n := e.downstream.Charges(42); n != 2 {
				t.Errorf("charges = %d; want 2, one per service", n)
			}
		})
		t.Run(string(kind)+"/retried POST", func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, envOptions{kind: kind})
			key := map[string]string{"Idempotency-Key": "retry-1"}
			lg1 := send(t, "POST", e.legacyURL+"/orders", `{"user_id":10,"item_id":"sku-1","quantity":1}`, key)
			lg2 := send(t, "POST", e.legacyURL+"/orders", `{"user_id":10,"item_id":"sku-1","quantity":1}`, key)
			if decodeOrder(t, lg1.body).ID == decodeOrder(t, lg2.body).ID || e.downstream.Charges(10) != 2 {
				t.Errorf("legacy: %s / %s, charges %d; want two orders, charged twice (flaw 2)", lg1.body, lg2.body, e.downstream.Charges(10))
			}
			np1 := send(t, "POST", e.newpathURL+"/orders", `{"user_id":11,"item_id":"sku-1","quantity":1}`, key)
			np2 := send(t, "POST", e.newpathURL+"/orders", `{"user_id":11,"item_id":"sku-1","quantity":1}`, key)
			if np1.status != http.StatusCreated || np2.status != np1.status || np2.body != np1.body {
				t.Errorf("newpath: %d %s / %d %s; want the same answer twice", np1.status, np1.body, np2.status, np2.body)
			}
			if n := e.downstream.Charges(11); n != 1 {
				t.Errorf("newpath charges = %d; want 1", n)
			}
			if orders, _ := e.stores.newpath.ListOrdersByUser(t.Context(), 11); len(orders) != 1 {
				t.Errorf("newpath orders = %d; want 1", len(orders))
			}
		})
	}
}

// TestSlowPaymentStallsNothing is legacy flaw 3 ("a slow payment service
// stalls everything") on newpath: 64 orders with an Idempotency-Key wait
// on a payment service that answers none of them, twice as many as the
// production pool has connections, and a read is served meanwhile. No
// timer decides how slow the payments are: the gate holds every answer
// until the test opens it, and the request timeout is out of the way.
func TestSlowPaymentStallsNothing(t *testing.T) {
	for _, kind := range storeKinds {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			var payments *legacy.Gate
			e := newEnv(t, envOptions{kind: kind, productionPool: true,
				wrapDownstream: func(h http.Handler) http.Handler {
					payments = legacy.NewGate(h, "POST", "/payments")
					return payments
				},
				server: func(o *newpath.ServerOptions) { o.RequestTimeout = 5 * time.Minute }})
			t.Cleanup(payments.Open) // never leave a request hanging
			const orders = 2 * newpath.DefaultMaxConns
			type result struct {
				r   response
				err error
			}
			results := make(chan result, orders)
			for i := range orders {
				go func() {
					body := fmt.Sprintf(`{"user_id":%d,"item_id":"sku-%d","quantity":1}`, 300+i, 1+i%50)
					r, err := trySend(t.Context(), "POST", e.newpathURL+"/orders", body, map[string]string{"Idempotency-Key": fmt.Sprintf("slow-%d", i)})
					results <- result{r, err}
				}()
			}
			waitFor(t, 30*time.Second, fmt.Sprintf("%d charges held by the payment service", orders), func() bool {
				return payments.Held() == orders
			})
			get, err := trySend(t.Context(), "GET", e.newpathURL+"/orders/ord_1", "", nil)
			if err != nil || get.status != http.StatusOK || !strings.Contains(get.body, `"id":"ord_1"`) {
				t.Errorf("GET /orders/ord_1 while %d payments hang = %+v, %v; want 200 with the order", orders, get, err)
			}
			list, err := trySend(t.Context(), "GET", e.newpathURL+"/orders?user_id=1", "", nil)
			if err != nil || list.status != http.StatusOK {
				t.Errorf("GET /orders?user_id=1 while %d payments hang = %+v, %v; want 200", orders, list, err)
			}
			if n := payments.Held(); n != orders {
				t.Fatalf("%d payments held after the reads; want still %d: the reads did not run while every payment hung", n, orders)
			}

			payments.Open()
			for range orders {
				res := <-results
				if res.err != nil || res.r.status != http.StatusCreated {
					t.Errorf("POST after the payments answered = %+v, %v; want 201", res.r, res.err)
				}
			}
			for i := range orders {
				if n := e.downstream.Charges(int64(300 + i)); n != 1 {
					t.Errorf("charges of user %d = %d; want 1", 300+i, n)
				}
			}
			if got := e.counter(t, "neworders_orders_total", "outcome", "created"); got != orders {
				t.Errorf(`neworders_orders_total{outcome="created"} = %v; want %d`, got, orders)
			}
		})
	}
}

// TestDryRun: with X-Strangler-Dry-Run: 1 newpath computes and answers the
// order legacy would, and commits, charges, reserves and sends nothing.
func TestDryRun(t *testing.T) {
	for _, kind := range storeKinds {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, envOptions{kind: kind, tickingClock: true})
			dry := map[string]string{"X-Strangler-Dry-Run": "1", "Idempotency-Key": "k-dry"}
			r := send(t, "POST", e.newpathURL+"/orders", orderBody, dry)
			lg := send(t, "POST", e.legacyURL+"/orders", orderBody, nil)
			if normalise(render(r)) != normalise(render(lg)) {
				t.Errorf("dry run answered\n%s\nlegacy answered\n%s", render(r), render(lg))
			}
			o := decodeOrder(t, r.body)
			if o.PaymentID != newpath.DryRunPaymentID || o.Status != newpath.StatusFulfilled {
				t.Errorf("dry-run order = %+v; want payment id %s, fulfilled", o, newpath.DryRunPaymentID)
			}
			if _, err := e.stores.newpath.GetOrder(t.Context(), o.ID); err == nil {
				t.Errorf("dry-run order %s was stored", o.ID)
			}
			if orders, _ := e.stores.newpath.ListOrdersByUser(t.Context(), 42); len(orders) != 0 {
				t.Errorf("newpath's store has %d orders of user 42; want none", len(orders))
			}
			if events, _ := e.stores.newpath.OrderEvents(t.Context(), o.ID); len(events) != 0 {
				t.Errorf("dry run wrote outbox events %v", events)
			}
			if st, _ := e.stores.newpath.OutboxStats(t.Context()); st.Pending != 0 {
				t.Errorf("outbox pending = %d; want 0", st.Pending)
			}
			if n, err := e.relay.RunOnce(t.Context()); err != nil || n != 0 {
				t.Errorf("relay claimed %d events, %v; want none", n, err)
			}
			// Only legacy's order reached the services.
			if st := e.downstream.Stats(); st.Charges != 1 || st.Reservations != 1 || st.Shipments != 1 || st.Mails != 1 {
				t.Errorf("downstream stats = %+v; want legacy's order only", st)
			}
			if got := e.counter(t, "neworders_orders_total", "outcome", "dry_run"); got != 1 {
				t.Errorf(`orders_total{outcome="dry_run"} = %v; want 1`, got)
			}
			// The key was not used up: the real request places the order.
			real := send(t, "POST", e.newpathURL+"/orders", orderBody, map[string]string{"Idempotency-Key": "k-dry"})
			if real.status != http.StatusCreated || real.header.Get("Idempotent-Replayed") != "" || decodeOrder(t, real.body).PaymentID == newpath.DryRunPaymentID {
				t.Errorf("real POST after a dry run = %d %s; want a new order", real.status, real.body)
			}
			// A dry run of an answered key replays the answer.
			if again := send(t, "POST", e.newpathURL+"/orders", orderBody, dry); again.body != real.body {
				t.Errorf("dry run of an answered key = %s; want the stored %s", again.body, real.body)
			}
			oos := send(t, "POST", e.newpathURL+"/orders", `{"user_id":1,"item_id":"sku-oos","quantity":1}`, map[string]string{"X-Strangler-Dry-Run": "1"})
			if oos.status != http.StatusOK || oos.body != `{"status":"failed","reason":"out_of_stock"}`+"\n" {
				t.Errorf("dry run out of stock = %d %s; want the 200 quirk", oos.status, oos.body)
			}
		})
	}
}

func TestDryRunCancelCancelsNothing(t *testing.T) {
	for _, kind := range storeKinds {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, envOptions{kind: kind})
			dry := map[string]string{"X-Strangler-Dry-Run": "1"}
			// ord_7 is a seeded paid order: cancellable.
			r := send(t, "POST", e.newpathURL+"/orders/ord_7/cancel", "", dry)
			if r.status != http.StatusOK || decodeOrder(t, r.body).Status != newpath.StatusCancelled {
				t.Errorf("dry-run cancel = %d %s; want 200 with the order cancelled", r.status, r.body)
			}
			if o, err := e.stores.newpath.GetOrder(t.Context(), "ord_7"); err != nil || o.Status != newpath.StatusPaid {
				t.Errorf("after a dry-run cancel ord_7 is %+v, %v; want still paid", o, err)
			}
			for path, want := range map[string]int{"/orders/ord_1/cancel": http.StatusConflict, "/orders/ord_404/cancel": http.StatusNotFound} {
				if r := send(t, "POST", e.newpathURL+path, "", dry); r.status != want {
					t.Errorf("dry-run POST %s = %d %s; want %d", path, r.status, r.body, want)
				}
			}
		})
	}
}

// TestDemoDivergenceRenamesCancelledOnGetOnly: with DemoDivergence, GET
// /orders/{id} of a cancelled order says "canceled"; other orders, lists
// and the cancel answer itself are the contract's.
func TestDemoDivergenceRenamesCancelledOnGetOnly(t *testing.T) {
	e := newEnv(t, envOptions{shared: true, server: func(o *newpath.ServerOptions) { o.DemoDivergence = true }})
	if r := send(t, "POST", e.newpathURL+"/orders/ord_7/cancel", "", nil); r.status != http.StatusOK || decodeOrder(t, r.body).Status != newpath.StatusCancelled {
		t.Fatalf("cancel = %d %s; want 200 cancelled", r.status, r.body)
	}
	for path, want := range map[string]string{"/orders/ord_7": `"status":"canceled"`, "/orders/ord_6": `"status":"fulfilled"`} {
		if r := send(t, "GET", e.newpathURL+path, "", nil); r.status != http.StatusOK || !strings.Contains(r.body, want) {
			t.Errorf("GET %s = %d %s; want %s", path, r.status, r.body, want)
		}
	}
	if r := send(t, "GET", e.legacyURL+"/orders/ord_7", "", nil); !strings.Contains(r.body, `"status":"cancelled"`) {
		t.Errorf("legacy GET /orders/ord_7 = %s; want cancelled", r.body)
	}
}

// TestSharedStore puts legacy and newpath on one store, as production
// (one database) and strangler demo (one memory store) do: orders placed
// by either read back identically from both, and their ids never collide.
func TestSharedStore(t *testing.T) {
	for _, kind := range storeKinds {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, envOptions{kind: kind, shared: true})
			seen := map[string]bool{}
			for i := range 6 {
				base := e.legacyURL
				if i%2 == 1 {
					base = e.newpathURL
				}
				r := send(t, "POST", base+"/orders", `{"user_id":55,"item_id":"sku-2","quantity":1}`, nil)
				if r.status != http.StatusCreated {
					t.Fatalf("POST via %s = %d %s", base, r.status, r.body)
				}
				id := decodeOrder(t, r.body).ID
				if seen[id] {
					t.Errorf("id %s handed out twice", id)
				}
				seen[id] = true
				for _, reader := range []string{e.legacyURL, e.newpathURL} {
					if got := send(t, "GET", reader+"/orders/"+id, "", nil); got.body != r.body {
						t.Errorf("GET %s from %s = %s; want %s", id, reader, got.body, r.body)
					}
				}
			}
			lg := send(t, "GET", e.legacyURL+"/orders?user_id=55", "", nil)
			np := send(t, "GET", e.newpathURL+"/orders?user_id=55", "", nil)
			if lg.body != np.body || strings.Count(np.body, `"id":`) != 6 {
				t.Errorf("listings differ or miss orders:\nlegacy  %s\nnewpath %s", lg.body, np.body)
			}
			// A cancel through one is seen by the other.
			if r := send(t, "POST", e.newpathURL+"/orders/ord_7/cancel", "", nil); r.status != http.StatusOK {
				t.Fatalf("cancel via newpath = %d %s", r.status, r.body)
			}
			if r := send(t, "POST", e.legacyURL+"/orders/ord_7/cancel", "", nil); r.status != http.StatusConflict {
				t.Errorf("second cancel via legacy = %d %s; want 409", r.status, r.body)
			}
		})
	}
}

// TestRequestLogs: one JSON line per request, with the client's
// X-Request-Id (or a generated one).
func TestRequestLogs(t *testing.T) {
	e := newEnv(t, envOptions{kind: memoryKind, faults: warehouseDown})
	send(t, "POST", e.newpathURL+"/orders", orderBody, map[string]string{"X-Request-Id": "req-abc-1"})
	send(t, "GET", e.newpathURL+"/orders/ord_1", "", nil)
	var sawAccess, sawFailure, sawGenerated bool
	for line := range strings.Lines(e.logs.String()) {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line is not JSON: %q", line)
		}
		switch {
		case rec["msg"] == "request" && rec["request_id"] == "req-abc-1":
			sawAccess = rec["status"] == float64(201) && rec["route"] == "POST /orders"
		case rec["msg"] == "request" && rec["path"] == "/orders/ord_1":
			id, _ := rec["request_id"].(string)
			sawGenerated = len(id) == 16
		case rec["msg"] == "outbox delivery failed; will retry":
			sawFailure = rec["order_id"] != ""
		}
	}
	if !sawAccess || !sawFailure || !sawGenerated {
		t.Errorf("access line with request_id %v, delivery failure %v, generated request_id %v; want all:\n%s", sawAccess, sawFailure, sawGenerated, e.logs.String())
	}
}

// TestMetricsExportedAtZero: every known series exists before traffic.
func TestMetricsExportedAtZero(t *testing.T) {
	e := newEnv(t, envOptions{kind: memoryKind})
	for _, outcome := range []string{"created", "replayed", "out_of_stock", "rejected", "failed", "dry_run"} {
		if got := e.counter(t, "neworders_orders_total", "outcome", outcome); got != 0 {
			t.Errorf("orders_total{%s} = %v", outcome, got)
		}
	}
	for _, result := range []string{"delivered", "failed", "dead", "skipped"} {
		if got := e.counter(t, "neworders_outbox_deliveries_total", "result", result); got != 0 {
			t.Errorf("deliveries_total{%s} = %v", result, got)
		}
	}
	for _, table := range []string{"idempotency_keys", "outbox_events"} {
		if got := e.counter(t, "neworders_pruned_rows_total", "table", table); got != 0 {
			t.Errorf("pruned_rows_total{%s} = %v", table, got)
		}
	}
	for _, g := range []string{"neworders_idempotent_replays_total", "neworders_outbox_pending_events", "neworders_outbox_oldest_pending_age_seconds", "neworders_outbox_dead_events"} {
		if got := e.counter(t, g); got != 0 {
			t.Errorf("%s = %v; want 0", g, got)
		}
	}
	send(t, "POST", e.newpathURL+"/orders", `{"user_id":1}`, nil)
	send(t, "POST", e.newpathURL+"/orders", `{"user_id":1,"item_id":"sku-oos","quantity":1}`, nil)
	if got := e.counter(t, "neworders_orders_total", "outcome", "rejected"); got != 1 {
		t.Errorf("rejected = %v; want 1", got)
	}
	if got := e.counter(t, "neworders_orders_total", "outcome", "out_of_stock"); got != 1 {
		t.Errorf("out_of_stock = %v; want 1", got)
	}
}

// TestImportsNothingOfThisProject holds the newpath to its room (SPEC.md
// §1): the proxy talks to it over HTTP, only the commands link it.
func TestImportsNothingOfThisProject(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		parsed, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range parsed.Imports {
			if strings.Contains(imp.Path.Value, "github.com/strangler-proxy/strangler") {
				t.Errorf("%s imports %s", f, imp.Path.Value)
			}
		}
	}
}
