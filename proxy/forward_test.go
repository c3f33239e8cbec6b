package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/strangler-proxy/strangler/proxy/proxytest"
)

// legacyAPI serves the response shapes a proxy must pass through untouched.
func legacyAPI() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /orders/{id}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Legacy", "yes")
		w.Header().Add("Set-Cookie", "a=1")
		w.Header().Add("Set-Cookie", "b=2")
		fmt.Fprintf(w, `{"id":%q,"total_cents":1200}`, r.PathValue("id"))
	})
	mux.HandleFunc("POST /orders", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, `{"echo":%q,"len":%d}`, body, r.ContentLength)
	})
	mux.HandleFunc("GET /chunked", func(w http.ResponseWriter, r *http.Request) {
		for i := 0; i < 5; i++ {
			fmt.Fprintf(w, "chunk %d\n", i)
			w.(http.Flusher).Flush()
		}
	})
	mux.HandleFunc("GET /unknown-length", func(w http.ResponseWriter, r *http.Request) {
		// An HTTP/1.0-style body delimited by closing the connection.
		conn, buf, err := http.NewResponseController(w).Hijack()
		if err != nil {
			panic(err)
		}
		defer conn.Close()
		buf.WriteString("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nbody until close\n")
		buf.Flush()
	})
	mux.HandleFunc("DELETE /orders/{id}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Deleted", r.PathValue("id"))
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /notfound", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "nope", http.StatusNotFound)
	})
	return mux
}

// hopByHopNames are the headers RFC 9110 §7.6.1 says a proxy must not forward.
var hopByHopNames = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

func comparableHeader(h http.Header) http.Header {
	out := h.Clone()
	out.Del("Date")
	for _, k := range hopByHopNames {
		out.Del(k)
	}
	return out
}

func TestWeightZeroIsTransparent(t *testing.T) {
	h := newHarness(t, legacyAPI(), nil, `
routes:
  - { name: get-order, match: "GET /orders/{id}", weight: 0 }
  - { name: create-order, match: "POST /orders", weight: 0 }
`)
	tests := []struct {
		name, method, path, body string
	}{
		{"GET json", "GET", "/orders/42", ""},
		{"POST with body", "POST", "/orders", `{"user_id":1,"item_id":"sku-1","quantity":2}`},
		{"chunked", "GET", "/chunked", ""},
		{"unknown length", "GET", "/unknown-length", ""},
		{"204", "DELETE", "/orders/42", ""},
		{"HEAD", "HEAD", "/orders/42", ""},
		{"404", "GET", "/notfound", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			send := func(base string) (*http.Response, string) {
				req, _ := http.NewRequest(tt.method, base+tt.path, strings.NewReader(tt.body))
				if tt.body == "" {
					req.Body = nil
				}
				res, err := http.DefaultTransport.RoundTrip(req)
				if err != nil {
					t.Fatalf("%s %s: %v", tt.method, base+tt.path, err)
				}
				defer res.Body.Close()
				b, err := io.ReadAll(res.Body)
				if err != nil {
					t.Fatal(err)
				}
				return res, string(b)
			}
			direct, directBody := send(h.legacy.URL)
			proxied, proxiedBody := send(h.front.URL)
			if proxied.StatusCode != direct.StatusCode {
				t.Errorf("status = %d; want %d", proxied.StatusCode, direct.StatusCode)
			}
			if got, want := comparableHeader(proxied.Header), comparableHeader(direct.Header); !reflect.DeepEqual(got, want) {
				t.Errorf("headers = %v; want %v", got, want)
			}
			if proxiedBody != directBody {
				t.Errorf("body = %q; want %q", proxiedBody, directBody)
			}
		})
	}
}

func TestSSEFirstEventArrivesBeforeStreamEnds(t *testing.T) {
	release := make(chan struct{})
	sse := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: first\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
		fmt.Fprint(w, "data: last\n\n")
	})
	h := newHarness(t, sse, nil, "")
	defer close(release)

	res, err := h.front.Client().Get(h.front.URL + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	line, err := bufio.NewReader(res.Body).ReadString('\n')
	if err != nil {
		t.Fatalf("read first event: %v", err)
	}
	if line != "data: first\n" {
		t.Errorf("first line = %q; want %q", line, "data: first\n")
	}
}

// recorder is an upstream that keeps the last request it received.
type recorder struct {
	last  atomic.Pointer[http.Request]
	body  atomic.Pointer[string]
	count atomic.Int64
}

func (rec *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	s := string(b)
	rec.body.Store(&s)
	rec.last.Store(r)
	rec.count.Add(1)
	w.Header().Set("Connection", "X-Upstream-Hop")
	w.Header().Set("X-Upstream-Hop", "secret")
	w.Header().Set("Keep-Alive", "timeout=5")
	w.Header().Set("X-Served-By", "recorder")
	fmt.Fprint(w, "ok")
}

func TestHopByHopHeadersAreRemovedBothWays(t *testing.T) {
	rec := &recorder{}
	h := newHarness(t, rec, nil, "")
	req, _ := http.NewRequest("GET", h.front.URL+"/x", nil)
	req.Header.Set("Connection", "X-Client-Hop, keep-alive")
	req.Header.Set("X-Client-Hop", "1")
	req.Header.Set("Keep-Alive", "timeout=5")
	req.Header.Set("Proxy-Connection", "keep-alive")
	req.Header.Set("Proxy-Authorization", "Basic Zm9vOmJhcg==")
	req.Header.Set("Upgrade", "foo/1")
	req.Header.Set("X-End-To-End", "kept")
	res, _ := h.do(req)

	got := rec.last.Load().Header
	for _, k := range append(hopByHopNames, "X-Client-Hop") {
		if v, ok := got[k]; ok {
			t.Errorf("upstream received hop-by-hop header %s: %q", k, v)
		}
	}
	if got.Get("X-End-To-End") != "kept" {
		t.Errorf("end-to-end header lost; upstream got %v", got)
	}
	for _, k := range []string{"X-Upstream-Hop", "Keep-Alive"} {
		if v := res.Header.Get(k); v != "" {
			t.Errorf("client received hop-by-hop response header %s: %q", k, v)
		}
	}
}

