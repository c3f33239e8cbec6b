package router

import (
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/strangler-proxy/strangler/config"
)

func mustTable(t *testing.T, yaml string) (*Table, *config.Config) {
	t.Helper()
	cfg, err := config.Parse([]byte(yaml))
	if err != nil {
		t.Fatalf("parse config: %v", err)
	}
	tbl, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return tbl, cfg
}

const baseYAML = `
upstreams:
  legacy: { url: "http://127.0.0.1:1" }
  newpath: { url: "http://127.0.0.1:2" }
`

var loopback = netip.MustParseAddr("127.0.0.1")

func TestMatchFollowsServeMuxPrecedence(t *testing.T) {
	tbl, cfg := mustTable(t, baseYAML+`
routes:
  - { name: get-order, match: "GET /orders/{id}" }
  - { name: cancel, match: "POST /orders/{id}/cancel" }
  - { name: list, match: "GET /orders" }
  - { name: special, match: "GET /orders/latest" }
  - { name: static, match: "/static/" }
`)
	tests := []struct {
		method, path string
		want         string // route name, or "" for unmatched
	}{
		{"GET", "/orders/42", "get-order"},
		{"HEAD", "/orders/42", "get-order"},  // ServeMux: GET also matches HEAD
		{"GET", "/orders/latest", "special"}, // the more specific pattern wins
		{"POST", "/orders/42/cancel", "cancel"},
		{"GET", "/orders/42/cancel", ""},
		{"GET", "/orders", "list"},
		{"POST", "/orders", ""},
		{"DELETE", "/orders/42", ""},
		{"GET", "/static/css/app.css", "static"},
		{"GET", "/static", ""}, // ServeMux would redirect; the proxy passes it to legacy
		{"GET", "/orders/../orders/1", ""},
		{"GET", "/unknown", ""},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			r := httptest.NewRequest(tt.method, "http://example.test"+tt.path, nil)
			r.URL.Path = tt.path // keep dot segments as a client could send them
			i, ok := tbl.Match(r.Method, r.Host, r.URL.Path)
			got := ""
			if ok {
				got = cfg.Routes[i].Name
			}
			if got != tt.want {
				t.Errorf("Match(%s %s) = %q; want %q", tt.method, tt.path, got, tt.want)
			}
		})
	}
}

func stickyTable(t *testing.T) *Table {
	tbl, _ := mustTable(t, baseYAML+`
sticky: { key: "header:X-User-Id", salt: "orders-2026" }
routes:
  - { name: get-order, match: "GET /orders/{id}" }
`)
	return tbl
}

func requestWithUser(user string) *http.Request {
	r := httptest.NewRequest("GET", "/orders/1", nil)
	if user != "" {
		r.Header.Set("X-User-Id", user)
	}
	return r
}

func TestStickySplitAndMonotonicRamp(t *testing.T) {
	tbl := stickyTable(t)
	const n = 100000
	at := func(weight int) []Backend {
		out := make([]Backend, n)
		for i := range out {
			out[i] = tbl.Assign(HTTPRequest(requestWithUser(fmt.Sprintf("user-%d", i))), loopback, weight*100).Backend
		}
		return out
	}
	at25, at50, back25 := at(25), at(50), at(25)

	newpath := 0
	for _, b := range at25 {
		if b == Newpath {
			newpath++
		}
	}
	if share := float64(newpath) / n; math.Abs(share-0.25) > 0.01 {
		t.Errorf("weight 25 sent %.4f of %d keys to newpath; want 0.25 ± 0.01", share, n)
	}
	moved := 0
	for i := range at25 {
		if at25[i] == Newpath && at50[i] != Newpath {
			t.Fatalf("raising 25 → 50 moved user-%d from newpath back to legacy", i)
		}
		if at25[i] != at50[i] {
			moved++
		}
		if back25[i] != at25[i] {
			t.Fatalf("lowering 50 → 25 left user-%d on %v; it was on %v at 25", i, back25[i], at25[i])
		}
	}
	if moved == 0 {
		t.Error("raising 25 → 50 moved no one")
	}
}

func TestStickyKeyAlwaysGetsOneBackend(t *testing.T) {
	tbl := stickyTable(t)
	for i := 0; i < 100; i++ {
		user := fmt.Sprintf("u%d", i)
		first := tbl.Assign(HTTPRequest(requestWithUser(user)), loopback, 2500)
		for j := 0; j < 20; j++ {
			if got := tbl.Assign(HTTPRequest(requestWithUser(user)), loopback, 2500); got != first {
				t.Fatalf("user %s: assignment %d = %+v; first was %+v", user, j, got, first)
			}
		}
	}
}

