package service

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// A request whose framing a proxy in front of this one could read
// differently is the opening of request smuggling: the front proxy frames
// it by Content-Length, this server by Transfer-Encoding, and the bytes
// between the two ends become a request nobody sent. net/http hides what
// the decision needs (it drops Content-Length when Transfer-Encoding is
// there, unfolds and trims header values, accepts a bare LF), so the check
// happens on the bytes, as they arrive, before net/http parses them.
//
// Refused, with 400 and the connection closed (RFC 9112):
//   - Content-Length together with Transfer-Encoding (§6.3);
//   - a Transfer-Encoding other than exactly "chunked", such as
//     "CHUNKED", "chunked, identity", a tab or extra spaces around it, or
//     the header twice;
//   - more than one Content-Length, or one that is not all digits;
//   - a line folded onto the one before (obs-fold, §5.2), whitespace
//     between a field name and its colon (§5.1), a line of the header
//     block or of a chunked body's trailer ending in a bare LF (§2.2).
//
// To find where each request's header block starts on a keep-alive
// connection, the bodies are followed too: Content-Length bytes, or the
// chunks of a chunked body. A connection net/http hijacks (a protocol
// switch such as WebSocket) is passed through from then on.

// errRefusedFraming makes net/http answer 400 and close the connection:
// an error that is not EOF, a timeout or a read error is a bad request.
type errRefusedFraming struct{ reason string }

func (e *errRefusedFraming) Error() string { return "request framing refused: " + e.reason }

// framingListener wraps each accepted connection in a framingConn.
type framingListener struct {
	net.Listener
	log *refusalLog
	// maxHeader bounds a header block held for checking; a larger one is
	// passed on unchecked, for net/http to refuse (431).
	maxHeader int
	// headerTimeout bounds how long a header block may take to arrive,
	// from its first byte: net/http's ReadHeaderTimeout starts only once
	// it sees a byte, which a held block hides from it.
	headerTimeout time.Duration
}

func (l framingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &framingConn{Conn: c, log: l.log, maxHeader: l.maxHeader, headerTimeout: l.headerTimeout}, nil
}

// SyscallConn reaches the socket, for a look at whether the client closed
// it while its request is served.
func (c *framingConn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errors.New("not a socket")
}

// refusalLog logs refusals at warn, at most one line a second with the
// count of those left out: a client sending bad requests in a loop must
// not flood the log.
type refusalLog struct {
	logger     *slog.Logger
	mu         sync.Mutex
	last       time.Time
	suppressed int
}

func (l *refusalLog) refused(remote, reason string) {
	l.mu.Lock()
	now := time.Now()
	if now.Sub(l.last) < time.Second {
		l.suppressed++
		l.mu.Unlock()
		return
	}
	suppressed := l.suppressed
	l.last, l.suppressed = now, 0
	l.mu.Unlock()
	l.logger.Warn("request refused: its framing is ambiguous", "remote", remote, "reason", reason, "suppressed", suppressed)
}

// The states of a framingConn's reader.
const (
	stateHeader      = iota // collecting a request's header block
	stateBody               // passing Content-Length bytes
	stateChunkSize          // reading a chunk-size line
	stateChunkData          // passing a chunk's data
	stateChunkCRLF          // the CRLF after a chunk's data
	stateTrailer            // trailer lines after the last chunk
	statePassThrough        // hijacked, or a header net/http refuses: bytes as they come
)

// maxKeptBuffer is the capacity a connection keeps between requests; a
// buffer grown past it by one large header is dropped once drained.
const maxKeptBuffer = 8 << 10

// framingConn checks the framing of each request it reads. Its Read holds
// a header block back until the block is complete, so net/http never sees
// a refused one: it gets the refusal as a read error instead.
type framingConn struct {
	net.Conn
	log           *refusalLog
	maxHeader     int
	headerTimeout time.Duration

	mu      sync.Mutex // guards the fields below; never held across a read of Conn
	state   int
	held    []byte // a header block (or chunk-size line, trailer) not yet complete
	ready   []byte // checked bytes; ready[readPos:] not yet handed to the reader
	readPos int
	remain  int64  // body or chunk bytes left
	refused error  // returned by every Read once ready is drained
	buf     []byte // read buffer
	// timed: the header block being held has its deadline set.
	timed bool
	// used: the client sent something.
	used bool
}

