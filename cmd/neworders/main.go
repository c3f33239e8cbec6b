// Command neworders runs the newpath: the rebuilt order service that the
// proxy migrates traffic to (SPEC.md §11), with its outbox relay.
//
// Usage:
//
//	neworders --listen 127.0.0.1:9002 --downstream-url http://127.0.0.1:9003 [--database-url URL]
//	neworders --relay-only --database-url URL --downstream-url URL
//
// Without --database-url (or DATABASE_URL) it runs on the in-memory store,
// seeded like the legacy simulator. With it, it applies the migrations,
// seeds what is missing, and shares the orders with legacyorders on the
// same database. Metrics are served on their own listener
// (--metrics-listen), so that the order API's URL space stays exactly
// legacy's. docs/order-api.md describes the API and the newpath's
// differences.
//
// Traces go over OTLP/HTTP when OTEL_EXPORTER_OTLP_ENDPOINT (or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set, the other OTEL_EXPORTER_OTLP_*
// variables respected; otherwise nothing is recorded, but the callers'
// traceparent still reaches the downstream services and the outbox.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/trace"

	"github.com/strangler-proxy/strangler/cmd/internal/service"
	"github.com/strangler-proxy/strangler/config"
	"github.com/strangler-proxy/strangler/legacy"
	"github.com/strangler-proxy/strangler/newpath"
)

// version is set at build time (make build: -X main.version=...).
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "neworders:", err)
		os.Exit(1)
	}
}

