package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/strangler-proxy/strangler/cmd/internal/service"
)

// Malformed and ambiguous requests (issue 11), from raw sockets, against
// `strangler serve` in front of two upstreams that record the bytes they
// receive. The test sees only sockets, so it holds whichever engine serves
// the data plane.

// wireUpstream is an upstream that reads what the proxy sends at the byte
// level: for each request, whether its framing is unambiguous, and then
// what it asked for. It answers every request with the same 200.
type wireUpstream struct {
	ln net.Listener

	mu        sync.Mutex // guards the fields below
	conns     map[net.Conn]struct{}
	busy      int      // connections part-way through a request
	seen      []string // complete requests: "METHOD host target body"
	flaws     []string // what was wrong with the bytes of a request
	truncated []string // requests the proxy broke off before their end
}

const wireAnswer = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}"

// startWireUpstream serves until the test ends. Its accept loop and one
// goroutine per connection are the test's: they end when the cleanup
// closes the listener and the connections.
func startWireUpstream(t *testing.T) *wireUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &wireUpstream{ln: ln, conns: map[net.Conn]struct{}{}}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		u.mu.Lock()
		for c := range u.conns {
			c.Close()
		}
		u.mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u.mu.Lock()
			u.conns[c] = struct{}{}
			u.mu.Unlock()
			wg.Go(func() { u.serveConn(c) })
		}
	})
	return u
}

func (u *wireUpstream) url() string { return "http://" + u.ln.Addr().String() }

// capturingReader keeps every byte read through it.
type capturingReader struct {
	r   io.Reader
	buf []byte
}

func (c *capturingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.buf = append(c.buf, p[:n]...)
	return n, err
}

// take returns the bytes consumed so far, those the reader reading
// through c does not still buffer, and forgets them.
func (c *capturingReader) take(buffered int) []byte {
	n := len(c.buf) - buffered
	consumed := c.buf[:n:n]
	c.buf = append([]byte(nil), c.buf[n:]...)
	return consumed
}

func (u *wireUpstream) serveConn(c net.Conn) {
	defer func() {
		c.Close()
		u.mu.Lock()
		delete(u.conns, c)
		u.mu.Unlock()
	}()
	in := &capturingReader{r: c}
	br := bufio.NewReader(in)
	for {
		if _, err := br.Peek(1); err != nil {
			return // closed between requests
		}
		u.mu.Lock()
		u.busy++
		u.mu.Unlock()
		req, err := http.ReadRequest(br)
		var body []byte
		if err == nil {
			body, err = io.ReadAll(req.Body) // and the trailer
		}
		raw := in.take(br.Buffered())
		u.mu.Lock()
		u.busy--
		if flaw := framingFlaw(raw); flaw != "" {
			u.flaws = append(u.flaws, fmt.Sprintf("%s in %q", flaw, raw))
		}
		switch {
		case req == nil:
			u.flaws = append(u.flaws, fmt.Sprintf("unreadable (%v): %q", err, raw))
		case err != nil:
			u.truncated = append(u.truncated, fmt.Sprintf("%s %s %s cut off (%v) after %q", req.Method, req.Host, req.RequestURI, err, raw))
		default:
			u.seen = append(u.seen, fmt.Sprintf("%s %s %s %q", req.Method, req.Host, req.RequestURI, body))
		}
		u.mu.Unlock()
		if err != nil {
			return
		}
		if _, err := io.WriteString(c, wireAnswer); err != nil {
			return
		}
	}
}

