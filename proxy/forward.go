package proxy

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/valyala/fasthttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/strangler-proxy/strangler/config"
	"github.com/strangler-proxy/strangler/router"
)

// Headers strangler reads or sets. Every shadow, noise probe and replay
// carries ShadowHeader; a write shadowed or replayed to newpath carries
// DryRunHeader too.
const (
	headerRequestID = "X-Request-Id"
	ShadowHeader    = "X-Strangler-Shadow"
	DryRunHeader    = "X-Strangler-Dry-Run"

	shadowCanon = "x-strangler-shadow" // canonName(ShadowHeader)
	dryRunCanon = "x-strangler-dry-run"
)

// exchange is one client request's journey through the proxy: from the
// handler, through one or two attempts, to the end of the answer's body,
// which fasthttp streams to the client after the handler returned.
type exchange struct {
	proxy *Proxy
	ctx   *fasthttp.RequestCtx
	start time.Time
	st    *state
	bound *boundRoute // nil when unmatched
	route string
	// metrics are the route's, or the unmatched series.
	metrics    *routeMetrics
	backend    router.Backend
	id         callIdentity
	overridden bool   // a trusted override chose the backend: never fall back
	shadow     string // the access log's shadow field
	job        *shadowJob
	body       *clientBody // nil without a request body
	// bodyBytes is the body, when it was buffered whole for a shadow;
	// upload, when set, is what the primary sends of a body a shadow
	// buffered only in part: those bytes, then the rest.
	bodyBytes []byte
	upload    io.Reader

	span     trace.Span
	traceCtx context.Context // carries span

	fallback string // why legacy answered instead of newpath
	// How the answer ended. status is what the client got.
	status       int
	noAnswer     bool // no upstream answered; the proxy wrote the status
	brokenAnswer bool // the upstream's answer broke off mid-body
	clientGone   bool

	out    *fasthttp.Request
	res    *fasthttp.Response
	conn   *upstreamConn
	call   call
	stream answerStream
	idBuf  [128]byte // holds id.requestID
}

// exchanges are reused: an exchange is over, and nothing holds it, once
// finish has run.
var exchanges = sync.Pool{New: func() any { return new(exchange) }}

// callIdentity is what every upstream call of a request carries, primary,
// shadow and noise alike: who the client is and which request this is.
type callIdentity struct {
	peer      netip.Addr
	trusted   bool // the peer is one of trusted_proxies
	requestID string
	override  string // the override header, never forwarded
	traceCtx  context.Context
	// plain: none of the client's headers is one scrub deletes
	// (allForwardable), as is usual; the zero value has scrub look.
	plain bool
}

// clone is id for a shadow, which outlives the exchange whose buffer
// holds the request id.
func (id callIdentity) clone() callIdentity {
	id.requestID = strings.Clone(id.requestID)
	return id
}

// upstream is one backend of one state.
type upstream struct {
	name    string // its key under upstreams
	cfg     *config.Upstream
	key     dialKey
	timeout time.Duration
	host    string // the URL's host, for preserve_host false
	// basePath and baseQuery are the URL's, joined to every request's.
	basePath  string
	baseQuery string
}

func newUpstream(name string, cfg *config.Upstream) *upstream {
	target := cfg.ParsedURL()
	return &upstream{
		name:      name,
		cfg:       cfg,
		key:       dialKeyOf(cfg),
		timeout:   time.Duration(cfg.Timeout),
		host:      target.Host,
		basePath:  strings.TrimSuffix(target.EscapedPath(), "/"),
		baseQuery: target.RawQuery,
	}
}

// dialKeyOf is where an upstream's connections go: upstreams with equal
// keys share warm connections, across routes and reloads.
func dialKeyOf(u *config.Upstream) dialKey {
	target := u.ParsedURL()
	port := target.Port()
	if port == "" {
		port = "80"
		if target.Scheme == "https" {
			port = "443"
		}
	}
	return dialKey{tls: target.Scheme == "https", addr: net.JoinHostPort(target.Hostname(), port), host: target.Hostname()}
}

// HandleFastHTTP is the client listener's handler: it routes, assigns and
// forwards one request. The attempt loop sends to the assigned backend;
// a fallback-eligible failure of a safe request sends the next attempt to
// legacy. The answer's body streams to the client after HandleFastHTTP
// returns, and the exchange finishes when it has (see answerStream).
func (p *Proxy) HandleFastHTTP(ctx *fasthttp.RequestCtx) {
	if answeredHere(ctx) {
		return
	}
	x := p.begin(ctx)
	var err error
	for {
		err = x.attempt()
		if err == nil {
			if reason := x.fallbackStatus(); reason != "" && x.canFallback() {
				x.discardAnswer()
				x.fallBack(reason)
				continue
			}
			x.answer()
			return
		}
		if x.clientFault(err) {
			break
		}
		reason, _ := classify(err)
		if x.canFallback() {
			x.fallBack(reason)
			continue
		}
		break
	}
	x.answerError(err)
	x.finish()
}

