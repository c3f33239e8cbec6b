package proxy

import (
	"bytes"
	"context"
	"errors"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// Shadow calls of GET and OPTIONS requests without a body are pipelined
// (RFC 9112 §9.3.2): a connection carries several at once, each batch
// written with one system call, and their answers, which come back in
// order, are read together. A shadow has no client waiting for it, so a
// queue costs it only latency, and the proxy and the upstream each save a
// write and a read a call. A batch is what was queued while the
// connection was busy writing the last, and what the running request
// goroutines queue when the writer yields to them once; nothing waits on
// a timer to fill one.
//
// A pipelined call waits for those ahead of it, which an upstream serves
// one at a time, so a connection takes a call only while that wait is
// short:
//   - each route has its own pipelines, so a slow endpoint never holds up
//     another route's calls;
//   - a connection takes as many calls as the route's recent answers say
//     fit in pipelineBudget (one at a time until it has answered fast, and
//     always one for an upstream that answers in 2 s), at most
//     shadow.pipeline_depth;
//   - a connection whose call in service is late (over lateAfter) takes
//     no more until it answers;
//   - an upstream that closes connections after a few answers is called
//     one call a connection for a while.
//
// A call's shadow.timeout runs from when the upstream turns to it, so a
// call never fails for the time it waited behind another: the guard
// counts only what the upstream did. Calls that find every connection
// full get a new one; there are never more connections than calls (at
// most shadow.max_in_flight).
const (
	// pipelineBudget is the wait behind other calls a pipelined call may
	// expect.
	pipelineBudget = 5 * time.Millisecond
	// latencyWeight is the weight of the newest answer in a pipeline's
	// moving average of answer latency, as a shift: 1/8.
	latencyWeight = 3
	// minAnswersPerConn is how many answers a connection must carry
	// before the upstream closes it, for pipelining to go on: fewer, and
	// calls go one a connection for serialFor.
	minAnswersPerConn = 8
	serialFor         = time.Minute
)

// lateAfter is how long a call may be in service before its connection
// takes no more calls: twice the usual answer, and not under a
// millisecond.
func lateAfter(latency time.Duration) time.Duration { return max(2*latency, time.Millisecond) }

// errConnDead is the answer of a call whose connection died before the
// reader turned to it: it was never read, and goes elsewhere.
var errConnDead = errors.New("pipelined connection died")

// errExpired is a pipelined call that waited so long to be sent (its
// connections broke, or calls ahead were late) that it no longer is: a
// shadow dropped, not an answer of the upstream's.
var errExpired = errors.New("pipelined call not sent in time")

// errPipelineLost is a pipelined call whose connection broke before its
// answer, for a second time: the first time it is sent again.
var errPipelineLost = errors.New("pipelined connection closed before the answer")

// pipeCall is one pipelined call: the request, where its answer goes,
// and whom to tell.
type pipeCall struct {
	req *fasthttp.Request
	res *fasthttp.Response
	// body receives the answer's body, up to max bytes.
	body *bytes.Buffer
	max  int64
	// timeout bounds the call from when the upstream turns to it (the
	// previous answer on its connection is in, or it was sent) to the
	// end of its answer; deadline bounds the header within it.
	timeout, headerTimeout time.Duration
	// expires is when the call is no longer worth sending.
	expires time.Time
	// then is told once the call is over, on the pipeline's goroutine.
	then pipeWaiter

	// Set by the pipeline.
	retried  bool          // sent once more after its connection broke
	latency  time.Duration // from when the upstream turned to it to its answer
	complete bool          // the whole body fitted in max
	err      error
	sent     time.Time
}

// pipeWaiter is told when its call is over.
type pipeWaiter interface{ pipeDone(*pipeCall) }

// reset empties what a try of call got, before it goes again.
func (call *pipeCall) reset() {
	call.body.Reset()
	call.complete = false
}

// fail ends call with err.
func (call *pipeCall) fail(err error) {
	call.err = err
	call.then.pipeDone(call)
}

// pipeKey is whose calls a pipeline carries: a route's, to one address.
type pipeKey struct {
	dial  dialKey
	route string
}

// pipeline is the pipelined connections of one route to one upstream
// address.
type pipeline struct {
	c    *client
	key  dialKey
	stop context.Context // shadows stop: every call ends
	// latency is the moving average of answer latency, in nanoseconds.
	// It starts at pipelineBudget: a connection takes one call at a time
	// until the upstream has shown it is fast.
	latency atomic.Int64
	// serialUntil (Unix ns) is when calls may share connections again,
	// after the upstream closed one early.
	serialUntil atomic.Int64

	mu      sync.Mutex
	conns   []*pipeConn
	retired bool // a reload dropped the upstream, or the client closed
}

func newPipeline(c *client, key dialKey, stop context.Context) *pipeline {
	pl := &pipeline{c: c, key: key, stop: stop}
	pl.latency.Store(int64(pipelineBudget))
	return pl
}

// depth is how many calls a connection takes at once, at most limit.
func (pl *pipeline) depth(limit int, now time.Time) int {
	if now.UnixNano() < pl.serialUntil.Load() {
		return 1
	}
	lat := max(pl.latency.Load(), 1)
	return int(min(int64(limit), max(1, int64(pipelineBudget)/lat)))
}

// observe folds one answer's latency into the moving average.
func (pl *pipeline) observe(d time.Duration) {
	old := pl.latency.Load()
	pl.latency.Store(old + (int64(d)-old)>>latencyWeight)
}

// send queues call on the first connection with room for it, or a new
// one. Its waiter is told when the call is over, maybe before send
// returns.
func (pl *pipeline) send(call *pipeCall, maxDepth int) {
	now := time.Now()
	switch {
	case pl.stop.Err() != nil:
		call.fail(pl.stop.Err())
		return
	case now.After(call.expires):
		call.fail(errExpired)
		return
	}
	depth := pl.depth(maxDepth, now)
	late := lateAfter(time.Duration(pl.latency.Load()))
	pl.mu.Lock()
	var pc *pipeConn
	for _, c := range pl.conns {
		if c.pending < depth && (c.written == 0 || now.Sub(c.inService) < late) {
			pc = c
			break
		}
	}
	if pc == nil {
		pc = &pipeConn{pl: pl, maxDepth: maxDepth, wake: make(chan struct{}, 1), batches: make(chan []*pipeCall, maxDepth)}
		pl.conns = append(pl.conns, pc)
		go pc.run(min(call.expires.Sub(now), call.headerTimeout))
	}
	pc.pending++
	pc.queue = append(pc.queue, call)
	pl.mu.Unlock()
	pc.poke()
}

// retire closes pl's connections as they fall idle; new calls go to a
// new pipeline.
func (pl *pipeline) retire() {
	pl.mu.Lock()
	pl.retired = true
	conns := slices.Clone(pl.conns)
	pl.mu.Unlock()
	for _, pc := range conns {
		pc.poke()
	}
}

// pipeConn is one pipelined connection: a writer goroutine sends what is
// queued in batches, a reader goroutine reads the answers in order.
type pipeConn struct {
	pl       *pipeline
	maxDepth int // shadow.pipeline_depth when it opened
	conn     *upstreamConn
	wake     chan struct{}    // the writer has work, or should look at dead
	batches  chan []*pipeCall // written, to the reader, in order
	reader   sync.WaitGroup   // the reader has ended
	idle     time.Time        // writer's: when the last batch was written

	// Under pl.mu.
	pending   int         // queued or written, not answered
	written   int         // written, not answered
	inService time.Time   // when the upstream turned to the oldest written call
	queue     []*pipeCall // not yet written
	dead      bool        // takes no calls, and ends
}

func (pc *pipeConn) poke() {
	select {
	case pc.wake <- struct{}{}:
	default:
	}
}

// run dials, then writes batches until the connection dies or idles.
func (pc *pipeConn) run(dialTimeout time.Duration) {
	conn, _, err := pc.pl.c.conn(&call{key: pc.pl.key, timeout: dialTimeout}, true, false)
	if err != nil {
		// A connect failure is every queued call's answer.
		pc.die(err, false)
		return
	}
	pc.conn = conn
	cancel := context.AfterFunc(pc.pl.stop, func() { _ = conn.Conn.SetDeadline(time.Unix(1, 0)) })
	defer cancel()
	pc.reader.Add(1)
	go pc.read()
	defer func() {
		close(pc.batches)
		pc.reader.Wait()
		conn.Close()
	}()
	idle := time.NewTimer(idleConnTimeout)
	defer idle.Stop()
	pc.idle = time.Now()
	for {
		select {
		case <-pc.wake:
		case <-idle.C:
		}
		if pc.pl.depth(pc.maxDepth, time.Now()) > 1 {
			// Let the request goroutines that are running queue their
			// calls first: under load a batch of several costs one write
			// where each alone costs one; idle, this costs nothing.
			runtime.Gosched()
		}
		batch, alone, ok := pc.take()
		if !ok {
			return
		}
		if len(batch) == 0 {
			idle.Reset(idleConnTimeout)
			continue
		}
		// A connection idle for a while may have been closed by the
		// upstream; nothing was sent on it, so the calls go elsewhere.
		// (Only when no answer is awaited: the reader holds the socket.)
		if alone && time.Since(pc.idle) > staleCheckAfter && peerClosed(conn.Conn) {
			pc.dieUnwritten(batch, errPipelineLost)
			return
		}
		if err := pc.write(batch); err != nil {
			pc.die(err, true)
			pc.batches <- batch // the reader sends them again
			return
		}
		pc.batches <- batch
		pc.idle = time.Now()
		idle.Reset(idleConnTimeout)
	}
}

// take returns the calls queued for writing, whether no answer is awaited
// besides theirs, and false when the connection is to end: it died, or
// it is idle and retired or past idleConnTimeout.
func (pc *pipeConn) take() (batch []*pipeCall, alone, ok bool) {
	pl := pc.pl
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if pc.dead {
		return nil, false, false
	}
	if len(pc.queue) == 0 {
		if pc.pending == 0 && (pl.retired || time.Since(pc.idle) >= idleConnTimeout) {
			pc.unlink()
			return nil, false, false
		}
		return nil, false, true
	}
	// The reader holds a batch until its last answer: each is a slice of
	// its own.
	batch, pc.queue = pc.queue, nil
	alone = pc.written == 0
	return batch, alone, true
}

// write sends batch with one flush. The calls count as written from
// the start: whatever of them reached the upstream may be answered.
func (pc *pipeConn) write(batch []*pipeCall) error {
	now := time.Now()
	pl := pc.pl
	pl.mu.Lock()
	if pc.written == 0 {
		pc.inService = now
	}
	pc.written += len(batch)
	pl.mu.Unlock()
	conn := pc.conn
	_ = conn.SetWriteDeadline(now.Add(batch[0].timeout))
	for _, call := range batch {
		if err := call.req.Write(conn.bw); err != nil {
			return err
		}
	}
	err := conn.bw.Flush()
	sent := time.Now()
	for _, call := range batch {
		call.sent = sent
	}
	return err
}

// read reads the answers of the written batches, in order, and tells
// each call's waiter.
func (pc *pipeConn) read() {
	defer pc.reader.Done()
	var (
		last     time.Time // when the previous answer ended
		answered int       // answers on this connection
		charged  bool      // a call spent its one retry on this connection's loss
	)
	// resend sends calls written but unanswered again. When the
	// connection carried no answer at all, the first of them may be why:
	// it spends its retry. The others were only behind it.
	resend := func(calls []*pipeCall, err error) {
		charge := answered == 0 && !charged
		charged = true
		pc.resend(calls, charge, err)
	}
	for batch := range pc.batches {
	calls:
		for i, call := range batch {
			start := call.sent
			if last.After(start) {
				start = last // it waited behind the previous answer
			}
			reusable, headerErr, err := pc.answer(call, start)
			last = time.Now()
			call.latency = last.Sub(start)
			switch {
			case err == errConnDead:
				// It died behind an earlier call (or the writer's error):
				// this call and those behind it go elsewhere.
				resend(batch[i:], errPipelineLost)
				break calls
			case err == nil:
				answered++
				pc.pl.observe(call.latency)
				// The call is its waiter's once done: read it before.
				closed := call.res.ConnectionClose() || call.req.ConnectionClose()
				pc.done(call)
				// The waiter may have compared the answer (pipeDone): the
				// next call's time starts after that, not before.
				last = time.Now()
				if !reusable {
					if closed && answered < minAnswersPerConn {
						pc.pl.serialUntil.Store(last.Add(serialFor).UnixNano())
					}
					pc.die(errPipelineLost, true)
				}
			case headerErr && isStale(err) && pc.pl.stop.Err() == nil:
				// Nothing came back for it: the upstream closed the
				// connection. It goes again, with those behind it.
				pc.die(errPipelineLost, true)
				resend(batch[i:i+1], err)
			default:
				pc.pl.observe(call.latency)
				call.err = err
				pc.done(call)
				charged = true // those behind it are not at fault
				pc.die(errPipelineLost, true)
			}
		}
	}
}

// answer reads call's answer, which the upstream turned to at start, and
// reports whether the connection can carry the next one, and whether an
// error came before any of the answer did.
func (pc *pipeConn) answer(call *pipeCall, start time.Time) (reusable, headerErr bool, err error) {
	conn, res := pc.conn, call.res
	deadline := start.Add(call.timeout)
	header := start.Add(min(call.timeout, call.headerTimeout))
	// Not conn.SetReadDeadline: readBy is for pooled connections, and
	// die and the stop set this one's deadline from other goroutines.
	_ = conn.Conn.SetReadDeadline(header)
	// A stop or a death that set the deadline in the past before this
	// call did must still end the read.
	if err := pc.pl.stop.Err(); err != nil {
		return false, false, err
	}
	if pc.isDead() {
		return false, true, errConnDead
	}
	res.StreamBody = true
	if err := res.Read(conn.br); err != nil {
		if stop := pc.pl.stop.Err(); stop != nil {
			return false, false, stop
		}
		if time.Now().After(header) {
			return false, false, errTimeout
		}
		if pc.isDead() {
			// die set the deadline in the past (the writer's failed
			// write, a retire): no fault of the upstream's, nor of this
			// call's, which goes elsewhere.
			return false, true, errConnDead
		}
		return false, conn.br.Buffered() == 0, err
	}
	if res.StatusCode() == fasthttp.StatusSwitchingProtocols {
		return false, false, errSwitched
	}
	complete, err := readBody(conn, res, call.body, call.max, deadline, pc.pl.stop)
	if err != nil {
		return false, false, err
	}
	call.complete = complete
	return complete && !res.ConnectionClose() && !call.req.ConnectionClose(), false, nil
}

func (pc *pipeConn) isDead() bool {
	pc.pl.mu.Lock()
	defer pc.pl.mu.Unlock()
	return pc.dead
}

// done ends call: it leaves the connection's counts, and its waiter is
// told.
func (pc *pipeConn) done(call *pipeCall) {
	pl := pc.pl
	pl.mu.Lock()
	pc.pending--
	pc.written--
	pc.inService = time.Now()
	idleRetired := pc.pending == 0 && pl.retired
	pl.mu.Unlock()
	if idleRetired {
		pc.poke()
	}
	call.then.pipeDone(call)
}

// die ends the connection: it takes no more calls, and those queued on it
// but not written go to another (retry) or fail with err.
func (pc *pipeConn) die(err error, retry bool) {
	pc.end(nil, err, retry)
}

// dieUnwritten is die from the writer, with batch taken for writing but
// not written: the calls go to another connection, even when the reader
// found the connection dead first (and took only the queue).
func (pc *pipeConn) dieUnwritten(batch []*pipeCall, err error) {
	pc.end(batch, err, true)
}

// end is die's work, for unwritten calls besides the queue.
func (pc *pipeConn) end(unwritten []*pipeCall, err error, retry bool) {
	pl := pc.pl
	pl.mu.Lock()
	wasDead := pc.dead
	if !wasDead {
		pc.unlink()
	}
	queued := append(unwritten, pc.queue...)
	pc.queue = nil
	pc.pending -= len(queued)
	pl.mu.Unlock()
	if len(queued) == 0 && wasDead {
		return
	}
	if !wasDead {
		pc.poke()
		if pc.conn != nil {
			// The reader may be waiting on it, and the writer.
			_ = pc.conn.Conn.SetDeadline(time.Unix(1, 0))
		}
	}
	if stop := pl.stop.Err(); stop != nil {
		err, retry = stop, false
	}
	for _, call := range queued {
		if retry {
			pl.send(call, pc.maxDepth) // never written: not a retry
			continue
		}
		call.fail(err)
	}
}

// resend takes calls, written but unanswered, off the connection and
// sends them again. With charge the first spends its one retry, and
// fails with err when it had none left.
func (pc *pipeConn) resend(calls []*pipeCall, charge bool, err error) {
	pl := pc.pl
	pl.mu.Lock()
	pc.pending -= len(calls)
	pc.written -= len(calls)
	pl.mu.Unlock()
	for i, call := range calls {
		switch {
		case pl.stop.Err() != nil:
			call.fail(pl.stop.Err())
			continue
		case charge && i == 0 && call.retried:
			call.fail(err)
			continue
		case charge && i == 0:
			call.retried = true
		}
		call.reset()
		pl.send(call, pc.maxDepth)
	}
}

// unlink marks pc dead and removes it from its pipeline; pl.mu is held.
func (pc *pipeConn) unlink() {
	pc.dead = true
	conns := pc.pl.conns
	for i, c := range conns {
		if c == pc {
			pc.pl.conns = append(conns[:i], conns[i+1:]...)
			conns[len(conns)-1] = nil
			return
		}
	}
}
