package newpath

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"sync"
	"time"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// RetryPolicy is how an outbox event is retried: exponential backoff with
// jitter, and parked as dead after MaxAttempts. The zero value means the
// defaults.
type RetryPolicy struct {
	// MaxAttempts is how many deliveries are tried before the event is
	// parked as dead; 0 means 10.
	MaxAttempts int
	// BaseDelay is the wait after the first failure, doubled after each
	// further one; 0 means 1s.
	BaseDelay time.Duration
	// MaxDelay caps the wait; 0 means 5m.
	MaxDelay time.Duration
}

func (p RetryPolicy) withDefaults() RetryPolicy {
	if p.MaxAttempts <= 0 {
		p.MaxAttempts = 10
	}
	if p.BaseDelay <= 0 {
		p.BaseDelay = time.Second
	}
	if p.MaxDelay <= 0 {
		p.MaxDelay = 5 * time.Minute
	}
	return p
}

// backoff is the wait after attempt failed attempts: BaseDelay doubled per
// attempt up to MaxDelay, then "equal jitter" (half fixed, half random), so
// that events that failed together do not all come back together.
func (p RetryPolicy) backoff(attempts int, random func() float64) time.Duration {
	d := p.BaseDelay
	for i := 1; i < attempts && d < p.MaxDelay; i++ {
		d *= 2
	}
	d = min(d, p.MaxDelay)
	return d/2 + time.Duration(random()*float64(d/2))
}

// outbox delivers events and records the outcome; the Relay and the
// Server's immediate delivery of order_paid share it.
type outbox struct {
	store      Store
	downstream *downstreamClient
	retry      RetryPolicy
	metrics    *Metrics
	logger     *slog.Logger
	clock      func() time.Time
	random     func() float64
	tracer     trace.Tracer
	// deliveryKind is the kind of the delivery spans: internal in the
	// request that wrote the event, consumer in a relay, which takes the
	// event off the outbox.
	deliveryKind trace.SpanKind
}

// startDelivery starts the span of one delivery of e, a child of the span
// in ctx: "deliver order_paid".
func (o *outbox) startDelivery(ctx context.Context, e Event) (context.Context, trace.Span) {
	return o.tracer.Start(ctx, "deliver "+string(e.Kind), trace.WithSpanKind(o.deliveryKind),
		trace.WithAttributes(attrEventID.String(e.ID), attrEventKind.String(string(e.Kind)),
			attrOrderID.String(e.OrderID), attrAttempt.Int(e.Attempts)))
}

// deliver sends e and records the outcome in the store, the metrics and
// the delivery span in ctx (startDelivery), and reports whether it was
// delivered. A delivery cut short by ctx (shutdown) is released for
// another try at once, not counted as a failure.
func (o *outbox) deliver(ctx context.Context, e Event, owner string, timeout time.Duration) bool {
	span := trace.SpanFromContext(ctx)
	// Settling must happen even when ctx is cancelled with the delivery
	// (shutdown), but within ctx's deadline when it has one: a request
	// delivering its own event must answer in its time.
	settleBy := time.Now().Add(10 * time.Second)
	if d, ok := ctx.Deadline(); ok && d.Before(settleBy) {
		settleBy = d
	}
	settle, cancel := context.WithDeadline(context.WithoutCancel(ctx), settleBy)
	defer cancel()
	callCtx, cancelCall := context.WithTimeout(ctx, timeout)
	err := o.downstream.deliver(callCtx, e)
	cancelCall()
	if err == nil {
		if err := o.store.MarkDelivered(settle, e.ID, o.clock()); err != nil {
			// The receiver has it; the event stays leased and is sent
			// again when the lease ends, which the receiver deduplicates.
			o.logger.ErrorContext(ctx, "outbox event delivered but not marked", "event_id", e.ID, "error", err)
			span.RecordError(err)
			return false
		}
		o.metrics.delivery(resultDelivered)
		span.SetAttributes(attrDeliveryResult.String(resultDelivered))
		return true
	}
	span.RecordError(err)
	span.SetStatus(codes.Error, err.Error())
	now := o.clock()
	if ctx.Err() != nil {
		// Shutting down: hand the event back now rather than at the end
		// of the lease.
		_ = o.store.MarkFailed(settle, e.ID, owner, now, "delivery interrupted: "+err.Error(), false)
		return false
	}
	dead := isPermanent(err) || e.Attempts >= o.retry.MaxAttempts
	retryAt := now.Add(o.retry.backoff(e.Attempts, o.random))
	if serr := o.store.MarkFailed(settle, e.ID, owner, retryAt, err.Error(), dead); serr != nil {
		o.logger.ErrorContext(ctx, "outbox failure not recorded; the event is retried when its lease ends", "event_id", e.ID, "error", serr)
		return false
	}
	if dead {
		o.metrics.delivery(resultDead)
		span.SetAttributes(attrDeliveryResult.String(resultDead))
		o.logger.ErrorContext(ctx, "outbox event parked as dead", "event_id", e.ID, "kind", e.Kind, "order_id", e.OrderID, "attempts", e.Attempts, "error", err)
		return false
	}
	o.metrics.delivery(resultFailed)
	span.SetAttributes(attrDeliveryResult.String(resultFailed))
	o.logger.WarnContext(ctx, "outbox delivery failed; will retry", "event_id", e.ID, "kind", e.Kind, "order_id", e.OrderID,
		"attempts", e.Attempts, "retry_at", retryAt, "error", err)
	return false
}

