package proxy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/strangler-proxy/strangler/config"
	"github.com/strangler-proxy/strangler/router"
)

// Headers strangler reads or sets.
const (
	headerRequestID = "X-Request-Id"
	headerShadow    = "X-Strangler-Shadow"
	headerDryRun    = "X-Strangler-Dry-Run"
)

// exchange is one client request's journey through the proxy. The forwarding
// hooks find it in the request context.
type exchange struct {
	proxy       *Proxy
	start       time.Time
	in          *http.Request
	st          *state
	bound       *boundRoute // nil when unmatched
	route       string
	metrics     *routeMetrics
	backend     router.Backend
	peer        netip.Addr
	trustedPeer bool
	requestID   string
	writer      statusWriter
	shadow      string     // the access log's shadow field
	job         *shadowJob // nil unless the other side is called too

	span          trace.Span // the server span
	upstreamSpan  trace.Span // the primary call's client span
	upstreamStart time.Time
	fallback      string // reason legacy answered instead of newpath
	clientGone    bool
	overridden    bool        // a trusted override chose the backend: never fall back
	body          *clientBody // nil without a request body
	noAnswer      bool        // no upstream answered; the proxy wrote the status
	brokenAnswer  bool        // the upstream's answer broke off mid-body
}

type exchangeKey struct{}

func exchangeFrom(ctx context.Context) *exchange {
	x, _ := ctx.Value(exchangeKey{}).(*exchange)
	return x
}

// upstream is one backend of one state: its URL and the reverse proxy that
// forwards to it over a shared, tuned transport.
type upstream struct {
	backend router.Backend
	cfg     *config.Upstream
	key     transportKey
	proxy   *httputil.ReverseProxy
}

// transportKey identifies transports that can be shared across reloads: a
// reload that changes neither keeps its warm connections.
type transportKey struct {
	scheme, host string
	timeout      time.Duration
}

func (p *Proxy) newUpstream(b router.Backend, cfg *config.Upstream, key transportKey) *upstream {
	u := &upstream{backend: b, cfg: cfg, key: key}
	t, ok := p.transports[u.key]
	if !ok {
		t = newTransport(time.Duration(cfg.Timeout))
		p.transports[u.key] = t
	}
	u.proxy = &httputil.ReverseProxy{
		Rewrite:        u.rewrite,
		Transport:      t,
		BufferPool:     copyBuffers,
		ModifyResponse: p.modifyResponse,
		ErrorHandler:   p.handleError,
		ErrorLog:       slog.NewLogLogger(p.logger.Handler(), slog.LevelWarn),
	}
	return u
}

// newTransport is tuned for a proxy's traffic to one host: many idle
// connections kept warm, no transparent decompression (the client gets the
// upstream's bytes), and timeout bounding dial and the wait for headers,
// never a streaming body.
func newTransport(timeout time.Duration) *http.Transport {
	dialer := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
	return &http.Transport{
		Proxy:                  nil,
		DialContext:            dialer.DialContext,
		MaxIdleConns:           1024,
		MaxIdleConnsPerHost:    256,
		IdleConnTimeout:        90 * time.Second,
		TLSHandshakeTimeout:    10 * time.Second,
		ResponseHeaderTimeout:  timeout,
		ExpectContinueTimeout:  time.Second,
		MaxResponseHeaderBytes: maxResponseHeaderBytes,
		DisableCompression:     true,
		ForceAttemptHTTP2:      true,
	}
}

// copyBuffers spares each response a fresh 32 KiB copy buffer.
var copyBuffers = &bufferPool{pool: sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}}

type bufferPool struct{ pool sync.Pool }

func (b *bufferPool) Get() []byte  { return *b.pool.Get().(*[]byte) }
func (b *bufferPool) Put(p []byte) { b.pool.Put(&p) }

var _ httputil.BufferPool = (*bufferPool)(nil)

// rewrite builds the outbound primary request. httputil has already
// removed the hop-by-hop headers (RFC 9110 §7.6.1, and those named in
// Connection) and the inbound X-Forwarded-* headers.
func (u *upstream) rewrite(pr *httputil.ProxyRequest) {
	x := exchangeFrom(pr.In.Context())
	u.prepare(pr, x.peer, x.trustedPeer, x.requestID, x.st.table.OverrideHeader())
	_, x.upstreamSpan = x.proxy.startClientSpan(pr.In.Context(), pr.Out.Header, u.backend.String(), "primary")
	x.upstreamStart = time.Now()
}

// prepare points an outbound request at u and sets the headers every call
// of a request carries, primary, shadow and noise alike.
func (u *upstream) prepare(pr *httputil.ProxyRequest, peer netip.Addr, trusted bool, requestID, overrideHeader string) {
	pr.SetURL(u.cfg.ParsedURL())
	if u.cfg.PreserveHost {
		pr.Out.Host = pr.In.Host
	}
	h := pr.Out.Header
	setForwarded(h, pr.In, peer, trusted)
	h.Set(headerRequestID, requestID)
	// Headers that steer strangler itself never travel upstream from a
	// client: a forged dry-run header would make newpath skip a real write.
	h.Del(overrideHeader)
	h.Del(headerShadow)
	h.Del(headerDryRun)
}

