// Package proxytest serves the proxy's fasthttp server on loopback for
// tests, as httptest does for an http.Handler.
package proxytest

import (
	"net"
	"net/http"
	"testing"

	"github.com/valyala/fasthttp"
)

// Front is a fasthttp server on a loopback listener.
type Front struct {
	// URL is http://host:port.
	URL    string
	srv    *fasthttp.Server
	ln     net.Listener
	client *http.Client
	done   chan struct{}
}

// Start serves srv (a proxy.Proxy's Server, say) until the test ends.
func Start(t testing.TB, srv *fasthttp.Server) *Front {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &Front{URL: "http://" + ln.Addr().String(), srv: srv, ln: ln, done: make(chan struct{}),
		client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}}
	go func() {
		defer close(f.done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(f.Close)
	return f
}

// Client is an HTTP client for the front.
func (f *Front) Client() *http.Client { return f.client }

// Close stops the front and waits for its connections. It may be called
// more than once.
func (f *Front) Close() {
	f.client.CloseIdleConnections()
	// Closed first: a Shutdown before Serve took the listener is a no-op.
	_ = f.ln.Close()
	_ = f.srv.Shutdown()
	<-f.done
}

// Raw serves each connection to a new loopback listener with serve, on a
// goroutine of its own, until the test ends; it returns the listener's
// URL. It is an upstream that answers as no net/http server would.
func Raw(t testing.TB, serve func(c net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go serve(c)
		}
	}()
	return "http://" + ln.Addr().String()
}