func TestBucketIsTheSpecFormula(t *testing.T) {
	tbl := stickyTable(t)
	for _, key := range []string{"1", "user-7", strings.Repeat("x", 300)} {
		want := BucketFor("orders-2026", key)
		if got := tbl.Assign(HTTPRequest(requestWithUser(key)), loopback, 0).Bucket; got != want {
			t.Errorf("bucket(%q) = %d; want %d", key, got, want)
		}
	}
}

func TestNoKeyDrawsUniformly(t *testing.T) {
	tbl := stickyTable(t)
	const n = 10000
	newpath := 0
	for i := 0; i < n; i++ {
		a := tbl.Assign(HTTPRequest(requestWithUser("")), loopback, 2500)
		if a.Bucket != -1 {
			t.Fatalf("request without key got bucket %d; want -1", a.Bucket)
		}
		if a.Backend == Newpath {
			newpath++
		}
	}
	if share := float64(newpath) / n; math.Abs(share-0.25) > 0.02 {
		t.Errorf("no-key split sent %.4f to newpath; want 0.25 ± 0.02", share)
	}
}

func TestStickyKeySources(t *testing.T) {
	tests := []struct {
		name, key string
		req       func() *http.Request
		wantKey   string
	}{
		{"cookie", "cookie:uid", func() *http.Request {
			r := httptest.NewRequest("GET", "/x", nil)
			r.AddCookie(&http.Cookie{Name: "uid", Value: "c-42"})
			return r
		}, "c-42"},
		{"query", "query:user", func() *http.Request { return httptest.NewRequest("GET", "/x?user=q-7", nil) }, "q-7"},
		{"ip", "ip", func() *http.Request { return httptest.NewRequest("GET", "/x", nil) }, "127.0.0.1"},
		{"header", "header:x-user-id", func() *http.Request {
			r := httptest.NewRequest("GET", "/x", nil)
			r.Header.Set("X-User-Id", "h-1")
			return r
		}, "h-1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tbl, _ := mustTable(t, baseYAML+fmt.Sprintf("sticky: { key: %q, salt: s }\n", tt.key))
			got := tbl.Assign(HTTPRequest(tt.req()), loopback, 5000).Bucket
			if want := BucketFor("s", tt.wantKey); got != want {
				t.Errorf("bucket = %d; want %d (key %q)", got, want, tt.wantKey)
			}
		})
	}
}

func TestOverrideOnlyFromTrustedCIDRs(t *testing.T) {
	tbl, _ := mustTable(t, baseYAML+`
overrides: { header: X-Strangler-Backend, trusted_cidrs: ["10.0.0.0/8"] }
`)
	tests := []struct {
		name   string
		client string
		value  string
		weight int
		want   Backend
		forced bool
	}{
		{"trusted forces newpath", "10.1.2.3", "newpath", 0, Newpath, true},
		{"trusted forces legacy", "10.1.2.3", "Legacy", 10000, Legacy, true},
		{"untrusted is ignored", "192.0.2.1", "newpath", 0, Legacy, false},
		{"trusted junk value is ignored", "10.1.2.3", "both", 0, Legacy, false},
		{"ipv4-mapped ipv6 is trusted", "::ffff:10.1.2.3", "newpath", 0, Newpath, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/x", nil)
			r.Header.Set("X-Strangler-Backend", tt.value)
			got := tbl.Assign(HTTPRequest(r), netip.MustParseAddr(tt.client), tt.weight)
			if got.Backend != tt.want || got.Overridden != tt.forced {
				t.Errorf("Assign = %+v; want backend %v overridden %v", got, tt.want, tt.forced)
			}
		})
	}
}

func BenchmarkMatchAndAssign(b *testing.B) {
	cfg, err := config.Parse([]byte(baseYAML + `
sticky: { key: "header:X-User-Id" }
routes:
  - { name: get-order, match: "GET /orders/{id}", weight: 10 }
  - { name: list, match: "GET /orders" }
  - { name: create, match: "POST /orders" }
`))
	if err != nil {
		b.Fatal(err)
	}
	tbl, _ := New(cfg)
	r := requestWithUser("user-12345")
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := tbl.Match(r.Method, r.Host, r.URL.Path); !ok {
			b.Fatal("no match")
		}
		tbl.Assign(HTTPRequest(r), loopback, 1000)
	}
}