// answeredHere answers the requests that are the proxy's own, never
// forwarded: CONNECT (a proxy in front of a backend opens no tunnels; a
// 2xx would tell the client one is open) and a target of "*" (OPTIONS *
// asks about this server; net/http answers it the same way).
func answeredHere(ctx *fasthttp.RequestCtx) bool {
	switch {
	case ctx.IsConnect():
		ctx.Response.Header.Set("Allow", "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS")
		ctx.SetStatusCode(fasthttp.StatusMethodNotAllowed)
	case string(ctx.Request.Header.RequestURI()) == "*":
		if !ctx.IsOptions() {
			ctx.SetStatusCode(fasthttp.StatusBadRequest)
			break
		}
		ctx.Response.Header.SetContentLength(0)
	default:
		return false
	}
	return true
}

// begin reads what routing needs of the request, assigns its backend and
// plans its shadow.
func (p *Proxy) begin(ctx *fasthttp.RequestCtx) *exchange {
	st := p.state.Load()
	req := &ctx.Request
	x := exchanges.Get().(*exchange)
	*x = exchange{proxy: p, ctx: ctx, start: p.now(), st: st, route: "unmatched", metrics: st.unmatch, shadow: "off"}
	x.id = callIdentity{
		peer:      peerOf(ctx.RemoteAddr()),
		requestID: b2s(requestID(x.idBuf[:0], req.Header.Peek(headerRequestID))),
		override:  st.table.OverrideHeader(),
	}
	x.id.trusted = containsAddr(st.trusted, x.id.peer)
	x.id.plain = allForwardable(&req.Header, &x.id)
	if uri := req.Header.RequestURI(); len(uri) > 0 && uri[0] != '/' {
		// An absolute-form target: its authority is the Host (RFC 9112
		// §3.2.2), and upstreams get the origin form.
		// The origin form is the target's own bytes after the authority,
		// as routing reads the path (PathOriginal): fasthttp's
		// RequestURI() would resolve dot segments and decode %2F, and
		// the upstream would get a path other than the one routed.
		req.Header.SetHostBytes(ctx.URI().Host())
		req.Header.SetRequestURIBytes(originForm(uri))
	}
	x.traceCtx = propagator.Extract(context.Background(), requestCarrier{&req.Header})
	if p.tracing {
		x.traceCtx, x.span = p.tracer.Start(x.traceCtx, "strangler", serverSpan)
	}
	x.id.traceCtx = x.traceCtx
	if up := req.Header.Peek("Upgrade"); len(up) > 0 && !strings.EqualFold(string(up), "websocket") {
		// Only WebSocket switches protocols through the proxy: an upstream
		// taking h2c (or any other) would open a tunnel past routing,
		// overrides and header hygiene.
		req.Header.Del("Upgrade")
	}
	// Content-Length, or -1 for chunked; -2 is a request without a body.
	if n := req.Header.ContentLength(); (n > 0 || n == -1) && ctx.RequestBodyStream() != nil {
		// A client that stalls mid-body is cut off by client_body_timeout;
		// its body's errors are its own fault, not the upstream's.
		x.body = &clientBody{r: ctx.RequestBodyStream(), conn: ctx.Conn(), timeout: time.Duration(st.cfg.ClientBodyTimeout)}
	}
	if i, ok := st.table.Match(b2s(req.Header.Method()), b2s(req.Header.Host()), matchPath(ctx.URI())); ok {
		br := st.routes[i]
		x.bound, x.route, x.metrics = br, br.rt.name, br.metrics
		a := st.table.Assign(routed{req}, x.id.peer, int(br.rt.effectiveBasisPoints.Load()))
		x.backend, x.overridden = a.Backend, a.Overridden
		x.shadow = p.planShadow(x)
	}
	return x
}

// attempt sends the request to x.backend and reads the answer's header
// into x.res. It records the attempt: the upstream's latency, its span,
// and the call in the route's window, where the guard sees it.
func (x *exchange) attempt() error {
	p := x.proxy
	u := x.upstream()
	if x.out == nil {
		x.out, x.res = fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	} else {
		x.out.Reset()
	}
	buildOutbound(x.out, &x.ctx.Request.Header, u, &x.id)
	switch {
	case x.bodyBytes != nil:
		x.out.SetBodyRaw(x.bodyBytes)
	case x.upload != nil:
		x.out.SetBodyStream(x.upload, x.ctx.Request.Header.ContentLength())
	case x.body != nil:
		x.out.SetBodyStream(x.body, x.ctx.Request.Header.ContentLength())
	}
	if x.ctx.IsHead() {
		x.res.SkipBody = true
	}
	_, span := p.startClientSpan(x.traceCtx, requestCarrier{&x.out.Header}, x.backend.String(), roles[rolePrimary])
	start := time.Now()
	x.call = call{key: u.key, timeout: u.timeout, caller: x}
	conn, err := p.client.do(x.out, x.res, &x.call)
	latency := time.Since(start)
	if err != nil && x.clientFault(err) {
		// Not the upstream's doing: no latency, no call in the window.
		endSpan(span, 0, err)
		return err
	}
	status := x.res.StatusCode()
	if err != nil {
		status = 0
	}
	endSpan(span, status, err)
	failed := err != nil || status >= 500
	x.metrics.call(x.backend, rolePrimary, latency, failed)
	if x.bound != nil {
		p.recordCall(x.bound, x.backend, latency, failed)
	}
	if err != nil {
		return err
	}
	x.conn = conn
	return nil
}

