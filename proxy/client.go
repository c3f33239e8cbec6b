package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
)

// Client limits.
const (
	// maxIdleConnsPerAddr bounds the idle connections kept per upstream.
	maxIdleConnsPerAddr = 256
	// maxResponseHeaderBytes bounds an upstream answer's header: an
	// upstream sending an endless header line must not grow the proxy's
	// memory. It is the size of each connection's read buffer, which
	// fasthttp's header parser cannot grow past.
	maxResponseHeaderBytes = 32 << 10
	// idleConnTimeout closes connections idle for longer: upstreams close
	// theirs after a minute or so, and a stale one costs a failed call.
	idleConnTimeout = 50 * time.Second
	// staleCheckAfter is how long a connection may sit idle before it is
	// checked for a close from the upstream before reuse; one reused at
	// once under load is not worth the system call.
	staleCheckAfter = time.Second
	// pollInterval is how often a call waiting for its answer looks at
	// whether its caller gave up (the client left, the shadow was
	// cancelled).
	pollInterval = 50 * time.Millisecond
)

var (
	errClientGone = errors.New("client closed the connection")
	errSwitched   = errors.New("upstream switched protocols on a call that asked for none")
)

// client makes every upstream call, primary, shadow and noise alike: one
// HTTP/1.1 exchange at a time on the calling goroutine, over a pool of
// keep-alive connections per upstream address, with fasthttp's request
// writer and response parser. fasthttp's own HostClient bounds a whole
// exchange, body included, where a proxy must bound the wait for the
// answer's header and let a stream (SSE) run; and it cannot give up on a
// call whose client left.
type client struct {
	mu     sync.Mutex
	idle   map[dialKey][]*upstreamConn
	pipes  map[pipeKey]*pipeline
	closed bool
}

// dialKey is where a connection goes.
type dialKey struct {
	tls  bool
	addr string // host:port
	host string // for TLS server name
}

type upstreamConn struct {
	net.Conn
	key       dialKey
	br        *bufio.Reader
	bw        *bufio.Writer
	idleSince time.Time
	// raw is the socket under a plain TCP connection, nil under TLS;
	// out is the writer under bw, which can hold a request for raw to
	// send (sendAwait).
	raw     syscall.RawConn
	out     *heldWriter
	sending sendState
	// readBy is the read deadline last set, zero for none: SetReadDeadline
	// keeps it, on the goroutine making the call. A stop from elsewhere
	// sets Conn's deadline instead, and the connection is then closed,
	// never pooled.
	readBy time.Time
}

func (c *upstreamConn) SetReadDeadline(t time.Time) error {
	c.readBy = t
	return c.Conn.SetReadDeadline(t)
}

// heldWriter is the writer under an upstream connection's bufio.Writer. A
// request that fits the buffer reaches it in one piece, when bw is
// flushed; while hold is set that piece is kept, not written, for
// sendAwait to send.
type heldWriter struct {
	conn   net.Conn
	hold   bool
	held   []byte // bw's buffer: valid until bw is written again
	passed bool   // bytes went straight to conn since the last reset
}

func (w *heldWriter) Write(b []byte) (int, error) {
	if w.hold {
		w.held = b
		return len(b), nil
	}
	w.passed = true
	return w.conn.Write(b)
}

// errSentInPart is a request sendAwait could write only part of.
var errSentInPart = errors.New("request sent in part")

// sendAwait writes b, the end of a request, and waits until the answer
// can be read or the read deadline passes. Sent from inside the wait
// (syscall.RawConn.Read arms its poller before it calls the function),
// no answer that comes at once is missed, and the read that would only
// have found none yet is saved: one system call of about six per
// proxied request. A socket that takes only part of b gets
// errSentInPart and how much it took; then the caller writes the rest.
func (c *upstreamConn) sendAwait(b []byte) (sent int, err error) {
	st := &c.sending
	st.b, st.sent, st.err = b, 0, nil
	rerr := c.raw.Read(st.step)
	sent, err = st.sent, st.err
	if err == nil && sent < len(b) {
		// The wait ended before the function ran: the connection is
		// closed, or its deadline passed.
		err = rerr
	}
	if err != nil && !errors.Is(err, errSentInPart) && rerr == nil {
		err = &net.OpError{Op: "write", Net: "tcp", Addr: c.RemoteAddr(), Err: err}
	}
	st.b = nil
	return sent, err
}

