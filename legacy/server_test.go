package legacy

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

const orderBody = `{"user_id":42,"item_id":"sku-3","quantity":2}`

func TestCreateGetListCancel(t *testing.T) {
	env := newTestEnv(t)

	created := send(t, "POST", env.url+"/orders", orderBody, nil)
	if created.status != http.StatusCreated {
		t.Fatalf("POST /orders status = %d; want 201 (body %s)", created.status, created.body)
	}
	if got := created.header.Get("Content-Type"); got != "application/json" {
		t.Errorf("Content-Type = %q; want %q", got, "application/json")
	}
	order := decodeJSON[Order](t, created.body)
	want := Order{UserID: 42, ItemID: "sku-3", Quantity: 2, UnitPriceCents: 399, TotalCents: 798, Status: StatusFulfilled}
	if order.ID == "" || order.PaymentID == "" || order.CreatedAt.IsZero() || order.UpdatedAt.Before(order.CreatedAt) {
		t.Errorf("generated fields missing or inconsistent: %+v", order)
	}
	got := order
	got.ID, got.PaymentID, got.CreatedAt, got.UpdatedAt = "", "", time.Time{}, time.Time{}
	if got != want {
		t.Errorf("created order = %+v; want %+v", got, want)
	}
	if n := env.downstream.Shipments(order.ID); n != 1 {
		t.Errorf("warehouse shipments for %s = %d; want 1", order.ID, n)
	}
	if n := env.downstream.Mails(order.ID); n != 1 {
		t.Errorf("mails for %s = %d; want 1", order.ID, n)
	}
	if n, _ := env.downstream.Available("sku-3"); n != SeedItemStock-2 {
		t.Errorf("sku-3 stock = %d; want %d", n, SeedItemStock-2)
	}

	fetched := send(t, "GET", env.url+"/orders/"+order.ID, "", nil)
	if fetched.status != http.StatusOK || fetched.body != created.body {
		t.Errorf("GET /orders/%s = %d %s; want 200 %s", order.ID, fetched.status, fetched.body, created.body)
	}

	second := decodeJSON[Order](t, send(t, "POST", env.url+"/orders", `{"user_id":42,"item_id":"sku-1","quantity":1}`, nil).body)
	list := send(t, "GET", env.url+"/orders?user_id=42", "", nil)
	if list.status != http.StatusOK {
		t.Fatalf("GET /orders?user_id=42 status = %d; want 200", list.status)
	}
	orders := decodeJSON[orderList](t, list.body).Orders
	if len(orders) != 2 || orders[0].ID != order.ID || orders[1].ID != second.ID {
		t.Errorf("list = %+v; want [%s %s] oldest first", orders, order.ID, second.ID)
	}

	// Only paid orders are cancellable: a fulfilled one answers 409.
	if r := send(t, "POST", env.url+"/orders/"+order.ID+"/cancel", "", nil); r.status != http.StatusConflict || r.body != `{"error":"order is not cancellable"}`+"\n" {
		t.Errorf("cancel fulfilled = %d %s; want 409 not cancellable", r.status, r.body)
	}
	cancelled := send(t, "POST", env.url+"/orders/ord_7/cancel", "", nil)
	if cancelled.status != http.StatusOK {
		t.Fatalf("cancel ord_7 status = %d; want 200 (body %s)", cancelled.status, cancelled.body)
	}
	if o := decodeJSON[Order](t, cancelled.body); o.Status != StatusCancelled || !o.UpdatedAt.After(o.CreatedAt) {
		t.Errorf("cancelled order = %+v; want status cancelled and a later updated_at", o)
	}
	if r := send(t, "POST", env.url+"/orders/ord_7/cancel", "", nil); r.status != http.StatusConflict {
		t.Errorf("second cancel status = %d; want 409", r.status)
	}
	if r := send(t, "POST", env.url+"/orders/ord_nope/cancel", "", nil); r.status != http.StatusNotFound || r.body != `{"error":"order not found"}`+"\n" {
		t.Errorf("cancel unknown = %d %s; want 404 order not found", r.status, r.body)
	}
}

