package legacy

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

// TestGoldenResponses pins the exact bytes of the order API contract
// (docs/order-api.md). The rebuilt service will be compared against these
// files, so a change here is a contract change. Each case runs against a
// fresh server with the test clock, which makes generated ids and
// timestamps deterministic too.
func TestGoldenResponses(t *testing.T) {
	tests := []struct {
		name   string
		method string
		path   string
		body   string
		faults Faults
	}{
		{name: "get-seeded-order", method: "GET", path: "/orders/ord_1"},
		{name: "get-unknown-order", method: "GET", path: "/orders/ord_999"},
		{name: "list-user-1", method: "GET", path: "/orders?user_id=1"},
		{name: "list-user-without-orders", method: "GET", path: "/orders?user_id=999"},
		{name: "list-bad-user-id", method: "GET", path: "/orders?user_id=x"},
		{name: "create-order", method: "POST", path: "/orders", body: orderBody},
		{name: "create-order-warehouse-down", method: "POST", path: "/orders", body: orderBody, faults: Faults{Warehouse: ServiceFaults{Down: true}}},
		{name: "create-out-of-stock", method: "POST", path: "/orders", body: `{"user_id":1,"item_id":"sku-oos","quantity":1}`},
		{name: "create-invalid-json", method: "POST", path: "/orders", body: `{`},
		{name: "create-missing-quantity", method: "POST", path: "/orders", body: `{"user_id":1,"item_id":"sku-1"}`},
		{name: "create-unknown-user", method: "POST", path: "/orders", body: `{"user_id":5000,"item_id":"sku-1","quantity":1}`},
		{name: "create-unknown-item", method: "POST", path: "/orders", body: `{"user_id":1,"item_id":"sku-0","quantity":1}`},
		{name: "create-payment-down", method: "POST", path: "/orders", body: orderBody, faults: Faults{Payments: ServiceFaults{Down: true}}},
		{name: "cancel-paid-order", method: "POST", path: "/orders/ord_7/cancel"},
		{name: "cancel-fulfilled-order", method: "POST", path: "/orders/ord_1/cancel"},
		{name: "cancel-unknown-order", method: "POST", path: "/orders/ord_999/cancel"},
		{name: "method-not-allowed", method: "DELETE", path: "/orders/ord_1"},
		{name: "unknown-path", method: "GET", path: "/v2/orders"},
		{name: "healthz", method: "GET", path: "/healthz"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := newTestEnv(t, func(_ *Options, do *DownstreamOptions) { do.Faults = tt.faults })
			r := send(t, tt.method, env.url+tt.path, tt.body, nil)
			got := renderResponse(r)
			file := filepath.Join("testdata", "golden", tt.name+".txt")
			if *update {
				if err := os.WriteFile(file, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(file)
			if err != nil {
				t.Fatalf("read golden file (run go test -update to create it): %v", err)
			}
			if got != string(want) {
				t.Errorf("%s %s:\n%s\nwant (%s):\n%s", tt.method, tt.path, got, file, want)
			}
		})
	}
}

// renderResponse writes the parts of a response the contract fixes: the
// status, the headers legacy sets itself and the body.
func renderResponse(r response) string {
	var b strings.Builder
	fmt.Fprintf(&b, "HTTP %d\n", r.status)
	for _, h := range []string{"Allow", "Content-Type"} {
		if v := r.header.Get(h); v != "" {
			fmt.Fprintf(&b, "%s: %s\n", h, v)
		}
	}
	b.WriteString("\n")
	b.WriteString(r.body)
	return b.String()
}
