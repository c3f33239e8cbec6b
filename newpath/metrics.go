package newpath

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Order outcomes, the values of neworders_orders_total{outcome}.
const (
	outcomeCreated    = "created"      // placed and committed
	outcomeReplayed   = "replayed"     // the stored answer of an idempotency key
	outcomeOutOfStock = "out_of_stock" // the legacy 200 quirk
	outcomeRejected   = "rejected"     // 4xx: bad input, unknown user or item, key misuse
	outcomeFailed     = "failed"       // 5xx: a downstream service or the store failed
	outcomeDryRun     = "dry_run"      // computed for a shadow; nothing committed
)

// Delivery results, the values of neworders_outbox_deliveries_total{result}.
const (
	resultDelivered = "delivered" // the receiver accepted it
	resultFailed    = "failed"    // it will be retried after a backoff
	resultDead      = "dead"      // parked: MaxAttempts reached or a permanent refusal
	resultSkipped   = "skipped"   // order_paid of an order cancelled meanwhile: nothing to ship
)

// Metrics are the neworders_* series. Build them once per process with
// NewMetrics and hand them to the Server, the Relay and the Pruner.
type Metrics struct {
	orders     *prometheus.CounterVec
	replays    prometheus.Counter
	deliveries *prometheus.CounterVec
	requests   *prometheus.HistogramVec
	prunedRows *prometheus.CounterVec
}

// NewMetrics registers the neworders_* series on reg, every known series at
// 0. With outbox not nil, the outbox gauges (pending events, age of the
// oldest pending one, dead events) are read from it at each scrape, so
// they are right whichever process or relay changed the outbox.
func NewMetrics(reg prometheus.Registerer, outbox Store, logger *slog.Logger) *Metrics {
	m := &Metrics{
		orders: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "neworders_orders_total",
			Help: "POST /orders requests by outcome: created, replayed, out_of_stock, rejected, failed, dry_run.",
		}, []string{"outcome"}),
		replays: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "neworders_idempotent_replays_total",
			Help: "POST /orders answered with the stored response of their Idempotency-Key.",
		}),
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "neworders_outbox_deliveries_total",
			Help: "Outbox delivery attempts by result: delivered, failed (retried later), dead (parked), skipped.",
		}, []string{"result"}),
		requests: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "neworders_http_request_duration_seconds",
			Help:    "Order API request duration by route pattern and status code.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"route", "code"}),
		prunedRows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "neworders_pruned_rows_total",
			Help: "Rows deleted past their retention by table: idempotency_keys, outbox_events (delivered events only).",
		}, []string{"table"}),
	}
	for _, o := range []string{outcomeCreated, outcomeReplayed, outcomeOutOfStock, outcomeRejected, outcomeFailed, outcomeDryRun} {
		m.orders.WithLabelValues(o)
	}
	for _, r := range []string{resultDelivered, resultFailed, resultDead, resultSkipped} {
		m.deliveries.WithLabelValues(r)
	}
	for _, t := range []string{tableIdempotencyKeys, tableOutboxEvents} {
		m.prunedRows.WithLabelValues(t)
	}
	reg.MustRegister(m.orders, m.replays, m.deliveries, m.requests, m.prunedRows)
	if outbox != nil {
		if logger == nil {
			logger = slog.New(slog.DiscardHandler)
		}
		reg.MustRegister(&outboxCollector{store: outbox, logger: logger, now: time.Now})
	}
	return m
}

// discardMetrics are the metrics of a component built without any.
func discardMetrics() *Metrics {
	return NewMetrics(prometheus.NewRegistry(), nil, nil)
}

func (m *Metrics) order(outcome string) { m.orders.WithLabelValues(outcome).Inc() }

func (m *Metrics) delivery(result string) { m.deliveries.WithLabelValues(result).Inc() }

func (m *Metrics) pruned(table string, n int) { m.prunedRows.WithLabelValues(table).Add(float64(n)) }

// outboxCollector reads the outbox gauges from the store at scrape time.
type outboxCollector struct {
	store  Store
	logger *slog.Logger
	now    func() time.Time
}

var (
	pendingDesc = prometheus.NewDesc("neworders_outbox_pending_events",
		"Outbox events not delivered yet, leased ones included.", nil, nil)
	oldestDesc = prometheus.NewDesc("neworders_outbox_oldest_pending_age_seconds",
		"Age of the oldest pending outbox event; 0 when none is pending.", nil, nil)
	deadDesc = prometheus.NewDesc("neworders_outbox_dead_events",
		"Outbox events parked as dead after MaxAttempts or a permanent refusal.", nil, nil)
)

// Describe implements prometheus.Collector.
func (c *outboxCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- pendingDesc
	ch <- oldestDesc
	ch <- deadDesc
}

// Collect implements prometheus.Collector. A store that cannot answer
// within two seconds leaves the gauges out of that scrape (and logs why)
// rather than stalling it.
func (c *outboxCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st, err := c.store.OutboxStats(ctx)
	if err != nil {
		c.logger.Warn("outbox gauges not collected", "error", err)
		return
	}
	age := 0.0
	if !st.OldestPending.IsZero() {
		age = max(0, c.now().Sub(st.OldestPending).Seconds())
	}
	ch <- prometheus.MustNewConstMetric(pendingDesc, prometheus.GaugeValue, float64(st.Pending))
	ch <- prometheus.MustNewConstMetric(oldestDesc, prometheus.GaugeValue, age)
	ch <- prometheus.MustNewConstMetric(deadDesc, prometheus.GaugeValue, float64(st.Dead))
}