var _ net.Conn = (*framingConn)(nil)

// Read hands out checked bytes, reading and checking more as needed.
func (c *framingConn) Read(p []byte) (int, error) {
	for {
		c.mu.Lock()
		if c.readPos < len(c.ready) {
			n := copy(p, c.ready[c.readPos:])
			if c.readPos += n; c.readPos == len(c.ready) {
				c.ready, c.readPos = c.ready[:0], 0 // its array, reused
				if cap(c.ready) > maxKeptBuffer {
					c.ready = nil
				}
			}
			c.mu.Unlock()
			return n, nil
		}
		if c.refused != nil {
			err := c.refused
			c.mu.Unlock()
			return 0, err
		}
		if c.state == statePassThrough && len(c.held) == 0 {
			c.mu.Unlock()
			return c.Conn.Read(p)
		}
		if c.state == stateBody && len(c.held) == 0 {
			// A body's bytes need no look: straight into p, at most the
			// body's end, so the next header block is still seen.
			want := int64(len(p))
			if want > c.remain {
				want = c.remain
			}
			c.mu.Unlock()
			n, err := c.Conn.Read(p[:want])
			c.mu.Lock()
			if c.state == stateBody { // not hijacked meanwhile
				c.remain -= int64(n)
				if c.remain == 0 {
					c.state = stateHeader
				}
			}
			c.mu.Unlock()
			return n, err
		}
		if c.buf == nil {
			c.buf = make([]byte, 4096)
		}
		buf := c.buf
		c.mu.Unlock()

		n, err := c.Conn.Read(buf)
		c.mu.Lock()
		if n > 0 {
			c.used = true
			c.feed(buf[:n])
		}
		if c.state == stateHeader && len(c.held) > 0 && !c.timed {
			c.timed = true
			_ = c.Conn.SetReadDeadline(time.Now().Add(c.headerTimeout))
		}
		refusal := c.refused
		if refusal != nil && n > 0 {
			defer c.log.refused(c.RemoteAddr().String(), refusal.(*errRefusedFraming).reason)
		}
		if err != nil && c.readPos == len(c.ready) {
			// Held bytes stay held: an unchecked header block is never
			// handed on, not even when a read deadline (net/http aborting
			// its background read) or the client's EOF cuts it.
			c.mu.Unlock()
			return 0, err
		}
		c.mu.Unlock()
	}
}

// hijacked passes the connection through from now on: it no longer
// carries HTTP requests. The server calls it when a handler takes the
// connection over.
func (c *framingConn) hijacked() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.state = statePassThrough
	// Bytes refused as a request were the tunnel's, not a request's.
	c.ready = append(c.ready, c.held...)
	c.held = nil
	c.refused = nil
}

// Close closes the connection the way net/http closes one it refused a
// request on: the write side first, then, in the background, what the
// client still sends is read and dropped for a moment (lingerTime, at most
// lingerBytes) before the socket goes. A socket closed with unread bytes
// answers them with a reset, which may destroy the answer the client has
// not read yet: a 431 for a header too large, a 400. fasthttp closes
// without that. A connection that never sent a byte (one a shutdown
// closes, while the server still waits to read it) is closed at once.
func (c *framingConn) Close() error {
	c.mu.Lock()
	used := c.used
	c.mu.Unlock()
	tc, ok := c.Conn.(*net.TCPConn)
	if !used || !ok || tc.CloseWrite() != nil {
		return c.Conn.Close()
	}
	go func() {
		_ = tc.SetReadDeadline(time.Now().Add(lingerTime))
		_, _ = io.Copy(io.Discard, io.LimitReader(tc, lingerBytes))
		_ = tc.Close()
	}()
	return nil
}

// A closing connection's linger bounds.
const (
	lingerTime  = 500 * time.Millisecond
	lingerBytes = 256 << 10
)

