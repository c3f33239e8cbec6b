package proxy

import (
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
	legacy, newpath := benchBackend(b), benchBackend(b)
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
	return New(rl.Current(), Options{Registerer: prometheus.NewRegistry(), Logger: logger})
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
