package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"
)

// maxIdleShadowConns bounds the idle connections kept per upstream address.
const maxIdleShadowConns = 256

// shadowClient makes the shadow and noise calls to plain-HTTP upstreams.
// It does each HTTP/1.1 exchange on the calling goroutine, over its own
// pool of keep-alive connections, where http.Transport hands every
// exchange to two goroutines per connection: at 100% shadow that doubles
// the goroutine wake-ups of the request path. Request framing and response
// parsing are net/http's own (Request.Write, ReadResponse).
type shadowClient struct {
	dialer net.Dialer

	mu   sync.Mutex
	idle map[string][]*shadowConn // by host:port
}

type shadowConn struct {
	net.Conn
	limit headerLimit // between Conn and br
	br    *bufio.Reader
	bw    *bufio.Writer
}

// maxResponseHeaderBytes bounds an upstream answer's header, on shadow
// calls and (Transport.MaxResponseHeaderBytes) primary ones alike: an
// upstream sending an endless header line must not grow the proxy's
// memory. The reader counts what bufio reads ahead of the body too.
const maxResponseHeaderBytes = 64 << 10

// maxInterimResponses bounds the 1xx answers skipped before the final one.
const maxInterimResponses = 16

var errResponseHeaderTooLarge = errors.New("upstream response header too large")

// headerLimit fails reads past its budget while on: it is on while a
// response's header is read.
type headerLimit struct {
	r         io.Reader
	on        bool
	remaining int
}

func (l *headerLimit) Read(p []byte) (int, error) {
	if !l.on {
		return l.r.Read(p)
	}
	if l.remaining <= 0 {
		return 0, errResponseHeaderTooLarge
	}
	if len(p) > l.remaining {
		p = p[:l.remaining]
	}
	n, err := l.r.Read(p)
	l.remaining -= n
	return n, err
}

func newShadowClient() *shadowClient {
	return &shadowClient{dialer: net.Dialer{KeepAlive: 30 * time.Second}, idle: map[string][]*shadowConn{}}
}

// roundTrip sends req to addr and reads the answer's body into body, up to
// max bytes. It reports whether the whole body fitted. A stale idle
// connection (closed by the upstream since) is retried once on a fresh one.
func (c *shadowClient) roundTrip(ctx context.Context, addr string, req *http.Request, body io.Writer, max int64) (*http.Response, bool, error) {
	conn, reused, err := c.conn(ctx, addr)
	if err != nil {
		return nil, false, err
	}
	res, complete, err := c.exchange(ctx, addr, conn, req, body, max)
	if err != nil && reused && ctx.Err() == nil && isStale(err) {
		if conn, _, err = c.conn(ctx, addr); err != nil {
			return nil, false, err
		}
		res, complete, err = c.exchange(ctx, addr, conn, req, body, max)
	}
	if err != nil {
		return nil, false, err
	}
	return res, complete, nil
}

// exchange writes req on conn and reads the answer, then returns conn to
// the pool when it can carry another exchange.
func (c *shadowClient) exchange(ctx context.Context, addr string, conn *shadowConn, req *http.Request, body io.Writer, max int64) (*http.Response, bool, error) {
	if deadline, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(deadline)
	}
	// Cancellation unblocks a read or write in progress.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if err := req.Write(conn.bw); err != nil {
		conn.Close()
		return nil, false, ctxErr(ctx, err)
	}
	if err := conn.bw.Flush(); err != nil {
		conn.Close()
		return nil, false, ctxErr(ctx, err)
	}
	res, err := conn.readResponse(req)
	if err != nil {
		conn.Close()
		return nil, false, ctxErr(ctx, err)
	}
	n, err := io.Copy(body, io.LimitReader(res.Body, max+1))
	res.Body.Close()
	if err != nil {
		conn.Close()
		return nil, false, ctxErr(ctx, err)
	}
	complete := n <= max
	// Bytes after the answer (past its Content-Length, after a 204 or a
	// HEAD's answer) would be read as the next call's answer: such a
	// connection is not reused, as http.Transport would not.
	if !complete || res.Close || req.Close || conn.br.Buffered() > 0 || !stop() {
		conn.Close() // unread bytes, or the upstream or a cancellation ended it
	} else {
		_ = conn.SetDeadline(time.Time{})
		c.put(addr, conn)
	}
	return res, complete, nil
}

// readResponse reads req's final answer: interim 1xx answers (100
// Continue, 103 Early Hints) are skipped, as http.Transport does, so that
// the next answer on the connection is never taken for this one's.
func (c *shadowConn) readResponse(req *http.Request) (*http.Response, error) {
	c.limit.on, c.limit.remaining = true, maxResponseHeaderBytes+c.br.Size()
	defer func() { c.limit.on = false }()
	for range maxInterimResponses {
		res, err := http.ReadResponse(c.br, req)
		if err != nil {
			return nil, err
		}
		if res.StatusCode == http.StatusSwitchingProtocols {
			// Shadows carry no Upgrade: an upstream switching protocols
			// anyway leaves the connection unusable.
			return nil, errors.New("upstream switched protocols on a shadow call")
		}
		if res.StatusCode >= 200 {
			return res, nil
		}
		res.Body.Close() // a 1xx has none
	}
	return nil, fmt.Errorf("more than %d interim responses", maxInterimResponses)
}

func (c *shadowClient) conn(ctx context.Context, addr string) (*shadowConn, bool, error) {
	c.mu.Lock()
	if idle := c.idle[addr]; len(idle) > 0 {
		conn := idle[len(idle)-1]
		c.idle[addr] = idle[:len(idle)-1]
		c.mu.Unlock()
		return conn, true, nil
	}
	c.mu.Unlock()
	nc, err := c.dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, false, err
	}
	sc := &shadowConn{Conn: nc, bw: bufio.NewWriter(nc)}
	sc.limit.r = nc
	sc.br = bufio.NewReader(&sc.limit)
	return sc, false, nil
}

func (c *shadowClient) put(addr string, conn *shadowConn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.idle[addr]) >= maxIdleShadowConns {
		conn.Close()
		return
	}
	c.idle[addr] = append(c.idle[addr], conn)
}

// closeIdle closes every idle connection; used when the proxy stops.
func (c *shadowClient) closeIdle() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for addr, conns := range c.idle {
		for _, conn := range conns {
			conn.Close()
		}
		delete(c.idle, addr)
	}
}

// isStale reports whether err is what a reused connection the upstream had
// already closed looks like: nothing was answered.
func isStale(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// ctxErr prefers the context's error, so a timeout reads as one. The
// connection deadline is the context's, and may fire a moment before the
// context says so.
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var ne net.Error
	if _, ok := ctx.Deadline(); ok && errors.As(err, &ne) && ne.Timeout() {
		return context.DeadlineExceeded
	}
	return err
}