// clientIPHeaders name the client's address as proxies and CDNs pass it
// on. Backends read them as they read X-Forwarded-For, so they are trusted
// only from trusted_proxies.
var clientIPHeaders = []string{"X-Real-Ip", "True-Client-Ip", "X-Client-Ip", "Cf-Connecting-Ip", "Fastly-Client-Ip", "X-Cluster-Client-Ip"}

// isForwardingHeader reports whether a canonical header name says who the
// client is or how it connected.
func isForwardingHeader(name string) bool {
	switch name {
	case "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "Forwarded":
		return true
	}
	return slices.Contains(clientIPHeaders, name)
}

// setForwarded writes X-Forwarded-For/-Proto/-Host and X-Real-Ip. A
// trusted proxy's chain is kept and its address appended, and its
// client-address headers are kept; anyone else's values are dropped, so
// the upstream sees exactly the peer address (X-Real-Ip is set to it).
func setForwarded(h http.Header, in *http.Request, peer netip.Addr, trusted bool) {
	addr := ""
	if peer.IsValid() {
		addr = peer.String()
	}
	proto := "http"
	if in.TLS != nil {
		proto = "https"
	}
	host := in.Host
	if trusted {
		if prior := in.Header.Values("X-Forwarded-For"); len(prior) > 0 {
			addr = strings.Join(prior, ", ") + ", " + addr
		}
		if v := in.Header.Get("X-Forwarded-Proto"); v != "" {
			proto = v
		}
		if v := in.Header.Get("X-Forwarded-Host"); v != "" {
			host = v
		}
	}
	h["X-Forwarded-For"] = []string{addr}
	h["X-Forwarded-Proto"] = []string{proto}
	h["X-Forwarded-Host"] = []string{host}
	if !trusted {
		for _, name := range clientIPHeaders {
			delete(h, name)
		}
		// CGI-style backends read X_Real_Ip as X-Real-Ip.
		for name := range h {
			if strings.IndexByte(name, '_') >= 0 && isForwardingHeader(http.CanonicalHeaderKey(strings.ReplaceAll(name, "_", "-"))) {
				delete(h, name)
			}
		}
	}
	if _, ok := h["X-Real-Ip"]; !ok {
		// From a trusted proxy, the address it saw (the last it appended;
		// what comes before is whatever its own client claimed); else the
		// peer.
		if prior := in.Header.Values("X-Forwarded-For"); trusted && len(prior) > 0 {
			last := prior[len(prior)-1]
			if i := strings.LastIndexByte(last, ','); i >= 0 {
				last = last[i+1:]
			}
			h["X-Real-Ip"] = []string{strings.TrimSpace(last)}
		} else if peer.IsValid() {
			h["X-Real-Ip"] = []string{peer.String()}
		}
	}
}

// errFallback asks the error handler to let legacy answer instead.
type errFallback struct{ reason string }

func (e errFallback) Error() string { return "newpath answered " + e.reason }

func (p *Proxy) modifyResponse(res *http.Response) error {
	x := exchangeFrom(res.Request.Context())
	latency := time.Since(x.upstreamStart)
	x.metrics.upstream[x.backend][rolePrimary].Observe(latency.Seconds())
	endSpan(x.upstreamSpan, res.StatusCode, nil)
	if x.bound != nil {
		p.recordCall(x.bound, x.backend, latency, res.StatusCode >= 500)
	}
	if x.canFallback() {
		switch res.StatusCode {
		case http.StatusBadGateway:
			return errFallback{reasonStatus502}
		case http.StatusServiceUnavailable:
			return errFallback{reasonStatus503}
		case http.StatusGatewayTimeout:
			return errFallback{reasonStatus504}
		}
	}
	if x.job != nil {
		x.capturePrimary(res)
	}
	return nil
}

// canFallback reports whether legacy may answer for newpath: a safe method
// without a body, on a route with fallback on, not forced by an override.
func (x *exchange) canFallback() bool {
	if x.backend != router.Newpath || x.bound == nil || !x.bound.cfg.Fallback || x.fallback != "" || x.overridden {
		return false
	}
	switch x.in.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
	default:
		return false
	}
	return x.in.Body == nil || x.in.Body == http.NoBody
}