// options is the parsed command line.
type options struct {
	listen          string
	metricsListen   string
	databaseURL     string
	downstreamURL   string
	downstreamTO    time.Duration
	requestTimeout  time.Duration
	fulfilTimeout   time.Duration
	shutdownTimeout time.Duration
	logLevel        slog.Level
	relay           bool
	relayOnly       bool
	seed            bool
	demoNoise       bool
	demoDivergence  bool
	relayOpts       newpath.RelayOptions
	pruneOpts       newpath.PrunerOptions
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var cfg options
	fs := flag.NewFlagSet("neworders", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.listen, "listen", "127.0.0.1:9002", "address of the order API")
	fs.StringVar(&cfg.metricsListen, "metrics-listen", "127.0.0.1:9102", "address serving /metrics, /healthz and /readyz (empty: none)")
	fs.StringVar(&cfg.databaseURL, "database-url", os.Getenv("DATABASE_URL"), "Postgres URL of the order store (default $DATABASE_URL; empty: the in-memory store)")
	fs.StringVar(&cfg.downstreamURL, "downstream-url", "http://127.0.0.1:9003", "base URL of the inventory, payment, warehouse and mail services")
	fs.DurationVar(&cfg.downstreamTO, "downstream-timeout", newpath.DefaultDownstreamTimeout, "timeout of each call to a downstream service")
	fs.DurationVar(&cfg.requestTimeout, "request-timeout", newpath.DefaultRequestTimeout, "bound of every order API request, below the proxy's newpath timeout (5s by default); an order charged within it is always written and answered")
	fs.DurationVar(&cfg.fulfilTimeout, "fulfil-timeout", 3*time.Second, "how long a POST /orders waits for the warehouse to accept the new order before answering paid and leaving it to the relay")
	fs.DurationVar(&cfg.shutdownTimeout, "shutdown-timeout", 10*time.Second, "how long in-flight requests may finish after SIGINT or SIGTERM")
	fs.TextVar(&cfg.logLevel, "log-level", slog.LevelInfo, "log level: debug, info, warn or error")
	fs.BoolVar(&cfg.relay, "relay", true, "run the outbox relay in this process")
	fs.BoolVar(&cfg.relayOnly, "relay-only", false, "run only the outbox relay (and the metrics listener), no order API")
	fs.BoolVar(&cfg.demoNoise, "demo-noise", false, "answers carry noise, as legacyorders --demo-noise's do: an X-Served-At header, a served_at field in JSON bodies and a request_ref in GET /orders, new on every answer")
	fs.BoolVar(&cfg.demoDivergence, "demo-divergence", false, `GET /orders/{id} spells a cancelled order's status "canceled": one real divergence from legacy for the proxy to catch (demos only)`)
	fs.BoolVar(&cfg.seed, "seed", true, "insert the legacy simulator's users and orders that are missing (docs/order-api.md §5)")
	fs.IntVar(&cfg.relayOpts.BatchSize, "relay-batch", 100, "events one relay claim leases")
	fs.IntVar(&cfg.relayOpts.Concurrency, "relay-concurrency", 16, "deliveries of a batch in flight at once")
	fs.DurationVar(&cfg.relayOpts.Lease, "relay-lease", 30*time.Second, "how long claimed events belong to a relay before another may claim them")
	fs.DurationVar(&cfg.relayOpts.DeliveryTimeout, "relay-delivery-timeout", 10*time.Second, "timeout of one delivery (shorter than --relay-lease)")
	fs.DurationVar(&cfg.relayOpts.PollInterval, "relay-poll", 250*time.Millisecond, "how often an idle relay looks for due events")
	fs.IntVar(&cfg.relayOpts.Retry.MaxAttempts, "relay-max-attempts", 10, "deliveries tried before an event is parked as dead")
	fs.DurationVar(&cfg.relayOpts.Retry.BaseDelay, "relay-backoff", time.Second, "wait after a first failed delivery, doubled after each further one")
	fs.DurationVar(&cfg.relayOpts.Retry.MaxDelay, "relay-max-backoff", 5*time.Minute, "longest wait between two deliveries of an event")
	fs.DurationVar(&cfg.pruneOpts.IdempotencyRetention, "idempotency-retention", newpath.DefaultIdempotencyRetention, "how long an idempotency key is kept after its answer (a key never answered: after its creation); a retry later than that places a new order")
	fs.DurationVar(&cfg.pruneOpts.OutboxRetention, "outbox-retention", newpath.DefaultOutboxRetention, "how long a delivered outbox event is kept after its delivery; pending and dead events are never pruned")
	fs.DurationVar(&cfg.pruneOpts.Interval, "prune-interval", newpath.DefaultPruneInterval, "how often keys and delivered events past their retention are deleted, in batches (0: never)")
	if err := fs.Parse(args); err != nil {
		return options{}, err
	}
	if fs.NArg() > 0 {
		return options{}, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if cfg.relayOnly && cfg.databaseURL == "" {
		return options{}, errors.New("--relay-only needs --database-url: an in-memory outbox is only reachable from its own process")
	}
	if cfg.relayOnly {
		cfg.relay = true
	}
	return cfg, nil
}

// run serves until ctx ends, then shuts down: the order API first (its
// in-flight orders still commit and notify), then the relay (in-flight
// deliveries are handed back at once), then the store.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	logger := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: cfg.logLevel}))

	// A new trace is always recorded; one the caller started follows the
	// caller's sampling decision.
	tp, shutdownTracing, err := service.NewTracerProvider(ctx, config.Tracing{Exporter: "none", SampleRatio: 1}, "neworders", version, stderr)
	if err != nil {
		return err
	}
	// Deferred first, so it runs last: the spans of the shutdown are
	// flushed too.
	defer func() {
		flushCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := shutdownTracing(flushCtx); err != nil {
			logger.Warn("traces not flushed", "error", err)
		}
	}()

	store, ready, closeStore, err := openStore(ctx, cfg, tp, logger)
	if err != nil {
		return err
	}
	defer closeStore()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := newpath.NewMetrics(reg, store, logger)

	relayOpts := cfg.relayOpts
	relayOpts.Store, relayOpts.DownstreamURL, relayOpts.Logger, relayOpts.Metrics = store, cfg.downstreamURL, logger, metrics
	relayOpts.TracerProvider = tp
	relay, err := newpath.NewRelay(relayOpts)
	if err != nil {
		return err
	}
	var pruner *newpath.Pruner
	if cfg.pruneOpts.Interval != 0 {
		pruneOpts := cfg.pruneOpts
		pruneOpts.Store, pruneOpts.Logger, pruneOpts.Metrics = store, logger, metrics
		if pruner, err = newpath.NewPruner(pruneOpts); err != nil {
			return err
		}
	}

	var servers []*service.Server
	if !cfg.relayOnly {
		api, err := newpath.NewServer(newpath.ServerOptions{
			Store:             store,
			DownstreamURL:     cfg.downstreamURL,
			DownstreamTimeout: cfg.downstreamTO,
			RequestTimeout:    cfg.requestTimeout,
			Logger:            logger,
			Metrics:           metrics,
			FulfilTimeout:     cfg.fulfilTimeout,
			Retry:             relayOpts.Retry,
			Notify:            relay.Notify,
			TracerProvider:    tp,
			Ready:             ready,
			DemoDivergence:    cfg.demoDivergence,
		})
		if err != nil {
			return err
		}
		var handler http.Handler = api
		if cfg.demoNoise {
			handler = legacy.WithNoise(api)
		}
		ln, err := net.Listen("tcp", cfg.listen)
		if err != nil {
			return fmt.Errorf("order API listener: %w", err)
		}
		defer ln.Close()
		servers = append(servers, service.NewServer(ln, handler, logger))
		fmt.Fprintf(stdout, "newpath order API listening on http://%s\n", ln.Addr())
	}
	if cfg.metricsListen != "" {
		ln, err := net.Listen("tcp", cfg.metricsListen)
		if err != nil {
			return fmt.Errorf("metrics listener: %w", err)
		}
		defer ln.Close()
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn)}))
		mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, "{\"status\":\"ok\"}\n")
		})
		// For a --relay-only process too: it needs its Postgres as much.
		mux.Handle("GET /readyz", newpath.ReadyHandler(ready))
		servers = append(servers, service.NewServer(ln, mux, logger))
		fmt.Fprintf(stdout, "metrics listening on http://%s/metrics\n", ln.Addr())
	}

	// The relay and pruner goroutines end when relayCtx is cancelled below.
	relayCtx, stopRelay := context.WithCancel(context.WithoutCancel(ctx))
	defer stopRelay()
	var relayDone sync.WaitGroup
	if cfg.relay {
		relayDone.Go(func() { _ = relay.Run(relayCtx) })
		fmt.Fprintf(stdout, "outbox relay %s running\n", relay.Owner())
	}
	if pruner != nil {
		relayDone.Go(func() { _ = pruner.Run(relayCtx) })
	}

	stopLog := context.AfterFunc(ctx, func() { logger.Info("shutting down", "grace", cfg.shutdownTimeout.String()) })
	defer stopLog()
	// The order API stops first: its in-flight orders still commit and
	// notify, and the metrics listener still answers meanwhile.
	err = service.Run(ctx, cfg.shutdownTimeout, servers...)
	stopRelay()
	relayDone.Wait()
	return err
}

