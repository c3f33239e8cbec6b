package proxy

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// Shadow calls of safe requests without a body are pipelined (RFC 9112
// §9.3.2): a connection carries several at once, each batch written with
// one system call, and their answers, which come back in order, are read
// together. A shadow has no client waiting for it, so what a queue costs
// it is only latency, and the proxy and the upstream each save a write
// and a read a call. A batch is what is queued while the connection is
// busy writing the last; nothing waits to fill one.
//
// A pipelined call waits for those ahead of it, which an upstream serves
// one at a time. So a connection takes only as many calls as the
// upstream's recent answers say fit in pipelineBudget: one at a time for
// an upstream that answers in 2 s, up to shadow.pipeline_depth for one
// that answers in a millisecond. Calls that find every connection full
// get a connection of their own; there are never more connections than
// calls (at most shadow.max_in_flight).
const (
	// pipelineBudget is the wait behind other calls a pipelined call may
	// expect.
	pipelineBudget = 5 * time.Millisecond
	// latencyWeight is the weight of the newest answer in a pipeline's
	// moving average of answer latency, as a shift: 1/8.
	latencyWeight = 3
)

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
	// deadline ends the call, header and body; timeout bounds the wait
	// for the header once the upstream has turned to this call.
	deadline time.Time
	timeout  time.Duration
	// then is told once the call is over, on the pipeline's goroutine.
	then pipeWaiter

	// Set by the pipeline.
	retried  bool          // sent once more after its connection broke
	latency  time.Duration // the upstream's time on it, less the wait behind others
	complete bool          // the whole body fitted in max
	err      error
	sent     time.Time
}

// pipeWaiter is told when its call is over.
type pipeWaiter interface{ pipeDone(*pipeCall) }

