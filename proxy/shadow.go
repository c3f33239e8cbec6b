package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/strangler-proxy/strangler/proxy/diff"
	"github.com/strangler-proxy/strangler/router"
)

// Shadow outcomes, the values of strangler_shadow_requests_total{outcome}.
// They are exclusive: each request selected for shadowing ends in exactly one.
const (
	outcomeSent                = "sent"    // the other side answered
	outcomeFailed              = "failed"  // it could not be reached or broke
	outcomeTimeout             = "timeout" // it did not answer within shadow.timeout
	outcomeDroppedSaturated    = "dropped_saturated"
	outcomeDroppedBodyTooLarge = "dropped_body_too_large"
	outcomeSkippedUnsafe       = "skipped_unsafe"
)

// bodyBroken is the access log's shadow field for a request whose body
// the client broke off before it was buffered: no shadow outcome, since
// the other side was never asked.
const bodyBroken = "client_body_broken"

var shadowOutcomes = [...]string{outcomeSent, outcomeFailed, outcomeTimeout, outcomeDroppedSaturated, outcomeDroppedBodyTooLarge, outcomeSkippedUnsafe}

func outcomeIndex(outcome string) int {
	for i, o := range shadowOutcomes {
		if o == outcome {
			return i
		}
	}
	panic("unknown shadow outcome " + outcome)
}

func safeMethod(method string) bool {
	return method == http.MethodGet || method == http.MethodHead || method == http.MethodOptions
}

// shadowJob is one request's comparison: the primary's answer captured as it
// streams to the client, the other side's answer, and for a noise probe
// legacy's second answer. The request goroutine writes the primary fields
// and then closes primaryDone; the shadow goroutine reads them only after.
type shadowJob struct {
	route      *boundRoute
	primary    router.Backend
	target     router.Backend
	noise      bool
	dryRun     bool
	in         *http.Request // a frozen copy of the inbound request: its own header map
	body       []byte        // the request body, buffered for replay
	bodyCharge int64         // what body holds of the buffering budget
	requestID  string
	traceID    string
	peer       netip.Addr
	trusted    bool
	upstream   [2]*upstream
	override   string
	maxBody    int64
	timeout    time.Duration
	start      time.Time

	primaryDone chan struct{}
	primaryRes  captured
	fellBack    bool // newpath could not answer; legacy did
}

// captured is one upstream answer held for comparison.
type captured struct {
	status   int
	header   http.Header
	body     *bytes.Buffer
	complete bool   // the whole body was read, within max_body_bytes
	outcome  string // for a shadow or noise call
	err      error
}

func (c *captured) response() diff.Response {
	return diff.Response{Status: c.status, Header: c.header, Body: c.body.Bytes()}
}

// planShadow decides whether the other side of x is also called, and if so
// dispatches it. It returns the access log's shadow field.
func (p *Proxy) planShadow(x *exchange) string {
	rc := x.bound.cfg
	if rc.Shadow.Percent <= 0 || rand.Float64()*100 >= rc.Shadow.Percent {
		return "off"
	}
	if x.in.Header.Get("Upgrade") != "" {
		return "off" // a protocol switch (WebSocket) is a stream, not an answer to compare
	}
	rt := x.bound.rt
	target := x.backend.Other()
	safe := safeMethod(x.in.Method)
	// Legacy never receives a shadowed write; newpath only as a dry run.
	if !safe && (target != router.Newpath || !rc.Shadow.DryRun) {
		rt.skip(target, outcomeSkippedUnsafe)
		return outcomeSkippedUnsafe
	}
	cfg := x.st.cfg.Shadow
	// The body first, then the slot: a slot is held only by a shadow that
	// is ready to go, so clients trickling their bodies cannot hold every
	// slot and starve the other routes. What bodies being buffered hold is
	// bounded on its own, by the same max_in_flight × max_body_bytes.
	body, charge, outcome := p.bufferBody(x.in, cfg.MaxBodyBytes, int64(cfg.MaxInFlight)*cfg.MaxBodyBytes)
	switch outcome {
	case "":
	case bodyBroken:
		// The client's failure, not the other side's: no shadow outcome,
		// and the request is answered as its broken body says.
		rt.count(resultSkipped)
		return outcome
	default:
		rt.skip(target, outcome)
		return outcome
	}
	if !p.acquireShadow(cfg.MaxInFlight) {
		p.releaseBody(charge)
		rt.skip(target, outcomeDroppedSaturated)
		return outcomeDroppedSaturated
	}
	in := x.in.Clone(context.WithoutCancel(x.in.Context()))
	in.Body = nil
	job := &shadowJob{
		route:       x.bound,
		primary:     x.backend,
		target:      target,
		noise:       safe && rc.Compare.NoisePercent > 0 && rand.Float64()*100 < rc.Compare.NoisePercent,
		dryRun:      !safe,
		in:          in,
		body:        body,
		bodyCharge:  charge,
		requestID:   x.requestID,
		traceID:     traceIDOf(x.in.Context()),
		peer:        x.peer,
		trusted:     x.trustedPeer,
		upstream:    x.st.upstream,
		override:    x.st.table.OverrideHeader(),
		maxBody:     cfg.MaxBodyBytes,
		timeout:     time.Duration(cfg.Timeout),
		start:       x.start,
		primaryDone: make(chan struct{}),
	}
	job.primaryRes.body = getBuffer()
	x.job = job
	p.shadows.Go(func() { p.runShadow(job) })
	return "shadowed"
}