// upstream is the upstream x.backend names for x: the route's pair's, or
// for an unmatched request the state's.
func (x *exchange) upstream() *upstream {
	if x.bound != nil {
		return x.bound.upstream[x.backend]
	}
	return x.st.upstream[x.backend]
}

// giveUp tells a call waiting for its answer that the client left. It
// looks only once the request's body is read: until then the client is
// still sending.
func (x *exchange) giveUp() error {
	if x.body != nil && !x.body.ended() {
		return nil
	}
	if peerClosed(x.ctx.Conn()) {
		return errClientGone
	}
	return nil
}

// retryable reports whether the request may go again on a fresh
// connection: a safe method, whose body (if any) is buffered. A streamed
// body is spent by its first send, and an unsafe request on a connection
// that broke may have taken effect (a charge made twice).
func (x *exchange) retryable() bool {
	safe := x.ctx.IsGet() || x.ctx.IsHead() || x.ctx.IsOptions()
	return safe && (x.body == nil || x.bodyBytes != nil)
}

// clientFault reports whether err is the client's doing: it left, or its
// body broke or stalled.
func (x *exchange) clientFault(err error) bool {
	if errors.Is(err, errClientGone) {
		x.clientGone = true
		return true
	}
	return x.body != nil && x.body.failure() != nil
}

// fallbackStatus names the answer's status when it is one legacy may
// answer instead of.
func (x *exchange) fallbackStatus() string {
	switch x.res.StatusCode() {
	case fasthttp.StatusBadGateway:
		return reasonStatus502
	case fasthttp.StatusServiceUnavailable:
		return reasonStatus503
	case fasthttp.StatusGatewayTimeout:
		return reasonStatus504
	}
	return ""
}

// canFallback reports whether legacy may answer for newpath: a safe method
// without a body, on a route with fallback on, not forced by an override,
// and not already a fallback.
func (x *exchange) canFallback() bool {
	if x.backend != router.Newpath || x.bound == nil || !x.bound.cfg.Fallback || x.fallback != "" || x.overridden {
		return false
	}
	return SafeMethod(b2s(x.ctx.Method())) && x.body == nil
}

func (x *exchange) fallBack(reason string) {
	x.fallback = reason
	x.proxy.metrics.fallbacks.WithLabelValues(x.route, reason).Inc()
	x.backend = router.Legacy
}

// discardAnswer drops an answer legacy replaces. Its connection is kept
// when the body is short enough to read past (an error page usually is).
func (x *exchange) discardAnswer() {
	reusable := true
	if body := x.res.BodyStream(); body != nil {
		// An upstream that stalls its error page must not hold the
		// fallback up: it gets its own timeout for the rest.
		_ = x.conn.SetReadDeadline(time.Now().Add(x.call.timeout))
		n, err := io.CopyN(io.Discard, body, maxDiscardedBody+1)
		reusable = err == io.EOF && n <= maxDiscardedBody
	}
	x.res.CloseBodyStream() //nolint:errcheck // what was read decides
	x.proxy.client.release(x.conn, reusable && !x.res.ConnectionClose())
	x.conn = nil
}

// maxDiscardedBody is how much of a replaced answer is read to keep its
// connection.
const maxDiscardedBody = 4 << 10

// answer hands the upstream's answer to fasthttp: status and headers
// without hop-by-hop ones, and the body as a stream that finishes the
// exchange when fasthttp has written it.
func (x *exchange) answer() {
	res := &x.ctx.Response
	x.res.Header.CopyTo(&res.Header)
	removeHopByHop(&res.Header, x.res.StatusCode() == fasthttp.StatusSwitchingProtocols)
	x.status = x.res.StatusCode()
	if x.job != nil {
		x.capturePrimary()
	}
	if x.status == fasthttp.StatusSwitchingProtocols {
		x.tunnel()
		return
	}
	body := x.res.BodyStream()
	if body == nil || x.res.Header.ContentLength() == 0 || x.ctx.IsHead() {
		// Nothing streams: the answer is complete as it is.
		x.res.CloseBodyStream() //nolint:errcheck // a body without bytes
		x.proxy.client.release(x.conn, !x.res.ConnectionClose() && !x.out.ConnectionClose())
		x.conn = nil
		if x.job != nil {
			x.job.primaryRes.complete = true
		}
		res.SkipBody = x.ctx.IsHead()
		x.finish()
		return
	}
	size := x.res.Header.ContentLength()
	if size < 0 {
		size = -1
		// Unknown length (SSE, a long poll): the header leaves at once,
		// and each piece as it arrives.
		res.ImmediateHeaderFlush = true
	}
	x.stream = answerStream{x: x, body: body}
	res.SetBodyStream(&x.stream, size)
}