// RelayOptions configures NewRelay. Zero values mean the documented
// defaults.
type RelayOptions struct {
	// Store holds the outbox. Required.
	Store Store
	// DownstreamURL is the base URL of the warehouse and mail services.
	// Required.
	DownstreamURL string
	// Client sends the deliveries; nil means a pooled client.
	Client *http.Client
	// Logger receives failures and dead events; nil discards.
	Logger *slog.Logger
	// Metrics counts deliveries; nil counts into a private registry.
	Metrics *Metrics
	// Clock reads the time that leases and backoffs are computed from; nil
	// means time.Now.
	Clock func() time.Time
	// Random draws the jitter in [0, 1); nil means math/rand/v2.
	Random func() float64
	// Owner names this relay in the outbox's claimed_by; empty means
	// host-pid-random, unique per process.
	Owner string
	// BatchSize is how many events one claim leases; 0 means 100.
	BatchSize int
	// Concurrency is how many deliveries of a batch run at once; 0 means 16.
	Concurrency int
	// Lease is how long a claimed event is this relay's before another
	// relay may claim it again: longer than DeliveryTimeout, short enough
	// that a dead relay's events are not stuck for long. 0 means 30s.
	Lease time.Duration
	// DeliveryTimeout bounds one delivery call; 0 means 10s.
	DeliveryTimeout time.Duration
	// PollInterval is how often an idle relay looks for due events; Notify
	// wakes it sooner. 0 means 250ms.
	PollInterval time.Duration
	// Retry is the backoff and dead-letter policy.
	Retry RetryPolicy
	// TracerProvider makes a "deliver <kind>" span per delivery in the
	// trace of the request that wrote the event (its traceparent is stored
	// in the outbox row), and under it the client span of the call, whose
	// traceparent the receiver gets. Nil means a no-op provider: nothing
	// is recorded, but the stored traceparent still reaches the receiver.
	TracerProvider trace.TracerProvider
}

// Relay delivers outbox events at least once: it claims due events with
// FOR UPDATE SKIP LOCKED under a lease, sends each with its X-Event-Id,
// marks it delivered, or schedules a retry with exponential backoff and
// jitter, parking it as dead after Retry.MaxAttempts. Any number of relays,
// in any number of processes, can run against one store.
type Relay struct {
	outbox
	owner           string
	batchSize       int
	concurrency     int
	lease           time.Duration
	deliveryTimeout time.Duration
	pollInterval    time.Duration
	// wake holds at most one pending Notify.
	wake chan struct{}
}

// NewRelay returns a relay; Run starts it.
func NewRelay(opts RelayOptions) (*Relay, error) {
	if opts.Store == nil {
		return nil, errors.New("new relay: a Store is required")
	}
	client := opts.Client
	if client == nil {
		client = newDefaultClient(0)
	}
	tracer := tracerFrom(opts.TracerProvider)
	downstream, err := newDownstreamClient(opts.DownstreamURL, client, tracer)
	if err != nil {
		return nil, fmt.Errorf("new relay: %w", err)
	}
	r := &Relay{
		outbox: outbox{
			store:        opts.Store,
			downstream:   downstream,
			tracer:       tracer,
			deliveryKind: trace.SpanKindConsumer,
			retry:        opts.Retry.withDefaults(),
			metrics:      opts.Metrics,
			logger:       opts.Logger,
			clock:        opts.Clock,
			random:       opts.Random,
		},
		owner:           opts.Owner,
		batchSize:       orDefault(opts.BatchSize, 100),
		concurrency:     orDefault(opts.Concurrency, 16),
		lease:           orDefault(opts.Lease, 30*time.Second),
		deliveryTimeout: orDefault(opts.DeliveryTimeout, 10*time.Second),
		pollInterval:    orDefault(opts.PollInterval, 250*time.Millisecond),
		wake:            make(chan struct{}, 1),
	}
	r.outbox.fillDefaults()
	if r.owner == "" {
		host, _ := os.Hostname()
		r.owner = fmt.Sprintf("relay-%s-%d-%s", host, os.Getpid(), randomHex(4))
	}
	if r.deliveryTimeout >= r.lease {
		return nil, fmt.Errorf("new relay: delivery timeout %s must be shorter than the lease %s", r.deliveryTimeout, r.lease)
	}
	return r, nil
}

