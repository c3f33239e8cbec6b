package newpath

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// ServerOptions configures NewServer. Zero values mean the documented
// defaults.
type ServerOptions struct {
	// Store holds users, orders, idempotency keys and the outbox. Required.
	Store Store
	// DownstreamURL is the base URL of the inventory, payment, warehouse
	// and mail services, e.g. "http://127.0.0.1:9003". Required.
	DownstreamURL string
	// Client calls the downstream services; nil means a pooled client with
	// DownstreamTimeout.
	Client *http.Client
	// DownstreamTimeout bounds each downstream call of the default client;
	// 0 means DefaultDownstreamTimeout. RequestTimeout bounds the calls
	// too, so with the defaults (10s and 4s) the request's time decides.
	DownstreamTimeout time.Duration
	// RequestTimeout bounds every request: its context gets that deadline.
	// 0 means DefaultRequestTimeout, which is below the proxy's newpath
	// timeout (5s in config/example.yaml and the demo), so that newpath
	// answers, with an error if it must, before the proxy gives up: a
	// store that does not answer in time makes a 504 {"error":"request
	// timed out"} (for a GET the proxy then falls back to legacy), a
	// downstream call cut short the 502 legacy answers.
	//
	// In POST /orders, the last min(RequestTimeout/4, 1s) is kept for what
	// follows a charge: the reads, the reservation, the payment and any
	// wait for another request with the same Idempotency-Key end before
	// it. Once charged, the order is written on a context detached from
	// the client but bounded by the request's deadline, and answered; the
	// immediate delivery waits at most min(FulfilTimeout, the time left
	// but half that budget), and marking it, reading the order back and
	// storing the answer share what is left: the answer never comes after
	// RequestTimeout.
	// A key's claim is leased, and requests waiting on it answer for it
	// after respond_by, until the holder's RequestTimeout plus that
	// budget: by then the holder has answered, or died.
	RequestTimeout time.Duration
	// Logger receives one line per request and every failure, as JSON
	// with request_id; nil discards.
	Logger *slog.Logger
	// Metrics counts orders and deliveries; nil counts into a private
	// registry.
	Metrics *Metrics
	// Clock stamps created_at, updated_at, leases and backoffs; nil means
	// time.Now.
	Clock func() time.Time
	// Random draws backoff jitter in [0, 1); nil means math/rand/v2.
	Random func() float64
	// FulfilTimeout bounds the delivery of a new order's order_paid event
	// to the warehouse right after the commit, so that a healthy warehouse
	// makes the answer "fulfilled", as legacy's is. Slower than this, the
	// answer is "paid" and the relay delivers the event. The request's
	// time left bounds it too (RequestTimeout). 0 means 3s.
	FulfilTimeout time.Duration
	// IdempotencyWait bounds how long a request waits for another request
	// holding its Idempotency-Key before answering 409. The wait also ends
	// where its own request's pre-charge time ends (RequestTimeout), so a
	// waiter never waits past its deadline. 0 means no bound but that one.
	IdempotencyWait time.Duration
	// Retry is the outbox's backoff and dead-letter policy, applied when
	// the immediate delivery fails; use the relay's.
	Retry RetryPolicy
	// Notify is called after each order commits, to wake a relay
	// (Relay.Notify) for the order_confirmed event; nil calls nothing.
	Notify func()
	// TracerProvider makes a server span per request, continuing the
	// caller's W3C traceparent, and under it a client span per downstream
	// call (which carries its traceparent on) and per delivery. Give the
	// Postgres pool the same provider (OpenPoolWith) for SQL spans. Nil
	// means a no-op provider: nothing is recorded, but the caller's trace
	// context still reaches the downstream services and the outbox rows.
	TracerProvider trace.TracerProvider
	// Ready reports whether the store can serve, such as a Postgres pool's
	// Ping: GET /readyz answers 503 while it fails (GET /healthz only says
	// the process is alive). Nil means always ready, as the in-memory
	// store is. neworders serves the same check on its metrics listener.
	Ready func(context.Context) error
	// DemoDivergence makes GET /orders/{id} spell a cancelled order's
	// status "canceled" where legacy says "cancelled": one real, plausible
	// divergence (a renamed enum value) for `strangler demo` and
	// `neworders --demo-divergence` to show the proxy catching. Never in
	// production.
	DemoDivergence bool
}

// Server is the newpath order API, an http.Handler serving the contract of
// docs/order-api.md.
type Server struct {
	outbox
	downstream      *downstreamClient
	requestTimeout  time.Duration
	fulfilTimeout   time.Duration
	idempotencyWait time.Duration
	// afterCharge is the end of an order's request time kept for what
	// follows its charge (RequestTimeout).
	afterCharge    time.Duration
	notify         func()
	ready          func(context.Context) error
	demoDivergence bool
	mux            *http.ServeMux
}

