package legacy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"
)

// DefaultDownstreamTimeout bounds each downstream call when Options.Client
// is nil. It is generous on purpose: the legacy system waited for slow
// dependencies rather than failing fast.
const DefaultDownstreamTimeout = 30 * time.Second

// Options configures NewServer.
type Options struct {
	// Store holds users and orders. Required.
	Store Store
	// DownstreamURL is the base URL of the inventory, payment, warehouse and
	// mail services (a Downstream), e.g. "http://127.0.0.1:9003". Required.
	DownstreamURL string
	// Client calls the downstream services; nil means a client with
	// DownstreamTimeout and a connection pool sized for benchmarks.
	Client *http.Client
	// DownstreamTimeout bounds each downstream call of the default client;
	// zero means DefaultDownstreamTimeout. Ignored when Client is set.
	DownstreamTimeout time.Duration
	// Logger receives failures of the order chain; nil discards.
	Logger *slog.Logger
	// Clock stamps created_at and updated_at; nil means time.Now.
	Clock func() time.Time
	// Latency is added to every order API request, inside its worker slot,
	// to simulate the old code's own slowness. Zero adds nothing.
	Latency time.Duration
	// Workers bounds how many order API requests run at once, like the
	// fixed worker pool of the old application server: with a slow payment
	// service every worker ends up waiting on it and every other request
	// queues. Zero means unbounded. GET /healthz and /readyz never queue.
	Workers int
	// Ready reports whether the store can serve, such as a Postgres pool's
	// Ping: GET /readyz answers 503 while it fails (GET /healthz only says
	// the process is alive). Nil means always ready, as the in-memory
	// store is.
	Ready func(context.Context) error
}

// Server is the legacy order API. It is an http.Handler.
type Server struct {
	store      Store
	downstream *downstreamClient
	logger     *slog.Logger
	clock      func() time.Time
	latency    time.Duration
	ready      func(context.Context) error
	// workers is a semaphore of Options.Workers slots; nil when unbounded.
	workers chan struct{}
	mux     *http.ServeMux
}

var _ http.Handler = (*Server)(nil)

// NewServer returns the legacy order API described in docs/order-api.md.
func NewServer(opts Options) (*Server, error) {
	if opts.Store == nil {
		return nil, errors.New("new legacy server: a Store is required")
	}
	if opts.Latency < 0 {
		return nil, fmt.Errorf("new legacy server: latency must not be negative, got %s", opts.Latency)
	}
	if opts.DownstreamTimeout < 0 {
		return nil, fmt.Errorf("new legacy server: downstream timeout must not be negative, got %s", opts.DownstreamTimeout)
	}
	if opts.Workers < 0 {
		return nil, fmt.Errorf("new legacy server: workers must not be negative, got %d", opts.Workers)
	}
	client := opts.Client
	if client == nil {
		timeout := opts.DownstreamTimeout
		if timeout == 0 {
			timeout = DefaultDownstreamTimeout
		}
		client = newDefaultClient(timeout)
	}
	downstream, err := newDownstreamClient(opts.DownstreamURL, client)
	if err != nil {
		return nil, fmt.Errorf("new legacy server: %w", err)
	}
	s := &Server{
		store:      opts.Store,
		downstream: downstream,
		logger:     opts.Logger,
		clock:      opts.Clock,
		latency:    opts.Latency,
		ready:      opts.Ready,
	}
	if s.logger == nil {
		s.logger = slog.New(slog.DiscardHandler)
	}
	if s.clock == nil {
		s.clock = time.Now
	}
	if opts.Workers > 0 {
		s.workers = make(chan struct{}, opts.Workers)
	}
	s.mux = s.routes()
	return s, nil
}

// newDefaultClient pools enough idle connections per host that a benchmark
// does not churn through ephemeral ports (the default keeps two).
func newDefaultClient(timeout time.Duration) *http.Client {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConns = 512
	transport.MaxIdleConnsPerHost = 256
	transport.DialContext = (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	return &http.Client{Transport: transport, Timeout: timeout}
}

func (s *Server) routes() *http.ServeMux {
	mux := http.NewServeMux()
	// Method-less patterns catch the wrong methods of each path, so that the
	// 405 answer is JSON like every other answer of the API.
	mux.Handle("POST /orders", s.legacyWork(s.handleCreateOrder))
	mux.Handle("GET /orders", s.legacyWork(s.handleListOrders))
	mux.Handle("/orders", methodNotAllowed("GET", "HEAD", "POST"))
	mux.Handle("GET /orders/{id}", s.legacyWork(s.handleGetOrder))
	mux.Handle("/orders/{id}", methodNotAllowed("GET", "HEAD"))
	mux.Handle("POST /orders/{id}/cancel", s.legacyWork(s.handleCancelOrder))
	mux.Handle("/orders/{id}/cancel", methodNotAllowed("POST"))
	mux.HandleFunc("GET /healthz", handleHealthz)
	mux.Handle("/healthz", methodNotAllowed("GET", "HEAD"))
	mux.HandleFunc("GET /readyz", s.handleReadyz)
	mux.Handle("/readyz", methodNotAllowed("GET", "HEAD"))
	mux.HandleFunc("/", notFound)
	return mux
}

// readyTimeout bounds the store check of GET /readyz, so that a probe
// answers within a second or two however Postgres fails.
const readyTimeout = time.Second

func (s *Server) handleReadyz(w http.ResponseWriter, r *http.Request) {
	if s.ready != nil {
		ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
		defer cancel()
		if err := s.ready(ctx); err != nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable", "error": "store: " + err.Error()})
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mux.ServeHTTP(w, r)
}

// legacyWork runs next the way the old application server did: in one of
// a bounded number of worker slots, after the simulated latency. A client
// that gives up while queued or delayed gets no answer, as there is nobody
// left to read one.
func (s *Server) legacyWork(next http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := withRequestID(r.Context(), r.Header.Get(requestIDHeader))
		if s.workers != nil {
			select {
			case s.workers <- struct{}{}:
				defer func() { <-s.workers }()
			case <-ctx.Done():
				return
			}
		}
		if err := sleepContext(ctx, s.latency); err != nil {
			return
		}
		next(w, r.WithContext(ctx))
	})
}