func TestForwardedHeaders(t *testing.T) {
	tests := []struct {
		name        string
		trusted     string
		sentXFF     string
		wantXFF     string
		wantProto   string
		sentProto   string
		wantFwdHost string
	}{
		{name: "untrusted peer: spoofed chain dropped", trusted: "[]", sentXFF: "203.0.113.9", sentProto: "https", wantXFF: "127.0.0.1", wantProto: "http"},
		{name: "untrusted peer without chain", trusted: "[]", wantXFF: "127.0.0.1", wantProto: "http"},
		{name: "trusted peer: chain kept and peer appended", trusted: `["127.0.0.0/8"]`, sentXFF: "203.0.113.9, 198.51.100.2", sentProto: "https", wantXFF: "203.0.113.9, 198.51.100.2, 127.0.0.1", wantProto: "https"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{}
			h := newHarness(t, rec, nil, "trusted_proxies: "+tt.trusted+"\n")
			req, _ := http.NewRequest("GET", h.front.URL+"/x", nil)
			req.Host = "shop.example"
			if tt.sentXFF != "" {
				req.Header.Set("X-Forwarded-For", tt.sentXFF)
			}
			if tt.sentProto != "" {
				req.Header.Set("X-Forwarded-Proto", tt.sentProto)
			}
			h.do(req)
			got := rec.last.Load()
			if v := got.Header.Values("X-Forwarded-For"); len(v) != 1 || v[0] != tt.wantXFF {
				t.Errorf("X-Forwarded-For = %q; want exactly %q", v, tt.wantXFF)
			}
			if v := got.Header.Get("X-Forwarded-Proto"); v != tt.wantProto {
				t.Errorf("X-Forwarded-Proto = %q; want %q", v, tt.wantProto)
			}
			if v := got.Header.Get("X-Forwarded-Host"); v != "shop.example" {
				t.Errorf("X-Forwarded-Host = %q; want %q", v, "shop.example")
			}
			if got.Host != "shop.example" {
				t.Errorf("Host = %q; want the client's (preserve_host defaults to true)", got.Host)
			}
		})
	}
}

func TestPreserveHostFalseSendsUpstreamHost(t *testing.T) {
	rec := &recorder{}
	h := newHarness(t, rec, nil, "")
	h.writeConfig("upstreams:\n  legacy: { url: \"{{legacy}}\", preserve_host: false }\n  newpath: { url: \"{{newpath}}\" }\n")
	if err := h.reloader.Reload(); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", h.front.URL+"/x", nil)
	req.Host = "shop.example"
	h.do(req)
	if got, want := rec.last.Load().Host, strings.TrimPrefix(h.legacy.URL, "http://"); got != want {
		t.Errorf("Host = %q; want %q", got, want)
	}
}

func TestRequestID(t *testing.T) {
	tests := []struct {
		name, sent string
		kept       bool
	}{
		{"sane id is kept", "req-123_abc.DEF", true},
		{"missing id is generated", "", false},
		{"id with spaces is replaced", "bad id", false},
		{"overlong id is replaced", strings.Repeat("a", 129), false},
		{"injection attempt is replaced", "x\"}{", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{}
			h := newHarness(t, rec, nil, "")
			req, _ := http.NewRequest("GET", h.front.URL+"/x", nil)
			if tt.sent != "" {
				req.Header.Set("X-Request-Id", tt.sent)
			}
			res, _ := h.do(req)
			got := rec.last.Load().Header.Get("X-Request-Id")
			if tt.kept && got != tt.sent {
				t.Errorf("upstream X-Request-Id = %q; want %q", got, tt.sent)
			}
			if !tt.kept && (got == tt.sent || !saneRequestID([]byte(got))) {
				t.Errorf("upstream X-Request-Id = %q; want a fresh sane id", got)
			}
			if v := res.Header.Get("X-Request-Id"); v != "" {
				t.Errorf("client response carries X-Request-Id %q; want none added", v)
			}
			if !strings.Contains(h.logs.String(), `"request_id":"`+got+`"`) {
				t.Errorf("access log does not carry request id %q", got)
			}
		})
	}
}

func TestTraceparentReachesUpstream(t *testing.T) {
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	for _, tracing := range []bool{false, true} {
		t.Run(fmt.Sprintf("tracing=%v", tracing), func(t *testing.T) {
			rec := &recorder{}
			h := newHarness(t, rec, nil, "")
			if !tracing {
				h.proxy.tracer = noop.NewTracerProvider().Tracer("") // the default: exporter none
			}
			h.get("/x", "Traceparent", tp, "Tracestate", "vendor=1")
			got := rec.last.Load().Header
			want := tp
			if tracing { // the upstream continues from the proxy's client span
				want = tp[:36] + h.spans.Ended()[0].SpanContext().SpanID().String() + "-01"
			}
			if got.Get("Traceparent") != want || got.Get("Tracestate") != "vendor=1" {
				t.Errorf("upstream trace headers = %q, %q; want %q, %q", got.Get("Traceparent"), got.Get("Tracestate"), want, "vendor=1")
			}
			if !strings.Contains(h.logs.String(), `"trace_id":"4bf92f3577b34da6a3ce929d0e0e4736"`) {
				t.Error("access log lacks the trace id")
			}
		})
	}
}