// openStore returns the Postgres store (migrated, and seeded with
// --seed) or, without a database URL, the in-memory store. ready is the
// Postgres pool's ping, nil for the in-memory store (always ready).
func openStore(ctx context.Context, cfg options, tp trace.TracerProvider, logger *slog.Logger) (store newpath.Store, ready func(context.Context) error, closeStore func(), err error) {
	if cfg.databaseURL == "" {
		logger.Info("no --database-url or DATABASE_URL: using the in-memory store; orders are lost on exit and not shared with other processes")
		store, err := newpath.NewMemoryStore(newpathSeed(legacy.DefaultSeed()))
		return store, nil, func() {}, err
	}
	pool, err := newpath.OpenPoolWith(ctx, cfg.databaseURL, newpath.PoolOptions{TracerProvider: tp})
	if err != nil {
		return nil, nil, nil, err
	}
	applied, err := newpath.Migrate(ctx, pool)
	if err != nil {
		pool.Close()
		return nil, nil, nil, err
	}
	if cfg.seed {
		// The seed is the legacy simulator's data; its store inserts it into
		// the tables both services share.
		seeder, err := legacy.NewPostgresStore(pool)
		if err == nil {
			err = seeder.Seed(ctx, legacy.DefaultSeed())
		}
		if err != nil {
			pool.Close()
			return nil, nil, nil, err
		}
	}
	logger.Info("using the Postgres store", "migrations_applied", applied, "seeded", cfg.seed)
	return newpath.NewPostgresStore(pool), pool.Ping, pool.Close, nil
}

// newpathSeed converts the legacy simulator's seed, the data both services
// start from, into newpath's types.
func newpathSeed(seed legacy.Seed) newpath.Seed {
	out := newpath.Seed{Users: make([]newpath.User, len(seed.Users)), Orders: make([]newpath.Order, len(seed.Orders))}
	for i, u := range seed.Users {
		out.Users[i] = newpath.User(u)
	}
	for i, o := range seed.Orders {
		out.Orders[i] = newpath.Order{ID: o.ID, UserID: o.UserID, ItemID: o.ItemID, Quantity: o.Quantity,
			UnitPriceCents: o.UnitPriceCents, TotalCents: o.TotalCents, Status: newpath.Status(o.Status),
			PaymentID: o.PaymentID, CreatedAt: o.CreatedAt, UpdatedAt: o.UpdatedAt}
	}
	return out
}