func TestCreateOrderRejects(t *testing.T) {
	tests := []struct {
		name       string
		body       string
		wantStatus int
		wantBody   string
	}{
		{"out of stock is a 200 quirk", `{"user_id":1,"item_id":"sku-oos","quantity":1}`, 200, `{"status":"failed","reason":"out_of_stock"}`},
		{"largest quantity", `{"user_id":1,"item_id":"sku-1","quantity":100}`, 201, ""},
		{"invalid JSON", `{"user_id":1,`, 400, `{"error":"invalid JSON body"}`},
		{"empty body", ``, 400, `{"error":"invalid JSON body"}`},
		{"array body", `[1,2]`, 400, `{"error":"invalid JSON body"}`},
		{"null body", `null`, 400, `{"error":"invalid JSON body"}`},
		{"trailing data", `{"user_id":1,"item_id":"sku-1","quantity":1} x`, 400, `{"error":"invalid JSON body"}`},
		{"missing user_id", `{"item_id":"sku-1","quantity":1}`, 400, `{"error":"user_id must be a positive integer"}`},
		{"string user_id", `{"user_id":"1","item_id":"sku-1","quantity":1}`, 400, `{"error":"user_id must be a positive integer"}`},
		{"fractional user_id", `{"user_id":1.5,"item_id":"sku-1","quantity":1}`, 400, `{"error":"user_id must be a positive integer"}`},
		{"zero user_id", `{"user_id":0,"item_id":"sku-1","quantity":1}`, 400, `{"error":"user_id must be a positive integer"}`},
		{"upper-case key is not user_id", `{"USER_ID":1,"item_id":"sku-1","quantity":1}`, 400, `{"error":"user_id must be a positive integer"}`},
		{"missing item_id", `{"user_id":1,"quantity":1}`, 400, `{"error":"item_id must be a non-empty string"}`},
		{"empty item_id", `{"user_id":1,"item_id":"","quantity":1}`, 400, `{"error":"item_id must be a non-empty string"}`},
		{"numeric item_id", `{"user_id":1,"item_id":7,"quantity":1}`, 400, `{"error":"item_id must be a non-empty string"}`},
		{"missing quantity", `{"user_id":1,"item_id":"sku-1"}`, 400, `{"error":"quantity must be an integer between 1 and 100"}`},
		{"zero quantity", `{"user_id":1,"item_id":"sku-1","quantity":0}`, 400, `{"error":"quantity must be an integer between 1 and 100"}`},
		{"quantity over the limit", `{"user_id":1,"item_id":"sku-1","quantity":101}`, 400, `{"error":"quantity must be an integer between 1 and 100"}`},
		{"null quantity", `{"user_id":1,"item_id":"sku-1","quantity":null}`, 400, `{"error":"quantity must be an integer between 1 and 100"}`},
		{"first bad field wins", `{"user_id":-1,"item_id":"","quantity":0}`, 400, `{"error":"user_id must be a positive integer"}`},
		{"unknown fields are ignored", `{"user_id":1,"item_id":"sku-1","quantity":1,"coupon":"X"}`, 201, ""},
		{"unknown user", `{"user_id":1001,"item_id":"sku-1","quantity":1}`, 404, `{"error":"user not found"}`},
		{"unknown item", `{"user_id":1,"item_id":"sku-999","quantity":1}`, 404, `{"error":"item not found"}`},
		{"item id needing escaping", `{"user_id":1,"item_id":"a/b?c","quantity":1}`, 404, `{"error":"item not found"}`},
		{"body too large", `{"user_id":1,"item_id":"` + strings.Repeat("x", maxBodyBytes) + `","quantity":1}`, 413, `{"error":"request body too large"}`},
	}
	env := newTestEnv(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := env.downstream.Stats().Charges
			r := send(t, "POST", env.url+"/orders", tt.body, nil)
			if r.status != tt.wantStatus {
				t.Fatalf("status = %d; want %d (body %s)", r.status, tt.wantStatus, r.body)
			}
			if tt.wantBody != "" && r.body != tt.wantBody+"\n" {
				t.Errorf("body = %q; want %q", r.body, tt.wantBody+"\n")
			}
			if tt.wantStatus != http.StatusCreated {
				if after := env.downstream.Stats().Charges; after != before {
					t.Errorf("charges went from %d to %d; a rejected order must not charge", before, after)
				}
			}
		})
	}
}

