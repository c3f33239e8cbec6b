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
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/strangler-proxy/strangler/config"
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

// SafeMethod reports whether method is one strangler sends to both
// sides (GET, HEAD, OPTIONS); other methods reach only newpath, as dry
// runs, when shadowed or replayed.
func SafeMethod(method string) bool {
	return method == fasthttp.MethodGet || method == fasthttp.MethodHead || method == fasthttp.MethodOptions
}

// shadowJob is one request's comparison: the primary's answer captured as it
// streams to the client, the other side's answer, and for a noise probe
// legacy's second answer. The request goroutine writes the primary fields
// and then closes primaryDone; the shadow goroutine reads them only after.
// Jobs are pooled, with their requests, header maps and buffers.
type shadowJob struct {
	route   *boundRoute
	primary router.Backend
	target  router.Backend
	noise   bool
	method  string
	path    string // escaped, for samples
	query   string // the raw query, for samples
	dryRun  bool   // the shadow of a write, sent to newpath as a dry run
	capture bool   // its comparison is captured (capture.percent)
	// out and noiseOut are the shadow's and the noise probe's requests,
	// built on the request goroutine from the inbound request, which
	// fasthttp reuses once its answer is written.
	out, noiseOut *fasthttp.Request
	body          []byte // the request body, buffered for replay
	bodyCharge    int64  // what body holds of the buffering budget
	id            callIdentity
	upstream      [2]*upstream
	maxBody       int64
	timeout       time.Duration
	sampleBody    int                     // divergence_store.sample_body_bytes
	record        *config.DivergenceStore // what a sample of the request redacts

	primaryDone chan struct{}
	// owners are the request and the shadow worker: the last to let go
	// of the job returns it to the pool (the primary may outlast a shadow
	// that stopped waiting for it).
	owners     atomic.Int32
	probe      sync.WaitGroup // the noise probe's call
	fellBack   bool           // newpath could not answer; legacy did
	primaryRes captured
	shadowRes  captured
	noiseRes   captured

	// A pipelined shadow call (pipeline.go): its call, its answer and
	// span until it is over, and whether it is.
	proxy    *Proxy
	pc       pipeCall
	ans      *fasthttp.Response
	span     trace.Span
	answered bool
}

var shadowJobs = sync.Pool{New: func() any { return new(shadowJob) }}

// done lets go of job; the last owner returns it to the pool.
func (job *shadowJob) done() {
	if job.owners.Add(-1) == 0 {
		job.release()
	}
}

// release returns job to the pool once both owners are done with it.
func (job *shadowJob) release() {
	fasthttp.ReleaseRequest(job.out)
	if job.noiseOut != nil {
		fasthttp.ReleaseRequest(job.noiseOut)
	}
	primary, shadow, noise := job.primaryRes.reset(), job.shadowRes.reset(), job.noiseRes.reset()
	*job = shadowJob{primaryRes: primary, shadowRes: shadow, noiseRes: noise}
	shadowJobs.Put(job)
}

// captured is one upstream answer held for comparison.
type captured struct {
	status   int
	header   http.Header // only what the route's comparer reads
	body     *bytes.Buffer
	complete bool   // the whole body was read, within max_body_bytes
	outcome  string // for a shadow or noise call
	err      error
}

func (c *captured) response() diff.Response {
	return diff.Response{Status: c.status, Header: c.header, Body: c.body.Bytes()}
}

// reset returns c emptied for its job's next use: its buffer goes back to
// the pool; its header map keeps its keys with no values, and their
// slices, for keepHeader to refill.
func (c *captured) reset() captured {
	putBuffer(c.body)
	for k, v := range c.header {
		c.header[k] = v[:0]
	}
	return captured{header: c.header}
}

// keepHeader copies into c the fields of h named in keys (canonical
// names: what the comparer reads), each field line a value as net/http
// would hold it.
func (c *captured) keepHeader(h *fasthttp.ResponseHeader, keys []string) {
	if c.header == nil {
		c.header = make(http.Header, len(keys))
	}
	for _, key := range keys {
		if key != fasthttp.HeaderSetCookie {
			for _, v := range h.PeekAll(key) {
				c.add(key, v)
			}
			continue
		}
		// PeekAll joins the cookies in one line; net/http keeps each.
		for k, v := range h.All() {
			if strings.EqualFold(b2s(k), key) {
				c.add(key, v)
			}
		}
	}
}

