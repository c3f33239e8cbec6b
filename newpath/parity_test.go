package newpath_test

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/strangler-proxy/strangler/legacy"
)

// parityCase is one request sent to a fresh legacy and a fresh newpath.
type parityCase struct {
	name   string
	method string
	path   string
	body   string
	header map[string]string
	faults legacy.Faults
	// golden names legacy's golden file pinning this answer, if any.
	golden string
}

const orderBody = `{"user_id":42,"item_id":"sku-3","quantity":2}`

var parityCases = []parityCase{
	// The scenarios of legacy's golden files (legacy/testdata/golden).
	{name: "get seeded order", method: "GET", path: "/orders/ord_1", golden: "get-seeded-order"},
	{name: "get unknown order", method: "GET", path: "/orders/ord_999", golden: "get-unknown-order"},
	{name: "list user 1", method: "GET", path: "/orders?user_id=1", golden: "list-user-1"},
	{name: "list user without orders", method: "GET", path: "/orders?user_id=999", golden: "list-user-without-orders"},
	{name: "list bad user id", method: "GET", path: "/orders?user_id=x", golden: "list-bad-user-id"},
	{name: "create order", method: "POST", path: "/orders", body: orderBody, golden: "create-order"},
	{name: "create order warehouse down", method: "POST", path: "/orders", body: orderBody, faults: legacy.Faults{Warehouse: legacy.ServiceFaults{Down: true}}, golden: "create-order-warehouse-down"},
	{name: "create out of stock", method: "POST", path: "/orders", body: `{"user_id":1,"item_id":"sku-oos","quantity":1}`, golden: "create-out-of-stock"},
	{name: "create invalid json", method: "POST", path: "/orders", body: `{`, golden: "create-invalid-json"},
	{name: "create missing quantity", method: "POST", path: "/orders", body: `{"user_id":1,"item_id":"sku-1"}`, golden: "create-missing-quantity"},
	{name: "create unknown user", method: "POST", path: "/orders", body: `{"user_id":5000,"item_id":"sku-1","quantity":1}`, golden: "create-unknown-user"},
	{name: "create unknown item", method: "POST", path: "/orders", body: `{"user_id":1,"item_id":"sku-0","quantity":1}`, golden: "create-unknown-item"},
	{name: "create payment down", method: "POST", path: "/orders", body: orderBody, faults: legacy.Faults{Payments: legacy.ServiceFaults{Down: true}}, golden: "create-payment-down"},
	{name: "cancel paid order", method: "POST", path: "/orders/ord_7/cancel", golden: "cancel-paid-order"},
	{name: "cancel fulfilled order", method: "POST", path: "/orders/ord_1/cancel", golden: "cancel-fulfilled-order"},
	{name: "cancel cancelled order", method: "POST", path: "/orders/ord_9/cancel"},
	{name: "cancel unknown order", method: "POST", path: "/orders/ord_999/cancel", golden: "cancel-unknown-order"},
	{name: "method not allowed", method: "DELETE", path: "/orders/ord_1", golden: "method-not-allowed"},
	{name: "unknown path", method: "GET", path: "/v2/orders", golden: "unknown-path"},
	{name: "healthz", method: "GET", path: "/healthz", golden: "healthz"},
	// More of the contract.
	{name: "create with Idempotency-Key", method: "POST", path: "/orders", body: orderBody, header: map[string]string{"Idempotency-Key": "k-1"}},
	{name: "create largest quantity", method: "POST", path: "/orders", body: `{"user_id":1,"item_id":"sku-1","quantity":100}`},
	{name: "create unknown fields ignored", method: "POST", path: "/orders", body: `{"user_id":1,"item_id":"sku-1","quantity":1,"coupon":"X"}`},
	{name: "create mail down", method: "POST", path: "/orders", body: orderBody, faults: legacy.Faults{Mail: legacy.ServiceFaults{Down: true}}},
	{name: "create inventory down", method: "POST", path: "/orders", body: orderBody, faults: legacy.Faults{Inventory: legacy.ServiceFaults{Down: true}}},
	{name: "create inventory erroring", method: "POST", path: "/orders", body: orderBody, faults: legacy.Faults{Inventory: legacy.ServiceFaults{ErrorRate: 1}}},
	{name: "create warehouse erroring", method: "POST", path: "/orders", body: orderBody, faults: legacy.Faults{Warehouse: legacy.ServiceFaults{ErrorRate: 1}}},
	{name: "create empty body", method: "POST", path: "/orders"},
	{name: "create array body", method: "POST", path: "/orders", body: `[1,2]`},
	{name: "create null body", method: "POST", path: "/orders", body: `null`},
	{name: "create trailing data", method: "POST", path: "/orders", body: `{"user_id":1,"item_id":"sku-1","quantity":1} x`},
	{name: "create string user_id", method: "POST", path: "/orders", body: `{"user_id":"1","item_id":"sku-1","quantity":1}`},
	{name: "create fractional user_id", method: "POST", path: "/orders", body: `{"user_id":1.5,"item_id":"sku-1","quantity":1}`},
	{name: "create upper-case key", method: "POST", path: "/orders", body: `{"USER_ID":1,"item_id":"sku-1","quantity":1}`},
	{name: "create missing item_id", method: "POST", path: "/orders", body: `{"user_id":1,"quantity":1}`},
	{name: "create numeric item_id", method: "POST", path: "/orders", body: `{"user_id":1,"item_id":7,"quantity":1}`},
	{name: "create zero quantity", method: "POST", path: "/orders", body: `{"user_id":1,"item_id":"sku-1","quantity":0}`},
	{name: "create quantity over the limit", method: "POST", path: "/orders", body: `{"user_id":1,"item_id":"sku-1","quantity":101}`},
	{name: "create null quantity", method: "POST", path: "/orders", body: `{"user_id":1,"item_id":"sku-1","quantity":null}`},
	{name: "create first bad field wins", method: "POST", path: "/orders", body: `{"user_id":-1,"item_id":"","quantity":0}`},
	{name: "create item id needing escaping", method: "POST", path: "/orders", body: `{"user_id":1,"item_id":"a/b?c","quantity":1}`},
	{name: "create body too large", method: "POST", path: "/orders", body: `{"user_id":1,"item_id":"` + strings.Repeat("x", 64<<10) + `","quantity":1}`},
	{name: "list without user_id", method: "GET", path: "/orders"},
	{name: "list of an unknown user", method: "GET", path: "/orders?user_id=5000"},
	{name: "list zero user_id", method: "GET", path: "/orders?user_id=0"},
	{name: "list of a user with a cancelled order", method: "GET", path: "/orders?user_id=5"},
	{name: "head an order", method: "HEAD", path: "/orders/ord_1"},
	{name: "trailing slash", method: "GET", path: "/orders/"},
	{name: "PUT the collection", method: "PUT", path: "/orders"},
	{name: "GET a cancel", method: "GET", path: "/orders/ord_1/cancel"},
	{name: "POST health", method: "POST", path: "/healthz"},
}

