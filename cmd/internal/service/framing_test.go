package service

import (
	"bufio"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// recordingHandler answers every request with its method, path and body,
// and remembers them: what reached the handler is what a proxy behind
// this server would have forwarded.
type recordingHandler struct {
	mu   sync.Mutex
	seen []string
}

func (h *recordingHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	line := r.Method + " " + r.URL.Path + " " + string(body)
	h.mu.Lock()
	h.seen = append(h.seen, line)
	h.mu.Unlock()
	io.WriteString(w, line)
}

func (h *recordingHandler) requests() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.seen...)
}

// exchange writes raw on a new connection in one write (or a byte at a
// time), then reads every response until the server closes the
// connection or goes quiet, and returns their statuses and whether the
// server closed it.
func exchange(t *testing.T, addr, raw string, byteAtATime bool) (statuses []int, closed bool) {
	t.Helper()
	c := dial(t, addr)
	if byteAtATime {
		for i := 0; i < len(raw); i++ {
			if _, err := c.Write([]byte{raw[i]}); err != nil {
				break // the server refused and closed mid-way
			}
		}
	} else if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	for {
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			var ne net.Error
			if ok := asNetError(err, &ne); ok && ne.Timeout() {
				return statuses, false // open and quiet: no more answers
			}
			return statuses, true
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		statuses = append(statuses, res.StatusCode)
	}
}

func asNetError(err error, ne *net.Error) bool {
	e, ok := err.(net.Error)
	if ok {
		*ne = e
	}
	return ok
}

// smuggled is the request a CL.TE chain would smuggle: hidden after the
// chunked terminator of a body the front proxy framed by Content-Length.
const smuggled = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"

func TestFramingRefusesAmbiguousRequests(t *testing.T) {
	tests := []struct{ name, head string }{
		{"Content-Length and Transfer-Encoding", "Content-Length: 41\r\nTransfer-Encoding: chunked\r\n"},
		{"Transfer-Encoding first", "Transfer-Encoding: chunked\r\nContent-Length: 41\r\n"},
		{"Transfer-Encoding with two spaces", "Content-Length: 41\r\nTransfer-Encoding:  chunked\r\n"},
		{"Transfer-Encoding with a tab", "Content-Length: 41\r\nTransfer-Encoding:\tchunked\r\n"},
		{"Transfer-Encoding upper case", "Content-Length: 41\r\nTransfer-Encoding: CHUNKED\r\n"},
		{"Transfer-Encoding obs-folded", "Content-Length: 41\r\nTransfer-Encoding:\r\n chunked\r\n"},
		{"Transfer-Encoding behind a bare LF", "Content-Length: 41\nTransfer-Encoding: chunked\r\n"},
		{"Transfer-Encoding space before the colon", "Content-Length: 41\r\nTransfer-Encoding : chunked\r\n"},
		{"Transfer-Encoding with a trailing space", "Content-Length: 41\r\nTransfer-Encoding: chunked \r\n"},
		{"Transfer-Encoding list", "Content-Length: 41\r\nTransfer-Encoding: chunked, identity\r\n"},
		{"Transfer-Encoding twice", "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"},
		{"obfuscated Transfer-Encoding alone", "Transfer-Encoding: CHUNKED\r\n"},
		{"two Content-Lengths", "Content-Length: 5\r\nContent-Length: 5\r\n"},
		{"Content-Length not a number", "Content-Length: +5\r\n"},
		{"another header folded", "X-Note: one\r\n two\r\nTransfer-Encoding: chunked\r\n"},
		{"bare LF line endings", "X-Note: one\n"},
	}
	for _, tt := range tests {
		for _, byteAtATime := range []bool{false, true} {
			name := tt.name
			if byteAtATime {
				name += "/byte at a time"
			}
			t.Run(name, func(t *testing.T) {
				h := &recordingHandler{}
				s := start(t, h, time.Minute)
				raw := "POST /echo HTTP/1.1\r\nHost: x\r\n" + tt.head + "\r\n0\r\n\r\n" + smuggled
				statuses, closed := exchange(t, s.addr, raw, byteAtATime)
				if len(statuses) != 1 || statuses[0] != http.StatusBadRequest || !closed {
					t.Errorf("answers %v, closed %t; want one 400 and the connection closed", statuses, closed)
				}
				if seen := h.requests(); len(seen) != 0 {
					t.Errorf("the handler saw %q; want nothing", seen)
				}
			})
		}
	}
}