// DefaultRequestTimeout bounds every newpath request (RequestTimeout):
// below the proxy's newpath timeout of 5s.
const DefaultRequestTimeout = 4 * time.Second

var _ http.Handler = (*Server)(nil)

// NewServer returns the order API.
func NewServer(opts ServerOptions) (*Server, error) {
	if opts.Store == nil {
		return nil, errors.New("new newpath server: a Store is required")
	}
	for _, d := range []struct {
		name  string
		value time.Duration
	}{{"downstream timeout", opts.DownstreamTimeout}, {"request timeout", opts.RequestTimeout}, {"fulfil timeout", opts.FulfilTimeout}, {"idempotency wait", opts.IdempotencyWait}} {
		if d.value < 0 {
			return nil, fmt.Errorf("new newpath server: %s must not be negative, got %s", d.name, d.value)
		}
	}
	timeout := orDefault(opts.DownstreamTimeout, DefaultDownstreamTimeout)
	client := opts.Client
	if client == nil {
		client = newDefaultClient(timeout)
	}
	tracer := tracerFrom(opts.TracerProvider)
	downstream, err := newDownstreamClient(opts.DownstreamURL, client, tracer)
	if err != nil {
		return nil, fmt.Errorf("new newpath server: %w", err)
	}
	s := &Server{
		outbox: outbox{
			store:      opts.Store,
			downstream: downstream,
			tracer:     tracer,
			// The request delivers its own order_paid event, in its span.
			deliveryKind: trace.SpanKindInternal,
			retry:        opts.Retry.withDefaults(),
			metrics:      opts.Metrics,
			logger:       opts.Logger,
			clock:        opts.Clock,
			random:       opts.Random,
		},
		downstream:     downstream,
		requestTimeout: orDefault(opts.RequestTimeout, DefaultRequestTimeout),
		fulfilTimeout:  orDefault(opts.FulfilTimeout, 3*time.Second),
		notify:         opts.Notify,
		ready:          opts.Ready,
		demoDivergence: opts.DemoDivergence,
	}
	// The wait is bounded by the request's own time anyway.
	s.idempotencyWait = orDefault(opts.IdempotencyWait, s.requestTimeout)
	s.afterCharge = min(s.requestTimeout/4, time.Second)
	s.outbox.fillDefaults()
	if s.notify == nil {
		s.notify = func() {}
	}
	s.mux = s.routes()
	return s, nil
}

func (s *Server) routes() *http.ServeMux {
	mux := http.NewServeMux()
	// Method-less patterns catch the wrong methods of each path, so that
	// the 405 is JSON, as legacy's is.
	mux.HandleFunc("POST /orders", s.handleCreateOrder)
	mux.HandleFunc("GET /orders", s.handleListOrders)
	mux.Handle("/orders", methodNotAllowed("GET", "HEAD", "POST"))
	mux.HandleFunc("GET /orders/{id}", s.handleGetOrder)
	mux.Handle("/orders/{id}", methodNotAllowed("GET", "HEAD"))
	mux.HandleFunc("POST /orders/{id}/cancel", s.handleCancelOrder)
	mux.Handle("/orders/{id}/cancel", methodNotAllowed("POST"))
	mux.HandleFunc("GET /healthz", handleHealthz)
	mux.Handle("/healthz", methodNotAllowed("GET", "HEAD"))
	mux.Handle("GET /readyz", ReadyHandler(s.ready))
	mux.Handle("/readyz", methodNotAllowed("GET", "HEAD"))
	mux.HandleFunc("/", notFound)
	return mux
}

// ServeHTTP implements http.Handler: it tags the request with its
// X-Request-Id (generated when absent), bounds it by RequestTimeout,
// serves it in a server span that continues the caller's trace, and writes
// one access log line and one duration sample.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	id := r.Header.Get(RequestIDHeader)
	if id == "" || len(id) > 128 {
		id = randomHex(8)
	}
	ctx := propagator.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
	// Named once the mux has matched: the pattern is known only then.
	ctx, span := s.tracer.Start(ctx, r.Method, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(methodAttr(r.Method), attrDryRun.Bool(r.Header.Get(DryRunHeader) == "1")))
	ctx, cancel := context.WithTimeout(ctx, s.requestTimeout)
	defer cancel()
	r = r.WithContext(withRequestID(ctx, id))
	rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
	s.mux.ServeHTTP(rec, r)
	route := r.Pattern
	if route == "" || route == "/" {
		route = "unmatched"
	}
	elapsed := time.Since(start)
	endServerSpan(span, r, rec)
	s.metrics.requests.WithLabelValues(route, strconv.Itoa(rec.status)).Observe(elapsed.Seconds())
	attrs := []slog.Attr{slog.String("request_id", id), slog.String("method", r.Method), slog.String("path", r.URL.Path),
		slog.String("route", route), slog.Int("status", rec.status),
		slog.Float64("duration_ms", float64(elapsed.Microseconds())/1000)}
	if sc := span.SpanContext(); sc.HasTraceID() {
		attrs = append(attrs, slog.String("trace_id", sc.TraceID().String()))
	}
	s.logger.LogAttrs(r.Context(), slog.LevelInfo, "request", attrs...)
}