// bufferBody reads the request body for replay to the other side, up to
// max bytes. The memory it takes (the buffer's capacity, as it grows with
// the bytes that arrive) is charged to what all requests may hold
// buffered at once, budget, and released with releaseBody(charge). It
// returns the body, or why no shadow can be made of it: a body over max
// (dropped_body_too_large), one the budget has no room for
// (dropped_saturated), or one the client broke off (bodyBroken). Whatever
// was read is then replayed, with the rest, to the primary, which streams
// it unshadowed.
func (p *Proxy) bufferBody(in *http.Request, max, budget int64) (body []byte, charge int64, outcome string) {
	if in.Body == nil || in.Body == http.NoBody {
		return nil, 0, ""
	}
	if in.ContentLength > max {
		return nil, 0, outcomeDroppedBodyTooLarge
	}
	var buf bytes.Buffer
	for outcome == "" {
		buf.Grow(4 << 10)
		if grown := int64(buf.Cap()) - charge; grown > 0 {
			if p.bufferedBodies.Add(grown) > budget {
				p.bufferedBodies.Add(-grown)
				outcome = outcomeDroppedSaturated
				break
			}
			charge += grown
		}
		free := buf.AvailableBuffer()
		n, err := in.Body.Read(free[:cap(free)])
		buf.Write(free[:n])
		switch {
		case int64(buf.Len()) > max:
			outcome = outcomeDroppedBodyTooLarge
		case err == io.EOF:
			in.Body = io.NopCloser(bytes.NewReader(buf.Bytes()))
			return buf.Bytes(), charge, ""
		case err != nil:
			outcome = bodyBroken
		}
	}
	p.releaseBody(charge)
	in.Body = readCloser{io.MultiReader(bytes.NewReader(buf.Bytes()), in.Body), in.Body}
	return nil, 0, outcome
}

// releaseBody gives back what bufferBody charged.
func (p *Proxy) releaseBody(charge int64) {
	p.bufferedBodies.Add(-charge)
}

type readCloser struct {
	io.Reader
	io.Closer
}

// acquireShadow takes one of max shadow slots, or reports that all are
// busy: excess shadows are dropped, never queued.
func (p *Proxy) acquireShadow(max int) bool {
	if n := p.shadowInFlight.Add(1); n > int64(max) {
		p.shadowInFlight.Add(-1)
		return false
	}
	p.metrics.shadowInFlight.Inc()
	return true
}

func (p *Proxy) releaseShadow() {
	p.shadowInFlight.Add(-1)
	p.metrics.shadowInFlight.Dec()
}