// sendState is sendAwait's: what it writes, how much went, and the write
// function syscall.RawConn.Read calls, bound once when the connection is
// made (a closure per call would be garbage).
type sendState struct {
	b    []byte
	sent int
	err  error
	step func(fd uintptr) bool
}

// write writes b on its first call and asks to wait for the answer; a
// later call means the answer can be read.
func (st *sendState) write(fd uintptr) bool {
	if st.err != nil || st.sent == len(st.b) {
		return true // readable, or over
	}
	for {
		n, err := syscall.Write(int(fd), st.b[st.sent:])
		if err == syscall.EINTR {
			continue
		}
		st.sent += max(n, 0)
		switch {
		case err == syscall.EAGAIN || err == nil && st.sent < len(st.b):
			st.err = errSentInPart
		case err != nil:
			st.err = os.NewSyscallError("write", err)
		}
		return st.err != nil // sent: now wait for the answer
	}
}

func newClient() *client {
	return &client{idle: map[dialKey][]*upstreamConn{}, pipes: map[pipeKey]*pipeline{}}
}

// pipeline returns route's pipelined connections to key, whose calls all
// end when stop is done; nil once the client is closed.
func (c *client) pipeline(key dialKey, route string, stop context.Context) *pipeline {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	pk := pipeKey{key, route}
	pl := c.pipes[pk]
	if pl == nil {
		pl = newPipeline(c, key, stop)
		c.pipes[pk] = pl
	}
	return pl
}

// call is one upstream exchange's options.
type call struct {
	key     dialKey
	timeout time.Duration // dial and the wait for the answer's header
	caller  caller        // nil: waits until the timeout, retries
}

// caller is who makes a call.
type caller interface {
	// giveUp, polled while the answer is awaited, returns why the caller
	// no longer wants it; nil keeps waiting.
	giveUp() error
	// retryable says the request can be sent again on a fresh connection
	// when a reused one turns out closed: sending it twice is harmless
	// (a safe method) and its body can be sent again (none, or
	// buffered). A reused connection that breaks may have delivered the
	// request, so nothing else is retried; its connection is checked
	// before reuse instead.
	retryable() bool
}

