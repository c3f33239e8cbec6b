package proxy

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"github.com/strangler-proxy/strangler/config"
)

// orderJSON is a typical 300-byte order response.
const orderJSON = `{"id":"ord_1","user_id":7,"item_id":"sku-1","quantity":2,"unit_price_cents":199,"total_cents":398,"status":"fulfilled","payment_id":"pay_1","created_at":"2024-01-01T00:00:00.000Z","updated_at":"2024-01-01T00:00:00.000Z"}`

// benchBackend is an upstream answering h (nil: the order JSON) on
// loopback, on fasthttp, so that what a benchmark allocates is the
// proxy's. It returns the upstream's URL.
func benchBackend(b *testing.B, h fasthttp.RequestHandler) string {
	if h == nil {
		h = func(ctx *fasthttp.RequestCtx) {
			ctx.SetContentType("application/json")
			ctx.WriteString(orderJSON)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: h}
	go srv.Serve(ln)
	b.Cleanup(func() { srv.Shutdown() })
	return "http://" + ln.Addr().String()
}

// serveLoop drives h as fasthttp's server does, without the client's
// socket: a request with a varying sticky key, the handler, then the
// answer written out, which ends its body stream. It checks each answer.
func serveLoop(b *testing.B, h fasthttp.RequestHandler) {
	b.ReportAllocs()
	var req fasthttp.Request
	var ctx fasthttp.RequestCtx
	remote := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}
	var id [20]byte
	i := 0
	for b.Loop() {
		i++
		req.Reset()
		req.Header.SetMethod("GET")
		req.Header.SetRequestURI("/orders/ord_1")
		req.Header.SetHost("shop.example")
		req.Header.SetBytesV("X-User-Id", strconv.AppendInt(id[:0], int64(i), 10))
		ctx.Init(&req, remote, nil)
		h(&ctx)
		if _, err := ctx.Response.WriteTo(io.Discard); err != nil {
			b.Fatal(err)
		}
		if code := ctx.Response.StatusCode(); code != fasthttp.StatusOK {
			b.Fatalf("status %d", code)
		}
	}
}

// BenchmarkBareForwarder is the peer: a forwarder on fasthttp's own
// client, with the least a proxy must do (X-Forwarded-For, no Connection).
func BenchmarkBareForwarder(b *testing.B) {
	target := strings.TrimPrefix(benchBackend(b, nil), "http://")
	hc := &fasthttp.HostClient{Addr: target, MaxConns: 1024}
	serveLoop(b, func(ctx *fasthttp.RequestCtx) {
		req := &ctx.Request
		req.Header.Del("Connection")
		var addr [64]byte
		peer := ctx.RemoteAddr().(*net.TCPAddr).AddrPort().Addr()
		req.Header.SetBytesV("X-Forwarded-For", peer.AppendTo(addr[:0]))
		if err := hc.Do(req, &ctx.Response); err != nil {
			ctx.Error(err.Error(), fasthttp.StatusBadGateway)
		}
	})
}

// newBenchProxy starts a proxy in front of two order backends with the
// given route YAML.
func newBenchProxy(b *testing.B, extra, route string) *Proxy {
	return newBenchProxyWith(b, extra, route, nil, nil)
}

// newBenchProxyWith is newBenchProxy with the backends' handlers (nil: the
// order JSON).
func newBenchProxyWith(b *testing.B, extra, route string, legacyH, newpathH fasthttp.RequestHandler) *Proxy {
	legacy, newpath := benchBackend(b, legacyH), benchBackend(b, newpathH)
	path := filepath.Join(b.TempDir(), "strangler.yaml")
	yaml := "upstreams:\n  legacy: { url: \"" + legacy + "\" }\n  newpath: { url: \"" + newpath + "\" }\n" +
		"sticky: { key: \"header:X-User-Id\" }\n" + extra + "routes:\n  - " + route + "\n"
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		b.Fatal(err)
	}
	rl, err := config.NewReloader(path, config.ReloaderOptions{})
	if err != nil {
		b.Fatal(err)
	}
	logger := slog.New(slog.NewJSONHandler(io.Discard, nil))
	p, err := New(rl.Current(), Options{Registerer: prometheus.NewRegistry(), Logger: logger, AccessLog: io.Discard})
	if err != nil {
		b.Fatal(err)
	}
	return p
}

