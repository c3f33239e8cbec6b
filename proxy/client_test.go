package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// countingServer answers body and counts the connections it accepted.
func countingServer(t *testing.T, h http.HandlerFunc) (*httptest.Server, *atomic.Int64) {
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, &conns
}

// fetchGet makes a GET of addr's path through c, as a shadow call
// does, within timeout.
func fetchGet(c *client, addr, path string, max int64, timeout time.Duration) (status int, body string, complete bool, err error) {
	req, res := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(res)
	req.Header.SetRequestURI(path)
	req.Header.SetHost(addr)
	var buf bytes.Buffer
	cl := &call{key: dialKey{addr: addr}, timeout: timeout}
	complete, err = c.fetch(req, res, cl, &buf, max, time.Now().Add(timeout), context.Background())
	return res.StatusCode(), buf.String(), complete, err
}

func shadowGet(t *testing.T, c *client, srv *httptest.Server, max int64) (int, string, bool, error) {
	t.Helper()
	return fetchGet(c, strings.TrimPrefix(srv.URL, "http://"), "/x", max, 5*time.Second)
}

func TestClient(t *testing.T) {
	t.Run("keep-alive connections are reused", func(t *testing.T) {
		srv, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
		c := newClient()
		defer c.closeIdle()
		for i := 0; i < 5; i++ {
			if res, body, complete, err := shadowGet(t, c, srv, 100); err != nil || res != 200 || body != "ok" || !complete {
				t.Fatalf("call %d: %v %q %v %v", i, res, body, complete, err)
			}
		}
		if n := conns.Load(); n != 1 {
			t.Errorf("%d connections for 5 calls; want 1", n)
		}
	})
	t.Run("a connection the upstream closed is retried on a fresh one", func(t *testing.T) {
		srv, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
		c := newClient()
		defer c.closeIdle()
		if _, _, _, err := shadowGet(t, c, srv, 100); err != nil {
			t.Fatal(err)
		}
		srv.CloseClientConnections() // the idle one in the pool is now stale
		if res, body, _, err := shadowGet(t, c, srv, 100); err != nil || res != 200 || body != "ok" {
			t.Fatalf("after the upstream closed the idle connection: %v %q %v", res, body, err)
		}
		if n := conns.Load(); n != 2 {
			t.Errorf("%d connections; want 2", n)
		}
	})
	t.Run("a body over the cap is cut and its connection not reused", func(t *testing.T) {
		srv, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, strings.Repeat("x", 1000)) })
		c := newClient()
		defer c.closeIdle()
		for i := 0; i < 2; i++ {
			if _, _, complete, err := shadowGet(t, c, srv, 100); err != nil || complete {
				t.Fatalf("call %d: complete %v, err %v; want an incomplete body", i, complete, err)
			}
		}
		if n := conns.Load(); n != 2 {
			t.Errorf("%d connections; want a fresh one per call", n)
		}
	})
	t.Run("the timeout bounds a hanging upstream", func(t *testing.T) {
		release := make(chan struct{})
		defer close(release)
		srv, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		})
		c := newClient()
		defer c.closeIdle()
		var ne net.Error
		if _, _, _, err := fetchGet(c, strings.TrimPrefix(srv.URL, "http://"), "/x", 100, 100*time.Millisecond); !errors.As(err, &ne) || !ne.Timeout() {
			t.Errorf("err = %v; want a timeout", err)
		}
	})
	t.Run("interim 1xx answers are skipped", func(t *testing.T) {
		srv, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Link", "</style.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			w.WriteHeader(http.StatusContinue)
			io.WriteString(w, "final "+r.URL.Query().Get("n"))
		})
		c := newClient()
		defer c.closeIdle()
		for i := range 3 {
			status, body, _, err := fetchGet(c, strings.TrimPrefix(srv.URL, "http://"), "/x?n="+strconv.Itoa(i), 100, 5*time.Second)
			if want := "final " + strconv.Itoa(i); err != nil || status != 200 || body != want {
				t.Fatalf("call %d: %v %q %v; want 200 %q, each call its own answer", i, status, body, err, want)
			}
		}
		if n := conns.Load(); n != 1 {
			t.Errorf("%d connections; want the one reused", n)
		}
	})
	t.Run("an endless header line fails the call within the header limit", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			defer conn.Close()
			_, _ = io.WriteString(conn, "HTTP/1.1 200 OK\r\nX-Endless: ")
			chunk := bytes.Repeat([]byte("a"), 32<<10)
			for {
				if _, err := conn.Write(chunk); err != nil {
					return
				}
			}
		}()
		c := newClient()
		defer c.closeIdle()
		var small *fasthttp.ErrSmallBuffer
		if _, _, _, err := fetchGet(c, ln.Addr().String(), "/x", 100, 5*time.Second); !errors.As(err, &small) {
			t.Errorf("err = %v; want the header limit", err)
		}
	})
	t.Run("bytes after an answer never become the next one's", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		var conns atomic.Int64
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				conns.Add(1)
				go func() {
					defer c.Close()
					br := bufio.NewReader(c)
					for {
						if _, err := http.ReadRequest(br); err != nil {
							return
						}
						_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale")
					}
				}()
			}
		}()
		c := newClient()
		defer c.closeIdle()
		for i := range 2 {
			if _, body, _, err := fetchGet(c, ln.Addr().String(), "/x", 100, 5*time.Second); err != nil || body != "ok" {
				t.Fatalf("call %d: %q, %v; want ok", i, body, err)
			}
		}
		if n := conns.Load(); n != 2 {
			t.Errorf("%d connections; want one per call, the first not reused", n)
		}
	})
	t.Run("a protocol switch on a shadow call is an error", func(t *testing.T) {
		srv, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
			conn, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			defer conn.Close()
			_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n")
			_ = brw.Flush()
		})
		c := newClient()
		defer c.closeIdle()
		if _, _, _, err := shadowGet(t, c, srv, 100); !errors.Is(err, errSwitched) {
			t.Errorf("err = %v; want the switch refused", err)
		}
	})
}

