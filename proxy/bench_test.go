package proxy

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/strangler-proxy/strangler/config"
)

// orderJSON is a typical 300-byte order response.
const orderJSON = `{"id":"ord_1","user_id":7,"item_id":"sku-1","quantity":2,"unit_price_cents":199,"total_cents":398,"status":"fulfilled","payment_id":"pay_1","created_at":"2024-01-01T00:00:00.000Z","updated_at":"2024-01-01T00:00:00.000Z"}`

func benchBackend(b *testing.B) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, orderJSON)
	}))
	b.Cleanup(srv.Close)
	return srv
}

// serveLoop drives h with fresh requests carrying varying sticky keys, the
// way the proxy sees them from net/http, and checks each answer.
func serveLoop(b *testing.B, h http.Handler) {
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		req := httptest.NewRequest("GET", "http://shop.example/orders/ord_1", nil)
		req.RemoteAddr = "127.0.0.1:40000"
		req.Header.Set("X-User-Id", strconv.Itoa(i))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("status %d", rec.Code)
		}
	}
}

// BenchmarkBareReverseProxy is the peer: httputil.ReverseProxy with Rewrite
// and the same tuned transport.
func BenchmarkBareReverseProxy(b *testing.B) {
	backend := benchBackend(b)
	target, _ := url.Parse(backend.URL)
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.SetXForwarded()
		},
		Transport: newTransport(30 * time.Second),
	}
	serveLoop(b, rp)
}

// newBenchProxy starts a proxy in front of two order backends with the
// given route YAML.
func newBenchProxy(b *testing.B, extra, route string) *Proxy {
	return newBenchProxyWith(b, extra, route, nil, nil)
}

// newBenchProxyWith is newBenchProxy with the backends' handlers (nil: the
// order JSON).
func newBenchProxyWith(b *testing.B, extra, route string, legacyH, newpathH http.HandlerFunc) *Proxy {
	backend := func(h http.HandlerFunc) *httptest.Server {
		if h == nil {
			return benchBackend(b)
		}
		srv := httptest.NewServer(h)
		b.Cleanup(srv.Close)
		return srv
	}
	legacy, newpath := backend(legacyH), backend(newpathH)
	path := filepath.Join(b.TempDir(), "strangler.yaml")
	yaml := "upstreams:\n  legacy: { url: \"" + legacy.URL + "\" }\n  newpath: { url: \"" + newpath.URL + "\" }\n" +
		"sticky: { key: \"header:X-User-Id\" }\n" + extra + "routes:\n  - " + route + "\n"
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		b.Fatal(err)
	}
	rl, err := config.NewReloader(path, config.ReloaderOptions{})
	if err != nil {
		b.Fatal(err)
	}
	logger := slog.New(slog.NewJSONHandler(io.Discard, nil))
	p, err := New(rl.Current(), Options{Registerer: prometheus.NewRegistry(), Logger: logger})
	if err != nil {
		b.Fatal(err)
	}
	return p
}

// BenchmarkStranglerShadow is every request shadowed and compared.
func BenchmarkStranglerShadow(b *testing.B) {
	p := newBenchProxy(b, "shadow: { max_in_flight: 100000 }\n", `{ name: get-order, match: "GET /orders/{id}", shadow: { percent: 100 } }`)
	serveLoop(b, p)
	p.shadows.Wait()
}

// BenchmarkStranglerSplit is the proxy in split mode: route match, sticky
// assignment at weight 10, metrics and the JSON access log.
func BenchmarkStranglerSplit(b *testing.B) {
	for _, access := range []bool{false, true} {
		b.Run("access_log="+strconv.FormatBool(access), func(b *testing.B) {
			p := newBenchProxy(b, "log: { access: "+strconv.FormatBool(access)+" }\n",
				`{ name: get-order, match: "GET /orders/{id}", weight: 10 }`)
			serveLoop(b, p)
		})
	}
}

// BenchmarkMismatchWithDivergenceStore measures the client's side of every
// request mismatching, with no divergence store and with one whose
// Postgres is down: the two must cost the same, since the request path only
// queues samples and the writer drops what it cannot send.
func BenchmarkMismatchWithDivergenceStore(b *testing.B) {
	for _, store := range []string{"none", "postgres-down"} {
		b.Run("store="+store, func(b *testing.B) {
			extra := "shadow: { max_in_flight: 100000 }\n"
			if store == "postgres-down" {
				extra += "divergence_store: { database_url: \"postgres://strangler@127.0.0.1:1/none?connect_timeout=1\" }\n"
			}
			p := newBenchProxyWith(b, extra, `{ name: get-order, match: "GET /orders/{id}", shadow: { percent: 100 } }`,
				func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, `{"total_cents":1000}`) },
				func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, `{"total_cents":1001}`) })
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { p.Run(ctx); close(done) }()
			serveLoop(b, p)
			b.StopTimer()
			p.shadows.Wait()
			cancel()
			<-done
		})
	}
}