// answerStream is the upstream's body as fasthttp copies it to the
// client, teed into the shadow's capture.
type answerStream struct {
	x    *exchange
	body io.Reader
	eof  bool
	err  error // the upstream's, not the client's
}

func (s *answerStream) Read(b []byte) (int, error) {
	n, err := s.body.Read(b)
	if n > 0 && s.x.job != nil {
		s.x.job.teePrimary(b[:n])
	}
	switch {
	case err == io.EOF:
		s.eof = true
	case err != nil:
		s.err = err
	}
	return n, err
}

// CloseWithError is how fasthttp ends the stream: err is why writing it
// failed, nil when the client got all of it. answerStream is no
// io.Closer: fasthttp would call Close first, then CloseWithError, and the
// exchange must finish once, knowing err.
func (s *answerStream) CloseWithError(err error) error {
	x := s.x
	if x == nil {
		return nil
	}
	s.x = nil
	switch {
	case s.err != nil:
		// The upstream broke its answer (closed before the Content-Length
		// it promised): an error, for the metrics and the guard alike. A
		// 5xx was counted one at its header already.
		x.brokenAnswer = true
		if x.status < 500 {
			x.metrics.errors[x.backend][rolePrimary].Inc()
			if x.bound != nil {
				x.proxy.recordBrokenAnswer(x.bound, x.backend)
			}
		}
	case err != nil:
		x.clientGone = true
	}
	if x.job != nil && s.eof {
		x.job.primaryRes.complete = x.job.primaryRes.body != nil
	}
	x.res.CloseBodyStream() //nolint:errcheck // the stream's error is s.err
	x.proxy.client.release(x.conn, s.eof && !x.res.ConnectionClose() && !x.out.ConnectionClose())
	x.conn = nil
	x.finish()
	return nil
}

// answerError answers a request no upstream answered: 408 or 400 for a
// client whose body stalled or broke, nothing for one that left, else 502
// (connect refused, broken) or 504 (timeout).
func (x *exchange) answerError(err error) {
	res := &x.ctx.Response
	res.Reset()
	res.Header.SetContentType("text/plain; charset=utf-8")
	switch {
	case x.bodyTimedOut():
		x.ctx.SetConnectionClose()
		x.status = fasthttp.StatusRequestTimeout
		res.SetBodyString("request body timed out\n")
	case x.clientGone:
		x.ctx.SetConnectionClose()
		x.status = 499
	case x.body != nil && x.body.failure() != nil:
		// The client's body was malformed or cut: its fault, so a 400, and
		// no count against the upstream (one client must not trip a guard).
		x.ctx.SetConnectionClose()
		x.status = fasthttp.StatusBadRequest
		res.SetBodyString("malformed request body\n")
	default:
		x.noAnswer = true
		var reason string
		reason, x.status = classify(err)
		x.proxy.logger.Warn("upstream error",
			"request_id", x.id.requestID, "route", x.route, "backend", x.backend.String(), "upstream", x.upstream().name,
			"reason", reason, "error", config.Redact(err.Error()))
		res.SetBodyString(fasthttp.StatusMessage(x.status) + "\n")
	}
	res.SetStatusCode(x.status)
}

// finish records the request's metrics, span and access log line, and
// hands the primary's answer to the shadow. It runs once, when the answer
// is over.
func (x *exchange) finish() {
	p := x.proxy
	if x.body != nil {
		x.body.finish()
	}
	if x.job != nil {
		x.finishPrimary()
	}
	if x.out != nil {
		fasthttp.ReleaseRequest(x.out)
		fasthttp.ReleaseResponse(x.res)
		x.out, x.res = nil, nil
	}
	elapsed := p.now().Sub(x.start)
	status := x.status
	class := codeClass(status)
	switch {
	case x.bodyTimedOut():
		status, class = fasthttp.StatusRequestTimeout, codeClass(fasthttp.StatusRequestTimeout)
	case x.clientGone:
		// Gone before the answer or in the middle of its body.
		status, class = 499, codeClass(499)
	case x.noAnswer, x.brokenAnswer:
		class = codeError
	}
	x.metrics.requests[x.backend][class].Inc()
	x.metrics.duration[x.backend].Observe(elapsed.Seconds())
	method := b2s(x.ctx.Method())
	if x.span != nil {
		method := string(method)
		x.span.SetName(method + " " + x.route)
		x.span.SetAttributes(
			attribute.String("route", x.route),
			attribute.String("backend", x.backend.String()),
			attribute.Bool("shadowed", x.job != nil),
			semconv.HTTPRequestMethodKey.String(method),
			semconv.HTTPResponseStatusCode(status))
		if class == codeError || status >= 500 {
			x.span.SetStatus(codes.Error, "")
		}
		x.span.End()
	}
	if x.st.cfg.Log.Access {
		p.accessLog(x, method, status, elapsed)
	}
	*x = exchange{}
	exchanges.Put(x)
}