// framingFlaw says what makes the head of raw, a request as the proxy
// sent it, one that two parsers could frame differently, or "" when
// nothing does. It is stricter than what a lenient server accepts, and
// simpler than the proxy's own check, on purpose: a proxy's output has no
// excuse for anything but one plain form. The proxy's check is not reused
// here: it is what the test is about.
func framingFlaw(raw []byte) string {
	end := bytes.Index(raw, []byte("\r\n\r\n"))
	if end < 0 {
		return "no CRLF CRLF ending the head"
	}
	lines := strings.Split(string(raw[:end]), "\r\n")
	for _, l := range lines {
		for i := 0; i < len(l); i++ {
			if c := l[i]; c < ' ' && c != '\t' || c == 0x7f {
				return fmt.Sprintf("control byte %q in a line", c)
			}
		}
	}
	parts := strings.Split(lines[0], " ")
	if len(parts) != 3 || !strings.HasPrefix(parts[1], "/") || parts[2] != "HTTP/1.1" {
		return fmt.Sprintf("request line %q not METHOD origin-form HTTP/1.1", lines[0])
	}
	var hosts, lengths, codings int
	for _, l := range lines[1:] {
		name, value, ok := strings.Cut(l, ":")
		switch {
		case !ok || name == "" || strings.TrimRight(name, " \t") != name || strings.TrimLeft(name, " \t") != name:
			return fmt.Sprintf("header line %q", l)
		case strings.EqualFold(name, "Host"):
			hosts++
		case strings.EqualFold(name, "Content-Length"):
			lengths++
			if v := strings.Trim(value, " \t"); v == "" || strings.Trim(v, "0123456789") != "" {
				return fmt.Sprintf("Content-Length %q", value)
			}
		case strings.EqualFold(name, "Transfer-Encoding"):
			codings++
			if strings.Trim(value, " \t") != "chunked" {
				return fmt.Sprintf("Transfer-Encoding %q", value)
			}
		}
	}
	switch {
	case hosts != 1:
		return fmt.Sprintf("%d Host headers", hosts)
	case lengths+codings > 1:
		return fmt.Sprintf("%d Content-Length and %d Transfer-Encoding headers", lengths, codings)
	}
	return ""
}

// settle waits until no connection is part-way through a request: a
// request the proxy broke off is then recorded as truncated, not left to
// the next case. A complete request needs no wait: the upstream records
// it before it answers, and the proxy answers the client after.
func (u *wireUpstream) settle(t *testing.T) {
	t.Helper()
	waitUntil(t, "the upstream read every request to its end", func() bool {
		u.mu.Lock()
		defer u.mu.Unlock()
		return u.busy == 0
	})
}

// take returns what the upstream recorded since the last take, and forgets it.
func (u *wireUpstream) take() (seen, flaws, truncated []string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	seen, flaws, truncated = u.seen, u.flaws, u.truncated
	u.seen, u.flaws, u.truncated = nil, nil, nil
	return seen, flaws, truncated
}

