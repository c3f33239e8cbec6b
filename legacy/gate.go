package legacy

import (
	"bytes"
	"net/http"
	"sync"
	"sync/atomic"
)

// Gate holds the answers of the calls to one method and path of a
// handler until Open, so that a test can keep a downstream service slow
// for exactly as long as it needs, with no timer: the wrapped handler acts
// at once (the card is charged when the call arrives) and only its answer
// waits, which is what a caller of a slow or hung service sees. A held
// call whose caller goes away (its timeout, a killed process) is dropped:
// the effect stays and nobody gets the answer, as with a real service
// whose client died. Other calls pass through untouched. It is safe for
// concurrent use.
type Gate struct {
	next         http.Handler
	method, path string
	open         chan struct{}
	once         sync.Once
	arrived      atomic.Int64
	held         atomic.Int64
}

var _ http.Handler = (*Gate)(nil)

// NewGate returns a closed gate on next's calls of method to path, e.g.
// NewGate(downstream, "POST", "/payments").
func NewGate(next http.Handler, method, path string) *Gate {
	return &Gate{next: next, method: method, path: path, open: make(chan struct{})}
}

// ServeHTTP implements http.Handler.
func (g *Gate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != g.method || r.URL.Path != g.path {
		g.next.ServeHTTP(w, r)
		return
	}
	g.arrived.Add(1)
	select {
	case <-g.open:
		g.next.ServeHTTP(w, r)
		return
	default:
	}
	held := &heldResponse{header: http.Header{}}
	g.next.ServeHTTP(held, r)
	g.held.Add(1)
	defer g.held.Add(-1)
	select {
	case <-g.open:
	case <-r.Context().Done():
		return
	}
	for k, v := range held.header {
		w.Header()[k] = v
	}
	w.WriteHeader(held.statusCode())
	_, _ = w.Write(held.body.Bytes())
}

// Open lets the held answers go, and every later call through at once.
// Calling it again does nothing.
func (g *Gate) Open() { g.once.Do(func() { close(g.open) }) }

// Arrived counts the matching calls so far, held or not.
func (g *Gate) Arrived() int { return int(g.arrived.Load()) }

// Held counts the answers waiting now: their calls have acted, their
// callers still wait.
func (g *Gate) Held() int { return int(g.held.Load()) }

// heldResponse keeps an answer until the gate lets it go.
type heldResponse struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (h *heldResponse) Header() http.Header { return h.header }

func (h *heldResponse) WriteHeader(code int) {
	if h.status == 0 {
		h.status = code
	}
}

func (h *heldResponse) Write(b []byte) (int, error) {
	h.WriteHeader(http.StatusOK)
	return h.body.Write(b)
}

func (h *heldResponse) statusCode() int {
	if h.status == 0 {
		return http.StatusOK
	}
	return h.status
}
