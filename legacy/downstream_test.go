package legacy

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// newDownstreamServer serves a Downstream built from opts on a real socket.
func newDownstreamServer(t *testing.T, opts DownstreamOptions) (*Downstream, string) {
	t.Helper()
	d, err := NewDownstream(opts)
	if err != nil {
		t.Fatalf("NewDownstream: %v", err)
	}
	srv := httptest.NewServer(d)
	t.Cleanup(srv.Close)
	return d, srv.URL
}

func TestInventory(t *testing.T) {
	d, url := newDownstreamServer(t, DownstreamOptions{Catalogue: []Item{{ID: "sku-a", PriceCents: 250, Available: 3}}})
	tests := []struct {
		name       string
		method     string
		path       string
		body       string
		key        string
		wantStatus int
		wantBody   string
	}{
		{"read", "GET", "/inventory/sku-a", "", "", 200, `{"item_id":"sku-a","available":3,"price_cents":250}`},
		{"read unknown", "GET", "/inventory/sku-z", "", "", 404, `{"error":"item not found"}`},
		{"reserve", "POST", "/inventory/sku-a/reserve", `{"quantity":2}`, "", 200, `{"item_id":"sku-a","reserved":2,"available":1}`},
		{"reserve more than left", "POST", "/inventory/sku-a/reserve", `{"quantity":2}`, "", 409, `{"error":"insufficient stock"}`},
		{"reserve the last one with a key", "POST", "/inventory/sku-a/reserve", `{"quantity":1}`, "r1", 200, `{"item_id":"sku-a","reserved":1,"available":0}`},
		{"replayed reservation", "POST", "/inventory/sku-a/reserve", `{"quantity":1}`, "r1", 200, `{"item_id":"sku-a","reserved":1,"available":0}`},
		{"key reused for another quantity", "POST", "/inventory/sku-a/reserve", `{"quantity":3}`, "r1", 422, `{"error":"idempotency key reused with a different request"}`},
		{"reserve unknown", "POST", "/inventory/sku-z/reserve", `{"quantity":1}`, "", 404, `{"error":"item not found"}`},
		{"reserve nothing", "POST", "/inventory/sku-a/reserve", `{"quantity":0}`, "", 400, `{"error":"quantity must be a positive integer"}`},
		{"reserve garbage", "POST", "/inventory/sku-a/reserve", `quantity=1`, "", 400, `{"error":"invalid JSON body"}`},
		{"wrong method", "DELETE", "/inventory/sku-a", "", "", 405, `{"error":"method not allowed"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			header := map[string]string{}
			if tt.key != "" {
				header[IdempotencyKeyHeader] = tt.key
			}
			r := send(t, tt.method, url+tt.path, tt.body, header)
			if r.status != tt.wantStatus || r.body != tt.wantBody+"\n" {
				t.Errorf("%s %s = %d %q; want %d %q", tt.method, tt.path, r.status, r.body, tt.wantStatus, tt.wantBody+"\n")
			}
		})
	}
	if n, ok := d.Available("sku-a"); n != 0 || !ok {
		t.Errorf("Available(sku-a) = %d, %t; want 0, true", n, ok)
	}
	if got := d.Stats(); got.Reservations != 2 || got.IdempotentReplays != 1 {
		t.Errorf("stats = %+v; want 2 reservations and 1 replay", got)
	}
}

func TestPaymentIdempotency(t *testing.T) {
	d, url := newDownstreamServer(t, DownstreamOptions{})
	charge := func(key, body string) response {
		t.Helper()
		header := map[string]string{}
		if key != "" {
			header[IdempotencyKeyHeader] = key
		}
		return send(t, "POST", url+"/payments", body, header)
	}

	first := charge("k1", `{"order_id":"ord_9","user_id":7,"amount_cents":500}`)
	if first.status != http.StatusCreated || first.body != `{"payment_id":"pay_1001","order_id":"ord_9","user_id":7,"amount_cents":500}`+"\n" {
		t.Fatalf("first charge = %d %s", first.status, first.body)
	}
	// Same key, same request, even with other whitespace: the stored answer.
	replay := charge("k1", `{ "amount_cents": 500, "user_id": 7, "order_id": "ord_9" }`)
	if replay.status != first.status || replay.body != first.body || replay.header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("replay = %d %s (replayed %q); want the first answer again", replay.status, replay.body, replay.header.Get("Idempotent-Replayed"))
	}
	if n := d.Charges(7); n != 1 {
		t.Errorf("charges with one key = %d; want 1", n)
	}
	if r := charge("k1", `{"order_id":"ord_9","user_id":7,"amount_cents":501}`); r.status != http.StatusUnprocessableEntity {
		t.Errorf("key reused with another amount = %d %s; want 422", r.status, r.body)
	}
	// Without a key every call charges: what legacy does.
	charge("", `{"user_id":7,"amount_cents":500}`)
	charge("", `{"user_id":7,"amount_cents":500}`)
	if n := d.Charges(7); n != 3 {
		t.Errorf("charges after two keyless calls = %d; want 3", n)
	}

	for _, bad := range []string{`{"amount_cents":5}`, `{"user_id":7}`, `{"user_id":7,"amount_cents":-5}`, `[]`} {
		if r := charge("", bad); r.status != http.StatusBadRequest {
			t.Errorf("charge %s = %d; want 400", bad, r.status)
		}
	}
}

// TestConcurrentPaymentsWithOneKey checks that a key charges once even when
// the retries race each other, which is how the rebuilt service retries.
func TestConcurrentPaymentsWithOneKey(t *testing.T) {
	d, url := newDownstreamServer(t, DownstreamOptions{})
	const callers = 16
	ids := make(chan string, callers)
	var wg sync.WaitGroup
	for range callers {
		wg.Go(func() {
			req, _ := http.NewRequest("POST", url+"/payments", strings.NewReader(`{"user_id":3,"amount_cents":100}`))
			req.Header.Set(IdempotencyKeyHeader, "race")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				ids <- "error: " + err.Error()
				return
			}
			defer resp.Body.Close()
			var p paymentResponse
			if err := jsonDecode(resp, &p); err != nil {
				ids <- "error: " + err.Error()
				return
			}
			ids <- p.PaymentID
		})
	}
	wg.Wait()
	close(ids)
	seen := map[string]int{}
	for id := range ids {
		seen[id]++
	}
	if len(seen) != 1 {
		t.Errorf("payment ids = %v; want one id for all callers", seen)
	}
	if n := d.Charges(3); n != 1 {
		t.Errorf("charges = %d; want 1", n)
	}
}

func TestEventDeduplication(t *testing.T) {
	tests := []struct {
		name       string
		path       string
		body       string
		firstCode  int
		count      func(*Downstream) int
		statsCount func(DownstreamStats) int
	}{
		{
			name:       "warehouse",
			path:       "/warehouse/shipments",
			body:       `{"order_id":"ord_5","user_id":3,"item_id":"sku-5","quantity":1}`,
			firstCode:  http.StatusCreated,
			count:      func(d *Downstream) int { return d.Shipments("ord_5") },
			statsCount: func(s DownstreamStats) int { return s.Shipments },
		},
		{
			name:       "mail",
			path:       "/mail/send",
			body:       `{"to":"user-3@example.com","template":"order_confirmation","order_id":"ord_5"}`,
			firstCode:  http.StatusAccepted,
			count:      func(d *Downstream) int { return d.Mails("ord_5") },
			statsCount: func(s DownstreamStats) int { return s.Mails },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, url := newDownstreamServer(t, DownstreamOptions{})
			event := map[string]string{EventIDHeader: "evt-1"}
			first := send(t, "POST", url+tt.path, tt.body, event)
			again := send(t, "POST", url+tt.path, tt.body, event)
			if first.status != tt.firstCode {
				t.Fatalf("first delivery = %d %s; want %d", first.status, first.body, tt.firstCode)
			}
			if again.status != http.StatusOK || again.body != first.body {
				t.Errorf("repeated event = %d %s; want 200 %s", again.status, again.body, first.body)
			}
			if n := tt.count(d); n != 1 {
				t.Errorf("deliveries with one event id = %d; want 1", n)
			}
			// Without an event id nothing can be deduplicated.
			send(t, "POST", url+tt.path, tt.body, nil)
			send(t, "POST", url+tt.path, tt.body, nil)
			if n := tt.count(d); n != 3 {
				t.Errorf("deliveries after two calls without event id = %d; want 3", n)
			}
			stats := d.Stats()
			if got := tt.statsCount(stats); got != 3 || stats.DuplicateEvents != 1 {
				t.Errorf("stats = %+v; want 3 deliveries and 1 duplicate", stats)
			}
		})
	}
}

// TestFailedDeliveryIsNotDeduplicated makes sure an event refused during an
// outage is delivered when retried: only successes are remembered.
func TestFailedDeliveryIsNotDeduplicated(t *testing.T) {
	d, url := newDownstreamServer(t, DownstreamOptions{Faults: Faults{Warehouse: ServiceFaults{Down: true}}})
	body := `{"order_id":"ord_5"}`
	event := map[string]string{EventIDHeader: "evt-9"}
	if r := send(t, "POST", url+"/warehouse/shipments", body, event); r.status != http.StatusServiceUnavailable || r.body != `{"error":"warehouse unavailable"}`+"\n" {
		t.Fatalf("delivery while down = %d %s; want 503 warehouse unavailable", r.status, r.body)
	}
	if err := d.SetFaults(Faults{}); err != nil {
		t.Fatal(err)
	}
	if r := send(t, "POST", url+"/warehouse/shipments", body, event); r.status != http.StatusCreated {
		t.Errorf("retry after recovery = %d %s; want 201", r.status, r.body)
	}
	if n := d.Shipments("ord_5"); n != 1 {
		t.Errorf("shipments = %d; want 1", n)
	}
	if n := d.Stats().InjectedFailures; n != 1 {
		t.Errorf("injected failures = %d; want 1", n)
	}
}

func TestControlEndpoint(t *testing.T) {
	d, url := newDownstreamServer(t, DownstreamOptions{})
	put := func(body string) response {
		t.Helper()
		return send(t, "PUT", url+"/_control", body, nil)
	}
	ship := func() int {
		t.Helper()
		return send(t, "POST", url+"/warehouse/shipments", `{"order_id":"ord_1"}`, nil).status
	}

	if r := put(`{"warehouse":{"down":true}}`); r.status != http.StatusOK {
		t.Fatalf("PUT warehouse down = %d %s", r.status, r.body)
	}
	if got := ship(); got != http.StatusServiceUnavailable {
		t.Errorf("shipment while down = %d; want 503", got)
	}
	// A patch touches only what it names.
	if r := put(`{"payments":{"latency":"250ms","error_rate":0.5}}`); r.status != http.StatusOK {
		t.Fatalf("PUT payments = %d %s", r.status, r.body)
	}
	want := `{"inventory":{"down":false,"latency":"0s","error_rate":0},"payments":{"down":false,"latency":"250ms","error_rate":0.5},"warehouse":{"down":true,"latency":"0s","error_rate":0},"mail":{"down":false,"latency":"0s","error_rate":0}}` + "\n"
	if r := send(t, "GET", url+"/_control", "", nil); r.body != want {
		t.Errorf("GET /_control = %s; want %s", r.body, want)
	}
	if got := d.Faults(); got.Payments.Latency != 250*time.Millisecond || !got.Warehouse.Down {
		t.Errorf("Faults() = %+v; want the patched values", got)
	}
	if r := put(`{"warehouse":{"down":false}}`); r.status != http.StatusOK {
		t.Fatalf("PUT warehouse up = %d %s", r.status, r.body)
	}
	if got := ship(); got != http.StatusCreated {
		t.Errorf("shipment after recovery = %d; want 201", got)
	}

	bad := []struct {
		name string
		body string
		want string
	}{
		{"unknown service", `{"warehous":{"down":true}}`, `unknown field \"warehous\"`},
		{"unknown field", `{"warehouse":{"dwn":true}}`, `unknown field \"dwn\"`},
		{"bad latency", `{"payments":{"latency":"soon"}}`, `payments.latency`},
		{"negative latency", `{"payments":{"latency":"-1s"}}`, `payments.latency: must not be negative`},
		{"error rate above one", `{"mail":{"error_rate":1.5}}`, `mail.error_rate: must be between 0 and 1`},
		{"not an object", `true`, `invalid JSON body`},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			before := d.Faults()
			r := put(tt.body)
			if r.status != http.StatusBadRequest || !strings.Contains(r.body, tt.want) {
				t.Errorf("PUT %s = %d %s; want 400 mentioning %s", tt.body, r.status, r.body, tt.want)
			}
			if after := d.Faults(); after != before {
				t.Errorf("a refused patch changed the faults from %+v to %+v", before, after)
			}
		})
	}
}