// TestParity sends every case to legacy and to newpath, each on its own
// store of each kind, and requires the same status, Allow, Content-Type
// and body, byte for byte, once the generated fields of the contract
// (order and payment ids, timestamps) are normalised; and, where legacy's
// golden file pins the case, the same as that file too.
//
// The cases run in order against one pair of services per kind, each case
// with its own faults: both services see the same history, so stateful
// cases (a cancel, a listing after orders were placed) still compare, and
// the Postgres run costs two schemas rather than two per case.
func TestParity(t *testing.T) {
	for _, kind := range storeKinds {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, envOptions{kind: kind, tickingClock: true})
			for _, tc := range parityCases {
				t.Run(tc.name, func(t *testing.T) {
					if err := e.downstream.SetFaults(tc.faults); err != nil {
						t.Fatal(err)
					}
					defer e.downstream.SetFaults(legacy.Faults{})
					lg := render(send(t, tc.method, e.legacyURL+tc.path, tc.body, tc.header))
					np := render(send(t, tc.method, e.newpathURL+tc.path, tc.body, tc.header))
					if normalise(np) != normalise(lg) {
						t.Errorf("%s %s:\nnewpath:\n%s\nlegacy:\n%s\n(normalised: %q vs %q)", tc.method, tc.path, np, lg, normalise(np), normalise(lg))
					}
					if tc.golden == "" {
						return
					}
					want, err := os.ReadFile(filepath.Join("..", "legacy", "testdata", "golden", tc.golden+".txt"))
					if err != nil {
						t.Fatal(err)
					}
					if normalise(np) != normalise(string(want)) {
						t.Errorf("newpath does not match legacy's golden %s:\n%s\nwant:\n%s", tc.golden, np, want)
					}
				})
			}
		})
	}
}

// render writes the parts of a response the contract fixes, as legacy's
// golden files do.
func render(r response) string {
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

var (
	timestampField = regexp.MustCompile(`"(created_at|updated_at)":"([^"]*)"`)
	orderIDField   = regexp.MustCompile(`"id":"ord_(\d+)"`)
	paymentIDField = regexp.MustCompile(`"payment_id":"pay_(\w+)"`)
)

// normalise replaces the generated fields of docs/order-api.md §2 with
// placeholders numbered by first appearance: ids of new orders (past the
// seeded ord_10), new payment ids (from pay_1001, or a dry run's), and
// timestamps not from the seed (2024). Numbering keeps what is not
// generated: an updated_at equal to its created_at stays equal.
func normalise(s string) string {
	s = numberMatches(s, timestampField, func(m []string) (string, bool) {
		return m[1], !strings.HasPrefix(m[2], "2024-")
	}, func(m []string, n int) string { return fmt.Sprintf(`"%s":"<time %d>"`, m[1], n) }, 2)
	s = numberMatches(s, orderIDField, func(m []string) (string, bool) {
		n, _ := strconv.Atoi(m[1])
		return "", n > 10
	}, func(_ []string, n int) string { return fmt.Sprintf(`"id":"<order %d>"`, n) }, 1)
	s = numberMatches(s, paymentIDField, func(m []string) (string, bool) {
		n, err := strconv.Atoi(m[1])
		return "", err != nil || n >= legacy.FirstPaymentNumber
	}, func(_ []string, n int) string { return fmt.Sprintf(`"payment_id":"<payment %d>"`, n) }, 1)
	return s
}

// numberMatches replaces each match of re that generated says is generated
// with format(match, n), n numbering the distinct values (group valueGroup).
func numberMatches(s string, re *regexp.Regexp, generated func([]string) (string, bool), format func([]string, int) string, valueGroup int) string {
	seen := map[string]int{}
	return re.ReplaceAllStringFunc(s, func(match string) string {
		m := re.FindStringSubmatch(match)
		if _, ok := generated(m); !ok {
			return match
		}
		n, ok := seen[m[valueGroup]]
		if !ok {
			n = len(seen) + 1
			seen[m[valueGroup]] = n
		}
		return format(m, n)
	})
}