// pipeline is the pipelined connections to one upstream address.
type pipeline struct {
	c    *client
	key  dialKey
	stop context.Context // shadows stop: every call ends
	// latency is the moving average of answer latency, in nanoseconds.
	// It starts at pipelineBudget: a connection takes one call at a time
	// until the upstream has shown it is fast.
	latency atomic.Int64

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
func (pl *pipeline) depth(limit int) int {
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
	if err := pl.stop.Err(); err != nil {
		call.err = err
		call.then.pipeDone(call)
		return
	}
	depth := pl.depth(maxDepth)
	pl.mu.Lock()
	var pc *pipeConn
	for _, c := range pl.conns {
		if c.pending < depth {
			pc = c
			break
		}
	}
	if pc == nil {
		pc = &pipeConn{pl: pl, maxDepth: maxDepth, wake: make(chan struct{}, 1), batches: make(chan []*pipeCall, maxDepth)}
		pl.conns = append(pl.conns, pc)
		go pc.run(call.timeout)
	}
	pc.pending++
	pc.queue = append(pc.queue, call)
	pl.mu.Unlock()
	select {
	case pc.wake <- struct{}{}:
	default:
	}
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
	pending  int              // under pl.mu: queued or written, not answered
	queue    []*pipeCall      // under pl.mu: not yet written
	dead     bool             // under pl.mu: takes no calls, and ends
	idle     time.Time        // writer's: when the last batch was written
	reader   sync.WaitGroup   // the reader has ended
}

func (pc *pipeConn) poke() {
	select {
	case pc.wake <- struct{}{}:
	default:
	}
}

// run dials, then writes batches until the connection dies or idles.
func (pc *pipeConn) run(dialTimeout time.Duration) {
	conn, _, err := pc.pl.c.conn(&call{key: pc.pl.key, timeout: dialTimeout})
	if err != nil {
		// A connect failure is every queued call's answer.
		pc.die(err, false)
		return
	}
	pc.conn = conn
	cancel := context.AfterFunc(pc.pl.stop, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
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
		batch, ok := pc.take()
		if !ok {
			return
		}
		if len(batch) == 0 {
			idle.Reset(idleConnTimeout)
			continue
		}
		if time.Since(pc.idle) > staleCheckAfter && peerClosed(conn.Conn) {
			// Closed by the upstream while idle: nothing was sent, so the
			// calls go again.
			pc.die(errPipelineLost, true)
			pc.batches <- batch
			return
		}
		err := pc.write(batch)
		pc.batches <- batch
		if err != nil {
			pc.die(err, true)
			return
		}
		pc.idle = time.Now()
		idle.Reset(idleConnTimeout)
	}
}

// take returns the calls queued for writing, and false when the
// connection is to end: it died, or it is idle and retired or past
// idleConnTimeout.
func (pc *pipeConn) take() ([]*pipeCall, bool) {
	pl := pc.pl
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if pc.dead {
		return nil, false
	}
	if len(pc.queue) == 0 {
		if pc.pending == 0 && (pl.retired || time.Since(pc.idle) >= idleConnTimeout) {
			pc.unlink()
			return nil, false
		}
		return nil, true
	}
	// The reader holds a batch until its last answer: each is a slice of
	// its own.
	batch := pc.queue
	pc.queue = nil
	return batch, true
}

// write sends batch with one flush.
func (pc *pipeConn) write(batch []*pipeCall) error {
	bw := pc.conn.bw
	for _, call := range batch {
		if err := call.req.Write(bw); err != nil {
			return err
		}
	}
	err := bw.Flush()
	now := time.Now()
	for _, call := range batch {
		call.sent = now
	}
	return err
}

// read reads the answers of the written batches, in order, and tells
// each call's waiter.
func (pc *pipeConn) read() {
	defer pc.reader.Done()
	var last time.Time // when the previous answer ended
	for batch := range pc.batches {
		for i, call := range batch {
			if pc.isDead() {
				pc.requeue(batch[i:], errPipelineLost)
				break
			}
			start := call.sent
			if last.After(start) {
				start = last // it waited behind the previous answer
			}
			reusable, err := pc.answer(call, start)
			last = time.Now()
			if err == nil {
				call.latency = last.Sub(start)
				pc.pl.observe(call.latency)
				pc.done(call)
				if !reusable {
					pc.die(errPipelineLost, true)
				}
				continue
			}
			if call.retried || !isStale(err) {
				call.err = err
				pc.done(call)
				pc.die(errPipelineLost, true)
				continue
			}
			// Nothing came back for it: the upstream closed a connection
			// it had kept alive. It goes again, with those behind it.
			pc.die(errPipelineLost, true)
			pc.requeue(batch[i:i+1], err)
		}
	}
}

// answer reads call's answer, which began no earlier than start, and
// reports whether the connection can carry the next one.
func (pc *pipeConn) answer(call *pipeCall, start time.Time) (bool, error) {
	conn, res := pc.conn, call.res
	header := call.deadline
	if t := start.Add(call.timeout); t.Before(header) {
		header = t
	}
	_ = conn.SetReadDeadline(header)
	res.StreamBody = true
	if err := res.Read(conn.br); err != nil {
		if stop := pc.pl.stop.Err(); stop != nil {
			return false, stop
		}
		if time.Now().After(header) {
			return false, errTimeout
		}
		return false, err
	}
	if res.StatusCode() == fasthttp.StatusSwitchingProtocols {
		return false, errSwitched
	}
	complete, err := readBody(conn, res, call.body, call.max, call.deadline, pc.pl.stop)
	if err != nil {
		return false, err
	}
	call.complete = complete
	return complete && !res.ConnectionClose() && !call.req.ConnectionClose(), nil
}

func (pc *pipeConn) isDead() bool {
	pc.pl.mu.Lock()
	defer pc.pl.mu.Unlock()
	return pc.dead
}

// done ends call: it leaves the connection's count, and its waiter is
// told.
func (pc *pipeConn) done(call *pipeCall) {
	pl := pc.pl
	pl.mu.Lock()
	pc.pending--
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
	pl := pc.pl
	pl.mu.Lock()
	if pc.dead {
		pl.mu.Unlock()
		return
	}
	pc.dead = true
	pc.unlink()
	queued := pc.queue
	pc.queue = nil
	pc.pending -= len(queued)
	pl.mu.Unlock()
	pc.poke()
	if pc.conn != nil {
		// The reader may be waiting on it.
		_ = pc.conn.SetReadDeadline(time.Unix(1, 0))
	}
	if stop := pc.pl.stop.Err(); stop != nil {
		err = stop
	}
	for _, call := range queued {
		if retry && pc.pl.stop.Err() == nil {
			pc.pl.send(call, pc.maxDepth) // never written: not a retry
			continue
		}
		call.err = err
		call.then.pipeDone(call)
	}
}

// requeue takes calls, written but unanswered, off the connection and
// sends them again, or fails them when they were sent again already.
func (pc *pipeConn) requeue(calls []*pipeCall, err error) {
	pl := pc.pl
	pl.mu.Lock()
	pc.pending -= len(calls)
	pl.mu.Unlock()
	pc.resend(calls, err)
}

func (pc *pipeConn) resend(calls []*pipeCall, err error) {
	for _, call := range calls {
		if call.retried || pc.pl.stop.Err() != nil {
			call.err = err
			if stop := pc.pl.stop.Err(); stop != nil {
				call.err = stop
			}
			call.then.pipeDone(call)
			continue
		}
		call.retried = true
		pc.pl.send(call, pc.maxDepth)
	}
}

// unlink removes pc from its pipeline; pl.mu is held.
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