func TestInjectedErrorRate(t *testing.T) {
	// Draws alternate low and high: with a rate of one half, every other
	// call fails, deterministically.
	var mu sync.Mutex
	draws := []float64{0.1, 0.9, 0.1, 0.9}
	random := func() float64 {
		mu.Lock()
		defer mu.Unlock()
		v := draws[0]
		draws = draws[1:]
		return v
	}
	d, url := newDownstreamServer(t, DownstreamOptions{Random: random, Faults: Faults{Inventory: ServiceFaults{ErrorRate: 0.5}}})
	var got []int
	for range 4 {
		got = append(got, send(t, "GET", url+"/inventory/sku-1", "", nil).status)
	}
	want := []int{500, 200, 500, 200}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("statuses = %v; want %v", got, want)
		}
	}
	if n := d.Stats().InjectedFailures; n != 2 {
		t.Errorf("injected failures = %d; want 2", n)
	}
}

func TestInjectedLatency(t *testing.T) {
	const latency = 100 * time.Millisecond
	_, url := newDownstreamServer(t, DownstreamOptions{})
	if r := send(t, "PUT", url+"/_control", `{"inventory":{"latency":"100ms"}}`, nil); r.status != http.StatusOK {
		t.Fatalf("PUT = %d %s", r.status, r.body)
	}
	start := time.Now()
	send(t, "GET", url+"/inventory/sku-1", "", nil)
	if elapsed := time.Since(start); elapsed < latency {
		t.Errorf("GET took %s; want at least %s", elapsed, latency)
	}
}

func TestStatsEndpoint(t *testing.T) {
	_, url := newDownstreamServer(t, DownstreamOptions{})
	send(t, "POST", url+"/payments", `{"user_id":1,"amount_cents":1}`, nil)
	stats := decodeJSON[DownstreamStats](t, send(t, "GET", url+"/_stats", "", nil).body)
	if stats.Charges != 1 {
		t.Errorf("GET /_stats charges = %d; want 1", stats.Charges)
	}
}

func TestNewDownstreamValidates(t *testing.T) {
	tests := []struct {
		name string
		opts DownstreamOptions
		want string
	}{
		{"bad error rate", DownstreamOptions{Faults: Faults{Payments: ServiceFaults{ErrorRate: -0.1}}}, "payments.error_rate"},
		{"duplicate item", DownstreamOptions{Catalogue: []Item{{ID: "a"}, {ID: "a"}}}, `catalogue item "a"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewDownstream(tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("NewDownstream error = %v; want one containing %q", err, tt.want)
			}
		})
	}
}