// do sends req and reads the answer's header into res, whose body then
// streams from the returned connection (res.StreamBody is set). The
// caller reads the body and hands the connection back with release. A
// 101 answer leaves the connection to the caller.
func (c *client) do(req *fasthttp.Request, res *fasthttp.Response, cl *call) (*upstreamConn, error) {
	retry := cl.caller == nil || cl.caller.retryable()
	conn, reused, err := c.conn(cl, retry, false)
	if err != nil {
		return nil, err
	}
	err = roundTrip(conn, req, res, cl)
	if err != nil && reused && isStale(err) && retry {
		// The upstream closed it while idle, and likely its other idle
		// ones too (a restart): the retry dials.
		conn.Close()
		if conn, _, err = c.conn(cl, retry, true); err != nil {
			return nil, err
		}
		err = roundTrip(conn, req, res, cl)
	}
	if err == nil && res.StatusCode() == fasthttp.StatusSwitchingProtocols && len(req.Header.Peek("Upgrade")) == 0 {
		// A switch nobody asked for (RFC 9110 §15.2.2 forbids it) would
		// open a tunnel past routing and header hygiene: a broken answer.
		err = errSwitched
	}
	if err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

// fetch makes a call and reads the whole answer's body into body, up to
// max bytes, all before deadline; it reports whether the body fitted. A
// done stop cuts it short. Its calls ask for no upgrade (upgrades are
// never shadowed), so do refuses an answer switching protocols.
func (c *client) fetch(req *fasthttp.Request, res *fasthttp.Response, cl *call, body *bytes.Buffer, max int64, deadline time.Time, stop context.Context) (bool, error) {
	conn, err := c.do(req, res, cl)
	if err != nil {
		return false, err
	}
	complete, err := readBody(conn, res, body, max, deadline, stop)
	c.release(conn, err == nil && complete && !res.ConnectionClose() && !req.ConnectionClose())
	return complete, err
}

// readBody reads res's streamed body into body, up to max bytes, before
// deadline, and reports whether all of it fitted.
func readBody(conn *upstreamConn, res *fasthttp.Response, body *bytes.Buffer, max int64, deadline time.Time, stop context.Context) (bool, error) {
	stream := res.BodyStream()
	if stream == nil {
		return true, nil
	}
	defer res.CloseBodyStream() //nolint:errcheck // what was read is what counts
	if n := res.Header.ContentLength(); n >= 0 && conn.br.Buffered() >= n {
		// All of it came with the header: nothing to wait for.
		if int64(n) > max {
			return false, nil
		}
		_, err := io.Copy(body, stream)
		return err == nil, err
	}
	_ = conn.SetReadDeadline(deadline)
	cancel := context.AfterFunc(stop, func() { _ = conn.Conn.SetReadDeadline(time.Unix(1, 0)) })
	n, err := io.Copy(body, io.LimitReader(stream, max+1))
	if !cancel() {
		return false, context.Canceled // and the deadline is in the past
	}
	if err != nil {
		if time.Now().After(deadline) {
			return false, context.DeadlineExceeded
		}
		return false, err
	}
	_ = conn.SetReadDeadline(time.Time{})
	return n <= max, nil
}

// roundTrip writes req on conn and reads the answer's header. Interim 1xx
// answers (100 Continue, 103 Early Hints) are skipped by the parser.
func roundTrip(conn *upstreamConn, req *fasthttp.Request, res *fasthttp.Response, cl *call) error {
	conn.out.passed = false
	if err := req.Write(conn.bw); err != nil {
		return err
	}
	// A request that fits bw is sent by waitFirstByte, from inside its
	// wait. Not one that went out in parts: the upstream may have
	// answered the first (a 413 to a large body), and the wait, which
	// forgets readiness from before it began, would not see that answer.
	var held []byte
	if conn.raw != nil && !conn.out.passed && conn.bw.Buffered() > 0 {
		conn.out.hold = true
		err := conn.bw.Flush()
		conn.out.hold = false
		held, conn.out.held = conn.out.held, nil
		if err != nil {
			return err
		}
	} else if err := conn.bw.Flush(); err != nil {
		return err
	}
	// The timeout starts when the request is sent, as
	// http.Transport.ResponseHeaderTimeout does: a slow client's upload is
	// client_body_timeout's business.
	sent := time.Now()
	deadline := sent.Add(cl.timeout)
	if err := waitFirstByte(conn, held, sent, deadline, cl.caller); err != nil {
		return err
	}
	if head, _ := conn.br.Peek(conn.br.Buffered()); interim(head) || !bytes.Contains(head, []byte("\r\n\r\n")) {
		// Unless the final header is in already (usually all of it came
		// with its first byte), reading it may take until the deadline:
		// after a 103 Early Hints, the answer may be a while yet.
		_ = conn.SetReadDeadline(deadline)
	}
	res.StreamBody = true
	if err := res.Read(conn.br); err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, fasthttp.ErrTimeout) {
			return errTimeout
		}
		return err
	}
	if n := res.Header.ContentLength(); n < 0 || conn.br.Buffered() < n {
		// The body streams from the connection, for as long as it takes
		// (SSE). A body already read in whole needs no clearing: the next
		// call sets a deadline of its own.
		_ = conn.SetReadDeadline(time.Time{})
	}
	return nil
}

// interim reports whether head starts with an interim 1xx answer's
// status line ("HTTP/1.1 103 ...").
func interim(head []byte) bool {
	return len(head) > len("HTTP/1.1 ") && head[len("HTTP/1.1 ")] == '1'
}

// errTimeout is an upstream that did not answer within its timeout.
var errTimeout = timeoutError{}

type timeoutError struct{}

func (timeoutError) Error() string   { return "upstream did not answer in time" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }

// sendHeld sends b, the rest of a request, with sendAwait: when it
// returns the answer has begun, or the read deadline passed.
func (c *upstreamConn) sendHeld(b []byte) error {
	sent, err := c.sendAwait(b)
	if sent < len(b) && (errors.Is(err, errSentInPart) || errors.Is(err, os.ErrDeadlineExceeded)) {
		// The rest goes as any write does; a read deadline that passed
		// first is no reason to leave it unsent.
		_, err = c.Conn.Write(b[sent:])
	}
	return err
}