// serverSpan is the request span's kind, made once.
var serverSpan = trace.WithSpanKind(trace.SpanKindServer)

// buildOutbound writes the request every upstream call of a request
// sends, primary, shadow and noise alike, into out: in's method, target
// and headers, without hop-by-hop ones (RFC 9110 §7.6.1, and those named
// in Connection), pointed at u, with the forwarding headers for id.
func buildOutbound(out *fasthttp.Request, in *fasthttp.RequestHeader, u *upstream, id *callIdentity) {
	in.CopyTo(&out.Header)
	h := &out.Header
	h.SetNoDefaultContentType(true)
	h.SetRequestURIBytes(outboundURI(h.RequestURI(), u))
	if !u.cfg.PreserveHost || len(in.Host()) == 0 {
		h.SetHost(u.host)
	}
	websocket := bytes.EqualFold(in.Peek("Upgrade"), []byte("websocket"))
	if !id.plain {
		scrub(h, in, id, websocket)
	}
	h.ResetConnectionClose() // each side's connection is the proxy's to keep alive or not
	if websocket {
		h.Set("Connection", "Upgrade")
	}
	setForwarded(h, in, id.peer, id.trusted)
	h.Set(headerRequestID, id.requestID)
}

// allForwardable reports whether none of the names of in, a client's
// header, is one scrub deletes, as is usual: one pass over the names, once
// a request (callIdentity.plain), then spares every outbound request of it
// a pass for every name scrub would delete. Names are compared
// canonically (canonName), so the pass may send a header to scrub that
// scrub then keeps, never the other way.
func allForwardable(in *fasthttp.RequestHeader, id *callIdentity) bool {
	names := clientNames(in)
	for name, ok := names.next(); ok; name, ok = names.next() {
		canon := canonName(name)
		if scrubbed(name, canon, id) || isHopByHop(canon) {
			return false
		}
	}
	return true
}

// scrubbed reports whether scrub deletes a client's header name (canon
// its canonName) from every outbound request to id, the hop-by-hop
// headers aside: the override header, the forwarding headers
// setForwarded writes anew, strangler's own (a forged dry-run header
// would make newpath skip a real write), Expect (fasthttp answers it,
// and the body goes upstream without waiting), and from a peer that is
// not a trusted proxy every other header saying who the client is.
func scrubbed(name []byte, canon string, id *callIdentity) bool {
	switch canon {
	case "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "forwarded",
		shadowCanon, dryRunCanon, "expect":
		return true
	}
	return spells(name, id.override) || !id.trusted && isForwarding(name, canon)
}

// spells reports whether name is a spelling of the header named header:
// in any case, with underscores for dashes, at any length (canonName
// stops at 32 bytes, and the override header's name is the config's).
func spells(name []byte, header string) bool {
	if len(name) != len(header) || header == "" {
		return false
	}
	for i, c := range name {
		if c == '_' {
			c = '-'
		}
		if lowerASCII(c) != lowerASCII(header[i]) {
			return false
		}
	}
	return true
}