// runShadow is the goroutine of one shadowJob, owned by p.shadows: it calls
// the other side (and legacy again for a noise probe) on a context detached
// from the client, waits for the primary to finish streaming, and compares.
// It ends within about twice shadow.timeout, or at once when the proxy
// drains shadows on shutdown.
func (p *Proxy) runShadow(job *shadowJob) {
	defer p.releaseShadow()
	defer p.releaseBody(job.bodyCharge)
	// A defect in comparing one odd response must not take the proxy down.
	defer func() {
		if r := recover(); r != nil {
			job.route.rt.count(resultError)
			p.logger.Error("comparison panicked", "route", job.route.rt.name, "request_id", job.requestID, "panic", fmt.Sprint(r))
		}
	}()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(job.in.Context()), job.timeout)
	defer cancel()
	stop := context.AfterFunc(p.stopShadows, cancel)
	defer stop()

	var noiseRes *captured
	var wg sync.WaitGroup
	if job.noise {
		wg.Go(func() { noiseRes = p.call(ctx, job, router.Legacy, roleNoise) })
	}
	shadowRes := p.call(ctx, job, job.target, roleShadow)
	wg.Wait()
	rt := job.route.rt
	rt.metrics.shadow[job.target][outcomeIndex(shadowRes.outcome)].Inc()
	if noiseRes != nil {
		rt.metrics.noiseProbes.Inc()
	}
	defer putBuffer(shadowRes.body)
	if noiseRes != nil {
		defer putBuffer(noiseRes.body)
	}

	// The primary may still be streaming to a slow client.
	if !p.waitPrimary(job) {
		rt.count(resultSkipped)
		return
	}
	defer putBuffer(job.primaryRes.body)
	_, span := p.tracer.Start(job.in.Context(), "compare", trace.WithAttributes(attribute.String("route", rt.name)))
	result := p.compare(job, shadowRes, noiseRes)
	rt.count(result)
	p.recordComparison(job.route, result)
	span.SetAttributes(attribute.String("result", results[result]))
	span.End()
}

// waitPrimary waits for the primary to finish streaming, at most
// shadow.timeout; usually it has, and no timer is needed.
func (p *Proxy) waitPrimary(job *shadowJob) bool {
	select {
	case <-job.primaryDone:
		return true
	default:
	}
	wait := time.NewTimer(job.timeout)
	defer wait.Stop()
	select {
	case <-job.primaryDone:
		return true
	case <-wait.C:
	case <-p.stopShadows.Done():
	}
	return false
}

// call sends job's request to backend b with the shadow headers and reads
// the answer up to max_body_bytes.
func (p *Proxy) call(ctx context.Context, job *shadowJob, b router.Backend, role int) *captured {
	u := job.upstream[b]
	res := &captured{body: getBuffer()}
	var out *http.Request
	if job.noise {
		out = job.in.Clone(ctx) // two calls at once: each its own copy
	} else {
		// The only call may use the frozen copy's header itself; the URL,
		// which SetURL rewrites, is copied.
		out = job.in.WithContext(ctx)
		u := *job.in.URL
		out.URL = &u
	}
	out.RequestURI = ""
	out.Close = false
	if len(job.body) > 0 {
		out.Body = io.NopCloser(bytes.NewReader(job.body))
		out.ContentLength = int64(len(job.body))
	} else {
		out.Body = nil
		out.ContentLength = 0
	}
	removeHopByHopHeaders(out.Header)
	out.Header.Del("Forwarded") // X-Forwarded-* are rewritten by prepare
	// The body is buffered and sent at once; nobody waits for a 100.
	out.Header.Del("Expect")
	pr := &httputil.ProxyRequest{In: job.in, Out: out}
	u.prepare(pr, job.peer, job.trusted, job.requestID, job.override)
	out.Header.Set(headerShadow, "1")
	if _, ok := job.in.Header["User-Agent"]; !ok {
		// As httputil does for the primary: no Go default User-Agent, so
		// both sides see the client's headers alike.
		out.Header["User-Agent"] = []string{""}
	}
	if job.dryRun && b == router.Newpath {
		out.Header.Set(headerDryRun, "1")
	}
	// The shadow belongs to the request's trace, and links to its span so
	// tools that follow links find it from the request too.
	request := trace.Link{SpanContext: trace.SpanContextFromContext(job.in.Context())}
	_, span := p.startClientSpan(job.in.Context(), out.Header, b.String(), roles[role], request)

	start := time.Now()
	var err error
	if addr, ok := plainHTTPAddr(out); ok {
		var resp *http.Response
		if resp, res.complete, err = p.shadowClient.roundTrip(ctx, addr, out, res.body, job.maxBody); err == nil {
			res.status, res.header = resp.StatusCode, resp.Header
		}
	} else {
		err = transportCall(ctx, u.proxy.Transport, out, res, job.maxBody)
	}
	latency := time.Since(start)
	job.route.rt.metrics.upstream[b][role].Observe(latency.Seconds())
	defer func() {
		endSpan(span, res.status, res.err)
		p.recordCall(job.route, b, latency, res.err != nil || res.status >= 500)
	}()
	if err != nil {
		res.err = err
		res.outcome = outcomeFailed
		var ne net.Error
		if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
			res.outcome = outcomeTimeout
		}
		return res
	}
	res.outcome = outcomeSent
	return res
}

