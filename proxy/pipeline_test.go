package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// rawUpstream is an HTTP/1.1 upstream on a bare listener, so a test can
// see how calls arrive on connections and answer them as no net/http
// server would: answer is called for each request, in the order it came
// on its connection, and writes the raw answer, or returns false to close
// the connection without one.
type rawUpstream struct {
	ln     net.Listener
	conns  atomic.Int64
	answer func(conn, n int, r *http.Request, w *bufio.Writer) bool
}

func newRawUpstream(t *testing.T, answer func(conn, n int, r *http.Request, w *bufio.Writer) bool) *rawUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &rawUpstream{ln: ln, answer: answer}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			id := int(u.conns.Add(1))
			wg.Go(func() { u.serve(c, id) })
		}
	})
	return u
}

func (u *rawUpstream) serve(c net.Conn, id int) {
	defer c.Close()
	br, bw := bufio.NewReader(c), bufio.NewWriter(c)
	for n := 1; ; n++ {
		r, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		if !u.answer(id, n, r, bw) {
			return
		}
		// Answers to requests already here leave together, as a
		// pipelining server's do.
		if br.Buffered() == 0 {
			if bw.Flush() != nil {
				return
			}
		}
	}
}

func (u *rawUpstream) key() dialKey { return dialKey{addr: u.ln.Addr().String()} }

// echo answers 200 with the request's path as its body.
func echo(_, _ int, r *http.Request, w *bufio.Writer) bool {
	fmt.Fprintf(w, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(r.URL.Path), r.URL.Path)
	return true
}

// waiter collects the calls a pipeline is done with.
type waiter chan *pipeCall

func (w waiter) pipeDone(c *pipeCall) { w <- c }

// pipeCalls makes n calls of /0, /1, … to key, for sending.
func pipeCalls(key dialKey, n int, timeout time.Duration, w waiter) []*pipeCall {
	calls := make([]*pipeCall, n)
	for i := range calls {
		req := fasthttp.AcquireRequest()
		req.Header.SetRequestURI(fmt.Sprintf("/%d", i))
		req.Header.SetHost(key.addr)
		calls[i] = &pipeCall{req: req, res: fasthttp.AcquireResponse(), body: new(bytes.Buffer), max: 1 << 10,
			timeout: timeout, headerTimeout: timeout, expires: time.Now().Add(2 * timeout), then: w}
	}
	return calls
}

// stopWhileDone stops shadows while its call's waiter is told, as a
// comparison running on the reader would be.
type stopWhileDone struct {
	w    waiter
	stop context.CancelFunc
}

func (s stopWhileDone) pipeDone(c *pipeCall) {
	s.stop()
	s.w <- c
}

// blockingWaiter holds the reader in pipeDone until leave is closed.
type blockingWaiter struct {
	w              waiter
	entered, leave chan struct{}
}

func (b blockingWaiter) pipeDone(c *pipeCall) {
	close(b.entered)
	<-b.leave
	b.w <- c
}

// await returns the n calls told done, or fails the test after a minute.
func (w waiter) await(t *testing.T, n int) []*pipeCall {
	t.Helper()
	var got []*pipeCall
	deadline := time.After(time.Minute)
	for len(got) < n {
		select {
		case c := <-w:
			got = append(got, c)
		case <-deadline:
			t.Fatalf("%d of %d calls done after a minute", len(got), n)
		}
	}
	return got
}

// checkEchoes fails the test unless every call got its own path back.
func checkEchoes(t *testing.T, calls []*pipeCall) {
	t.Helper()
	for _, c := range calls {
		want := string(c.req.URI().Path())
		if c.err != nil || c.res.StatusCode() != 200 || c.body.String() != want || !c.complete {
			t.Errorf("call %s: status %d body %q complete %v err %v; want its own path back",
				want, c.res.StatusCode(), c.body.String(), c.complete, c.err)
		}
	}
}

// fastPipeline is a pipeline to u that has seen fast answers, so a
// connection takes as many calls as depth allows.
func fastPipeline(t *testing.T, u *rawUpstream) (*pipeline, context.CancelFunc) {
	c := newClient()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); c.closeIdle() })
	pl := c.pipeline(u.key(), "r", ctx)
	pl.latency.Store(int64(time.Microsecond))
	return pl, cancel
}

