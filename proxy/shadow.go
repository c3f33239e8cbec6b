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
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/strangler-proxy/strangler/proxy/diff"
	"github.com/strangler-proxy/strangler/router"
	"github.com/valyala/fasthttp"
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
	return method == fasthttp.MethodGet || method == fasthttp.MethodHead || method == fasthttp.MethodOptions
}

// shadowJob is one request's comparison: the primary's answer captured as it
// streams to the client, the other side's answer, and for a noise probe
// legacy's second answer. The request goroutine writes the primary fields
// and then closes primaryDone; the shadow goroutine reads them only after.
type shadowJob struct {
	route   *boundRoute
	primary router.Backend
	target  router.Backend
	noise   bool
	dryRun  bool
	// header is a copy of the inbound request's: fasthttp reuses the
	// request once its answer is written.
	header     fasthttp.RequestHeader
	method     string
	path       string // escaped, for samples
	body       []byte // the request body, buffered for replay
	bodyCharge int64  // what body holds of the buffering budget
	id         callIdentity
	upstream   [2]*upstream
	maxBody    int64
	timeout    time.Duration

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
	req := &x.ctx.Request
	if len(req.Header.Peek("Upgrade")) > 0 {
		return "off" // a protocol switch (WebSocket) is a stream, not an answer to compare
	}
	rt := x.bound.rt
	target := x.backend.Other()
	method := string(req.Header.Method())
	safe := safeMethod(method)
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
	body, charge, outcome := p.bufferBody(x, cfg.MaxBodyBytes, int64(cfg.MaxInFlight)*cfg.MaxBodyBytes)
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
	job := &shadowJob{
		route:       x.bound,
		primary:     x.backend,
		target:      target,
		noise:       safe && rc.Compare.NoisePercent > 0 && rand.Float64()*100 < rc.Compare.NoisePercent,
		dryRun:      !safe,
		method:      method,
		path:        string(x.ctx.URI().PathOriginal()),
		body:        body,
		bodyCharge:  charge,
		id:          x.id.clone(),
		upstream:    x.st.upstream,
		maxBody:     cfg.MaxBodyBytes,
		timeout:     time.Duration(cfg.Timeout),
		primaryDone: make(chan struct{}),
	}
	req.Header.CopyTo(&job.header)
	job.primaryRes.body = getBuffer()
	x.job = job
	p.shadows.Go(func() { p.runShadow(job) })
	return "shadowed"
}

// bufferBody reads x's request body for replay to the other side, up to
// max bytes. The memory it takes (the buffer's capacity, as it grows with
// the bytes that arrive) is charged to what all requests may hold
// buffered at once, budget, and released with releaseBody(charge). It
// returns the body, or why no shadow can be made of it: a body over max
// (dropped_body_too_large), one the budget has no room for
// (dropped_saturated), or one the client broke off (bodyBroken). Whatever
// was read is then sent, with the rest, to the primary, which streams it
// unshadowed.
func (p *Proxy) bufferBody(x *exchange, max, budget int64) (body []byte, charge int64, outcome string) {
	if x.body == nil {
		return nil, 0, ""
	}
	if int64(x.ctx.Request.Header.ContentLength()) > max {
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
		n, err := x.body.Read(free[:cap(free)])
		buf.Write(free[:n])
		switch {
		case int64(buf.Len()) > max:
			outcome = outcomeDroppedBodyTooLarge
		case err == io.EOF:
			x.bodyBytes = buf.Bytes()
			if x.bodyBytes == nil {
				x.bodyBytes = []byte{}
			}
			return buf.Bytes(), charge, ""
		case err != nil:
			outcome = bodyBroken
		}
	}
	p.releaseBody(charge)
	x.upload = io.MultiReader(bytes.NewReader(buf.Bytes()), x.body)
	return nil, 0, outcome
}