// add appends v to the values of key. The slice left by reset is reused,
// and so is its old string when v repeats it, as Content-Type does from
// one answer to the next.
func (c *captured) add(key string, v []byte) {
	values := c.header[key]
	if n := len(values); n < cap(values) && values[:n+1][n] == string(v) {
		c.header[key] = values[:n+1]
		return
	}
	c.header[key] = append(values, string(v))
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
	rt := x.bound // its skip and count have the route's series
	target := x.backend.Other()
	method := methodName(req.Header.Method())
	safe := SafeMethod(method)
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
	if !p.admitShadow() {
		p.releaseShadow()
		p.releaseBody(charge)
		rt.skip(target, outcomeDroppedSaturated)
		return outcomeDroppedSaturated
	}
	job := shadowJobs.Get().(*shadowJob)
	job.route, job.primary, job.target = x.bound, x.backend, target
	job.noise = safe && rc.Compare.NoisePercent > 0 && rand.Float64()*100 < rc.Compare.NoisePercent
	job.method, job.path = method, string(x.ctx.URI().PathOriginal())
	job.query, job.dryRun = "", !safe
	if q := x.ctx.URI().QueryString(); len(q) > 0 {
		job.query = string(q)
	}
	job.record = &x.st.cfg.DivergenceStore
	job.capture = p.capture != nil && rc.Capture.Percent > 0 && rand.Float64()*100 < rc.Capture.Percent
	job.body, job.bodyCharge = body, charge
	job.id, job.upstream = x.id.clone(), x.bound.upstream
	job.maxBody, job.timeout = cfg.MaxBodyBytes, time.Duration(cfg.Timeout)
	job.sampleBody = x.st.cfg.DivergenceStore.SampleBodyBytes
	job.primaryDone = make(chan struct{})
	job.owners.Store(2)
	job.primaryRes.body = getBuffer()
	job.out = job.prepare(&req.Header, target, !safe)
	if job.noise {
		job.noiseOut = job.prepare(&req.Header, router.Legacy, false)
	}
	x.job = job
	if pl := job.pipeline(cfg.PipelineDepth); pl != nil {
		p.sendPipelined(job, pl, cfg.PipelineDepth)
	} else {
		p.workers.dispatch(job)
	}
	return "shadowed"
}

// admitShadow counts a shadow into p.shadows, unless DrainShadows has
// begun: then the shadow is not made, and no Add races the drain's Wait.
// By then every client was answered or cut off at the end of the grace
// period, and a cut-off primary is nothing to compare.
func (p *Proxy) admitShadow() bool {
	p.drainMu.RLock()
	defer p.drainMu.RUnlock()
	if p.draining {
		return false
	}
	p.shadows.Add(1)
	return true
}

// methodName is a request's method as a string that outlives the
// request: the standard ones without an allocation, as planShadow runs on
// every request of a shadowed route, even those a full max_in_flight
// drops.
func methodName(m []byte) string {
	for _, known := range methods {
		if string(m) == known {
			return known
		}
	}
	return string(m)
}

var methods = [...]string{fasthttp.MethodGet, fasthttp.MethodHead, fasthttp.MethodPost, fasthttp.MethodPut,
	fasthttp.MethodPatch, fasthttp.MethodDelete, fasthttp.MethodOptions}

// pipeline returns the pipeline job's shadow call goes on, or nil when
// it is made on its worker: pipelining is off (depth 1), the job also
// probes noise (the two calls go out together), or the request is not a
// GET or OPTIONS without a body (an answer to HEAD has no body to frame
// it: a wrong one would be read as the next call's answer), or asks to
// close.
func (job *shadowJob) pipeline(depth int) *pipeline {
	if depth <= 1 || job.noise || job.body != nil || job.out.ConnectionClose() ||
		job.method != fasthttp.MethodGet && job.method != fasthttp.MethodOptions {
		return nil
	}
	return job.route.pipelines[job.target]
}

// sendPipelined queues job's shadow call on pl; pipeDone takes it from
// there.
func (p *Proxy) sendPipelined(job *shadowJob, pl *pipeline, depth int) {
	job.proxy = p
	job.shadowRes.body = getBuffer()
	job.ans = fasthttp.AcquireResponse()
	job.span = p.startShadowSpan(job, job.out, job.target, roleShadow)
	job.pc = pipeCall{req: job.out, res: job.ans, body: job.shadowRes.body, max: job.maxBody,
		timeout: job.timeout, headerTimeout: job.upstream[job.target].timeout,
		expires: time.Now().Add(2 * job.timeout), then: job}
	pl.send(&job.pc, depth)
}