func TestReadEndpoints(t *testing.T) {
	tests := []struct {
		name       string
		method     string
		path       string
		wantStatus int
		wantBody   string
		wantAllow  string
	}{
		{"seeded order", "GET", "/orders/ord_1", 200, `{"id":"ord_1","user_id":1,"item_id":"sku-1","quantity":1,"unit_price_cents":199,"total_cents":199,"status":"fulfilled","payment_id":"pay_1","created_at":"2024-01-01T09:00:00.000Z","updated_at":"2024-01-01T09:00:00.000Z"}`, ""},
		{"unknown order", "GET", "/orders/ord_0", 404, `{"error":"order not found"}`, ""},
		{"list without orders", "GET", "/orders?user_id=999", 200, `{"orders":[]}`, ""},
		{"list of an unknown user", "GET", "/orders?user_id=5000", 200, `{"orders":[]}`, ""},
		{"list without user_id", "GET", "/orders", 400, `{"error":"user_id query parameter must be a positive integer"}`, ""},
		{"list with a bad user_id", "GET", "/orders?user_id=abc", 400, `{"error":"user_id query parameter must be a positive integer"}`, ""},
		{"health", "GET", "/healthz", 200, `{"status":"ok"}`, ""},
		{"unknown path", "GET", "/nope", 404, `{"error":"not found"}`, ""},
		{"trailing slash", "GET", "/orders/", 404, `{"error":"not found"}`, ""},
		{"DELETE an order", "DELETE", "/orders/ord_1", 405, `{"error":"method not allowed"}`, "GET, HEAD"},
		{"PUT the collection", "PUT", "/orders", 405, `{"error":"method not allowed"}`, "GET, HEAD, POST"},
		{"GET a cancel", "GET", "/orders/ord_1/cancel", 405, `{"error":"method not allowed"}`, "POST"},
		{"POST health", "POST", "/healthz", 405, `{"error":"method not allowed"}`, "GET, HEAD"},
	}
	env := newTestEnv(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := send(t, tt.method, env.url+tt.path, "", nil)
			if r.status != tt.wantStatus || r.body != tt.wantBody+"\n" {
				t.Errorf("%s %s = %d %q; want %d %q", tt.method, tt.path, r.status, r.body, tt.wantStatus, tt.wantBody+"\n")
			}
			if got := r.header.Get("Allow"); got != tt.wantAllow {
				t.Errorf("Allow = %q; want %q", got, tt.wantAllow)
			}
		})
	}
}

// TestListOrder checks the documented order (created_at, then id) even when
// ids do not sort like their creation.
func TestListOrder(t *testing.T) {
	env := newTestEnv(t)
	var ids []string
	for range 11 {
		o := decodeJSON[Order](t, send(t, "POST", env.url+"/orders", `{"user_id":77,"item_id":"sku-1","quantity":1}`, nil).body)
		ids = append(ids, o.ID)
	}
	orders := decodeJSON[orderList](t, send(t, "GET", env.url+"/orders?user_id=77", "", nil).body).Orders
	if len(orders) != len(ids) {
		t.Fatalf("listed %d orders; want %d", len(orders), len(ids))
	}
	for i, o := range orders {
		if o.ID != ids[i] {
			t.Errorf("orders[%d] = %s; want %s (creation order)", i, o.ID, ids[i])
		}
	}
}

// TestWarehouseFailureLeavesOrderPaid reproduces the first legacy flaw: the
// warehouse is down after the card was charged, the client still gets 201,
// and the order stays paid after the warehouse comes back, because legacy
// never retries.
func TestWarehouseFailureLeavesOrderPaid(t *testing.T) {
	env := newTestEnv(t)
	if r := send(t, "PUT", env.downstreamURL+"/_control", `{"warehouse":{"down":true}}`, nil); r.status != http.StatusOK {
		t.Fatalf("PUT /_control = %d %s", r.status, r.body)
	}
	r := send(t, "POST", env.url+"/orders", orderBody, nil)
	if r.status != http.StatusCreated {
		t.Fatalf("POST /orders status = %d; want 201 (body %s)", r.status, r.body)
	}
	order := decodeJSON[Order](t, r.body)
	if order.Status != StatusPaid {
		t.Errorf("status = %q; want %q", order.Status, StatusPaid)
	}
	if n := env.downstream.Charges(42); n != 1 {
		t.Errorf("charges = %d; want 1", n)
	}
	if n := env.downstream.Mails(order.ID); n != 1 {
		t.Errorf("mails = %d; want 1 (legacy confirms an order it never ships)", n)
	}

	if r := send(t, "PUT", env.downstreamURL+"/_control", `{"warehouse":{"down":false}}`, nil); r.status != http.StatusOK {
		t.Fatalf("PUT /_control = %d %s", r.status, r.body)
	}
	// A later order ships again: the warehouse is really back.
	if later := decodeJSON[Order](t, send(t, "POST", env.url+"/orders", orderBody, nil).body); later.Status != StatusFulfilled {
		t.Fatalf("order after recovery status = %q; want fulfilled", later.Status)
	}
	again := decodeJSON[Order](t, send(t, "GET", env.url+"/orders/"+order.ID, "", nil).body)
	if again.Status != StatusPaid {
		t.Errorf("after recovery status = %q; want %q (legacy never retries)", again.Status, StatusPaid)
	}
	if n := env.downstream.Shipments(order.ID); n != 0 {
		t.Errorf("warehouse shipments for %s = %d; want 0", order.ID, n)
	}
}

