package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/strangler-proxy/strangler/cmd/internal/service"
	"github.com/strangler-proxy/strangler/legacy"
	"github.com/strangler-proxy/strangler/newpath"
)

// backendURLs are where the demo's backends listen.
type backendURLs struct {
	legacy, newpath, newpathMetrics, downstream string
	store                                       string // "memory" or "postgres"
}

// startBackends serves the fake downstream services, the legacy simulator
// and the newpath with its outbox relay until ctx is done, both services
// on one store: Postgres when DATABASE_URL is set, else one in-memory store.
// ctx ends after the proxy stopped, so nothing is in flight by then.
//
// With a story (opts.story), both order APIs answer with noise
// (legacy.WithNoise), newpath with its demo divergence, and burst, when
// on, makes newpath fail GET /orders.
//
// Each service logs through logger with its own "service" attribute:
// legacy, downstream (the fake inventory, payments, warehouse and mail),
// newpath, relay (the outbox relay and pruner) and store.
func startBackends(ctx context.Context, wg *sync.WaitGroup, opts demoOptions, burst *errorBurst, logger *slog.Logger) (backendURLs, error) {
	var urls backendURLs
	svc := func(name string) *slog.Logger { return logger.With("service", name) }
	lg, np, closeStore, kind, err := openDemoStores(ctx, svc("store"))
	if err != nil {
		return urls, err
	}
	urls.store = kind
	var listeners []net.Listener
	fail := func(err error) (backendURLs, error) {
		for _, ln := range listeners {
			ln.Close()
		}
		closeStore()
		return urls, err
	}
	// listen binds addr, or a free loopback port when addr is taken.
	listen := func(addr string) (net.Listener, string, error) {
		ln, err := net.Listen("tcp", freeOr(addr))
		if err != nil {
			return nil, "", err
		}
		listeners = append(listeners, ln)
		return ln, "http://" + ln.Addr().String(), nil
	}

	downstream, err := legacy.NewDownstream(legacy.DownstreamOptions{Logger: svc("downstream")})
	if err != nil {
		return fail(err)
	}
	downstreamLn, downstreamURL, err := listen("127.0.0.1:0")
	if err != nil {
		return fail(err)
	}
	urls.downstream = downstreamURL
	legacyServer, err := legacy.NewServer(legacy.Options{Store: lg, DownstreamURL: urls.downstream, Logger: svc("legacy")})
	if err != nil {
		return fail(err)
	}
	var legacyAPI http.Handler = legacyServer
	legacyLn, legacyURL, err := listen(opts.legacyListen)
	if err != nil {
		return fail(err)
	}
	urls.legacy = legacyURL

	reg := prometheus.NewRegistry()
	metrics := newpath.NewMetrics(reg, np, svc("newpath"))
	relay, err := newpath.NewRelay(newpath.RelayOptions{Store: np, DownstreamURL: urls.downstream, Logger: svc("relay"), Metrics: metrics})
	if err != nil {
		return fail(err)
	}
	pruner, err := newpath.NewPruner(newpath.PrunerOptions{Store: np, Logger: svc("relay"), Metrics: metrics})
	if err != nil {
		return fail(err)
	}
	// RequestTimeout: below the demo proxy's newpath timeout of 5s.
	newpathServer, err := newpath.NewServer(newpath.ServerOptions{Store: np, DownstreamURL: urls.downstream, Logger: svc("newpath"), Metrics: metrics, Notify: relay.Notify,
		RequestTimeout: 4 * time.Second, DemoDivergence: opts.story != nil})
	if err != nil {
		return fail(err)
	}
	var newpathAPI http.Handler = newpathServer
	if opts.story != nil {
		legacyAPI, newpathAPI = legacy.WithNoise(legacyAPI), burst.wrap(legacy.WithNoise(newpathAPI))
	}
	newpathLn, newpathURL, err := listen(opts.newpathListen)
	if err != nil {
		return fail(err)
	}
	urls.newpath = newpathURL
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	metricsLn, metricsURL, err := listen(opts.newpathMetricsListen)
	if err != nil {
		return fail(err)
	}
	urls.newpathMetrics = metricsURL + "/metrics"

	wg.Go(func() { _ = relay.Run(ctx) })
	// So that a long demo's store does not grow without bound.
	wg.Go(func() { _ = pruner.Run(ctx) })
	wg.Go(func() {
		// The downstream services stop last: the two order APIs call them.
		_ = service.Run(ctx, 5*time.Second,
			service.NewServer(legacyLn, legacyAPI, svc("legacy")),
			service.NewServer(newpathLn, newpathAPI, svc("newpath")),
			service.NewServer(metricsLn, mux, svc("newpath")),
			service.NewServer(downstreamLn, downstream, svc("downstream")))
		closeStore()
	})
	return urls, nil
}

// errorBurst makes the demo's newpath answer GET /orders with 503 while it
// is on: the story's injected error burst, which trips list-orders' guard.
type errorBurst struct{ on atomic.Bool }