func TestPipeline(t *testing.T) {
	t.Run("calls share a connection and each gets its own answer", func(t *testing.T) {
		// Nothing is answered until all 8 calls have arrived on the one
		// connection: only a pipelined client gets an answer at all.
		var mu sync.Mutex
		var held []*http.Request
		u := newRawUpstream(t, func(_, n int, r *http.Request, w *bufio.Writer) bool {
			mu.Lock()
			defer mu.Unlock()
			held = append(held, r)
			if n < 8 {
				return true
			}
			for _, r := range held {
				echo(0, 0, r, w)
			}
			return true
		})
		pl, _ := fastPipeline(t, u)
		w := make(waiter, 8)
		calls := pipeCalls(u.key(), 8, 10*time.Second, w)
		for _, c := range calls {
			pl.send(c, 8)
		}
		checkEchoes(t, w.await(t, 8))
		if n := u.conns.Load(); n != 1 {
			t.Errorf("%d connections for 8 pipelined calls; want 1", n)
		}
	})

	t.Run("a slow upstream takes one call a connection", func(t *testing.T) {
		// No answer until 4 requests have arrived, on any connections:
		// calls pipelined behind another would wait for it forever.
		var arrived atomic.Int64
		all := make(chan struct{})
		u := newRawUpstream(t, func(conn, n int, r *http.Request, w *bufio.Writer) bool {
			if arrived.Add(1) == 4 {
				close(all)
			}
			<-all
			return echo(conn, n, r, w)
		})
		c := newClient()
		t.Cleanup(c.closeIdle)
		pl := c.pipeline(u.key(), "r", context.Background()) // no answer seen: as slow as the budget
		w := make(waiter, 4)
		for _, c := range pipeCalls(u.key(), 4, 10*time.Second, w) {
			pl.send(c, 16)
		}
		checkEchoes(t, w.await(t, 4))
		if n := u.conns.Load(); n != 4 {
			t.Errorf("%d connections for 4 calls to an upstream not yet seen fast; want 4", n)
		}
	})

	t.Run("the depth follows the answers' latency", func(t *testing.T) {
		pl := newPipeline(newClient(), dialKey{}, context.Background())
		now := time.Now()
		if d := pl.depth(16, now); d != 1 {
			t.Errorf("depth before any answer %d; want 1", d)
		}
		for range 100 {
			pl.observe(100 * time.Microsecond)
		}
		if d := pl.depth(16, now); d != 16 {
			t.Errorf("depth after 100 µs answers %d; want 16 (the limit)", d)
		}
		for range 100 {
			pl.observe(2 * time.Second)
		}
		if d := pl.depth(16, now); d != 1 {
			t.Errorf("depth after 2 s answers %d; want 1", d)
		}
	})

	t.Run("calls behind an answer that closes go again on a new connection", func(t *testing.T) {
		u := newRawUpstream(t, func(conn, n int, r *http.Request, w *bufio.Writer) bool {
			if conn == 1 && n == 2 {
				// The second answer closes the connection, with the
				// requests behind it unanswered.
				fmt.Fprintf(w, "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s", len(r.URL.Path), r.URL.Path)
				w.Flush()
				return false
			}
			return echo(conn, n, r, w)
		})
		pl, _ := fastPipeline(t, u)
		w := make(waiter, 6)
		calls := pipeCalls(u.key(), 6, 10*time.Second, w)
		for _, c := range calls {
			pl.send(c, 8)
		}
		checkEchoes(t, w.await(t, 6))
		if n := u.conns.Load(); n < 2 {
			t.Errorf("%d connections; want a second one for the calls behind the close", n)
		}
	})

	t.Run("a connection the upstream closed while idle is not a failure", func(t *testing.T) {
		u := newRawUpstream(t, func(conn, n int, r *http.Request, w *bufio.Writer) bool {
			echo(conn, n, r, w)
			w.Flush()
			return false // closes after every answer, without saying so
		})
		pl, _ := fastPipeline(t, u)
		w := make(waiter, 1)
		for i := range 3 {
			call := pipeCalls(u.key(), 1, 10*time.Second, w)[0]
			pl.send(call, 8)
			got := w.await(t, 1)
			checkEchoes(t, got)
			if t.Failed() {
				t.Fatalf("call %d failed", i)
			}
		}
	})

	t.Run("the waiter's time is not charged to the next call", func(t *testing.T) {
		// The first call's waiter takes longer than the second call's
		// timeout (a comparison on the reader), and the second answer
		// comes only after it: its timeout runs from then, not from the
		// first answer.
		second := make(chan struct{})
		u := newRawUpstream(t, func(conn, n int, r *http.Request, w *bufio.Writer) bool {
			if n == 2 {
				w.Flush() // the first answer leaves now
				<-second
			}
			return echo(conn, n, r, w)
		})
		pl, _ := fastPipeline(t, u)
		w := make(waiter, 2)
		entered, leave := make(chan struct{}), make(chan struct{})
		calls := pipeCalls(u.key(), 2, 500*time.Millisecond, w)
		calls[0].then = blockingWaiter{w: w, entered: entered, leave: leave}
		for _, c := range calls {
			pl.send(c, 8)
		}
		<-entered
		time.Sleep(3 * calls[1].timeout) // the waiter's slowness under test, not a wait
		close(leave)
		close(second)
		got := w.await(t, 2)
		checkEchoes(t, got)
		if n := u.conns.Load(); n != 1 {
			t.Errorf("%d connections; want both calls on one", n)
		}
	})

	t.Run("a call that times out fails alone", func(t *testing.T) {
		// The first connection takes requests and never answers them.
		u := newRawUpstream(t, func(conn, n int, r *http.Request, w *bufio.Writer) bool {
			if conn == 1 {
				return true
			}
			return echo(conn, n, r, w)
		})
		pl, _ := fastPipeline(t, u)
		w := make(waiter, 3)
		calls := pipeCalls(u.key(), 3, 10*time.Second, w)
		calls[0].timeout = 200 * time.Millisecond
		for _, c := range calls {
			pl.send(c, 8)
		}
		got := w.await(t, 3)
		var timedOut int
		for _, c := range got {
			if c == calls[0] {
				var ne net.Error
				if !errors.As(c.err, &ne) || !ne.Timeout() {
					t.Errorf("the unanswered call ended with %v; want a timeout", c.err)
				}
				timedOut++
				continue
			}
			checkEchoes(t, []*pipeCall{c})
		}
		if timedOut != 1 {
			t.Errorf("the unanswered call was told done %d times", timedOut)
		}
	})

	t.Run("an answer cut short fails; it is never pieced together", func(t *testing.T) {
		u := newRawUpstream(t, func(conn, n int, r *http.Request, w *bufio.Writer) bool {
			if conn == 1 && n == 1 {
				w.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nXXXX")
				w.Flush()
				return false // closes four bytes into ten
			}
			return echo(conn, n, r, w)
		})
		pl, _ := fastPipeline(t, u)
		w := make(waiter, 4)
		calls := pipeCalls(u.key(), 4, 10*time.Second, w)
		for _, c := range calls {
			pl.send(c, 8)
		}
		for _, c := range w.await(t, 4) {
			if c == calls[0] {
				if c.err == nil {
					t.Errorf("the cut answer ended with no error, body %q", c.body.String())
				}
				continue
			}
			checkEchoes(t, []*pipeCall{c})
		}
	})

	t.Run("an upstream closing after every answer still answers every call", func(t *testing.T) {
		u := newRawUpstream(t, func(conn, n int, r *http.Request, w *bufio.Writer) bool {
			fmt.Fprintf(w, "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s", len(r.URL.Path), r.URL.Path)
			w.Flush()
			return false
		})
		pl, _ := fastPipeline(t, u)
		w := make(waiter, 8)
		for _, c := range pipeCalls(u.key(), 8, 10*time.Second, w) {
			pl.send(c, 8)
		}
		checkEchoes(t, w.await(t, 8))
		if d := pl.depth(8, time.Now()); d != 1 {
			t.Errorf("depth %d after the upstream closed every connection at once; want 1", d)
		}
	})

	t.Run("a call not sent in time is dropped, never written", func(t *testing.T) {
		u := newRawUpstream(t, echo)
		pl, _ := fastPipeline(t, u)
		w := make(waiter, 1)
		call := pipeCalls(u.key(), 1, 10*time.Second, w)[0]
		call.expires = time.Now().Add(-time.Second)
		pl.send(call, 8)
		if got := w.await(t, 1)[0]; !errors.Is(got.err, errExpired) {
			t.Errorf("an expired call ended with %v; want errExpired", got.err)
		}
		if n := u.conns.Load(); n != 0 {
			t.Errorf("%d connections for an expired call; want none", n)
		}
	})

	t.Run("no call queues behind a late one", func(t *testing.T) {
		release := make(chan struct{})
		got := make(chan struct{})
		u := newRawUpstream(t, func(conn, n int, r *http.Request, w *bufio.Writer) bool {
			if r.URL.Path == "/0" {
				close(got)
				<-release // the upstream is stuck on this one
			}
			return echo(conn, n, r, w)
		})
		pl, _ := fastPipeline(t, u)
		w := make(waiter, 16)
		calls := pipeCalls(u.key(), 16, 10*time.Second, w)
		pl.send(calls[0], 16)
		<-got
		eventually(t, 10*time.Second, "the call in service to be late", func() bool {
			pl.mu.Lock()
			defer pl.mu.Unlock()
			return len(pl.conns) == 1 && pl.conns[0].written == 1 &&
				time.Since(pl.conns[0].inService) > lateAfter(time.Duration(pl.latency.Load()))
		})
		for _, c := range calls[1:] {
			pl.send(c, 16)
		}
		// Every call but the stuck one is answered while it is stuck.
		checkEchoes(t, w.await(t, 15))
		close(release)
		checkEchoes(t, w.await(t, 1))
	})

	t.Run("each route has pipelines of its own", func(t *testing.T) {
		c := newClient()
		t.Cleanup(c.closeIdle)
		key := dialKey{addr: "127.0.0.1:1"}
		if c.pipeline(key, "a", context.Background()) == c.pipeline(key, "b", context.Background()) {
			t.Error("two routes share a pipeline: a slow one would hold the other's calls up")
		}
	})

	t.Run("stopping shadows ends calls behind one being compared", func(t *testing.T) {
		u := newRawUpstream(t, func(conn, n int, r *http.Request, w *bufio.Writer) bool {
			if n == 1 {
				return echo(conn, n, r, w)
			}
			return true // never answers the rest
		})
		pl, cancel := fastPipeline(t, u)
		w := make(waiter, 3)
		calls := pipeCalls(u.key(), 3, time.Hour, w)
		calls[0].then = stopWhileDone{w, cancel}
		for _, c := range calls {
			pl.send(c, 8)
		}
		for _, c := range w.await(t, 3) {
			if c != calls[0] && !errors.Is(c.err, context.Canceled) {
				t.Errorf("call %s ended with %v; want context.Canceled", c.req.URI().Path(), c.err)
			}
		}
	})

	t.Run("stopping shadows ends the calls in flight", func(t *testing.T) {
		u := newRawUpstream(t, func(int, int, *http.Request, *bufio.Writer) bool { return true }) // never answers
		pl, cancel := fastPipeline(t, u)
		w := make(waiter, 3)
		for _, c := range pipeCalls(u.key(), 3, time.Hour, w) {
			pl.send(c, 8)
		}
		eventually(t, 10*time.Second, "the calls to arrive", func() bool { return u.conns.Load() == 1 })
		cancel()
		for _, c := range w.await(t, 3) {
			if !errors.Is(c.err, context.Canceled) {
				t.Errorf("call %s ended with %v; want context.Canceled", c.req.URI().Path(), c.err)
			}
		}
	})

	t.Run("a retired pipeline closes its connections once idle", func(t *testing.T) {
		u := newRawUpstream(t, echo)
		c := newClient()
		t.Cleanup(c.closeIdle)
		pl := c.pipeline(u.key(), "r", context.Background())
		w := make(waiter, 1)
		pl.send(pipeCalls(u.key(), 1, 10*time.Second, w)[0], 8)
		checkEchoes(t, w.await(t, 1))
		c.closeIdleTo(u.key())
		eventually(t, 10*time.Second, "the retired pipeline's connection to close", func() bool {
			pl.mu.Lock()
			defer pl.mu.Unlock()
			return len(pl.conns) == 0
		})
		if c.pipeline(u.key(), "r", context.Background()) == pl {
			t.Error("a retired pipeline was handed out again")
		}
	})
}