// inlineCompareMax is the most the two bodies of a pipelined shadow may
// hold together for their comparison to run on the pipeline's reader,
// which reads nothing meanwhile; larger ones go to a worker.
const inlineCompareMax = 64 << 10

// pipeDone is told, on the pipeline's reader, that job's shadow call is
// over. The comparison runs there when the primary is done too and the
// bodies are small; else on a worker, which waits for the primary.
func (job *shadowJob) pipeDone(c *pipeCall) {
	p := job.proxy
	if errors.Is(c.err, errExpired) {
		// Never sent: dropped like a shadow over max_in_flight, not a
		// failure of the upstream's.
		job.shadowRes.outcome = outcomeDroppedSaturated
		endSpan(job.span, 0, c.err)
	} else {
		p.callDone(job, job.target, roleShadow, &job.shadowRes, job.ans, c.complete, c.err, c.latency, job.span)
	}
	fasthttp.ReleaseResponse(job.ans)
	job.ans, job.span = nil, nil
	p.countShadow(job)
	job.answered = true
	select {
	case <-job.primaryDone:
		if job.primaryRes.body.Len()+job.shadowRes.body.Len() <= inlineCompareMax {
			p.runShadow(job)
			return
		}
	default:
	}
	p.workers.dispatch(job)
}