// endServerSpan names the request's span after its route, records the
// answer and ends it.
func endServerSpan(span trace.Span, r *http.Request, rec *statusRecorder) {
	route := routeOf(r.Pattern)
	span.SetName(spanName(r.Method, route))
	if route != "" {
		span.SetAttributes(semconv.HTTPRoute(route))
	}
	span.SetAttributes(semconv.HTTPResponseStatusCode(rec.status),
		attrReplayed.Bool(rec.Header().Get(ReplayedHeader) == "true"))
	if rec.status >= 500 {
		span.SetStatus(codes.Error, "")
	}
	span.End()
}

// statusRecorder remembers the status for the access log.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the connection.
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func handleHealthz(w http.ResponseWriter, _ *http.Request) {
	writeRawJSON(w, http.StatusOK, []byte(`{"status":"ok"}`))
}

// readyTimeout bounds the store check of GET /readyz, so that a probe
// answers within a second or two however Postgres fails.
const readyTimeout = time.Second

// ReadyHandler answers GET /readyz: 200 {"status":"ready"} while ready
// (nil: always) succeeds within a second, else 503 with its error.
func ReadyHandler(ready func(context.Context) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ready != nil {
			ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
			defer cancel()
			if err := ready(ctx); err != nil {
				writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable", "error": "store: " + err.Error()})
				return
			}
		}
		writeRawJSON(w, http.StatusOK, []byte(`{"status":"ready"}`))
	})
}

// now is the clock reading a timestamp of the API starts from.
func (s *Server) now() time.Time { return wireTime(s.clock()) }

func (s *Server) handleGetOrder(w http.ResponseWriter, r *http.Request) {
	order, err := s.store.GetOrder(r.Context(), r.PathValue("id"))
	switch {
	case errors.Is(err, ErrNotFound):
		writeError(w, http.StatusNotFound, "order not found")
	case err != nil:
		s.internalError(w, r, err)
	default:
		if s.demoDivergence && order.Status == StatusCancelled {
			order.Status = demoCanceled
		}
		writeJSON(w, http.StatusOK, order)
	}
}

// demoCanceled is the misspelt status of ServerOptions.DemoDivergence.
const demoCanceled Status = "canceled"

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
		s.internalError(w, r, err)
		return
	}
	if orders == nil {
		orders = []Order{} // "orders":[], never null
	}
	writeJSON(w, http.StatusOK, orderList{Orders: orders})
}

// handleCancelOrder cancels a paid order, exactly as legacy does: no refund,
// no restock, no downstream call (docs/order-api.md). A cancelled order's
// pending order_paid event is skipped by the relay.
func (s *Server) handleCancelOrder(w http.ResponseWriter, r *http.Request) {
	var order Order
	var err error
	if r.Header.Get(DryRunHeader) == "1" {
		order, err = s.dryRunCancel(r)
	} else {
		order, err = s.store.TransitionOrder(r.Context(), r.PathValue("id"), StatusPaid, StatusCancelled, s.now())
	}
	switch {
	case errors.Is(err, ErrNotFound):
		writeError(w, http.StatusNotFound, "order not found")
	case errors.Is(err, ErrStatusConflict):
		writeError(w, http.StatusConflict, "order is not cancellable")
	case err != nil:
		s.internalError(w, r, err)
	default:
		writeJSON(w, http.StatusOK, order)
	}
}

// dryRunCancel answers what a cancel would, from the order as stored, and
// changes nothing: a shadowed cancel must not cancel.
func (s *Server) dryRunCancel(r *http.Request) (Order, error) {
	order, err := s.store.GetOrder(r.Context(), r.PathValue("id"))
	if err != nil {
		return Order{}, err
	}
	if order.Status != StatusPaid {
		return Order{}, fmt.Errorf("dry-run cancel of %s order %s: %w", order.Status, order.ID, ErrStatusConflict)
	}
	order.Status, order.UpdatedAt = StatusCancelled, s.now()
	return order, nil
}

// internalError answers a store failure, the contract's 500 or a 504 when
// the request's time ran out (storeFailure), and logs the cause, which the
// client never sees.
func (s *Server) internalError(w http.ResponseWriter, r *http.Request, err error) {
	s.logger.ErrorContext(r.Context(), "order request failed", "request_id", requestIDFrom(r.Context()),
		"method", r.Method, "path", r.URL.Path, "error", err)
	a := storeFailure(r.Context())
	writeRawJSON(w, a.status, a.body)
}