// plainHTTPAddr returns the host:port of an http:// request, which the
// shadow client serves; https goes through the upstream's Transport.
func plainHTTPAddr(req *http.Request) (string, bool) {
	if req.URL.Scheme != "http" {
		return "", false
	}
	if req.URL.Port() != "" {
		return req.URL.Host, true
	}
	return net.JoinHostPort(req.URL.Hostname(), "80"), true
}

// transportCall makes a shadow call through rt and reads the answer into
// res, up to max body bytes.
func transportCall(ctx context.Context, rt http.RoundTripper, out *http.Request, res *captured, max int64) error {
	resp, err := rt.RoundTrip(out)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	res.status, res.header = resp.StatusCode, resp.Header
	n, err := io.Copy(res.body, io.LimitReader(resp.Body, max+1))
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return err
	}
	res.complete = n <= max
	return nil
}

// removeHopByHopHeaders deletes the headers a proxy must not forward
// (RFC 9110 §7.6.1): those named in Connection and the fixed list.
func removeHopByHopHeaders(h http.Header) {
	for _, v := range h.Values("Connection") {
		for _, name := range strings.Split(v, ",") {
			if name = strings.TrimSpace(name); name != "" {
				h.Del(name)
			}
		}
	}
	for _, name := range []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"} {
		h.Del(name)
	}
}

// teeBody copies the primary's body into the job as it streams to the
// client, up to max bytes.
type teeBody struct {
	io.ReadCloser
	job *shadowJob
}

func (t *teeBody) Read(b []byte) (int, error) {
	n, err := t.ReadCloser.Read(b)
	res := &t.job.primaryRes
	if n > 0 && res.body != nil {
		if int64(res.body.Len()+n) > t.job.maxBody {
			putBuffer(res.body)
			res.body = nil // too large to compare; stop copying
		} else {
			res.body.Write(b[:n])
		}
	}
	if err == io.EOF && res.body != nil {
		res.complete = true
	}
	return n, err
}

// capturePrimary starts capturing the primary response of x's shadow job.
func (x *exchange) capturePrimary(res *http.Response) {
	job := x.job
	job.primaryRes.status = res.StatusCode
	job.primaryRes.header = res.Header.Clone()
	// A 101's body is the upgraded connection, which httputil needs as is.
	if res.Body == nil || res.Body == http.NoBody || res.StatusCode == http.StatusSwitchingProtocols {
		job.primaryRes.complete = true
		return
	}
	res.Body = &teeBody{ReadCloser: res.Body, job: job}
}

// finishPrimary hands the captured primary to the shadow goroutine.
func (x *exchange) finishPrimary() {
	job := x.job
	if x.fallback != "" || x.noAnswer || x.clientGone {
		job.fellBack = x.fallback != "" || x.noAnswer
		job.primaryRes.complete = false
	}
	if job.primaryRes.body == nil {
		job.primaryRes.body = getBuffer()
		job.primaryRes.complete = false
	}
	close(job.primaryDone)
}

// DrainShadows waits for in-flight shadows and comparisons until ctx is
// done, then cancels the rest; they count as skipped comparisons. It is
// part of shutdown, after the servers stopped accepting.
func (p *Proxy) DrainShadows(ctx context.Context) {
	done := make(chan struct{})
	go func() {
		p.shadows.Wait()
		close(done)
	}()
	defer p.shadowClient.closeIdle()
	select {
	case <-done:
		return
	case <-ctx.Done():
	}
	n := p.shadowInFlight.Load()
	p.cancelShadows()
	<-done
	p.logger.Warn("dropped in-flight comparisons at shutdown", "count", n)
}

var buffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

func getBuffer() *bytes.Buffer { return buffers.Get().(*bytes.Buffer) }

// putBuffer returns b to the pool unless it grew large: a few huge buffers
// kept forever would pin memory.
func putBuffer(b *bytes.Buffer) {
	if b == nil || b.Cap() > 1<<20 {
		return
	}
	b.Reset()
	buffers.Put(b)
}