// now is the clock reading every timestamp of one request starts from.
func (s *Server) now() time.Time {
	return wireTime(s.clock())
}

// outOfStockBody is the legacy out-of-stock answer. Its 200 status is a
// quirk legacy clients depend on: they branch on "status", not on the HTTP
// code.
type outOfStockBody struct {
	Status string `json:"status"`
	Reason string `json:"reason"`
}

func (s *Server) handleCreateOrder(w http.ResponseWriter, r *http.Request) {
	// Idempotency-Key is read by nobody: the legacy flaw the rebuilt service
	// fixes. A retried POST runs the whole chain, and charges, again.
	body, err := readBody(w, r)
	if errors.Is(err, errBodyTooLarge) {
		writeError(w, http.StatusRequestEntityTooLarge, "request body too large")
		return
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid JSON body")
		return
	}
	req, msg := parseCreateOrder(body)
	if msg != "" {
		writeError(w, http.StatusBadRequest, msg)
		return
	}
	order, err := s.processOrder(r.Context(), req)
	if errors.Is(err, errOutOfStock) {
		writeJSON(w, http.StatusOK, outOfStockBody{Status: "failed", Reason: "out_of_stock"})
		return
	}
	if err != nil {
		s.writeChainError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, order)
}

func (s *Server) handleGetOrder(w http.ResponseWriter, r *http.Request) {
	order, err := s.store.GetOrder(r.Context(), r.PathValue("id"))
	if errors.Is(err, ErrNotFound) {
		writeError(w, http.StatusNotFound, "order not found")
		return
	}
	if err != nil {
		s.writeChainError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, order)
}

// orderList is the body of GET /orders.
type orderList struct {
	Orders []Order `json:"orders"`
}

func (s *Server) handleListOrders(w http.ResponseWriter, r *http.Request) {
	userID, err := strconv.ParseInt(r.URL.Query().Get("user_id"), 10, 64)
	if err != nil || userID < 1 {
		writeError(w, http.StatusBadRequest, "user_id query parameter must be a positive integer")
		return
	}
	orders, err := s.store.ListOrdersByUser(r.Context(), userID)
	if err != nil {
		s.writeChainError(w, r, err)
		return
	}
	if orders == nil {
		// "orders":[] rather than null: legacy clients iterate it unchecked.
		orders = []Order{}
	}
	writeJSON(w, http.StatusOK, orderList{Orders: orders})
}

// handleCancelOrder cancels a paid order. Legacy neither refunds the payment
// nor restocks the item (finance did both by hand), so nothing leaves the
// store.
func (s *Server) handleCancelOrder(w http.ResponseWriter, r *http.Request) {
	order, err := s.store.TransitionOrder(r.Context(), r.PathValue("id"), StatusPaid, StatusCancelled, s.now())
	switch {
	case errors.Is(err, ErrNotFound):
		writeError(w, http.StatusNotFound, "order not found")
	case errors.Is(err, ErrStatusConflict):
		writeError(w, http.StatusConflict, "order is not cancellable")
	case err != nil:
		s.writeChainError(w, r, err)
	default:
		writeJSON(w, http.StatusOK, order)
	}
}

// writeChainError answers an error of the order chain: an *apiError with its
// own status and message, anything else as a 500 that hides the cause from
// the client and logs it.
func (s *Server) writeChainError(w http.ResponseWriter, r *http.Request, err error) {
	status, msg := http.StatusInternalServerError, "internal error"
	if ae, ok := errors.AsType[*apiError](err); ok {
		status, msg = ae.status, ae.message
	}
	if status >= 500 {
		s.logger.ErrorContext(r.Context(), "order request failed",
			"request_id", requestIDFrom(r.Context()), "method", r.Method, "path", r.URL.Path,
			"status", status, "error", err)
	}
	writeError(w, status, msg)
}