// TestPipelinedShadowsMatchTheirOwnRequests sends many concurrent
// shadowed requests, each with its own path, to upstreams that answer
// with the path: an answer paired with another request's would be a
// mismatch.
func TestPipelinedShadowsMatchTheirOwnRequests(t *testing.T) {
	answer := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"path":%q}`, r.URL.Path)
	})
	h := newHarness(t, answer, answer, `
routes:
  - name: items
    match: "GET /items/{id}"
    weight: 0
    shadow: { percent: 100 }
    compare: { noise_percent: 0 }
`)
	const clients, each = 16, 40
	var wg sync.WaitGroup
	for c := range clients {
		wg.Go(func() {
			for i := range each {
				path := fmt.Sprintf("/items/%d-%d", c, i)
				res, err := h.front.Client().Get(h.front.URL + path)
				if err != nil {
					t.Errorf("GET %s: %v", path, err)
					return
				}
				body, _ := io.ReadAll(res.Body)
				res.Body.Close()
				if res.StatusCode != 200 || !strings.Contains(string(body), path) {
					t.Errorf("GET %s: %d %q", path, res.StatusCode, body)
				}
			}
		})
	}
	wg.Wait()
	eventually(t, 30*time.Second, "every comparison", func() bool {
		n, _ := h.metric("strangler_comparisons_total", map[string]string{"route": "items", "result": "match"})
		return n == clients*each
	})
	for _, result := range []string{"mismatch", "error", "skipped"} {
		if n, _ := h.metric("strangler_comparisons_total", map[string]string{"route": "items", "result": result}); n != 0 {
			t.Errorf("%v comparisons %s; want 0", n, result)
		}
	}
}

// TestUnwrittenBatchOutlivesTheReadersDeath plays the writer and the
// reader of one connection in the order that lost calls: the writer
// takes a batch, the reader finds the connection dead (an answer with
// Connection: close), then the writer finds the socket closed before
// writing. The batch, never written, must still be sent elsewhere.
func TestUnwrittenBatchOutlivesTheReadersDeath(t *testing.T) {
	u := newRawUpstream(t, echo)
	pl, _ := fastPipeline(t, u)
	w := make(waiter, 1)
	call := pipeCalls(u.key(), 1, 5*time.Second, w)[0]

	// A connection with one call queued, as send leaves it; the test
	// plays its goroutines.
	pc := &pipeConn{pl: pl, maxDepth: 8, wake: make(chan struct{}, 1), batches: make(chan []*pipeCall, 8)}
	pl.mu.Lock()
	pl.conns = append(pl.conns, pc)
	pc.pending++
	pc.queue = append(pc.queue, call)
	pl.mu.Unlock()

	batch, alone, ok := pc.take() // the writer
	if !ok || !alone || len(batch) != 1 {
		t.Fatalf("take: %d calls, alone %v, ok %v", len(batch), alone, ok)
	}
	pc.die(errPipelineLost, true)           // the reader
	pc.dieUnwritten(batch, errPipelineLost) // the writer, finding the socket closed
	select {
	case c := <-w:
		if c.err != nil {
			t.Errorf("the call failed: %v; want it answered on another connection", c.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the call was never answered nor failed: lost on a dead connection")
	}
}

// TestCallInServiceOutlivesAWritersDeath has the writer end a connection
// (a failed write does) while the reader awaits an answer on it: the
// reader's read then fails on the deadline die set, which is no timeout
// of the upstream's. The call goes again, on another connection, and is
// answered, never failed as a timeout the guard would count.
func TestCallInServiceOutlivesAWritersDeath(t *testing.T) {
	arrived, hold := make(chan struct{}), make(chan struct{})
	u := newRawUpstream(t, func(conn, n int, r *http.Request, w *bufio.Writer) bool {
		if conn == 1 {
			close(arrived)
			<-hold // never answers on the first connection
			return false
		}
		return echo(conn, n, r, w)
	})
	t.Cleanup(func() { close(hold) })
	pl, _ := fastPipeline(t, u)
	w := make(waiter, 1)
	pl.send(pipeCalls(u.key(), 1, 30*time.Second, w)[0], 8)
	select {
	case <-arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("the call never reached the upstream")
	}
	pl.mu.Lock()
	pc := pl.conns[0]
	pl.mu.Unlock()
	pc.die(errPipelineLost, true) // as the writer does on a failed write
	if c := w.await(t, 1)[0]; c.err != nil {
		t.Errorf("the call failed: %v; want it answered on another connection", c.err)
	}
}
