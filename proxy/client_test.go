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