// dialRaw dials ln with c as a call would, and accepts the connection's
// far end.
func dialRaw(t *testing.T, c *client, ln net.Listener) (*upstreamConn, net.Conn) {
	t.Helper()
	accepted := make(chan net.Conn, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- conn
	}()
	conn, _, err := c.conn(&call{key: dialKey{addr: ln.Addr().String()}, timeout: 5 * time.Second}, true, false)
	if err != nil {
		t.Fatal(err)
	}
	far, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { conn.Close(); far.Close() })
	if conn.raw == nil {
		t.Fatal("a plain TCP connection has no raw socket")
	}
	return conn, far
}

// TestSendFromTheWait covers roundTrip's sending of a request from
// inside the wait for its answer (upstreamConn.sendAwait), on real
// sockets.
func TestSendFromTheWait(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	const answer = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
	t.Run("an answer sent at once is not missed", func(t *testing.T) {
		c := newClient()
		conn, far := dialRaw(t, c, ln)
		// The far end answers as soon as the request is in: often before
		// the sender waits, which the poller must not lose.
		go func() {
			br := bufio.NewReader(far)
			for range 200 {
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				io.WriteString(far, answer)
			}
		}()
		for i := range 200 {
			req, res := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			req.Header.SetRequestURI("/n/" + strconv.Itoa(i))
			req.Header.SetHost("x")
			err := roundTrip(conn, req, res, &call{key: conn.key, timeout: 5 * time.Second})
			if err == nil {
				var body bytes.Buffer
				_, err = readBody(conn, res, &body, 100, time.Now().Add(5*time.Second), context.Background())
			}
			fasthttp.ReleaseRequest(req)
			fasthttp.ReleaseResponse(res)
			if err != nil {
				t.Fatalf("call %d: %v", i, err)
			}
		}
	})
	t.Run("a socket that takes part gets the rest as any write does", func(t *testing.T) {
		c := newClient()
		conn, far := dialRaw(t, c, ln)
		// Far more than the socket buffers of both ends hold, while the
		// far end reads nothing: one write cannot take it all.
		if err := conn.Conn.(*net.TCPConn).SetWriteBuffer(64 << 10); err != nil {
			t.Fatal(err)
		}
		if err := far.(*net.TCPConn).SetReadBuffer(64 << 10); err != nil {
			t.Fatal(err)
		}
		big := bytes.Repeat([]byte("0123456789abcdef"), 64<<10)
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		sent, err := conn.sendAwait(big)
		if !errors.Is(err, errSentInPart) || sent == 0 || sent >= len(big) {
			t.Fatalf("sendAwait of %d bytes: sent %d, %v; want part of it, errSentInPart", len(big), sent, err)
		}
		got := make(chan bool, 1)
		go func() {
			// The part sent, then all of big again from sendHeld, then
			// the answer.
			b := make([]byte, sent+len(big))
			_, err := io.ReadFull(far, b)
			io.WriteString(far, answer)
			got <- err == nil && bytes.Equal(b[:sent], big[:sent]) && bytes.Equal(b[sent:], big)
		}()
		if err := conn.sendHeld(big); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.br.Peek(1); err != nil {
			t.Fatal(err)
		}
		if !<-got {
			t.Error("the far end did not read the bytes sent, in order")
		}
	})
	t.Run("a read deadline that passed first leaves nothing unsent", func(t *testing.T) {
		c := newClient()
		conn, far := dialRaw(t, c, ln)
		req := []byte("GET /late HTTP/1.1\r\nHost: x\r\n\r\n")
		// As if the goroutine stalled past the deadline it kept.
		_ = conn.Conn.SetReadDeadline(time.Unix(1, 0))
		if sent, err := conn.sendAwait(req); sent != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("sendAwait past its deadline: sent %d, %v; want 0, the deadline", sent, err)
		}
		conn.readBy = time.Now().Add(pollInterval) // stale: the poller's deadline has passed
		got := make(chan string, 1)
		go func() {
			r, err := http.ReadRequest(bufio.NewReader(far))
			if err != nil {
				close(got)
				return
			}
			io.WriteString(far, answer)
			got <- r.URL.Path
		}()
		if err := waitFirstByte(conn, req, time.Now(), time.Now().Add(5*time.Second), nil); err != nil {
			t.Fatal(err)
		}
		if path := <-got; path != "/late" {
			t.Errorf("the far end got %q; want /late", path)
		}
	})
	t.Run("an answer to the first part of a large request is not missed", func(t *testing.T) {
		c := newClient()
		conn, far := dialRaw(t, c, ln)
		answered := make(chan struct{})
		go func() {
			// Answer as soon as the header is in, as an upstream
			// refusing a body too large does, then read the rest.
			br := bufio.NewReader(far)
			for {
				line, err := br.ReadString('\n')
				if err != nil {
					return
				}
				if line == "\r\n" {
					break
				}
			}
			io.WriteString(far, "HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\n\r\n")
			close(answered)
			io.Copy(io.Discard, br)
		}()
		// A body larger than bw, whose last bytes come only once the
		// answer is in the proxy's socket and the poller has reported it:
		// readiness a wait that begins later would not see again.
		const first = 16 << 10
		polled := make(chan struct{})
		go func() {
			<-answered
			waited := false
			conn.raw.Read(func(uintptr) bool {
				defer func() { waited = true }()
				return waited
			})
			close(polled)
		}()
		body := io.MultiReader(bytes.NewReader(make([]byte, first)), &afterReader{wait: polled, r: strings.NewReader("last bytes")})
		req, res := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(res)
		req.Header.SetMethod(fasthttp.MethodPost)
		req.Header.SetRequestURI("/upload")
		req.Header.SetHost("x")
		req.SetBodyStream(body, first+len("last bytes"))
		// No caller: a wait that missed the answer would last the whole
		// timeout, and end in errTimeout.
		if err := roundTrip(conn, req, res, &call{key: conn.key, timeout: 5 * time.Second}); err != nil {
			t.Fatal(err)
		}
		if res.StatusCode() != fasthttp.StatusRequestEntityTooLarge {
			t.Errorf("status %d; want 413", res.StatusCode())
		}
	})
	t.Run("a closed connection is stale, for a retry", func(t *testing.T) {
		c := newClient()
		conn, far := dialRaw(t, c, ln)
		far.Close()
		// The first write may still be taken; the one after the reset not.
		var err error
		for range 100 {
			if err = waitFirstByte(conn, []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), time.Now(), time.Now().Add(5*time.Second), nil); err != nil {
				break
			}
			conn.br.Reset(conn.Conn)
		}
		if !isStale(err) {
			t.Errorf("err = %v; want one a retry follows", err)
		}
	})
}

// afterReader reads r once wait is closed.
type afterReader struct {
	wait <-chan struct{}
	r    io.Reader
}

func (a *afterReader) Read(p []byte) (int, error) {
	<-a.wait
	return a.r.Read(p)
}