func TestOverrideHeader(t *testing.T) {
	const routes = `
routes:
  - { name: get-order, match: "GET /orders/{id}", weight: 0 }
`
	tests := []struct {
		name, trusted, value, wantServedBy string
	}{
		{"trusted client forces newpath", `["127.0.0.0/8"]`, "newpath", "newpath"},
		{"untrusted client is ignored", `["10.0.0.0/8"]`, "newpath", "legacy"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var legacySaw, newpathSaw atomic.Value
			seen := func(name string, v *atomic.Value) http.Handler {
				return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					v.Store(r.Header.Get("X-Strangler-Backend") + "|")
					w.Header().Set("X-Served-By", name)
				})
			}
			h := newHarness(t, seen("legacy", &legacySaw), seen("newpath", &newpathSaw),
				"overrides: { trusted_cidrs: "+tt.trusted+" }\n"+routes)
			res, _ := h.get("/orders/1", "X-Strangler-Backend", tt.value)
			if got := res.Header.Get("X-Served-By"); got != tt.wantServedBy {
				t.Errorf("served by %q; want %q", got, tt.wantServedBy)
			}
			for _, v := range []*atomic.Value{&legacySaw, &newpathSaw} {
				if s, _ := v.Load().(string); s != "" && s != "|" {
					t.Errorf("upstream received the override header: %q", s)
				}
			}
		})
	}
}

func TestClientCannotForgeStranglerHeaders(t *testing.T) {
	rec := &recorder{}
	h := newHarness(t, rec, nil, "")
	h.get("/x", "X-Strangler-Dry-Run", "1", "X-Strangler-Shadow", "1")
	got := rec.last.Load().Header
	for _, k := range []string{"X-Strangler-Dry-Run", "X-Strangler-Shadow"} {
		if v := got.Get(k); v != "" {
			t.Errorf("upstream received client-sent %s: %q", k, v)
		}
	}
}

// rawRequest writes a raw HTTP/1.1 request to the proxy and returns the
// status line.
func rawRequest(t *testing.T, addr, raw string) string {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, raw); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	res.Body.Close()
	return res.Status
}

func TestContentLengthWithTransferEncodingIsNeverAmbiguousUpstream(t *testing.T) {
	rec := &recorder{}
	h := newHarness(t, rec, nil, "")
	addr := strings.TrimPrefix(h.front.URL, "http://")
	status := rawRequest(t, addr, "POST /orders HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"+
		"5\r\nhello\r\n0\r\n\r\n")
	if strings.HasPrefix(status, "400") {
		return // refused outright: the upstream saw nothing
	}
	got := rec.last.Load()
	if got == nil {
		t.Fatalf("status %s and the upstream saw nothing", status)
	}
	if v := got.Header.Get("Content-Length"); v != "" {
		t.Errorf("upstream received Content-Length %q beside chunked framing", v)
	}
	if body := *rec.body.Load(); body != "hello" {
		t.Errorf("upstream body = %q; want the Transfer-Encoding framing's %q", body, "hello")
	}
}

func TestMalformedRequestsGet4xx(t *testing.T) {
	h := newHarness(t, &recorder{}, nil, "")
	addr := strings.TrimPrefix(h.front.URL, "http://")
	tests := []struct{ name, raw string }{
		{"bad request line", "GARBAGE\r\n\r\n"},
		{"two content lengths", "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"},
		// A header too large is the daemon's server limit: the smuggling
		// table in cmd/strangler sends one through the framing check.
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if status := rawRequest(t, addr, tt.raw); status[0] != '4' {
				t.Errorf("status = %s; want 4xx", status)
			}
		})
	}
}

func TestNoUpstreamAnswer(t *testing.T) {
	closed := refusingURL
	block := make(chan struct{})
	slow := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-block:
		case <-r.Context().Done():
		}
	})
	tests := []struct {
		name       string
		legacy     http.Handler
		yaml       string
		wantStatus int
	}{
		{"legacy down: 502", nil, "upstreams:\n  legacy: { url: \"" + closed + "\" }\n  newpath: { url: \"{{newpath}}\" }\n", http.StatusBadGateway},
		{"legacy slower than its timeout: 504", slow, "upstreams:\n  legacy: { url: \"{{legacy}}\", timeout: 100ms }\n  newpath: { url: \"{{newpath}}\" }\n", http.StatusGatewayTimeout},
	}
	defer close(block)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, tt.legacy, nil, tt.yaml)
			res, _ := h.get("/orders/1")
			if res.StatusCode != tt.wantStatus {
				t.Errorf("status = %d; want %d", res.StatusCode, tt.wantStatus)
			}
			if v, _ := h.metric("strangler_requests_total", map[string]string{"route": "unmatched", "backend": "legacy", "code": "error"}); v != 1 {
				t.Errorf(`strangler_requests_total{code="error"} = %v; want 1`, v)
			}
		})
	}
}