// waitFirstByte sends held, the rest of the request, and waits for the
// answer to begin, from now until deadline, looking every pollInterval at
// whether the caller gave up.
func waitFirstByte(conn *upstreamConn, held []byte, now, deadline time.Time, c caller) error {
	for {
		slice := deadline
		if c != nil {
			if s := now.Add(pollInterval); s.Before(slice) {
				slice = s
			}
		}
		// A deadline the last call on this connection set, a moment ago,
		// does as well and saves resetting the poller's timer: it ends
		// no later than this one, and not much sooner.
		if by := conn.readBy; by.After(slice) || by.Before(now.Add(pollInterval/2)) {
			_ = conn.SetReadDeadline(slice)
		}
		if held != nil {
			if err := conn.sendHeld(held); err != nil {
				return err
			}
			held = nil
		}
		_, err := conn.br.Peek(1)
		if err == nil {
			return nil
		}
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			return err
		}
		now = time.Now()
		if now.Before(conn.readBy) {
			// The poller's deadline is not the one kept: re-arm it
			// rather than wait on one that passed.
			conn.readBy = time.Time{}
		}
		if !now.Before(deadline) {
			return errTimeout
		}
		if c != nil {
			if err := c.giveUp(); err != nil {
				return err
			}
		}
	}
}

// release hands conn back after its answer's body was read. reusable is
// false when the body was not read to its end, or either side asked to
// close.
func (c *client) release(conn *upstreamConn, reusable bool) {
	if !reusable || conn.br.Buffered() > 0 {
		// Bytes past the answer (beyond its Content-Length, after a 204)
		// would be read as the next call's answer.
		conn.Close()
		return
	}
	conn.idleSince = time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || len(c.idle[conn.key]) >= maxIdleConnsPerAddr {
		conn.Close()
		return
	}
	c.idle[conn.key] = append(c.idle[conn.key], conn)
}

// conn returns an idle connection to cl.key, or dials one; fresh always
// dials. A connection idle for long, or any one for a request that cannot
// be retried (retryable false), is checked before reuse: it costs a
// system call, and it finds a close that arrived while it was idle.
func (c *client) conn(cl *call, retryable, fresh bool) (*upstreamConn, bool, error) {
	for !fresh {
		c.mu.Lock()
		idle := c.idle[cl.key]
		if len(idle) == 0 {
			c.mu.Unlock()
			break
		}
		conn := idle[len(idle)-1]
		idle[len(idle)-1] = nil
		c.idle[cl.key] = idle[:len(idle)-1]
		c.mu.Unlock()
		if since := time.Since(conn.idleSince); since > idleConnTimeout || (since > staleCheckAfter || !retryable) && peerClosed(conn.Conn) {
			conn.Close()
			continue
		}
		return conn, true, nil
	}
	d := net.Dialer{Timeout: cl.timeout, KeepAlive: 30 * time.Second}
	nc, err := d.Dial("tcp", cl.key.addr)
	if err != nil {
		return nil, false, err
	}
	if cl.key.tls {
		tc := tls.Client(nc, &tls.Config{ServerName: cl.key.host, NextProtos: []string{"http/1.1"}})
		_ = tc.SetDeadline(time.Now().Add(cl.timeout))
		if err := tc.Handshake(); err != nil {
			nc.Close()
			return nil, false, err
		}
		_ = tc.SetDeadline(time.Time{})
		nc = tc
	}
	uc := &upstreamConn{Conn: nc, key: cl.key, out: &heldWriter{conn: nc}}
	uc.br = bufio.NewReaderSize(nc, maxResponseHeaderBytes)
	uc.bw = bufio.NewWriterSize(uc.out, 4<<10)
	if tc, ok := nc.(*net.TCPConn); ok {
		uc.raw, _ = tc.SyscallConn()
		uc.sending.step = uc.sending.write
	}
	return uc, false, nil
}

// closeIdle closes every idle connection, and those released later.
func (c *client) closeIdle() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for key, conns := range c.idle {
		for _, conn := range conns {
			conn.Close()
		}
		delete(c.idle, key)
	}
	for key, pl := range c.pipes {
		pl.retire()
		delete(c.pipes, key)
	}
}

// closeIdleTo closes the idle connections to key: a reload dropped it.
func (c *client) closeIdleTo(key dialKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, conn := range c.idle[key] {
		conn.Close()
	}
	delete(c.idle, key)
	for pk, pl := range c.pipes {
		if pk.dial == key {
			pl.retire()
			delete(c.pipes, pk)
		}
	}
}

// retireUnusedPipelines retires the pipelines of routes that used is
// missing: a reload removed the route, renamed it or moved it to another
// upstream. Calls already on them finish.
func (c *client) retireUnusedPipelines(used map[pipeKey]bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for pk, pl := range c.pipes {
		if !used[pk] {
			pl.retire()
			delete(c.pipes, pk)
		}
	}
}

// isStale reports whether err is what a reused connection the upstream had
// already closed looks like: nothing was answered.
func isStale(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}