// releaseBody gives back what bufferBody charged.
func (p *Proxy) releaseBody(charge int64) {
	p.bufferedBodies.Add(-charge)
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
			p.logger.Error("comparison panicked", "route", job.route.rt.name, "request_id", job.id.requestID, "panic", fmt.Sprint(r))
		}
	}()
	deadline := time.Now().Add(job.timeout)

	var noiseRes *captured
	var wg sync.WaitGroup
	if job.noise {
		// fasthttp's header reads use the header's scratch space: each
		// of the two calls at once reads its own copy.
		header := fasthttp.AcquireRequest()
		defer fasthttp.ReleaseRequest(header)
		job.header.CopyTo(&header.Header)
		wg.Go(func() { noiseRes = p.call(deadline, job, &header.Header, router.Legacy, roleNoise) })
	}
	shadowRes := p.call(deadline, job, &job.header, job.target, roleShadow)
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
	result := p.compare(job, shadowRes, noiseRes)
	rt.count(result)
	p.recordComparison(job.route, result)
	if p.tracing {
		_, span := p.tracer.Start(job.id.traceCtx, "compare", trace.WithAttributes(
			attribute.String("route", rt.name), attribute.String("result", results[result])))
		span.End()
	}
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

// call sends job's request (in, its header) to backend b with the shadow headers, built
// as the primary's is, and reads the answer up to max_body_bytes, all of
// it before deadline.
func (p *Proxy) call(deadline time.Time, job *shadowJob, in *fasthttp.RequestHeader, b router.Backend, role int) *captured {
	u := job.upstream[b]
	res := &captured{body: getBuffer()}
	out, ans := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(out)
	defer fasthttp.ReleaseResponse(ans)
	buildOutbound(out, in, u, &job.id)
	out.Header.Set(headerShadow, "1")
	if job.dryRun && b == router.Newpath {
		out.Header.Set(headerDryRun, "1")
	}
	if len(job.body) > 0 {
		out.SetBodyRaw(job.body)
	}
	if job.method == fasthttp.MethodHead {
		ans.SkipBody = true
	}
	// The shadow belongs to the request's trace, and links to its span so
	// tools that follow links find it from the request too.
	request := trace.Link{SpanContext: trace.SpanContextFromContext(job.id.traceCtx)}
	_, span := p.startClientSpan(job.id.traceCtx, requestCarrier{&out.Header}, b.String(), roles[role], request)

	start := time.Now()
	timeout := min(time.Until(deadline), u.timeout)
	var err error
	res.complete, err = p.client.fetch(out, ans, &call{key: u.key, timeout: timeout, caller: shadowCaller{p.stopShadows}}, res.body, job.maxBody, deadline, p.stopShadows)
	if err == nil {
		res.status = ans.StatusCode()
		res.header = httpHeader(&ans.Header)
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

// shadowCaller gives up on a shadow call when the proxy stops shadows;
// the call is buffered, so it can always be sent again.
type shadowCaller struct{ stop context.Context }

func (c shadowCaller) giveUp() error {
	if c.stop.Err() != nil {
		return context.Canceled
	}
	return nil
}

func (shadowCaller) retryable() bool { return true }

// httpHeader copies an answer's header for the differ.
func httpHeader(h *fasthttp.ResponseHeader) http.Header {
	out := make(http.Header, h.Len())
	for k, v := range h.All() {
		key := http.CanonicalHeaderKey(string(k))
		out[key] = append(out[key], string(v))
	}
	return out
}

// teePrimary copies a piece of the primary's body as it streams to the
// client, up to max bytes.
func (job *shadowJob) teePrimary(b []byte) {
	res := &job.primaryRes
	if res.body == nil {
		return
	}
	if int64(res.body.Len()+len(b)) > job.maxBody {
		putBuffer(res.body)
		res.body = nil // too large to compare; stop copying
		return
	}
	res.body.Write(b)
}

// capturePrimary captures the primary answer's status and header for x's
// shadow job; its body is teed as it streams.
func (x *exchange) capturePrimary() {
	job := x.job
	job.primaryRes.status = x.res.StatusCode()
	job.primaryRes.header = httpHeader(&x.res.Header)
}

// finishPrimary hands the captured primary to the shadow goroutine.
func (x *exchange) finishPrimary() {
	job := x.job
	if x.fallback != "" || x.noAnswer || x.clientGone || x.brokenAnswer {
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
	defer p.client.closeIdle()
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