// CloseWrite half-closes the connection, which net/http does before it
// closes one it refused a request on, so that the client reads the answer
// rather than a reset.
func (c *framingConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// feed runs the framing state machine over b, moving checked bytes to
// ready. Called with mu held.
func (c *framingConn) feed(b []byte) {
	defer func() {
		if c.refused != nil {
			c.held = append(c.held, b...) // kept for hijacked, never for net/http
		}
	}()
	for len(b) > 0 && c.refused == nil {
		switch c.state {
		case statePassThrough:
			c.ready = append(c.ready, b...)
			return
		case stateBody, stateChunkData:
			n := int64(len(b))
			if n > c.remain {
				n = c.remain
			}
			c.ready = append(c.ready, b[:n]...)
			b = b[n:]
			if c.remain -= n; c.remain == 0 {
				if c.state == stateBody {
					c.state = stateHeader
				} else {
					c.state = stateChunkCRLF
				}
			}
		case stateChunkCRLF:
			// Two bytes, CR LF; anything else is net/http's to refuse.
			c.held = append(c.held, b[0])
			b = b[1:]
			if len(c.held) == 2 {
				if c.held[0] != '\r' || c.held[1] != '\n' {
					c.refuse("a chunk's data does not end with CRLF")
					return
				}
				c.release()
				c.state = stateChunkSize
			}
		case stateHeader, stateChunkSize, stateTrailer:
			i := bytes.IndexByte(b, '\n')
			if i < 0 {
				c.held = append(c.held, b...)
				switch {
				case len(c.held) <= c.maxHeader:
				case c.state == stateHeader:
					// net/http refuses it (431) and closes.
					c.release()
					c.state = statePassThrough
				default:
					c.refuse("a chunk-size or trailer line too long")
				}
				return
			}
			c.held = append(c.held, b[:i+1]...)
			b = b[i+1:]
			c.line()
		}
	}
}

// line acts on the complete line that ends c.held.
func (c *framingConn) line() {
	switch c.state {
	case stateChunkSize:
		size, ok := chunkSize(c.held)
		if !ok {
			c.refuse("a malformed chunk-size line")
			return
		}
		c.release()
		switch {
		case size == 0:
			c.state = stateTrailer
		default:
			c.state, c.remain = stateChunkData, size
		}
	case stateTrailer:
		if len(c.held) < 2 || c.held[len(c.held)-2] != '\r' {
			// net/http takes a bare LF for a trailer line's end, and a
			// lone one for the end of the body; a hop that reads lines
			// to their CRLF reads on, and takes the request after it for
			// trailer fields.
			c.refuse("a trailer line ends in a bare LF")
			return
		}
		last := isEmptyLine(c.held)
		c.release()
		if last {
			c.state = stateHeader
		}
	case stateHeader:
		block := c.held
		// Empty lines before a request line are skipped, as net/http does.
		if bytes.Count(block, []byte("\n")) == 1 && isEmptyLine(block) {
			c.release()
			return
		}
		if !bytes.HasSuffix(block, []byte("\r\n\r\n")) && !bytes.HasSuffix(block, []byte("\n\n")) && !bytes.HasSuffix(block, []byte("\n\r\n")) {
			if len(block) > c.maxHeader {
				c.release()
				c.state = statePassThrough
			}
			return // the block goes on
		}
		c.timed = false
		f, err := checkFraming(block)
		if err != nil {
			c.refused = err
			return
		}
		c.release()
		switch {
		case f.chunked:
			c.state = stateChunkSize
		case f.length > 0:
			c.state, c.remain = stateBody, f.length
		}
	}
}

// refuse stops the connection: the bytes held and after never reach
// net/http, which gets the refusal as a read error (400 for a header,
// a failed body read otherwise) and closes the connection.
func (c *framingConn) refuse(reason string) {
	c.refused = &errRefusedFraming{reason: reason}
}

// release moves the held bytes to ready.
func (c *framingConn) release() {
	c.ready = append(c.ready, c.held...)
	c.held = c.held[:0]
	if cap(c.held) > maxKeptBuffer {
		c.held = nil
	}
}

func isEmptyLine(b []byte) bool {
	return len(b) == 1 && b[0] == '\n' || len(b) == 2 && b[0] == '\r' && b[1] == '\n'
}

// quoteCut quotes an attacker's bytes for the log, at most 64 of them.
func quoteCut(b []byte) string {
	if len(b) > 64 {
		return strconv.Quote(string(b[:64])) + "…"
	}
	return strconv.Quote(string(b))
}

// chunkSize parses a chunk-size line, ignoring extensions.
func chunkSize(line []byte) (int64, bool) {
	line = bytes.TrimRight(line, "\r\n")
	if i := bytes.IndexByte(line, ';'); i >= 0 {
		line = line[:i]
	}
	line = bytes.TrimRight(line, " \t")
	if len(line) == 0 || len(line) > 16 {
		return 0, false
	}
	n, err := strconv.ParseInt(string(line), 16, 64)
	return n, err == nil && n >= 0
}

// framing is how a request says its body ends.
type framing struct {
	chunked bool
	length  int64
}

// checkFraming reads a complete header block, request line first, and
// returns its framing, or why it is refused.
func checkFraming(block []byte) (framing, *errRefusedFraming) {
	var f framing
	refuse := func(format string, args ...any) (framing, *errRefusedFraming) {
		return framing{}, &errRefusedFraming{reason: fmt.Sprintf(format, args...)}
	}
	// The first Transfer-Encoding and Content-Length values, and how many
	// of each there were.
	var te, cl []byte
	var nte, ncl int
	var version []byte
	for i := 0; len(block) > 0; i++ {
		end := bytes.IndexByte(block, '\n')
		l := block[:end+1]
		block = block[end+1:]
		if len(l) < 2 || l[len(l)-2] != '\r' {
			return refuse("a line ends in a bare LF")
		}
		l = l[:len(l)-2]
		if i == 0 {
			if sp := bytes.LastIndexByte(l, ' '); sp >= 0 {
				version = l[sp+1:]
			}
			continue
		}
		if len(l) == 0 {
			continue // the empty line ending the block
		}
		if l[0] == ' ' || l[0] == '\t' {
			return refuse("a header line is folded onto the previous one (obs-fold)")
		}
		colon := bytes.IndexByte(l, ':')
		if colon <= 0 {
			continue // net/http refuses it
		}
		name := l[:colon]
		if last := name[len(name)-1]; last == ' ' || last == '\t' {
			return refuse("whitespace between the field name %s and its colon", quoteCut(bytes.TrimRight(name, " \t")))
		}
		value := l[colon+1:]
		switch {
		case len(name) == len("Transfer-Encoding") && bytes.EqualFold(name, []byte("Transfer-Encoding")):
			if nte++; nte == 1 {
				te = value
			}
		case len(name) == len("Content-Length") && bytes.EqualFold(name, []byte("Content-Length")):
			if ncl++; ncl == 1 {
				cl = value
			}
		}
	}
	switch {
	case nte > 0 && ncl > 0:
		return refuse("both Content-Length and Transfer-Encoding")
	case nte > 1:
		return refuse("Transfer-Encoding given %d times", nte)
	case nte == 1 && !bytes.Equal(version, []byte("HTTP/1.1")):
		// net/http ignores it below HTTP/1.1 and sees no body, where a
		// proxy in front may see chunks (RFC 9112 §6.1: faulty framing).
		return refuse("Transfer-Encoding on a %s request", quoteCut(version))
	case nte == 1:
		if !bytes.Equal(te, []byte(" chunked")) && !bytes.Equal(te, []byte("chunked")) {
			return refuse("Transfer-Encoding %s is not exactly \"chunked\"", quoteCut(te))
		}
		f.chunked = true
	case ncl > 1:
		return refuse("Content-Length given %d times", ncl)
	case ncl == 1:
		v := bytes.TrimPrefix(cl, []byte(" "))
		if len(v) == 0 || len(v) > 18 {
			return refuse("Content-Length %s is not a number", quoteCut(cl))
		}
		for _, d := range v {
			if d < '0' || d > '9' {
				return refuse("Content-Length %s is not a number", quoteCut(cl))
			}
			f.length = f.length*10 + int64(d-'0')
		}
	}
	return f, nil
}
