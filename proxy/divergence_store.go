package proxy

import (
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/strangler-proxy/strangler/config"
)

//go:embed sql/divergences.sql
var divergencesSchema string

//go:embed sql/prune_divergences.sql
var pruneDivergences string

//go:embed sql/divergences_time_index.sql
var divergencesTimeIndex string

// Divergence store bounds: the queue the request path feeds without ever
// waiting, and the batches the writer sends.
const (
	divergenceQueue    = 4096
	divergenceBatch    = 256
	divergenceInterval = 250 * time.Millisecond
	divergenceTimeout  = 5 * time.Second
	// Retention: samples older than divergence_store.retention are
	// deleted every pruneInterval, pruneBatch rows a statement.
	pruneInterval = time.Minute
	pruneBatch    = 1000
)

// divergenceStore writes mismatch samples to Postgres table
// strangler_divergences in batches, off the request path. A full queue or
// a failed batch drops samples and counts them: the proxy never waits on
// Postgres, and Postgres being down costs samples, not requests.
type divergenceStore struct {
	pool    *pgxpool.Pool
	queue   chan Sample
	dropped prometheus.Counter
	pruned  prometheus.Counter
	// retention returns divergence_store.retention in force, which a
	// reload may change.
	retention func() time.Duration
	logger    *slog.Logger
	ready     atomic.Bool // the table exists
	indexed   atomic.Bool // its time index exists
	lastLog   atomic.Int64
}

// newDivergenceStore prepares the writer on the pool Provision configured.
// It does not connect: Postgres may come up after the proxy, and the proxy
// must start regardless.
func newDivergenceStore(cfg *pgxpool.Config, m *metrics, retention func() time.Duration, logger *slog.Logger) (*divergenceStore, error) {
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		return nil, fmt.Errorf("divergence store: %w", err)
	}
	return &divergenceStore{pool: pool, queue: make(chan Sample, divergenceQueue), dropped: m.samplesDropped, pruned: m.samplesPruned,
		retention: retention, logger: logger}, nil
}

// add queues s, or drops it when the queue is full. It never blocks.
func (d *divergenceStore) add(s Sample) {
	select {
	case d.queue <- s:
	default:
		d.dropped.Inc()
	}
}

// run writes queued samples until ctx is done, then writes what is queued
// within a short grace and closes the pool. Proxy.Run owns it; it owns the
// pruner's goroutine, so that a long deletion never delays the writer.
func (d *divergenceStore) run(ctx context.Context) {
	defer d.pool.Close()
	var pruner sync.WaitGroup
	defer pruner.Wait()
	pruner.Go(func() { d.runPruner(ctx) })
	tick := time.NewTicker(divergenceInterval)
	defer tick.Stop()
	batch := make([]Sample, 0, divergenceBatch)
	flush := func(ctx context.Context) {
		if len(batch) > 0 {
			d.write(ctx, batch)
			batch = batch[:0]
		}
	}
	for {
		select {
		case s := <-d.queue:
			if batch = append(batch, s); len(batch) == divergenceBatch {
				flush(ctx)
			}
		case <-tick.C:
			flush(ctx)
		case <-ctx.Done():
		drain:
			for {
				select {
				case s := <-d.queue:
					batch = append(batch, s)
				default:
					break drain
				}
			}
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), divergenceTimeout)
			flush(fctx)
			cancel()
			return
		}
	}
}

// write inserts one batch with COPY; on failure the batch is dropped and
// counted.
func (d *divergenceStore) write(ctx context.Context, batch []Sample) {
	ctx, cancel := context.WithTimeout(ctx, divergenceTimeout)
	defer cancel()
	err := d.ensureTable(ctx)
	if err == nil {
		rows := make([][]any, len(batch))
		for i, s := range batch {
			diffs, _ := json.Marshal(s.Differences)
			header, _ := json.Marshal(s.RequestHeader)
			rows[i] = []any{s.Time, s.Route, s.Method, s.Path, s.RequestID, s.TraceID, s.LegacyStatus, s.NewpathStatus, diffs,
				s.Query, header, s.RequestBody, s.RequestBodyBase64, s.DryRun}
		}
		_, err = d.pool.CopyFrom(ctx, pgx.Identifier{"strangler_divergences"},
			[]string{"time", "route", "method", "path", "request_id", "trace_id", "legacy_status", "newpath_status", "differences",
				"query", "request_header", "request_body", "request_body_base64", "dry_run"},
			pgx.CopyFromRows(rows))
	}
	if err != nil {
		d.dropped.Add(float64(len(batch)))
		// One line a minute at most: Postgres being down is one event.
		if now := time.Now().UnixNano(); now-d.lastLog.Load() > int64(time.Minute) {
			d.lastLog.Store(now)
			d.logger.Warn("divergence store: samples dropped", "count", len(batch), "error", config.Redact(err.Error()))
		}
		d.ready.Store(false)
	}
}

// runPruner deletes old samples every pruneInterval until ctx is done.
func (d *divergenceStore) runPruner(ctx context.Context) {
	tick := time.NewTicker(pruneInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			d.pruneOld(ctx, now)
		}
	}
}

// pruneOld deletes the samples older than the retention in force at now.
// The first pass also builds the index it deletes by, concurrently: on a
// table grown large before retention existed, a plain CREATE INDEX would
// block the replicas' writes for as long as it takes.
func (d *divergenceStore) pruneOld(ctx context.Context, now time.Time) {
	keep := d.retention()
	if keep <= 0 {
		return
	}
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, pruneInterval)
	defer cancel()
	err := d.ensureTable(ctx)
	if err != nil {
		return // the writer logs Postgres being down
	}
	if !d.indexed.Load() {
		if _, err = d.pool.Exec(ctx, divergencesTimeIndex); err == nil {
			d.indexed.Store(true)
		}
	}
	if err == nil {
		_, err = d.prune(ctx, now.Add(-keep), pruneBatch)
	}
	if err != nil && parent.Err() == nil { // not at shutdown
		d.logger.Warn("divergence store: pruning old samples failed; retrying in a minute", "error", config.Redact(err.Error()))
	}
}

// prune deletes the samples older than before, batch rows a statement,
// until a statement finds fewer, and returns how many it deleted.
func (d *divergenceStore) prune(ctx context.Context, before time.Time, batch int) (int64, error) {
	var total int64
	for {
		tag, err := d.pool.Exec(ctx, pruneDivergences, before, batch)
		if err != nil {
			return total, fmt.Errorf("prune strangler_divergences: %w", err)
		}
		n := tag.RowsAffected()
		total += n
		d.pruned.Add(float64(n))
		if n < int64(batch) {
			return total, nil
		}
	}
}

func (d *divergenceStore) ensureTable(ctx context.Context) error {
	if d.ready.Load() {
		return nil
	}
	if _, err := d.pool.Exec(ctx, divergencesSchema); err != nil {
		return fmt.Errorf("create strangler_divergences: %w", err)
	}
	d.ready.Store(true)
	return nil
}