func lowerASCII(c byte) byte {
	if c >= 'A' && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// nameScan yields the field names of a client's header: off the block as
// it came on the wire, or, for a header made in code (a test's), which
// has none, from fasthttp's list. That list parses the Cookie fields and
// writes them out anew, not as the client sent them (a quoted value
// loses its quotes, one with a ";" in quotes is cut): a proxy passes
// them on byte for byte.
type nameScan struct {
	raw  []byte
	keys [][]byte
}

func clientNames(in *fasthttp.RequestHeader) nameScan {
	if raw := in.RawHeaders(); len(raw) > 0 {
		return nameScan{raw: raw}
	}
	return nameScan{keys: in.PeekKeys()}
}

func (s *nameScan) next() ([]byte, bool) {
	for len(s.raw) > 0 {
		var line []byte
		line, s.raw, _ = bytes.Cut(s.raw, []byte("\n"))
		// The block's last, empty line has no colon; a line folded onto
		// the one before (which the framing check refuses anyway) starts
		// with a space, so its "name" is none strangler looks for.
		if name, _, ok := bytes.Cut(line, []byte(":")); ok {
			return name, true
		}
	}
	if len(s.keys) > 0 {
		name := s.keys[0]
		s.keys = s.keys[1:]
		return name, true
	}
	return nil, false
}

// scrub deletes from h, a copy of a client's header, what never travels
// upstream: the hop-by-hop headers (but for what a WebSocket upgrade
// needs), the forwarding headers setForwarded writes (and from a peer
// that is not a trusted proxy, every other header saying who the client
// is or how it connected), and the headers that steer strangler itself.
// Each goes in every spelling: backends that read headers CGI-style read
// X_Forwarded_For as X-Forwarded-For.
func scrub(h, in *fasthttp.RequestHeader, id *callIdentity, websocket bool) {
	deleteHopByHop(h, websocket)
	var drop [][]byte
	names := clientNames(in)
	for name, ok := names.next(); ok; name, ok = names.next() {
		if scrubbed(name, canonName(name), id) {
			drop = append(drop, bytes.Clone(name))
		}
	}
	for _, name := range drop {
		h.DelBytes(name)
	}
}

// canonName is a header name as strangler compares it: in lower case,
// with underscores as dashes (CGI-style X_Real_Ip is read as X-Real-Ip),
// or "" when it is too long to be one strangler looks for.
func canonName(name []byte) string {
	var buf [32]byte
	if len(name) > len(buf) {
		return ""
	}
	for i, c := range name {
		if c == '_' {
			c = '-'
		}
		buf[i] = lowerASCII(c)
	}
	return string(buf[:len(name)])
}

// originForm is an absolute-form target's origin form, byte for byte:
// what follows its authority, "/" when that is no path (RFC 9112 §3.2.1).
func originForm(uri []byte) []byte {
	_, rest, ok := bytes.Cut(uri, []byte("://"))
	if !ok {
		return bytes.Clone(uri)
	}
	switch i := bytes.IndexAny(rest, "/?"); {
	case i < 0:
		return []byte("/")
	case rest[i] == '?':
		return append([]byte("/"), rest[i:]...)
	default:
		return bytes.Clone(rest[i:])
	}
}

// outboundURI is the request target sent to u: uri, origin-form (see
// begin), under u's base path and with its base query.
func outboundURI(uri []byte, u *upstream) []byte {
	if u.basePath == "" && u.baseQuery == "" {
		return uri
	}
	path, query, hasQuery := bytes.Cut(uri, []byte("?"))
	joined := make([]byte, 0, len(u.basePath)+len(uri)+len(u.baseQuery)+1)
	joined = append(joined, u.basePath...)
	joined = append(joined, path...)
	switch {
	case u.baseQuery != "" && hasQuery:
		joined = append(append(append(append(joined, '?'), u.baseQuery...), '&'), query...)
	case u.baseQuery != "":
		joined = append(append(joined, '?'), u.baseQuery...)
	case hasQuery:
		joined = append(append(joined, '?'), query...)
	}
	return joined
}

// hopByHop are the headers a proxy must not forward (RFC 9110 §7.6.1),
// beside those named in Connection.
var hopByHop = [...]string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

// isHopByHop reports whether a canonName is one of hopByHop.
func isHopByHop(lower string) bool {
	switch lower {
	case "connection", "proxy-connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade":
		return true
	}
	return false
}

// connectionTokens calls f with each header name the Connection header
// lists.
func connectionTokens(values [][]byte, f func(name []byte)) {
	for _, v := range values {
		for len(v) > 0 {
			var name []byte
			name, v, _ = bytes.Cut(v, []byte(","))
			if name = bytes.TrimSpace(name); len(name) > 0 {
				f(name)
			}
		}
	}
}

// hopHeader is a fasthttp request or response header.
type hopHeader interface {
	PeekKeys() [][]byte
	PeekAll(key string) [][]byte
	DelBytes(key []byte)
	Del(key string)
	ResetConnectionClose()
}

// removeHopByHop deletes the hop-by-hop headers of h. keepUpgrade keeps
// Connection: Upgrade and Upgrade, which a WebSocket upgrade (and its 101)
// needs end to end.
func removeHopByHop(h hopHeader, keepUpgrade bool) {
	// fasthttp keeps Connection: close as a flag of its own: each side's
	// connection is the proxy's to keep alive or not.
	h.ResetConnectionClose()
	if anyHopByHop(h.PeekKeys()) {
		deleteHopByHop(h, keepUpgrade)
	}
}

// deleteHopByHop is removeHopByHop for a header that has some: a pass
// over the header for each name, where anyHopByHop's one pass tells the
// usual header, which has none.
func deleteHopByHop(h hopHeader, keepUpgrade bool) {
	connectionTokens(h.PeekAll("Connection"), func(name []byte) {
		if !keepUpgrade || !bytes.EqualFold(name, []byte("Upgrade")) {
			h.DelBytes(name)
		}
	})
	for _, name := range hopByHop {
		if keepUpgrade && (name == "Connection" || name == "Upgrade") {
			continue
		}
		h.Del(name)
	}
}

// anyHopByHop reports whether one of the header names is hop-by-hop.
func anyHopByHop(names [][]byte) bool {
	for _, name := range names {
		if isHopByHop(canonName(name)) {
			return true
		}
	}
	return false
}

// isForwardingName reports whether a canonName says who the client is or
// how it connected: X-Forwarded-*, Forwarded, and the headers proxies and
// CDNs pass the client's address in (X-Real-Ip, True-Client-Ip, ...),
// which backends read as they read X-Forwarded-For.
func isForwardingName(canon string) bool {
	switch canon {
	case "forwarded", "x-real-ip", "true-client-ip", "x-client-ip", "cf-connecting-ip", "fastly-client-ip",
		"x-cluster-client-ip", "x-url-scheme", "front-end-https":
		return true
	}
	return strings.HasPrefix(canon, "x-forwarded-")
}

// isForwarding is isForwardingName for a client's header name and its
// canonName, which is "" for a long name: X-Forwarded-* of any length
// counts (X-Forwarded-Ssl, -Scheme, -Port and -Prefix among them, which
// frameworks trust as they trust X-Forwarded-Proto).
func isForwarding(name []byte, canon string) bool {
	const prefix = "x-forwarded-"
	return isForwardingName(canon) || canon == "" && len(name) > len(prefix) && canonName(name[:len(prefix)]) == prefix
}

// setForwarded writes X-Forwarded-For/-Proto/-Host and X-Real-Ip into h,
// a copy of in that scrub cleaned. A trusted proxy's chain is kept and
// its address appended, and its client-address headers are kept; anyone
// else's values were dropped, so the upstream sees exactly the peer
// address (X-Real-Ip is set to it). Forwarded (RFC 7239) is never passed
// on: X-Forwarded-* say it.
func setForwarded(h *fasthttp.RequestHeader, in *fasthttp.RequestHeader, peer netip.Addr, trusted bool) {
	var addrBuf [64]byte
	addr := addrBuf[:0]
	if peer.IsValid() {
		addr = peer.AppendTo(addr)
	}
	proto, host := []byte("http"), in.Host()
	var chain []byte
	if trusted {
		for _, v := range in.PeekAll("X-Forwarded-For") {
			chain = append(append(chain, v...), ", "...)
		}
		if v := in.Peek("X-Forwarded-Proto"); len(v) > 0 {
			proto = v
		}
		if v := in.Peek("X-Forwarded-Host"); len(v) > 0 {
			host = v
		}
	}
	realIP := in.Peek("X-Real-Ip")
	if !trusted || len(realIP) == 0 {
		realIP = addr
		if trusted && len(chain) > 0 {
			// From a trusted proxy, the address it saw (the last it
			// appended; what comes before is whatever its own client
			// claimed).
			last := bytes.TrimSuffix(chain, []byte(", "))
			if i := bytes.LastIndexByte(last, ','); i >= 0 {
				last = last[i+1:]
			}
			realIP = bytes.TrimSpace(last)
		}
	}
	if len(chain) > 0 {
		addr = append(chain, addr...)
	}
	h.SetBytesV("X-Forwarded-For", addr)
	h.SetBytesV("X-Forwarded-Proto", proto)
	h.SetBytesV("X-Forwarded-Host", host)
	if len(realIP) > 0 {
		h.SetBytesV("X-Real-Ip", realIP)
	}
}

// classify names an upstream error and the status the client gets for it.
func classify(err error) (reason string, status int) {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return reasonTimeout, fasthttp.StatusGatewayTimeout
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return reasonConnectError, fasthttp.StatusBadGateway
	}
	return reasonTransportError, fasthttp.StatusBadGateway
}

