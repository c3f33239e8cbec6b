package newpath

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Pruner defaults.
const (
	// DefaultIdempotencyRetention keeps a key a day after its answer: a
	// client retrying later than that places a new order.
	DefaultIdempotencyRetention = 24 * time.Hour
	// DefaultOutboxRetention keeps delivered events a week, for whoever
	// looks into a delivery.
	DefaultOutboxRetention = 7 * 24 * time.Hour
	// DefaultPruneInterval is how often a Pruner runs.
	DefaultPruneInterval = time.Minute
	// DefaultPruneBatch bounds the rows one DELETE removes.
	DefaultPruneBatch = 1000
)

// pruneBatchTimeout bounds one DELETE, so that a batch waiting on a lock
// never stalls the pruner.
const pruneBatchTimeout = 30 * time.Second

// The tables a Pruner prunes, the values of
// neworders_pruned_rows_total{table}.
const (
	tableIdempotencyKeys = "idempotency_keys"
	tableOutboxEvents    = "outbox_events"
)

// PrunerOptions configures NewPruner. Zero values mean the documented
// defaults.
type PrunerOptions struct {
	// Store holds the idempotency keys and the outbox. Required.
	Store Store
	// IdempotencyRetention is how long a key is kept after its answer was
	// stored; a key never answered (a claim abandoned, or an order whose
	// request died before answering) is kept as long after its creation.
	// A retry after that is a new request. 0 means
	// DefaultIdempotencyRetention (24h).
	IdempotencyRetention time.Duration
	// OutboxRetention is how long a delivered outbox event is kept after
	// its delivery. Pending and dead events are never pruned: the relay
	// still owes the first, an operator looks at the others. 0 means
	// DefaultOutboxRetention (168h).
	OutboxRetention time.Duration
	// Interval is how often Run prunes; 0 means DefaultPruneInterval (1m).
	Interval time.Duration
	// BatchSize bounds the rows one statement deletes, so that no prune
	// holds locks for long; a run repeats until a batch deletes fewer. 0
	// means DefaultPruneBatch (1000).
	BatchSize int
	// Logger receives what each run pruned and its failures; nil discards.
	Logger *slog.Logger
	// Metrics counts the rows pruned (neworders_pruned_rows_total); nil
	// counts into a private registry.
	Metrics *Metrics
	// Clock reads the time retention counts back from; nil means
	// time.Now. Use the clock the Server stamps keys and deliveries with.
	Clock func() time.Time
}

// Pruner deletes idempotency keys and delivered outbox events past their
// retention, in short batches, so that neither table grows without bound.
// Any number of pruners, in any number of processes, can run against one
// store: a row is deleted once, whoever gets it.
type Pruner struct {
	store                Store
	idempotencyRetention time.Duration
	outboxRetention      time.Duration
	interval             time.Duration
	batchSize            int
	logger               *slog.Logger
	metrics              *Metrics
	clock                func() time.Time
}

// NewPruner returns a pruner; Run starts it.
func NewPruner(opts PrunerOptions) (*Pruner, error) {
	if opts.Store == nil {
		return nil, errors.New("new pruner: a Store is required")
	}
	for _, d := range []struct {
		name  string
		value time.Duration
	}{{"idempotency retention", opts.IdempotencyRetention}, {"outbox retention", opts.OutboxRetention}, {"prune interval", opts.Interval}} {
		if d.value < 0 {
			return nil, fmt.Errorf("new pruner: %s must not be negative, got %s", d.name, d.value)
		}
	}
	if opts.BatchSize < 0 {
		return nil, fmt.Errorf("new pruner: batch size must not be negative, got %d", opts.BatchSize)
	}
	p := &Pruner{
		store:                opts.Store,
		idempotencyRetention: orDefault(opts.IdempotencyRetention, DefaultIdempotencyRetention),
		outboxRetention:      orDefault(opts.OutboxRetention, DefaultOutboxRetention),
		interval:             orDefault(opts.Interval, DefaultPruneInterval),
		batchSize:            orDefault(opts.BatchSize, DefaultPruneBatch),
		logger:               opts.Logger,
		metrics:              opts.Metrics,
		clock:                opts.Clock,
	}
	if p.logger == nil {
		p.logger = slog.New(slog.DiscardHandler)
	}
	if p.metrics == nil {
		p.metrics = discardMetrics()
	}
	if p.clock == nil {
		p.clock = time.Now
	}
	return p, nil
}

// Run prunes at once, then every Interval, until ctx ends, and returns
// nil. A failing store is logged and tried again at the next interval.
func (p *Pruner) Run(ctx context.Context) error {
	p.logger.InfoContext(ctx, "pruner started", "idempotency_retention", p.idempotencyRetention.String(),
		"outbox_retention", p.outboxRetention.String(), "interval", p.interval.String(), "batch_size", p.batchSize)
	t := time.NewTicker(p.interval)
	defer t.Stop()
	for {
		keys, events, err := p.PruneOnce(ctx)
		if err != nil && ctx.Err() == nil {
			p.logger.ErrorContext(ctx, "prune failed", "error", err)
		}
		if keys+events > 0 {
			p.logger.InfoContext(ctx, "pruned", "idempotency_keys", keys, "outbox_events", events)
		}
		select {
		case <-ctx.Done():
			p.logger.InfoContext(context.WithoutCancel(ctx), "pruner stopped")
			return nil
		case <-t.C:
		}
	}
}

// PruneOnce deletes, batch after batch, the keys and delivered events past
// their retention now, and returns how many of each it deleted.
func (p *Pruner) PruneOnce(ctx context.Context) (keys, events int, err error) {
	now := p.clock()
	keys, err = p.prune(ctx, tableIdempotencyKeys, now.Add(-p.idempotencyRetention), p.store.PruneIdempotencyKeys)
	if err != nil {
		return keys, 0, err
	}
	events, err = p.prune(ctx, tableOutboxEvents, now.Add(-p.outboxRetention), p.store.PruneOutboxEvents)
	return keys, events, err
}

// prune repeats one batch until it deletes fewer than a batch.
func (p *Pruner) prune(ctx context.Context, table string, before time.Time, batch func(context.Context, time.Time, int) (int, error)) (int, error) {
	total := 0
	for {
		// A batch blocked on a lock gives up, and the next run tries again.
		bctx, cancel := context.WithTimeout(ctx, pruneBatchTimeout)
		n, err := batch(bctx, before, p.batchSize)
		cancel()
		total += n
		p.metrics.pruned(table, n)
		if err != nil {
			return total, fmt.Errorf("prune %s: %w", table, err)
		}
		if n < p.batchSize || ctx.Err() != nil {
			return total, nil
		}
	}
}