func TestFallbackToLegacy(t *testing.T) {
	closed := refusingURL
	unavailable := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Served-By", "newpath")
		http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
	})
	const routes = `
routes:
  - { name: get-order, match: "GET /orders/{id}", weight: 100 }
  - { name: no-fallback, match: "GET /items/{id}", weight: 100, fallback: false }
  - { name: create-order, match: "POST /orders", weight: 100 }
`
	tests := []struct {
		name, method, path string
		newpath            http.Handler
		newpathURL         string
		wantStatus         int
		wantServedBy       string
		wantReason         string
	}{
		{"newpath down, GET", "GET", "/orders/1", nil, closed, 200, "legacy", "connect_error"},
		{"newpath 503, GET", "GET", "/orders/1", unavailable, "", 200, "legacy", "status_503"},
		{"newpath down, POST is not retried on legacy", "POST", "/orders", nil, closed, 502, "", ""},
		{"newpath 503, POST passes the 503 through", "POST", "/orders", unavailable, "", 503, "newpath", ""},
		{"fallback off", "GET", "/items/1", unavailable, "", 503, "newpath", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			legacy := &recorder{}
			yaml := routes
			if tt.newpathURL != "" {
				yaml = "upstreams:\n  legacy: { url: \"{{legacy}}\" }\n  newpath: { url: \"" + tt.newpathURL + "\" }\n" + routes
			}
			h := newHarness(t, legacy, tt.newpath, yaml)
			req, _ := http.NewRequest(tt.method, h.front.URL+tt.path, nil)
			res, _ := h.do(req)
			if res.StatusCode != tt.wantStatus {
				t.Errorf("status = %d; want %d", res.StatusCode, tt.wantStatus)
			}
			servedBy := res.Header.Get("X-Served-By")
			if servedBy == "recorder" {
				servedBy = "legacy"
			}
			if servedBy != tt.wantServedBy {
				t.Errorf("served by %q; want %q", servedBy, tt.wantServedBy)
			}
			if tt.method == "POST" && legacy.count.Load() != 0 {
				t.Errorf("legacy received %d POSTs meant for newpath; want 0", legacy.count.Load())
			}
			if tt.wantReason != "" {
				route := "get-order"
				if v, _ := h.metric("strangler_fallbacks_total", map[string]string{"route": route, "reason": tt.wantReason}); v != 1 {
					t.Errorf("strangler_fallbacks_total{reason=%q} = %v; want 1", tt.wantReason, v)
				}
				if v, _ := h.metric("strangler_requests_total", map[string]string{"route": route, "backend": "legacy", "code": "2xx"}); v != 1 {
					t.Errorf(`requests_total{backend="legacy",code="2xx"} = %v; want 1`, v)
				}
			}
		})
	}
}

// TestPOSTIsNeverRetried sends writes to an upstream that reads them and
// drops the connection unanswered: the write may have taken effect, so
// none is sent again, whatever its body: streamed, empty, or buffered for
// a shadow (whose replay would be harmless to the body, not the charge).
func TestPOSTIsNeverRetried(t *testing.T) {
	for _, c := range []struct {
		name, idemKey, body, extra string
	}{
		{name: "streamed", body: `{"user_id":1}`},
		{name: "streamed with Idempotency-Key", idemKey: "key-1", body: `{"user_id":1}`},
		{name: "no body"},
		{name: "buffered for a dry-run shadow", body: `{"user_id":1}`,
			extra: "routes:\n  - { name: create, match: \"POST /orders\", shadow: { percent: 100, dry_run: true } }\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var attempts atomic.Int64
			// An upstream that reads the request, then drops the connection
			// without answering: the request may have taken effect.
			dropper := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Method != http.MethodPost {
					return
				}
				attempts.Add(1)
				_, _ = io.ReadAll(r.Body)
				conn, _, err := http.NewResponseController(w).Hijack()
				if err == nil {
					conn.Close()
				}
			})
			h := newHarness(t, dropper, nil, c.extra)
			// Warm a keep-alive connection first, so a retry would be
			// tempting for the transport.
			h.get("/warm")
			req, _ := http.NewRequest("POST", h.front.URL+"/orders", strings.NewReader(c.body))
			if c.body == "" {
				req.Body, req.ContentLength = http.NoBody, 0
				req.Header.Set("Content-Length", "0")
			}
			if c.idemKey != "" {
				req.Header.Set("Idempotency-Key", c.idemKey)
			}
			res, _ := h.do(req)
			if res.StatusCode != http.StatusBadGateway {
				t.Errorf("status = %d; want 502", res.StatusCode)
			}
			if n := attempts.Load(); n != 1 {
				t.Errorf("upstream saw %d attempts; want exactly 1", n)
			}
		})
	}
}

// TestRetryNeverSendsASpentBody resets a pooled connection under a POST
// whose header overflows the write buffer, so the send fails before the
// body is read: fasthttp has let go of the body stream by then, and a
// retry would have sent the POST with an empty body. The upstream must
// never see the POST without its body.
func TestRetryNeverSendsASpentBody(t *testing.T) {
	type got struct{ cl, body string }
	posts := make(chan got, 4)
	reset, wasReset := make(chan struct{}), make(chan struct{})
	var served atomic.Int64
	up := proxytest.Raw(t, func(c net.Conn) {
		req, err := http.ReadRequest(bufio.NewReader(c))
		if err != nil {
			c.Close() // a reachability probe's dial
			return
		}
		b, _ := io.ReadAll(req.Body)
		if req.Method == http.MethodPost {
			posts <- got{req.Header.Get("Content-Length"), string(b)}
		}
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		if served.Add(1) == 1 {
			<-reset
			_ = c.(*net.TCPConn).SetLinger(0) // close with a reset
			defer close(wasReset)
		}
		c.Close()
	})
	h := newHarness(t, nil, nil, "upstreams:\n  legacy: { url: \""+up+"\", timeout: 5s }\n  newpath: { url: \"{{newpath}}\" }\n")
	h.get("/warm")
	close(reset)
	select {
	case <-wasReset:
	case <-time.After(10 * time.Second):
		t.Fatal("the warm connection was never reset")
	}
	req, _ := http.NewRequest("POST", h.front.URL+"/orders", strings.NewReader("hello"))
	req.Header.Set("X-Pad", strings.Repeat("a", 6000))
	res, _ := h.do(req)
	select {
	case g := <-posts:
		if g.body != "hello" {
			t.Errorf("upstream got the POST with Content-Length %q and body %q; want %q", g.cl, g.body, "hello")
		}
	default:
		if res.StatusCode != http.StatusBadGateway {
			t.Errorf("the upstream saw no POST, and the client got %d; want 502", res.StatusCode)
		}
	}
}