func TestSmugglingMalformedRequests(t *testing.T) {
	legacy, newpath := startWireUpstream(t), startWireUpstream(t)
	// POST /echo goes to newpath; everything else is unmatched and goes to
	// legacy, so a request split out of another shows at the other upstream.
	s := startStack(t, nil, nil, `
upstreams: { legacy: { url: "`+legacy.url()+`" }, newpath: { url: "`+newpath.url()+`" } }
routes:
  - { name: echo, match: "POST /echo", weight: 100 }
`)
	const (
		post = "POST /echo HTTP/1.1\r\nHost: x\r\n"
		// hidden is a request that a front proxy and this one would frame
		// differently: forwarded, it reaches legacy as GET /smuggled.
		hidden = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
		// close ends a valid case's connection, so the exchange does not
		// wait for the proxy to go quiet.
		closeConn = "Connection: close\r\n"
	)
	clen := func(body string) string { return "Content-Length: " + strconv.Itoa(len(body)) + "\r\n" }
	chunked := "Transfer-Encoding: chunked\r\n"
	refused := []int{http.StatusBadRequest}
	// Each case ends with the connection closed by the proxy: a refusal
	// closes it (the bytes after a request the proxy cannot frame cannot be
	// framed either), and every valid case asks for the close.
	tests := []struct {
		name            string
		raw             string
		want            []int    // the statuses the client reads, in order
		legacy, newpath []string // every complete request each upstream read
	}{
		// RFC 9112 §6.3: refused rather than framed by Transfer-Encoding, so
		// that no request's framing depends on which header a hop honours.
		{name: "Content-Length and Transfer-Encoding",
			raw:  post + clen("0\r\n\r\n"+hidden) + chunked + "\r\n0\r\n\r\n" + hidden,
			want: refused},
		// chunked is not the final coding: the length cannot be determined
		// (RFC 9112 §6.3).
		{name: "Transfer-Encoding chunked, identity",
			raw:  post + "Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n" + hidden,
			want: refused},
		// A whitespace-led line after the request line (RFC 9112 §2.2): a
		// hop that reads it as a header sees a chunked body, one that
		// ignores it sees none.
		{name: "Transfer-Encoding on a line led by a space",
			raw:  "POST /echo HTTP/1.1\r\n Transfer-Encoding: chunked\r\nHost: x\r\n\r\n0\r\n\r\n" + hidden,
			want: refused},
		// Coding names are case-insensitive (RFC 9112 §7), but hops that
		// compare them exactly exist: any spelling other than "chunked" is
		// refused.
		{name: "Transfer-Encoding CHUNKED",
			raw:  post + "Transfer-Encoding: CHUNKED\r\n\r\n0\r\n\r\n" + hidden,
			want: refused},
		{name: "Transfer-Encoding twice",
			raw:  post + chunked + chunked + "\r\n0\r\n\r\n" + hidden,
			want: refused},
		{name: "two differing Content-Lengths",
			raw:  post + "Content-Length: 5\r\n" + clen("hello"+hidden) + "\r\nhello" + hidden,
			want: refused},
		{name: "Content-Length +5",
			raw:  post + "Content-Length: +5\r\n\r\nhello",
			want: refused},
		{name: "Content-Length 1_0",
			raw:  post + "Content-Length: 1_0\r\n\r\nhelloworld",
			want: refused},
		{name: "Content-Length in hex",
			raw:  post + "Content-Length: 0x5\r\n\r\nhello",
			want: refused},
		// RFC 9112 §5.2 lets a server unfold instead; a hop that does not
		// would see another header.
		{name: "obs-fold",
			raw:  post + "X-Note: one\r\n two\r\n" + clen("hello") + "\r\nhello",
			want: refused},
		// RFC 9112 §2.2 lets a recipient accept a bare LF, and a hop that
		// does not then reads a different header block.
		{name: "bare LF line endings",
			raw:  "POST /echo HTTP/1.1\nHost: x\n" + strings.TrimSuffix(clen("hello"), "\r\n") + "\n\nhello",
			want: refused},
		// RFC 9110 §5.5: CR, LF and NUL in a value are rejected or replaced
		// by SP; refused, as nothing legitimate sends them.
		{name: "NUL in a header value",
			raw:  post + "X-Note: a\x00b\r\n" + clen("hello") + "\r\nhello",
			want: refused},
		// A hop that takes the lone CR for a line end sees a chunked body.
		{name: "CR alone in a header value",
			raw:  post + "X-Note: a\rTransfer-Encoding: chunked\r\n" + clen("0\r\n\r\n"+hidden) + "\r\n0\r\n\r\n" + hidden,
			want: refused},
		{name: "header block over the limit",
			raw:  "GET /big HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", service.MaxHeaderBytes+16<<10) + "\r\n\r\n",
			want: []int{http.StatusRequestHeaderFieldsTooLarge}},
		// A server MUST accept the absolute form, and the target's authority
		// replaces Host (RFC 9112 §3.2.2): the upstream sees the authority
		// the proxy routed on, in origin form, and the proxy never connects
		// to that authority (it is no open forward proxy).
		{name: "absolute-form target",
			raw:    "GET http://evil.example/orders HTTP/1.1\r\nHost: x\r\n" + closeConn + "\r\n",
			want:   []int{http.StatusOK},
			legacy: []string{`GET evil.example /orders ""`}},
		// The origin form is the target's bytes after the authority, as
		// routing reads them: not fasthttp's normalised path, which would
		// send /orders/1 upstream after routing /x/../orders/1.
		{name: "absolute-form target with dot segments and %2F",
			raw:    "GET http://evil.example/x/../orders%2F1?a=b HTTP/1.1\r\nHost: x\r\n" + closeConn + "\r\n",
			want:   []int{http.StatusOK},
			legacy: []string{`GET evil.example /x/../orders%2F1?a=b ""`}},
		{name: "absolute-form target with no path",
			raw:    "GET http://evil.example?a=b HTTP/1.1\r\nHost: x\r\n" + closeConn + "\r\n",
			want:   []int{http.StatusOK},
			legacy: []string{`GET evil.example /?a=b ""`}},
		// OPTIONS * asks about the server the client talks to, which is the
		// proxy (RFC 9110 §9.3.7): answered by it, 200 with no body, and
		// never forwarded, where it would become OPTIONS of some path.
		{name: "OPTIONS *",
			raw:  "OPTIONS * HTTP/1.1\r\nHost: x\r\n" + closeConn + "\r\n",
			want: []int{http.StatusOK}},
		// Framed unambiguously: the second request line is the body.
		{name: "a request inside a body",
			raw:     post + clen(hidden) + closeConn + "\r\n" + hidden,
			want:    []int{http.StatusOK},
			newpath: []string{`POST x /echo "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"`}},
		// Framed unambiguously: chunks with an extension and a trailer, the
		// body forwarded whole.
		{name: "a valid chunked body",
			raw:     post + chunked + closeConn + "\r\n5;name=value\r\nhello\r\n0\r\nX-Trailer: t\r\n\r\n",
			want:    []int{http.StatusOK},
			newpath: []string{`POST x /echo "hello"`}},
		// A hop that reads a chunk line to its CRLF takes "\nhello" for the
		// extension (RFC 9112 §7.1.1 has no bare LF in one).
		{name: "a bare LF in a chunk extension",
			raw:  post + chunked + "\r\n5;ext\nhello\r\n0\r\n\r\n" + hidden,
			want: refused},
		// HTTP/1.0 has no chunked coding: a hop that ignores the header sees
		// no body, one that honours it sees chunks (RFC 9112 §6.1).
		{name: "Transfer-Encoding on HTTP/1.0",
			raw:  "POST /echo HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n" + chunked + "\r\n0\r\n\r\n" + hidden,
			want: refused},
		// RFC 9112 §5.1: a server MUST reject whitespace between a field
		// name and its colon with 400.
		{name: "a space before the colon",
			raw:  post + "Content-Length : 5\r\n\r\nhello",
			want: refused},
		{name: "an invalid method token",
			raw:  "GE(T /orders HTTP/1.1\r\nHost: x\r\n\r\n",
			want: refused},
		// RFC 9112 §3.2: a server MUST answer 400 to an HTTP/1.1 request
		// with no Host, or with more than one.
		{name: "no Host on HTTP/1.1",
			raw:  "GET /orders HTTP/1.1\r\n" + closeConn + "\r\n",
			want: refused},
		{name: "two Host headers",
			raw:  "GET /orders HTTP/1.1\r\nHost: x\r\nHost: evil.example\r\n" + closeConn + "\r\n",
			want: refused},
		// A proxy in front of a backend opens no tunnels: a 2xx would tell
		// the client one is open.
		{name: "CONNECT",
			raw:  "CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n" + closeConn + "\r\n",
			want: []int{http.StatusMethodNotAllowed}},
		// A body the proxy cannot frame is the client's fault: 400, never
		// an empty 200 for a request the upstream never got whole.
		{name: "a chunk size that is not hex",
			raw:  post + chunked + "\r\nzz\r\nhello\r\n0\r\n\r\n" + hidden,
			want: refused},
		{name: "a chunk size past 64 bits",
			raw:  post + chunked + "\r\n10000000000000005\r\nhello\r\n0\r\n\r\n" + hidden,
			want: refused},
		{name: "a bare LF ending the trailer",
			raw:  post + chunked + "\r\n5\r\nhello\r\n0\r\n\n" + hidden,
			want: refused},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			statuses, closed := rawExchange(t, s.addr(), tt.raw)
			legacy.settle(t)
			newpath.settle(t)
			if fmt.Sprint(statuses) != fmt.Sprint(tt.want) || !closed {
				t.Errorf("answers %v, closed %t; want %v and the connection closed", statuses, closed, tt.want)
			}
			for _, up := range []struct {
				name string
				u    *wireUpstream
				want []string
			}{{"legacy", legacy, tt.legacy}, {"newpath", newpath, tt.newpath}} {
				seen, flaws, truncated := up.u.take()
				if fmt.Sprintf("%q", seen) != fmt.Sprintf("%q", up.want) {
					t.Errorf("%s read %q; want %q", up.name, seen, up.want)
				}
				for _, f := range flaws {
					t.Errorf("%s read an ambiguous request: %s", up.name, f)
				}
				for _, tr := range truncated {
					t.Logf("%s: %s", up.name, tr)
				}
			}
		})
	}
}