// TestRetriedPostChargesTwice reproduces the second flaw: the same POST with
// the same Idempotency-Key, as a client retrying after a timeout sends it,
// creates two orders and charges twice.
func TestRetriedPostChargesTwice(t *testing.T) {
	env := newTestEnv(t)
	header := map[string]string{"Idempotency-Key": "retry-1"}
	first := send(t, "POST", env.url+"/orders", orderBody, header)
	second := send(t, "POST", env.url+"/orders", orderBody, header)
	if first.status != http.StatusCreated || second.status != http.StatusCreated {
		t.Fatalf("statuses = %d, %d; want 201, 201", first.status, second.status)
	}
	a, b := decodeJSON[Order](t, first.body), decodeJSON[Order](t, second.body)
	if a.ID == b.ID || a.PaymentID == b.PaymentID {
		t.Errorf("orders %s/%s and %s/%s; want two distinct orders and payments", a.ID, a.PaymentID, b.ID, b.PaymentID)
	}
	if n := env.downstream.Charges(42); n != 2 {
		t.Errorf("charges = %d; want 2", n)
	}
}

func TestDownstreamFailures(t *testing.T) {
	tests := []struct {
		name        string
		faults      Faults
		wantStatus  int
		wantBody    string
		wantCharges int
		wantStatus2 Status // order status when the chain got to a 201
	}{
		{"inventory down", Faults{Inventory: ServiceFaults{Down: true}}, 502, `{"error":"inventory unavailable"}`, 0, ""},
		{"inventory erroring", Faults{Inventory: ServiceFaults{ErrorRate: 1}}, 502, `{"error":"inventory unavailable"}`, 0, ""},
		{"payment down", Faults{Payments: ServiceFaults{Down: true}}, 502, `{"error":"payment failed"}`, 0, ""},
		{"mail down", Faults{Mail: ServiceFaults{Down: true}}, 201, "", 1, StatusFulfilled},
		{"warehouse erroring", Faults{Warehouse: ServiceFaults{ErrorRate: 1}}, 201, "", 1, StatusPaid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := newTestEnv(t, func(_ *Options, do *DownstreamOptions) { do.Faults = tt.faults })
			r := send(t, "POST", env.url+"/orders", orderBody, nil)
			if r.status != tt.wantStatus {
				t.Fatalf("status = %d; want %d (body %s)", r.status, tt.wantStatus, r.body)
			}
			if tt.wantBody != "" && r.body != tt.wantBody+"\n" {
				t.Errorf("body = %q; want %q", r.body, tt.wantBody+"\n")
			}
			if tt.wantStatus2 != "" {
				if o := decodeJSON[Order](t, r.body); o.Status != tt.wantStatus2 {
					t.Errorf("order status = %q; want %q", o.Status, tt.wantStatus2)
				}
			}
			if n := env.downstream.Charges(42); n != tt.wantCharges {
				t.Errorf("charges = %d; want %d", n, tt.wantCharges)
			}
			orders, err := env.store.ListOrdersByUser(t.Context(), 42)
			if err != nil {
				t.Fatal(err)
			}
			if wantOrders := tt.wantCharges; len(orders) != wantOrders {
				t.Errorf("stored orders = %d; want %d", len(orders), wantOrders)
			}
		})
	}
}