// TestEarlyHintsThenASlowAnswer has the upstream send 103 Early Hints at
// once and its answer 300 ms later, well within its timeout: the client
// gets the answer, not a 504 from the wait that ended with the hints.
func TestEarlyHintsThenASlowAnswer(t *testing.T) {
	up := proxytest.Raw(t, func(c net.Conn) {
		defer c.Close()
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			_, _ = io.Copy(io.Discard, req.Body)
			_, _ = io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n")
			time.Sleep(300 * time.Millisecond) // the upstream's work, not a wait for a condition
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	h := newHarness(t, nil, nil, "upstreams:\n  legacy: { url: \""+up+"\", timeout: 5s }\n  newpath: { url: \"{{newpath}}\" }\n")
	if res, body := h.get("/x"); res.StatusCode != http.StatusOK || body != "ok" {
		t.Errorf("got %d %q; want the upstream's 200 \"ok\"", res.StatusCode, body)
	}
}

// TestEveryForwardingSpellingIsScrubbed sends, from an untrusted peer and
// from a trusted proxy, the forwarding headers frameworks trust besides
// X-Forwarded-For/-Proto/-Host (Rack gives X-Forwarded-Ssl and -Scheme
// precedence over -Proto) and CGI-style spellings of the ones strangler
// writes or reads. From an untrusted peer none may arrive; from a
// trusted proxy its X-Forwarded-Port and the like pass, and no spelling
// of a header strangler writes anew or of its dry-run mark ever does.
func TestEveryForwardingSpellingIsScrubbed(t *testing.T) {
	sent := map[string]string{
		"X-Forwarded-Port": "443", "X-Forwarded-Ssl": "on", "X-Forwarded-Scheme": "https",
		"X-Forwarded-Prefix": "/admin", "X-Forwarded-Server": "evil",
		"X-Forwarded-Client-Certificate-Chain-Info": "forged",
		"X_Forwarded_For": "6.6.6.6", "X_Forwarded_Proto": "https", "X_Forwarded_Host": "evil.example",
		"X_Strangler_Dry_Run": "1", "X_Strangler_Shadow": "1",
	}
	fromTrusted := []string{"X-Forwarded-Port", "X-Forwarded-Ssl", "X-Forwarded-Scheme", "X-Forwarded-Prefix",
		"X-Forwarded-Server", "X-Forwarded-Client-Certificate-Chain-Info"}
	var raw strings.Builder
	raw.WriteString("GET /x HTTP/1.1\r\nHost: shop\r\n")
	for name, value := range sent {
		raw.WriteString(name + ": " + value + "\r\n")
	}
	raw.WriteString("\r\n")
	for _, trusted := range []bool{false, true} {
		t.Run(fmt.Sprintf("trusted=%v", trusted), func(t *testing.T) {
			rec := &recorder{}
			yaml := "trusted_proxies: []\n"
			if trusted {
				yaml = "trusted_proxies: [\"127.0.0.0/8\"]\n"
			}
			h := newHarness(t, rec, nil, yaml)
			if status := rawRequest(t, strings.TrimPrefix(h.front.URL, "http://"), raw.String()); !strings.HasPrefix(status, "200") {
				t.Fatalf("status line %q", status)
			}
			got := rec.last.Load().Header
			for name := range sent {
				want := trusted && slices.Contains(fromTrusted, name)
				if _, arrived := got[textproto.CanonicalMIMEHeaderKey(name)]; arrived != want {
					t.Errorf("%s arrived: %v; want %v", name, arrived, want)
				}
			}
			if xff := got.Get("X-Forwarded-For"); xff != "127.0.0.1" {
				t.Errorf("X-Forwarded-For = %q; want the peer alone", xff)
			}
		})
	}
}

// TestUnaskedSwitchIsABrokenAnswer has the upstream answer a plain GET
// with 101 Switching Protocols: no tunnel opens, the client gets a 502.
func TestUnaskedSwitchIsABrokenAnswer(t *testing.T) {
	up := proxytest.Raw(t, func(c net.Conn) {
		defer c.Close()
		if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: raw\r\n\r\nraw bytes of another protocol")
		_, _ = io.Copy(io.Discard, c)
	})
	h := newHarness(t, nil, nil, "upstreams:\n  legacy: { url: \""+up+"\", timeout: 5s }\n  newpath: { url: \"{{newpath}}\" }\n")
	status := rawRequest(t, strings.TrimPrefix(h.front.URL, "http://"), "GET /x HTTP/1.1\r\nHost: shop\r\n\r\n")
	if !strings.HasPrefix(status, "502") {
		t.Errorf("got %q; want 502", status)
	}
}

// TestStaleRetryDials closes every pooled connection (an upstream
// restart): the GET that finds the first one closed is sent again on a
// new connection, not on the next closed one.
func TestStaleRetryDials(t *testing.T) {
	conns := make(chan net.Conn, 16)
	var dials atomic.Int64
	release := make(chan struct{})
	up := proxytest.Raw(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for first := true; ; first = false {
			req, err := http.ReadRequest(br)
			if err != nil {
				c.Close()
				return
			}
			if first { // not a reachability probe's dial
				dials.Add(1)
				conns <- c
			}
			_, _ = io.Copy(io.Discard, req.Body)
			if req.URL.Path == "/slow" {
				<-release
			}
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	h := newHarness(t, nil, nil, "upstreams:\n  legacy: { url: \""+up+"\", timeout: 5s }\n  newpath: { url: \"{{newpath}}\" }\n")
	// Three requests at once leave three pooled connections.
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() { h.get("/slow") })
	}
	eventually(t, 5*time.Second, "three upstream connections", func() bool { return dials.Load() == 3 })
	close(release)
	wg.Wait()
	for range 3 {
		(<-conns).Close() // the restart
	}
	before := dials.Load()
	res, body := h.get("/x")
	if res.StatusCode != http.StatusOK || body != "ok" {
		t.Errorf("after the restart: %d %q; want 200 from a new connection (new dials: %d)", res.StatusCode, body, dials.Load()-before)
	}
}

// TestClientGoneAfterTheReadTimeout leaves while the upstream is slow,
// after the server's ReadTimeout has passed: fasthttp leaves that read
// deadline armed while the handler runs, and the check for a gone
// client must not be blind once it passes.
func TestClientGoneAfterTheReadTimeout(t *testing.T) {
	const readTimeout = 50 * time.Millisecond
	entered, cancelled := make(chan struct{}), make(chan struct{})
	slow := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		select {
		case <-r.Context().Done():
			close(cancelled)
		case <-time.After(10 * time.Second):
		}
	})
	h := newHarness(t, slow, nil, "")
	srv := h.proxy.Server()
	srv.ReadTimeout = readTimeout // as service.NewFastServer sets it (10 s)
	front := proxytest.Start(t, srv)
	conn, err := net.Dial("tcp", strings.TrimPrefix(front.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	sent := time.Now()
	_, _ = io.WriteString(conn, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
	<-entered
	eventually(t, 5*time.Second, "the read deadline passed", func() bool { return time.Since(sent) > 2*readTimeout })
	conn.Close()
	select {
	case <-cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("the client left, but the upstream call was not given up")
	}
}

func TestClientGoneIsLogged499NotError(t *testing.T) {
	entered := make(chan struct{})
	slow := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-r.Context().Done()
	})
	h := newHarness(t, slow, nil, "")
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", h.front.URL+"/slow", nil)
	errc := make(chan error, 1)
	go func() {
		_, err := h.front.Client().Do(req)
		errc <- err
	}()
	<-entered
	cancel()
	<-errc
	eventually(t, 5*time.Second, "access log with 499", func() bool {
		return strings.Contains(h.logs.String(), `"status":499`)
	})
	if strings.Contains(h.logs.String(), `"level":"ERROR"`) || strings.Contains(h.logs.String(), "upstream error") {
		t.Errorf("client disconnect logged as an error:\n%s", h.logs.String())
	}
	if v, _ := h.metric("strangler_requests_total", map[string]string{"route": "unmatched", "code": "error"}); v != 0 {
		t.Errorf(`requests_total{code="error"} = %v; want 0 for a client that left`, v)
	}
}

func TestMetricsExistAtZeroBeforeTraffic(t *testing.T) {
	h := newHarness(t, nil, nil, `
routes:
  - { name: get-order, match: "GET /orders/{id}", weight: 12.5 }
  - name: create-order
    match: "POST /orders"
    guard: { max_error_rate: 0.5 }
`)
	for _, route := range []string{"get-order", "create-order"} {
		checks := []struct {
			name   string
			labels map[string]string
			want   float64
		}{
			{"strangler_requests_total", map[string]string{"route": route, "backend": "legacy", "code": "2xx"}, 0},
			{"strangler_requests_total", map[string]string{"route": route, "backend": "newpath", "code": "error"}, 0},
			{"strangler_request_duration_seconds", map[string]string{"route": route, "backend": "newpath"}, 0},
			{"strangler_upstream_request_duration_seconds", map[string]string{"route": route, "backend": "legacy", "role": "primary"}, 0},
			{"strangler_fallbacks_total", map[string]string{"route": route, "reason": "connect_error"}, 0},
			{"strangler_route_effective_weight_ratio", map[string]string{"route": route}, -1},
			{"strangler_route_weight_ratio", map[string]string{"route": route}, -1},
			{"strangler_guard_configured", map[string]string{"route": route}, -1},
			{"strangler_guard_tripped", map[string]string{"route": route}, 0},
		}
		for _, c := range checks {
			v, ok := h.metric(c.name, c.labels)
			if !ok {
				t.Errorf("%s%v missing before traffic", c.name, c.labels)
			} else if c.want >= 0 && v != c.want {
				t.Errorf("%s%v = %v; want %v", c.name, c.labels, v, c.want)
			}
		}
	}
	// "No guard" is not "armed": only create-order has one.
	for route, want := range map[string]float64{"get-order": 0, "create-order": 1} {
		if v, _ := h.metric("strangler_guard_configured", map[string]string{"route": route}); v != want {
			t.Errorf("strangler_guard_configured{%s} = %v; want %v", route, v, want)
		}
	}
	if v, _ := h.metric("strangler_route_weight_ratio", map[string]string{"route": "get-order"}); v != 0.125 {
		t.Errorf("strangler_route_weight_ratio{get-order} = %v; want 0.125", v)
	}
	for _, name := range []string{"strangler_config_last_reload_successful", "strangler_config_last_reload_success_timestamp_seconds"} {
		if v, ok := h.metric(name, nil); !ok || v <= 0 {
			t.Errorf("%s = %v (present %v); want > 0 after the first load", name, v, ok)
		}
	}
	if _, ok := h.metric("strangler_config_reloads_total", map[string]string{"result": "failure"}); !ok {
		t.Error(`strangler_config_reloads_total{result="failure"} missing`)
	}
	if v, ok := h.metric("strangler_build_info", map[string]string{"version": "test"}); !ok || v != 1 {
		t.Errorf("strangler_build_info = %v; want 1", v)
	}
}

func TestOverriddenRequestsNeverFallBack(t *testing.T) {
	unavailable := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down", http.StatusServiceUnavailable)
	})
	h := newHarness(t, nil, unavailable, `
routes:
  - { name: get-order, match: "GET /orders/{id}", weight: 0 }
`)
	// An engineer forcing newpath wants to see newpath's answer, not legacy's.
	if res, _ := h.get("/orders/1", "X-Strangler-Backend", "newpath"); res.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("forced newpath answered %d; want its 503, not a fallback", res.StatusCode)
	}
}