// BenchmarkStranglerShadow is every request shadowed and compared.
func BenchmarkStranglerShadow(b *testing.B) {
	p := newBenchProxy(b, "shadow: { max_in_flight: 100000 }\n", `{ name: get-order, match: "GET /orders/{id}", shadow: { percent: 100 } }`)
	serveLoop(b, p.HandleFastHTTP)
	p.shadows.Wait()
}

// BenchmarkStranglerSplit is the proxy in split mode: route match, sticky
// assignment at weight 10, metrics and the JSON access log.
func BenchmarkStranglerSplit(b *testing.B) {
	for _, access := range []bool{false, true} {
		b.Run("access_log="+strconv.FormatBool(access), benchSplit(access))
	}
}

// benchSplit is BenchmarkStranglerSplit with the access log on or off.
func benchSplit(access bool) func(*testing.B) {
	return func(b *testing.B) {
		p := newBenchProxy(b, "log: { access: "+strconv.FormatBool(access)+" }\n",
			`{ name: get-order, match: "GET /orders/{id}", weight: 10 }`)
		serveLoop(b, p.HandleFastHTTP)
	}
}

// BenchmarkStranglerFallback is every request served by newpath, which
// answers 503, and then by legacy.
func BenchmarkStranglerFallback(b *testing.B) {
	p := newBenchProxyWith(b, "", `{ name: get-order, match: "GET /orders/{id}", weight: 100 }`, nil,
		func(ctx *fasthttp.RequestCtx) { ctx.SetStatusCode(fasthttp.StatusServiceUnavailable) })
	serveLoop(b, p.HandleFastHTTP)
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
				func(ctx *fasthttp.RequestCtx) { ctx.WriteString(`{"total_cents":1000}`) },
				func(ctx *fasthttp.RequestCtx) { ctx.WriteString(`{"total_cents":1001}`) })
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { p.Run(ctx); close(done) }()
			serveLoop(b, p.HandleFastHTTP)
			b.StopTimer()
			p.shadows.Wait()
			cancel()
			<-done
		})
	}
}

// BenchmarkOutboundHeader is the header work of one upstream call: the
// outbound request built from a client's (as wrk and browsers send one),
// and the hop-by-hop fields taken off the upstream's answer. The pass over
// the client's names is begin's, once a request, not a call's.
func BenchmarkOutboundHeader(b *testing.B) {
	var in fasthttp.RequestHeader
	raw := "GET /orders/ord_1 HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: bench\r\nAccept: application/json\r\nX-User-Id: 7\r\n\r\n"
	if err := in.Read(bufio.NewReader(strings.NewReader(raw))); err != nil {
		b.Fatal(err)
	}
	var ans fasthttp.ResponseHeader
	ans.SetContentType("application/json")
	ans.SetContentLength(300)
	ans.Set("Date", "Thu, 03 Dec 2026 14:00:00 GMT")
	cfg, err := config.Parse([]byte("upstreams: { legacy: { url: \"http://127.0.0.1:8081\" }, newpath: { url: \"http://127.0.0.1:8082\" } }\n"))
	if err != nil {
		b.Fatal(err)
	}
	u := newUpstream("legacy", cfg.Upstreams.Legacy())
	id := callIdentity{peer: netip.MustParseAddr("127.0.0.1"), requestID: "0123456789abcdef0123456789abcdef", override: "X-Strangler-Backend"}
	id.plain = allForwardable(&in, &id) // as begin decides, once a request
	var out fasthttp.Request
	var res fasthttp.ResponseHeader
	b.ReportAllocs()
	for b.Loop() {
		out.Reset()
		buildOutbound(&out, &in, u, &id)
		ans.CopyTo(&res)
		removeHopByHop(&res, false)
	}
}