// handleError answers a request that got no usable upstream response: 499
// when the client left (logged, never an error), a fallback to legacy when
// allowed, else 502 (connect refused, broken) or 504 (timeout).
func (p *Proxy) handleError(w http.ResponseWriter, out *http.Request, err error) {
	x := exchangeFrom(out.Context())
	// A stalled body also cancels the request's context (net/http takes a
	// read error for the client gone), maybe before the body's reader has
	// said why: the client is still there to get its 408.
	if x.bodyTimedOut() {
		endSpan(x.upstreamSpan, 0, err)
		writeBodyError(w, true)
		return
	}
	if x.in.Context().Err() != nil {
		x.clientGone = true
		endSpan(x.upstreamSpan, 0, err)
		return
	}
	if x.body != nil && x.body.failure() != nil {
		// The client's body was malformed or cut: its fault, so a 400, and
		// no count against the upstream (one client must not trip a guard).
		endSpan(x.upstreamSpan, 0, err)
		writeBodyError(w, false)
		return
	}
	var fb errFallback
	reason, status := classify(err)
	if errors.As(err, &fb) {
		reason = fb.reason
	} else {
		latency := time.Since(x.upstreamStart)
		x.metrics.upstream[x.backend][rolePrimary].Observe(latency.Seconds())
		endSpan(x.upstreamSpan, 0, err)
		if x.bound != nil {
			p.recordCall(x.bound, x.backend, latency, true)
		}
	}
	if x.canFallback() {
		x.fallback = reason
		p.metrics.fallbacks.WithLabelValues(x.route, reason).Inc()
		x.backend = router.Legacy
		x.st.upstream[router.Legacy].proxy.ServeHTTP(w, x.in)
		return
	}
	x.noAnswer = true
	p.logger.Warn("upstream error",
		"request_id", x.requestID, "route", x.route, "backend", x.backend.String(),
		"reason", reason, "error", config.Redact(err.Error()))
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, http.StatusText(status)+"\n")
}

// classify names an upstream error and the status the client gets for it.
func classify(err error) (reason string, status int) {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return reasonTimeout, http.StatusGatewayTimeout
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return reasonConnectError, http.StatusBadGateway
	}
	return reasonTransportError, http.StatusBadGateway
}

// requestID keeps a client's sane request id (at most 128 characters of
// [A-Za-z0-9._-]) and otherwise makes one.
func requestID(got string) string {
	if saneRequestID(got) {
		return got
	}
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func saneRequestID(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// bodyTimedOut reports whether the client stalled past
// client_body_timeout.
func (x *exchange) bodyTimedOut() bool {
	return x.body != nil && x.body.timedOut(time.Now())
}

// writeBodyError answers a request whose body could not be read: 408 for
// one that stalled past client_body_timeout (and its connection closes),
// 400 for a malformed or cut one.
func writeBodyError(w http.ResponseWriter, timedOut bool) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if timedOut {
		w.Header().Set("Connection", "close")
		w.WriteHeader(http.StatusRequestTimeout)
		_, _ = io.WriteString(w, "request body timed out\n")
		return
	}
	w.WriteHeader(http.StatusBadRequest)
	_, _ = io.WriteString(w, "malformed request body\n")
}

// clientBody reads the client's request body with a timeout between
// reads (client_body_timeout), and records why it broke. The upstream's
// Transport reads it on a goroutine of its own, while the handler decides
// on the answer: its state is behind mu.
type clientBody struct {
	io.ReadCloser
	rc      *http.ResponseController
	timeout time.Duration

	mu       sync.Mutex
	err      error     // sticky: io.EOF, or why the body broke
	deadline time.Time // of the read in progress
	reading  bool
	finished bool // the handler returned: the connection is not ours
}

func (b *clientBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	if b.err != nil || b.finished {
		// Never read again past an error (the read would wait for the
		// client without the deadline), nor touch the connection's
		// deadline once it may carry the next request.
		err := b.err
		b.mu.Unlock()
		if err == nil {
			err = http.ErrBodyReadAfterClose
		}
		return 0, err
	}
	b.deadline, b.reading = time.Now().Add(b.timeout), true
	_ = b.rc.SetReadDeadline(b.deadline)
	b.mu.Unlock()

	n, err := b.ReadCloser.Read(p)

	b.mu.Lock()
	defer b.mu.Unlock()
	b.reading = false
	switch {
	case err == io.EOF:
		// The body is over: the connection is the server's again, without
		// a deadline of ours.
		b.err = err
		if !b.finished {
			_ = b.rc.SetReadDeadline(time.Time{})
		}
	case err != nil:
		// The deadline stays: net/http, draining what is left of the body
		// after the answer, must not wait for a client that stalled.
		b.err = err
	}
	return n, err
}

// failure returns why the body broke, nil when it has not (or ended).
func (b *clientBody) failure() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err == io.EOF {
		return nil
	}
	return b.err
}

// timedOut reports whether a read of the body ran into its deadline,
// which may show before the read itself returns: net/http cancels the
// request on the read error first.
func (b *clientBody) timedOut(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return errors.Is(b.err, os.ErrDeadlineExceeded)
	}
	return b.reading && !now.Before(b.deadline)
}

// finish marks the handler done: later reads (a Transport still writing)
// leave the connection alone.
func (b *clientBody) finish() {
	b.mu.Lock()
	b.finished = true
	b.mu.Unlock()
}

// statusWriter records the status the client got. It unwraps for
// http.ResponseController, so flushing and hijacking reach the connection.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	// 1xx answers are interim, except 101 which switches protocols.
	if w.status == 0 && (code >= 200 || code == http.StatusSwitchingProtocols) {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Flush lets httputil flush streamed responses without a ResponseController
// lookup.
func (w *statusWriter) Flush() {
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