func (o *outbox) fillDefaults() {
	if o.metrics == nil {
		o.metrics = discardMetrics()
	}
	if o.logger == nil {
		o.logger = slog.New(slog.DiscardHandler)
	}
	if o.clock == nil {
		o.clock = time.Now
	}
	if o.random == nil {
		o.random = rand.Float64
	}
}

func orDefault[T int | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

// Owner is the name this relay claims events under.
func (r *Relay) Owner() string { return r.owner }

// Notify wakes an idle relay to look for due events now; the Server calls
// it after each commit. It never blocks.
func (r *Relay) Notify() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Run delivers events until ctx ends, then returns nil once the batch in
// flight is settled (interrupted deliveries are handed back at once). A
// failing store is logged and retried at the poll interval; Run does not
// give up on it.
func (r *Relay) Run(ctx context.Context) error {
	r.logger.InfoContext(ctx, "outbox relay started", "owner", r.owner, "batch_size", r.batchSize, "lease", r.lease.String())
	for ctx.Err() == nil {
		n, err := r.RunOnce(ctx)
		if err != nil && ctx.Err() == nil {
			r.logger.ErrorContext(ctx, "outbox claim failed", "owner", r.owner, "error", err)
		}
		if n == r.batchSize && err == nil {
			continue // more may be due right now
		}
		t := time.NewTimer(r.pollInterval)
		select {
		case <-ctx.Done():
		case <-r.wake:
		case <-t.C:
		}
		t.Stop()
	}
	r.logger.InfoContext(context.WithoutCancel(ctx), "outbox relay stopped", "owner", r.owner)
	return nil
}

// RunOnce claims one batch of due events, delivers them and settles each,
// and returns how many it claimed.
func (r *Relay) RunOnce(ctx context.Context) (int, error) {
	events, err := r.store.ClaimEvents(ctx, r.owner, r.batchSize, r.clock(), r.lease)
	if err != nil {
		return 0, fmt.Errorf("relay %s: %w", r.owner, err)
	}
	sem := make(chan struct{}, r.concurrency)
	var wg sync.WaitGroup
	for _, e := range events {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			// The delivery joins the trace of the request that wrote
			// the event.
			ctx, span := r.startDelivery(withTraceParent(ctx, e.TraceParent), e)
			defer span.End()
			span.SetAttributes(attrRelay.String(r.owner))
			if !r.skipCancelled(ctx, e) {
				r.deliver(ctx, e, r.owner, r.deliveryTimeout)
			}
		})
	}
	wg.Wait()
	return len(events), nil
}

// skipCancelled settles an order_paid event whose order was cancelled
// while the event waited, without shipping goods nobody pays for, and
// reports whether it did.
func (r *Relay) skipCancelled(ctx context.Context, e Event) bool {
	if e.Kind != EventOrderPaid {
		return false
	}
	ord, err := r.store.GetOrder(ctx, e.OrderID)
	if err != nil || ord.Status != StatusCancelled {
		return false
	}
	if err := r.store.MarkDelivered(ctx, e.ID, r.clock()); err != nil {
		r.logger.ErrorContext(ctx, "outbox event not settled", "event_id", e.ID, "error", err)
		return true
	}
	r.metrics.delivery(resultSkipped)
	trace.SpanFromContext(ctx).SetAttributes(attrDeliveryResult.String(resultSkipped))
	r.logger.InfoContext(ctx, "order_paid event skipped: order cancelled", "event_id", e.ID, "order_id", e.OrderID)
	return true
}

// randomHex returns n random bytes in hex.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = crand.Read(b)
	return hex.EncodeToString(b)
}