func (b *errorBurst) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if b.on.Load() && r.Method == http.MethodGet && r.URL.Path == "/orders" {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, `{"error":"injected by the demo's error burst"}`+"\n")
			return
		}
		h.ServeHTTP(w, r)
	})
}

// openDemoStores returns legacy's and newpath's view of one store.
func openDemoStores(ctx context.Context, logger *slog.Logger) (legacy.Store, newpath.Store, func(), string, error) {
	url := os.Getenv("DATABASE_URL")
	if url == "" {
		np, err := newpath.NewMemoryStore(newpathSeed(legacy.DefaultSeed()))
		if err != nil {
			return nil, nil, nil, "", err
		}
		return legacyView{np}, np, func() {}, "memory", nil
	}
	pool, err := newpath.OpenPool(ctx, url)
	if err != nil {
		return nil, nil, nil, "", fmt.Errorf("DATABASE_URL: %w", err)
	}
	if _, err := newpath.Migrate(ctx, pool); err != nil {
		pool.Close()
		return nil, nil, nil, "", fmt.Errorf("DATABASE_URL: %w", err)
	}
	lg, err := legacy.NewPostgresStore(pool)
	if err == nil {
		err = lg.Seed(ctx, legacy.DefaultSeed())
	}
	if err != nil {
		pool.Close()
		return nil, nil, nil, "", fmt.Errorf("DATABASE_URL: %w", err)
	}
	logger.Info("demo on Postgres")
	return lg, newpath.NewPostgresStore(pool), pool.Close, "postgres", nil
}

// newpathSeed converts the legacy simulator's seed, the data both services
// start from, into newpath's types.
func newpathSeed(seed legacy.Seed) newpath.Seed {
	out := newpath.Seed{Users: make([]newpath.User, len(seed.Users)), Orders: make([]newpath.Order, len(seed.Orders))}
	for i, u := range seed.Users {
		out.Users[i] = newpath.User(u)
	}
	for i, o := range seed.Orders {
		out.Orders[i] = toNewpathOrder(o)
	}
	return out
}

// legacyView lets the legacy simulator run on newpath's in-memory store,
// so that inside the demo both services share one store: legacy's Store
// contract is a subset of newpath's, and only the types differ.
type legacyView struct{ s newpath.Store }

var _ legacy.Store = legacyView{}

func (v legacyView) GetUser(ctx context.Context, id int64) (legacy.User, error) {
	u, err := v.s.GetUser(ctx, id)
	return legacy.User(u), legacyErr(err)
}

func (v legacyView) GetOrder(ctx context.Context, id string) (legacy.Order, error) {
	o, err := v.s.GetOrder(ctx, id)
	return toLegacyOrder(o), legacyErr(err)
}

func (v legacyView) ListOrdersByUser(ctx context.Context, userID int64) ([]legacy.Order, error) {
	orders, err := v.s.ListOrdersByUser(ctx, userID)
	out := make([]legacy.Order, len(orders))
	for i, o := range orders {
		out[i] = toLegacyOrder(o)
	}
	return out, legacyErr(err)
}

func (v legacyView) CreateOrder(ctx context.Context, o legacy.Order) (legacy.Order, error) {
	created, err := v.s.CreateOrder(ctx, toNewpathOrder(o))
	return toLegacyOrder(created), legacyErr(err)
}

func (v legacyView) TransitionOrder(ctx context.Context, id string, from, to legacy.Status, at time.Time) (legacy.Order, error) {
	o, err := v.s.TransitionOrder(ctx, id, newpath.Status(from), newpath.Status(to), at)
	return toLegacyOrder(o), legacyErr(err)
}

// legacyErr maps newpath's sentinels onto legacy's, which the legacy
// handlers check with errors.Is.
func legacyErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, newpath.ErrNotFound):
		return fmt.Errorf("%w (%w)", legacy.ErrNotFound, err)
	case errors.Is(err, newpath.ErrDuplicate):
		return fmt.Errorf("%w (%w)", legacy.ErrDuplicate, err)
	case errors.Is(err, newpath.ErrStatusConflict):
		return fmt.Errorf("%w (%w)", legacy.ErrStatusConflict, err)
	}
	return err
}

func toLegacyOrder(o newpath.Order) legacy.Order {
	return legacy.Order{ID: o.ID, UserID: o.UserID, ItemID: o.ItemID, Quantity: o.Quantity,
		UnitPriceCents: o.UnitPriceCents, TotalCents: o.TotalCents, Status: legacy.Status(o.Status),
		PaymentID: o.PaymentID, CreatedAt: o.CreatedAt, UpdatedAt: o.UpdatedAt}
}

func toNewpathOrder(o legacy.Order) newpath.Order {
	return newpath.Order{ID: o.ID, UserID: o.UserID, ItemID: o.ItemID, Quantity: o.Quantity,
		UnitPriceCents: o.UnitPriceCents, TotalCents: o.TotalCents, Status: newpath.Status(o.Status),
		PaymentID: o.PaymentID, CreatedAt: o.CreatedAt, UpdatedAt: o.UpdatedAt}
}