func TestMalformedRequestBodyIsTheClientsFault(t *testing.T) {
	h := newHarness(t, &recorder{}, &recorder{}, `
routes:
  - name: create-order
    match: "POST /orders"
    weight: 100
    guard: { max_error_rate: 0.01, min_samples: 1, window: 1m }
`)
	addr := strings.TrimPrefix(h.front.URL, "http://")
	// A chunk whose size line is not hex.
	status := rawRequest(t, addr, "POST /orders HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n")
	if !strings.HasPrefix(status, "400") {
		t.Errorf("status = %s; want 400", status)
	}
	if st := h.proxy.state.Load().routes[0]; st.rt.guard.tripped.Load() {
		t.Error("a client's broken body tripped newpath's guard")
	}
}

func TestUpgradeThroughAShadowedRoute(t *testing.T) {
	echo := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "websocket" {
			http.Error(w, "want upgrade", http.StatusBadRequest)
			return
		}
		conn, buf, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		buf.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
		buf.Flush()
		line, _ := buf.ReadString('\n')
		buf.WriteString(line)
		buf.Flush()
	})
	h := newHarness(t, echo, echo, `
routes:
  - { name: stream, match: "GET /stream", shadow: { percent: 100 } }
`)
	conn, err := net.Dial("tcp", strings.TrimPrefix(h.front.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "GET /stream HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
	br := bufio.NewReader(conn)
	res, err := http.ReadResponse(br, nil)
	if err != nil || res.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v; want 101", res, err)
	}
	io.WriteString(conn, "ping\n")
	if line, err := br.ReadString('\n'); err != nil || line != "ping\n" {
		t.Errorf("echo over the upgraded connection = %q, %v; want ping", line, err)
	}
}