// prepare builds job's request to backend b from in, as the primary's is,
// marked as a shadow (and as a dry run for a write).
func (job *shadowJob) prepare(in *fasthttp.RequestHeader, b router.Backend, dryRun bool) *fasthttp.Request {
	out := fasthttp.AcquireRequest()
	buildOutbound(out, in, job.upstream[b], &job.id)
	out.Header.Set(ShadowHeader, "1")
	if dryRun {
		out.Header.Set(DryRunHeader, "1")
	}
	if len(job.body) > 0 {
		out.SetBodyRaw(job.body)
	}
	return out
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

// runShadow runs one shadowJob on a shadow worker, counted by p.shadows:
// it calls the other side (and legacy again for a noise probe) detached
// from the client, waits for the primary to finish streaming, and
// compares. It ends within about twice shadow.timeout, or at once when
// the proxy drains shadows on shutdown.
func (p *Proxy) runShadow(job *shadowJob) {
	defer p.endShadow(job)
	if !job.answered {
		p.shadowCalls(job)
	}
	br := job.route
	// The primary may still be streaming to a slow client.
	if !p.waitPrimary(job) {
		br.count(resultSkipped)
		return
	}
	var noiseRes *captured
	if job.noise {
		noiseRes = &job.noiseRes
	}
	result := p.compare(job, &job.shadowRes, noiseRes)
	br.count(result)
	p.recordComparison(br, result)
	if p.tracing {
		_, span := p.tracer.Start(job.id.traceCtx, "compare", trace.WithAttributes(
			attribute.String("route", br.rt.name), attribute.String("result", results[result])))
		span.End()
	}
}

// endShadow lets go of what job holds, once its comparison is over: its
// body, its slot, its part of the job. A defect in comparing one odd
// response must not take the proxy down: a panic is recovered here.
func (p *Proxy) endShadow(job *shadowJob) {
	if r := recover(); r != nil {
		job.route.count(resultError)
		p.logger.Error("comparison panicked", "route", job.route.rt.name, "request_id", job.id.requestID, "panic", fmt.Sprint(r))
	}
	p.releaseBody(job.bodyCharge)
	job.probe.Wait() // a panic must not release what the probe still uses
	job.done()
	p.releaseShadow()
	p.shadows.Done()
}

// shadowCalls makes job's calls on its worker: the shadow, and for a
// noise probe legacy again, at once.
func (p *Proxy) shadowCalls(job *shadowJob) {
	deadline := time.Now().Add(job.timeout)
	if job.noise {
		job.probe.Go(func() { p.call(deadline, job, job.noiseOut, router.Legacy, roleNoise, &job.noiseRes) })
	}
	p.call(deadline, job, job.out, job.target, roleShadow, &job.shadowRes)
	job.probe.Wait()
	p.countShadow(job)
}

// countShadow counts job's shadow outcome, and its noise probe.
func (p *Proxy) countShadow(job *shadowJob) {
	m := job.route.metrics
	m.shadow[job.target][outcomeIndex(job.shadowRes.outcome)].Inc()
	if job.noise {
		m.noiseProbes.Inc()
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

// call sends out, job's request prepared for backend b, and reads the
// answer into res, up to max_body_bytes, all of it before deadline.
func (p *Proxy) call(deadline time.Time, job *shadowJob, out *fasthttp.Request, b router.Backend, role int, res *captured) {
	u := job.upstream[b]
	res.body = getBuffer()
	ans := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(ans)
	ans.SkipBody = job.method == fasthttp.MethodHead
	span := p.startShadowSpan(job, out, b, role)
	start := time.Now()
	timeout := min(time.Until(deadline), u.timeout)
	complete, err := p.client.fetch(out, ans, &call{key: u.key, timeout: timeout, caller: p.shadowCaller}, res.body, job.maxBody, deadline, p.stopShadows)
	p.callDone(job, b, role, res, ans, complete, err, time.Since(start), span)
}

// startShadowSpan starts the span of job's call out to b. The call
// belongs to the request's trace, and links to its span so tools that
// follow links find it from the request too.
func (p *Proxy) startShadowSpan(job *shadowJob, out *fasthttp.Request, b router.Backend, role int) trace.Span {
	if !p.tracing {
		return nil
	}
	request := trace.Link{SpanContext: trace.SpanContextFromContext(job.id.traceCtx)}
	_, span := p.startClientSpan(job.id.traceCtx, requestCarrier{&out.Header}, b.String(), roles[role], request)
	return span
}

// callDone records a shadow or noise call to b that took latency: its
// answer ans (or err) into res, the latency, the span, and the call in
// the route's window.
func (p *Proxy) callDone(job *shadowJob, b router.Backend, role int, res *captured, ans *fasthttp.Response, complete bool, err error, latency time.Duration, span trace.Span) {
	res.complete = complete
	res.outcome = outcomeSent
	if err == nil {
		res.status = ans.StatusCode()
		res.keepHeader(&ans.Header, job.route.headerKeys)
	} else {
		res.err = err
		res.outcome = outcomeFailed
		var ne net.Error
		if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
			res.outcome = outcomeTimeout
		}
	}
	failed := res.err != nil || res.status >= 500
	job.route.metrics.call(b, role, latency, failed)
	endSpan(span, res.status, res.err)
	p.recordCall(job.route, b, latency, failed)
}

// shadowWorkers runs shadow jobs on goroutines kept between jobs: a
// goroutine of its own per job grew a fresh stack through the differ
// every time. There are never more workers than jobs in flight at once
// (at most shadow.max_in_flight), and one idle for workerIdle ends.
type shadowWorkers struct {
	run  func(*shadowJob)
	jobs chan *shadowJob // unbuffered: a send reaches an idle worker or none
	quit chan struct{}
	once sync.Once
	wg   sync.WaitGroup
}

// workerIdle is how long a shadow worker waits for its next job.
const workerIdle = 10 * time.Second

func newShadowWorkers(run func(*shadowJob)) *shadowWorkers {
	return &shadowWorkers{run: run, jobs: make(chan *shadowJob), quit: make(chan struct{})}
}

// dispatch hands job to an idle worker, or starts one.
func (w *shadowWorkers) dispatch(job *shadowJob) {
	select {
	case w.jobs <- job:
	default:
		w.wg.Go(func() { w.work(job) })
	}
}

func (w *shadowWorkers) work(job *shadowJob) {
	idle := time.NewTimer(workerIdle)
	defer idle.Stop()
	for {
		w.run(job)
		idle.Reset(workerIdle)
		select {
		case job = <-w.jobs:
		case <-idle.C:
			return
		case <-w.quit:
			return
		}
	}
}

// stop ends the idle workers, and each busy one after its job; a job
// dispatched later runs on a worker of its own that ends with it.
func (w *shadowWorkers) stop() {
	w.once.Do(func() { close(w.quit) })
	w.wg.Wait()
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
	job.primaryRes.keepHeader(&x.res.Header, job.route.headerKeys)
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
	job.done()
}

// DrainShadows waits for in-flight shadows and comparisons until ctx is
// done, then cancels the rest; they count as skipped comparisons. It is
// part of shutdown, after the servers stopped accepting.
func (p *Proxy) DrainShadows(ctx context.Context) {
	p.drainMu.Lock()
	p.draining = true
	p.drainMu.Unlock()
	done := make(chan struct{})
	go func() {
		p.shadows.Wait()
		close(done)
	}()
	defer p.client.closeIdle()
	select {
	case <-done:
		p.workers.stop()
		return
	case <-ctx.Done():
	}
	n := p.shadowInFlight.Load()
	p.cancelShadows()
	<-done
	p.workers.stop()
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