// Valid requests on one keep-alive connection, pipelined in one write or
// trickled byte by byte: bodies by Content-Length and chunks (with an
// extension and a trailer) are followed, so every header block is found.
func TestFramingFollowsBodiesOnAKeepAliveConnection(t *testing.T) {
	raw := "POST /one HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello" +
		"GET /two HTTP/1.1\r\nHost: x\r\n\r\n" +
		"POST /three HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" +
		"3;ext=1\r\nabc\r\n4\r\n\r\n\r\n\r\n0\r\nX-Trailer: t\r\n\r\n" +
		"\r\n" + // an empty line before a request line is skipped
		"POST /four HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n\r\nGET /not-a-request HTTP/1.1\r\nHost: x\r\n\r\n" +
		"GET /five HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
	want := []string{"POST /one hello", "GET /two ", "POST /three abc\r\n\r\n", "POST /four GET /not-a-request HTTP/1.1\r\nHost: x\r\n\r\n", "GET /five "}
	for _, byteAtATime := range []bool{false, true} {
		h := &recordingHandler{}
		s := start(t, h, time.Minute)
		statuses, closed := exchange(t, s.addr, raw, byteAtATime)
		if len(statuses) != len(want) || !closed {
			t.Errorf("byte at a time %t: answers %v, closed %t; want %d answers of 200, then the close asked for", byteAtATime, statuses, closed, len(want))
		}
		for i, st := range statuses {
			if st != http.StatusOK {
				t.Errorf("answer %d = %d; want 200", i, st)
			}
		}
		if got := h.requests(); strings.Join(got, "|") != strings.Join(want, "|") {
			t.Errorf("byte at a time %t: handler saw %q; want %q", byteAtATime, got, want)
		}
	}
}

// A header block larger than the check holds is passed on, and net/http
// refuses it (431): the limit never lets an unchecked request through.
func TestFramingLeavesAHugeHeaderToNetHTTP(t *testing.T) {
	h := &recordingHandler{}
	s := start(t, h, time.Minute)
	raw := "GET /big HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", maxHeldHeader) + "\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n"
	statuses, _ := exchange(t, s.addr, raw, false)
	if len(statuses) != 1 || statuses[0] != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("answers %v; want one 431", statuses)
	}
	if seen := h.requests(); len(seen) != 0 {
		t.Errorf("the handler saw %q; want nothing", seen)
	}
}

// After a handler takes the connection over (a protocol switch), its bytes
// are no longer HTTP: they pass through unchecked, bare LFs and all.
func TestFramingPassesAHijackedConnectionThrough(t *testing.T) {
	s := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
		_ = brw.Flush()
		line, _ := brw.ReadString('\n')
		_, _ = brw.WriteString("echo: " + line)
		_ = brw.Flush()
	}), time.Minute)
	c := dial(t, s.addr)
	if _, err := io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	res, err := http.ReadResponse(br, nil)
	if err != nil || res.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v; want 101", res, err)
	}
	if _, err := io.WriteString(c, "Transfer-Encoding: CHUNKED\n"); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if got, err := br.ReadString('\n'); err != nil || got != "echo: Transfer-Encoding: CHUNKED\n" {
		t.Errorf("after the switch: %q, %v; want the line echoed as sent", got, err)
	}
}

// Requests that would get past a check that looked at headers alone: a
// Transfer-Encoding net/http ignores (HTTP/1.0 sees no body, a proxy in
// front may see chunks), and a chunked body the check cannot follow, then
// a smuggled CL+TE request.
func TestFramingRefusesWhatItCannotFollow(t *testing.T) {
	// A body refused mid-way reaches the handler as a failed read: what
	// it answers is its own; the connection ends there.
	tests := []struct{ name, raw string }{
		{"Transfer-Encoding on HTTP/1.0",
			"POST /echo HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n" +
				"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled},
		{"a malformed chunk-size line",
			"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n" +
				"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled},
		{"chunk data without its CRLF",
			"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXX0\r\n\r\n" + smuggled},
		// net/http takes the bare LF for the end of the trailer; a hop
		// reading trailer lines to their CRLF takes the request after it
		// for trailer fields.
		{"a trailer ended by a bare LF",
			"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\n" + smuggled},
		{"a trailer field ending in a bare LF",
			"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-Trailer: t\n\r\n" + smuggled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &recordingHandler{}
			s := start(t, h, time.Minute)
			statuses, closed := exchange(t, s.addr, tt.raw, false)
			if !closed || len(statuses) > 1 {
				t.Errorf("answers %v, closed %t; want at most one answer and the connection closed", statuses, closed)
			}
			for _, seen := range h.requests() {
				if strings.Contains(seen, "smuggled") || strings.Contains(seen, "GET") {
					t.Errorf("the handler saw %q", seen)
				}
			}
		})
	}
}

// A header block that trickles in on a keep-alive connection is bounded
// like the first one: net/http's ReadHeaderTimeout starts when it sees a
// byte, which the check holds back until the block is complete.
func TestFramingBoundsATricklingHeaderOnAKeepAliveConnection(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	c := &framingConn{Conn: b, log: &refusalLog{logger: discardLogger()}, maxHeader: maxHeldHeader, headerTimeout: 50 * time.Millisecond}
	go func() {
		_, _ = io.WriteString(a, "GET /one HTTP/1.1\r\nHost: x\r\n\r\nGET /two HTTP/1.1\r\n")
		// and then nothing: the second block never ends
	}()
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil || !strings.HasPrefix(string(buf[:n]), "GET /one") {
		t.Fatalf("first read: %q, %v; want the first request", buf[:n], err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := c.Read(buf)
		done <- err
	}()
	select {
	case err := <-done:
		var ne net.Error
		if !asNetError(err, &ne) || !ne.Timeout() {
			t.Errorf("read of the trickling block: %v; want a timeout", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the trickling header block was never cut off")
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