// Any other protocol switch is a tunnel past the proxy's rules: the
// upstream sees a plain request.
func TestOnlyWebSocketUpgradesPassThrough(t *testing.T) {
	var got atomic.Value
	h := newHarness(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.Store(r.Header.Get("Upgrade") + "|" + r.Header.Get("Connection"))
		io.WriteString(w, "plain")
	}), nil, "")
	res, body := h.get("/x", "Connection", "Upgrade, HTTP2-Settings", "Upgrade", "h2c", "HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA")
	if res.StatusCode != http.StatusOK || body != "plain" {
		t.Fatalf("got %d %q; want legacy's plain answer", res.StatusCode, body)
	}
	if v := got.Load(); v != "|" {
		t.Errorf("upstream saw Upgrade|Connection = %q; want neither", v)
	}
}

// refusingURL is an upstream that refuses connections: nothing listens on
// port 1, and only root could make something (a closed httptest server's
// port may be taken by the next test's).
const refusingURL = "http://127.0.0.1:1"

// headerNames is every name of keys, in lower case, sorted.
func headerNames(keys [][]byte) []string {
	var out []string
	for _, k := range keys {
		out = append(out, strings.ToLower(string(k)))
	}
	slices.Sort(out)
	return out
}

// TestOnePassFindsWhatScrubDeletes guards the fast path of buildOutbound
// and removeHopByHop: a header the one pass over its names calls clean
// skips the deleting, so each name the deleting would remove must fail
// the pass.
func TestOnePassFindsWhatScrubDeletes(t *testing.T) {
	candidates := []string{
		"Connection", "connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
		"TE", "Trailer", "Transfer-Encoding", "Upgrade", "X-Listed-In-Connection",
		"X-Forwarded-For", "x-forwarded-proto", "X-Forwarded-Host", "Forwarded", "X-Real-Ip", "X_Real_Ip",
		"True-Client-Ip", "CF-Connecting-IP", "X-Cluster-Client-Ip",
		"X-Forwarded-Port", "X-Forwarded-Ssl", "X-Forwarded-Scheme", "X-Forwarded-Prefix", "X-Url-Scheme",
		"X-Forwarded-Client-Certificate-Chain-Info", "X_Forwarded_For", "X_Forwarded_Proto",
		ShadowHeader, DryRunHeader, "X_Strangler_Dry_Run", "Expect", "X-Strangler-Backend", "X_Strangler_Backend",
		"Accept", "User-Agent", "X-User-Id", "Cookie", "Content-Type", "X-A-Very-Long-Header-Name-Beyond-Thirty-Two",
	}
	for _, name := range candidates {
		value := "v"
		switch name {
		case "Transfer-Encoding":
			value = "chunked"
		case "Expect":
			value = "100-continue"
		}
		for _, trusted := range []bool{false, true} {
			// As a client sends it (off the wire), and as a test makes
			// one in code: two ways the pass reads the names.
			for _, wire := range []bool{true, false} {
				var in fasthttp.RequestHeader
				if wire {
					raw := "GET /x HTTP/1.1\r\nHost: shop.example\r\n" + name + ": " + value + "\r\n"
					if strings.EqualFold(name, "Connection") {
						raw = "GET /x HTTP/1.1\r\nHost: shop.example\r\nConnection: X-Listed-In-Connection\r\nX-Listed-In-Connection: v\r\n"
					}
					if err := in.Read(bufio.NewReader(strings.NewReader(raw + "\r\n"))); err != nil {
						t.Fatalf("%s: %v", name, err)
					}
				} else {
					in.SetMethod("GET")
					in.SetRequestURI("/x")
					in.SetHost("shop.example")
					in.Set(name, value)
					if strings.EqualFold(name, "Connection") {
						in.Set("Connection", "X-Listed-In-Connection")
						in.Set("X-Listed-In-Connection", "v")
					}
				}
				id := callIdentity{trusted: trusted, override: "X-Strangler-Backend"}
				var out fasthttp.RequestHeader
				in.CopyTo(&out)
				clean := allForwardable(&in, &id)
				before := headerNames(out.PeekKeys())
				scrub(&out, &in, &id, false)
				if after := headerNames(out.PeekKeys()); !slices.Equal(before, after) && clean {
					t.Errorf("%s (trusted %v, wire %v): the pass called it clean, but scrub took %v to %v", name, trusted, wire, before, after)
				}
				plain := slices.Contains([]string{"Accept", "User-Agent", "X-User-Id", "Cookie", "Content-Type", "X-A-Very-Long-Header-Name-Beyond-Thirty-Two"}, name)
				if plain && !clean {
					t.Errorf("%s (trusted %v, wire %v): an end-to-end header failed the pass; every request would take the slow path", name, trusted, wire)
				}
			}
		}

		var res fasthttp.ResponseHeader
		res.Set(name, "v")
		if strings.EqualFold(name, "Connection") {
			res.Set("Connection", "X-Listed-In-Connection")
			res.Set("X-Listed-In-Connection", "v")
		}
		before := headerNames(res.PeekKeys())
		clean := !anyHopByHop(res.PeekKeys())
		deleteHopByHop(&res, false)
		if after := headerNames(res.PeekKeys()); !slices.Equal(before, after) && clean {
			t.Errorf("response %s: the pass called it clean, but deleting took %v to %v", name, before, after)
		}
	}
}