// requestID appends to dst a client's sane request id (at most 128
// characters of [A-Za-z0-9._-]), or else a fresh one: 128 random bits,
// from the runtime's per-thread ChaCha8 source rather than the kernel's
// (a system call a request); a request id names, it guards nothing.
func requestID(dst, got []byte) []byte {
	if saneRequestID(got) {
		return append(dst, got...)
	}
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:8], rand.Uint64())
	binary.LittleEndian.PutUint64(b[8:], rand.Uint64())
	return hex.AppendEncode(dst, b[:])
}

func saneRequestID(s []byte) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for _, c := range s {
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

// clientBody reads the client's request body with a timeout between
// reads (client_body_timeout), and records why it broke. It is read on
// the request's goroutine only, but the client-gone check and the
// timeout check may look at it from a call in progress: its state is
// behind mu.
type clientBody struct {
	r       io.Reader
	conn    net.Conn
	timeout time.Duration
	n       int64 // bytes read

	mu       sync.Mutex
	err      error     // sticky: io.EOF, or why the body broke
	deadline time.Time // of the read in progress
	reading  bool
	finished bool // the exchange is over: the connection is not ours
}

func (b *clientBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	if b.err != nil || b.finished {
		// Never read again past an error, nor touch the connection's
		// deadline once it may carry the next request.
		err := b.err
		b.mu.Unlock()
		if err == nil {
			err = io.ErrClosedPipe
		}
		return 0, err
	}
	b.deadline, b.reading = time.Now().Add(b.timeout), true
	_ = b.conn.SetReadDeadline(b.deadline)
	b.mu.Unlock()

	n, err := b.r.Read(p)

	b.mu.Lock()
	defer b.mu.Unlock()
	b.n += int64(n)
	b.reading = false
	switch {
	case err == io.EOF:
		b.err = err
		if !b.finished {
			_ = b.conn.SetReadDeadline(time.Time{})
		}
	case err != nil:
		b.err = err
	}
	return n, err
}

// ended reports whether the body was read to its end or broke.
func (b *clientBody) ended() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err != nil
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

// timedOut reports whether a read of the body ran into its deadline.
func (b *clientBody) timedOut(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return errors.Is(b.err, os.ErrDeadlineExceeded) || errors.Is(b.err, fasthttp.ErrTimeout)
	}
	return b.reading && !now.Before(b.deadline)
}