// TestSlowPaymentStallsEverything reproduces the third flaw with a one-slot
// worker pool: while a POST waits on the payment service, a GET of another
// order cannot even start.
func TestSlowPaymentStallsEverything(t *testing.T) {
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	var releaseOnce sync.Once
	letGo := func() { releaseOnce.Do(func() { close(release) }) }
	ds, err := NewDownstream(DownstreamOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// A payment service that hangs until the test lets it go: the
	// test decides how slow it is, not a timer.
	hanging := httptestServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/payments" {
			entered <- struct{}{}
			<-release
		}
		ds.ServeHTTP(w, r)
	})
	env := newTestEnv(t, func(o *Options, _ *DownstreamOptions) {
		o.DownstreamURL = hanging
		o.Workers = 1
	})
	// Registered after the servers, so that it runs before their Close,
	// which would otherwise wait forever on the hung handler of a failed test.
	t.Cleanup(letGo)

	// The goroutine only reports: t.Fatal belongs to the test goroutine.
	posted := make(chan int, 1)
	go func() {
		resp, err := http.Post(env.url+"/orders", "application/json", strings.NewReader(orderBody))
		if err != nil {
			posted <- 0
			return
		}
		resp.Body.Close()
		posted <- resp.StatusCode
	}()
	select {
	case <-entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the POST never reached the payment service")
	}

	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", env.url+"/orders/ord_1", nil)
	resp, err := http.DefaultClient.Do(req)
	if err == nil {
		resp.Body.Close()
		t.Fatalf("GET answered %d while the only worker waits on payment; want it stalled", resp.StatusCode)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("GET error = %v; want a deadline", err)
	}

	letGo()
	if status := <-posted; status != http.StatusCreated {
		t.Errorf("stalled POST status = %d; want 201", status)
	}
	if r := send(t, "GET", env.url+"/orders/ord_1", "", nil); r.status != http.StatusOK {
		t.Errorf("GET after the payment returned = %d; want 200", r.status)
	}
}

// TestPaymentLatencySlowsTheChain checks that the latency flag reaches the
// client: legacy waits for the payment service inside the request.
func TestPaymentLatencySlowsTheChain(t *testing.T) {
	const latency = 150 * time.Millisecond
	env := newTestEnv(t, func(_ *Options, do *DownstreamOptions) { do.Faults.Payments.Latency = latency })
	start := time.Now()
	r := send(t, "POST", env.url+"/orders", orderBody, nil)
	if elapsed := time.Since(start); elapsed < latency {
		t.Errorf("POST took %s; want at least the payment latency %s", elapsed, latency)
	}
	if r.status != http.StatusCreated {
		t.Errorf("status = %d; want 201", r.status)
	}
}

func TestServerLatency(t *testing.T) {
	const latency = 100 * time.Millisecond
	env := newTestEnv(t, func(o *Options, _ *DownstreamOptions) { o.Latency = latency })
	start := time.Now()
	send(t, "GET", env.url+"/orders/ord_1", "", nil)
	if elapsed := time.Since(start); elapsed < latency {
		t.Errorf("GET took %s; want at least %s", elapsed, latency)
	}
}

func TestRequestIDReachesDownstream(t *testing.T) {
	ds, err := NewDownstream(DownstreamOptions{})
	if err != nil {
		t.Fatal(err)
	}
	seen := make(chan string, 16)
	recording := httptestServer(t, func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Method + " " + r.URL.Path + " " + r.Header.Get("X-Request-Id") + " key=" + r.Header.Get("Idempotency-Key") + " event=" + r.Header.Get("X-Event-Id")
		ds.ServeHTTP(w, r)
	})
	env := newTestEnv(t, func(o *Options, _ *DownstreamOptions) { o.DownstreamURL = recording })
	send(t, "POST", env.url+"/orders", orderBody, map[string]string{"X-Request-Id": "req-7", "Idempotency-Key": "k"})
	close(seen)
	var got []string
	for s := range seen {
		got = append(got, s)
	}
	want := []string{
		"GET /inventory/sku-3 req-7 key= event=",
		"POST /inventory/sku-3/reserve req-7 key= event=",
		"POST /payments req-7 key= event=",
		"POST /warehouse/shipments req-7 key= event=",
		"POST /mail/send req-7 key= event=",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("downstream calls:\n%s\nwant (in this order, no idempotency key, no event id):\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestNewServerValidates(t *testing.T) {
	store, err := NewMemoryStore(Seed{})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		opts Options
		want string
	}{
		{"no store", Options{DownstreamURL: "http://127.0.0.1:1"}, "a Store is required"},
		{"no downstream", Options{Store: store}, "want an absolute http or https URL"},
		{"relative downstream", Options{Store: store, DownstreamURL: "/x"}, "want an absolute http or https URL"},
		{"negative latency", Options{Store: store, DownstreamURL: "http://h", Latency: -1}, "latency must not be negative"},
		{"negative workers", Options{Store: store, DownstreamURL: "http://h", Workers: -1}, "workers must not be negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewServer(tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("NewServer error = %v; want one containing %q", err, tt.want)
			}
		})
	}
}