// TestCookiesPassByteForByte: the Cookie fields reach the upstream as
// the client sent them, from any peer, on the fast path and the slow
// one, and when the sticky key is a cookie. fasthttp, once it parses
// cookies, writes them out anew: quotes dropped, a quoted ";" cut.
func TestCookiesPassByteForByte(t *testing.T) {
	const cookie = `sess="a;b"; k=v; q="quoted"`
	for _, tt := range []struct {
		name, yaml string
		xff        bool // a forwarding header: the slow path
	}{
		{name: "untrusted", yaml: "trusted_proxies: []\n"},
		{name: "untrusted, with X-Forwarded-For", yaml: "trusted_proxies: []\n", xff: true},
		{name: "trusted", yaml: "trusted_proxies: [\"127.0.0.0/8\"]\n"},
		{name: "trusted, with X-Forwarded-For", yaml: "trusted_proxies: [\"127.0.0.0/8\"]\n", xff: true},
		{name: "sticky on a cookie", yaml: "sticky: { key: \"cookie:q\", salt: \"s\" }\nroutes:\n  - { name: r, match: \"GET /x\", weight: 50 }\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{}
			h := newHarness(t, rec, rec, tt.yaml)
			req, _ := http.NewRequest("GET", h.front.URL+"/x", nil)
			req.Header.Set("Cookie", cookie)
			if tt.xff {
				req.Header.Set("X-Forwarded-For", "203.0.113.9")
			}
			if res, _ := h.do(req); res.StatusCode != 200 {
				t.Fatalf("status %d", res.StatusCode)
			}
			if got := rec.last.Load().Header.Values("Cookie"); len(got) != 1 || got[0] != cookie {
				t.Errorf("upstream got Cookie %q; want exactly %q", got, cookie)
			}
		})
	}
}

// TestStickyCookieReadsTheValue: the sticky key read off the raw Cookie
// field is the cookie's value, quotes off, as net/http and fasthttp read
// it.
func TestStickyCookieReadsTheValue(t *testing.T) {
	for header, want := range map[string]string{
		`q=plain`:              "plain",
		`a=1; q="quoted"; b=2`: "quoted",
		` q = spaced ;x=1`:     "spaced",
		`qq=no; aq=no`:         "",
		`x=1`:                  "",
	} {
		req := fasthttp.AcquireRequest()
		req.Header.Set("Cookie", header)
		if got := (routed{req}).Cookie("q"); got != want {
			t.Errorf("Cookie %q: q = %q; want %q", header, got, want)
		}
		fasthttp.ReleaseRequest(req)
	}
}

// The override header never travels upstream, whatever the length of its
// configured name: canonName gives up on names over 32 bytes.
func TestALongOverrideHeaderIsScrubbed(t *testing.T) {
	const name = "X-Acme-Strangler-Backend-Override" // 33 bytes
	for _, spelling := range []string{name, "x_acme_strangler_backend_override"} {
		var in fasthttp.RequestHeader
		raw := "GET /x HTTP/1.1\r\nHost: shop.example\r\n" + spelling + ": newpath\r\n\r\n"
		if err := in.Read(bufio.NewReader(strings.NewReader(raw))); err != nil {
			t.Fatal(err)
		}
		id := callIdentity{trusted: true, override: name}
		if allForwardable(&in, &id) {
			t.Errorf("%s: the one-pass check calls a header with the override clean", spelling)
		}
		var out fasthttp.RequestHeader
		in.CopyTo(&out)
		scrub(&out, &in, &id, false)
		if v := out.Peek(spelling); len(v) > 0 {
			t.Errorf("%s: scrub kept the override header (%q)", spelling, v)
		}
	}
}
