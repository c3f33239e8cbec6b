package pgtest

import (
	"io"
	"net"
	"net/url"
	"sync"
	"testing"
)

// Relay is a TCP relay in front of the test cluster, so that a test can
// take Postgres away from the code under test and bring it back. While
// down, it cuts the connections it relays and every new one at once, as a
// crashed server would.
type Relay struct {
	ln     net.Listener
	target string

	mu    sync.Mutex // guards the fields below
	down  bool
	conns map[net.Conn]struct{}
}

// NewRelay starts a relay to dbURL's host and returns it with dbURL
// rewritten to connect through it. It stops when t ends.
func NewRelay(t testing.TB, dbURL string) (*Relay, string) {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatalf("pgtest: relay: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("pgtest: relay: %v", err)
	}
	r := &Relay{ln: ln, target: u.Host, conns: map[net.Conn]struct{}{}}
	go r.accept()
	t.Cleanup(r.close)
	via := *u
	via.Host = ln.Addr().String()
	return r, via.String()
}

// SetDown takes Postgres away (true) or brings it back (false).
func (r *Relay) SetDown(down bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.down = down
	if down {
		r.cutLocked()
	}
}

func (r *Relay) accept() {
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		go r.relay(c)
	}
}

// relay copies bytes both ways between c and a new connection to the
// cluster until either side ends or the relay goes down.
func (r *Relay) relay(c net.Conn) {
	up, err := net.Dial("tcp", r.target)
	if err != nil {
		c.Close()
		return
	}
	r.mu.Lock()
	if r.down {
		r.mu.Unlock()
		c.Close()
		up.Close()
		return
	}
	r.conns[c], r.conns[up] = struct{}{}, struct{}{}
	r.mu.Unlock()
	go func() { _, _ = io.Copy(up, c); up.Close() }()
	_, _ = io.Copy(c, up)
	c.Close()
	r.mu.Lock()
	delete(r.conns, c)
	delete(r.conns, up)
	r.mu.Unlock()
}

func (r *Relay) cutLocked() {
	for c := range r.conns {
		c.Close()
	}
	clear(r.conns)
}

func (r *Relay) close() {
	r.ln.Close()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cutLocked()
}