// finish marks the exchange over: later reads leave the connection alone.
func (b *clientBody) finish() {
	b.mu.Lock()
	b.finished = true
	b.mu.Unlock()
}

// routed is what the router reads of a request.
type routed struct{ r *fasthttp.Request }

func (r routed) Header(name string) string { return b2s(r.r.Header.Peek(name)) }
func (r routed) Query(name string) string  { return b2s(r.r.URI().QueryArgs().Peek(name)) }

// Cookie reads the named cookie off the Cookie fields as the client sent
// them: fasthttp's own Cookie parses them, and the request then carries
// them upstream written out anew (see nameScan). Surrounding quotes are
// not part of the value, as net/http and fasthttp read it.
func (r routed) Cookie(name string) string {
	for _, field := range r.r.Header.PeekAll(fasthttp.HeaderCookie) {
		for len(field) > 0 {
			var pair []byte
			pair, field, _ = bytes.Cut(field, []byte(";"))
			key, value, _ := bytes.Cut(pair, []byte("="))
			if string(bytes.TrimSpace(key)) == name {
				value = bytes.TrimSpace(value)
				if len(value) >= 2 && value[0] == '"' && value[len(value)-1] == '"' {
					value = value[1 : len(value)-1]
				}
				return b2s(value)
			}
		}
	}
	return ""
}

// matchPath is the path routes match: decoded, as net/http's
// Request.URL.Path, and not cleaned, so that an unclean path matches no
// route, as with ServeMux.
func matchPath(u *fasthttp.URI) string {
	raw := u.PathOriginal()
	if bytes.IndexByte(raw, '%') < 0 {
		return b2s(raw)
	}
	path, err := url.PathUnescape(string(raw))
	if err != nil {
		return b2s(raw)
	}
	return path
}

// b2s views b as a string without a copy; the string must not outlive b's
// next change.
func b2s(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// peerOf is the peer's address.
func peerOf(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.AddrPort().Addr().Unmap()
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

func containsAddr(prefixes []netip.Prefix, a netip.Addr) bool {
	for _, p := range prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// tunnel joins the client's connection to the upstream's after a 101
// (a WebSocket): the exchange is over for the metrics, and the bytes flow
// both ways until either side closes.
func (x *exchange) tunnel() {
	upstream := x.conn
	x.conn = nil
	head := append([]byte(nil), x.ctx.Response.Header.Header()...)
	x.ctx.HijackSetNoResponse(true)
	x.ctx.Hijack(func(client net.Conn) {
		defer upstream.Close()
		if _, err := client.Write(head); err != nil {
			return
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			_, _ = io.Copy(upstream, client)
			if cw, ok := upstream.Conn.(interface{ CloseWrite() error }); ok {
				_ = cw.CloseWrite()
			}
		}()
		// What the upstream sent past its 101 is in its reader already.
		_, _ = io.Copy(client, upstream.br)
		_ = client.Close()
		<-done
	})
	x.finish()
}

// maxRequestHeaderBytes bounds a client's request header: it is the size
// of each client connection's read buffer, which fasthttp's parser cannot
// grow past (431 beyond it). nginx allows 8 KiB a line, 32 KiB in all.
const maxRequestHeaderBytes = 32 << 10

// Server returns a fasthttp server of the proxy's handler, configured as
// the handler needs: request bodies stream (see MaxRequestBodySize), and
// nothing is added to an answer (no Server, Date or Content-Type of
// fasthttp's). Timeouts, logging and shutdown are the caller's.
func (p *Proxy) Server() *fasthttp.Server {
	return &fasthttp.Server{
		Handler:           p.HandleFastHTTP,
		ReadBufferSize:    maxRequestHeaderBytes,
		StreamRequestBody: true,
		// With streaming, this is what is read of a body before the
		// handler runs: one byte, so that a client stalling mid-body
		// meets client_body_timeout, not the server's ReadTimeout.
		MaxRequestBodySize:           1,
		DisablePreParseMultipartForm: true,
		NoDefaultServerHeader:        true,
		NoDefaultDate:                true,
		NoDefaultContentType:         true,
	}
}
