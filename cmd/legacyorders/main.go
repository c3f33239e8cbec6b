// Command legacyorders runs the legacy order backend simulator and the fake
// inventory, payment, warehouse and mail services it calls, each on its own
// listener, with the failure injection of SPEC.md §11 settable by flag.
//
// Usage:
//
//	legacyorders --listen 127.0.0.1:9001 --downstream-listen 127.0.0.1:9003 [--warehouse-down] ...
//
// Run legacyorders -h for every flag; docs/order-api.md describes the API.
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
	"syscall"
	"time"

	"github.com/strangler-proxy/strangler/cmd/internal/service"
	"github.com/strangler-proxy/strangler/legacy"
	"github.com/strangler-proxy/strangler/newpath"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "legacyorders:", err)
		os.Exit(1)
	}
}

// config is the parsed command line.
type config struct {
	listen            string
	downstreamListen  string
	databaseURL       string
	latency           time.Duration
	workers           int
	downstreamTimeout time.Duration
	shutdownTimeout   time.Duration
	logLevel          slog.Level
	demoNoise         bool
	faults            legacy.Faults
}

// parseFlags parses args; -h prints the usage to stderr and returns
// flag.ErrHelp.
func parseFlags(args []string, stderr io.Writer) (config, error) {
	var cfg config
	fs := flag.NewFlagSet("legacyorders", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.listen, "listen", "127.0.0.1:9001", "address of the legacy order API")
	fs.StringVar(&cfg.downstreamListen, "downstream-listen", "127.0.0.1:9003", "address of the fake inventory, payment, warehouse and mail services")
	fs.StringVar(&cfg.databaseURL, "database-url", "", "Postgres URL of the order store, shared with neworders (empty: the in-memory store)")
	fs.DurationVar(&cfg.latency, "latency", 0, "delay added to every order API request, simulating the old code's own slowness")
	fs.IntVar(&cfg.workers, "workers", 0, "order API requests served at once, like the old fixed worker pool (0: unbounded)")
	fs.DurationVar(&cfg.downstreamTimeout, "downstream-timeout", legacy.DefaultDownstreamTimeout, "timeout of each call from the order API to a downstream service")
	fs.DurationVar(&cfg.shutdownTimeout, "shutdown-timeout", 10*time.Second, "how long in-flight requests may finish after SIGINT or SIGTERM")
	fs.TextVar(&cfg.logLevel, "log-level", slog.LevelInfo, "log level: debug, info, warn or error")
	fs.BoolVar(&cfg.demoNoise, "demo-noise", false, "answers carry noise, as real services' do: an X-Served-At header, a served_at field in JSON bodies and a request_ref in GET /orders, new on every answer (for demos of the proxy's noise detection)")
	// One flag triple per service. The flag says "payment", as operators
	// say it; the control endpoint's JSON key is "payments", like its path.
	for _, svc := range []struct {
		flagName string
		faults   *legacy.ServiceFaults
	}{
		{"inventory", &cfg.faults.Inventory},
		{"payment", &cfg.faults.Payments},
		{"warehouse", &cfg.faults.Warehouse},
		{"mail", &cfg.faults.Mail},
	} {
		fs.BoolVar(&svc.faults.Down, svc.flagName+"-down", false, "the fake "+svc.flagName+" service answers 503 to every call")
		fs.DurationVar(&svc.faults.Latency, svc.flagName+"-latency", 0, "delay of every call to the fake "+svc.flagName+" service")
		fs.Float64Var(&svc.faults.ErrorRate, svc.flagName+"-error-rate", 0, "share of calls, 0 to 1, the fake "+svc.flagName+" service answers with 500")
	}
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	return cfg, nil
}

// run starts both servers, prints their addresses, and serves until ctx
// ends, then shuts them down gracefully.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	logger := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: cfg.logLevel}))

	store, ready, closeStore, err := openStore(ctx, cfg.databaseURL, logger)
	if err != nil {
		return err
	}
	defer closeStore()
	downstream, err := legacy.NewDownstream(legacy.DownstreamOptions{Faults: cfg.faults, Logger: logger})
	if err != nil {
		return err
	}
	downstreamLn, err := net.Listen("tcp", cfg.downstreamListen)
	if err != nil {
		return fmt.Errorf("downstream listener: %w", err)
	}
	defer downstreamLn.Close()
	ordersLn, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		return fmt.Errorf("order API listener: %w", err)
	}
	defer ordersLn.Close()
	orders, err := legacy.NewServer(legacy.Options{
		Store:             store,
		DownstreamURL:     "http://" + dialAddress(downstreamLn.Addr()),
		DownstreamTimeout: cfg.downstreamTimeout,
		Logger:            logger,
		Latency:           cfg.latency,
		Workers:           cfg.workers,
		Ready:             ready,
	})
	if err != nil {
		return err
	}
	var api http.Handler = orders
	if cfg.demoNoise {
		api = legacy.WithNoise(orders)
	}

	fmt.Fprintf(stdout, "legacy order API listening on http://%s\n", ordersLn.Addr())
	fmt.Fprintf(stdout, "downstream services listening on http://%s\n", downstreamLn.Addr())
	logger.Info("legacyorders started", "listen", ordersLn.Addr().String(), "downstream_listen", downstreamLn.Addr().String(), "faults", cfg.faults)
	stopLog := context.AfterFunc(ctx, func() { logger.Info("shutting down", "grace", cfg.shutdownTimeout.String()) })
	defer stopLog()
	// The order API stops first, so that its in-flight chains can still
	// reach the downstream services.
	err = service.Run(ctx, cfg.shutdownTimeout,
		service.NewServer(ordersLn, api, logger), service.NewServer(downstreamLn, downstream, logger))
	logger.Info("legacyorders stopped")
	return err
}

// openStore returns the order store: with a database URL, the Postgres
// store on the schema newpath's migrations create (applied here, so that
// either service may start first) and seeded with what is missing;
// otherwise the in-memory store. ready is the Postgres pool's ping, nil
// for the in-memory store (always ready).
func openStore(ctx context.Context, databaseURL string, logger *slog.Logger) (store legacy.Store, ready func(context.Context) error, closeStore func(), err error) {
	if databaseURL == "" {
		store, err := legacy.NewMemoryStore(legacy.DefaultSeed())
		return store, nil, func() {}, err
	}
	pool, err := newpath.OpenPool(ctx, databaseURL)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("--database-url: %w", err)
	}
	applied, err := newpath.Migrate(ctx, pool)
	if err != nil {
		pool.Close()
		return nil, nil, nil, fmt.Errorf("--database-url: %w", err)
	}
	pgStore, err := legacy.NewPostgresStore(pool)
	if err == nil {
		err = pgStore.Seed(ctx, legacy.DefaultSeed())
	}
	if err != nil {
		pool.Close()
		return nil, nil, nil, fmt.Errorf("--database-url: %w", err)
	}
	logger.Info("using the Postgres store", "migrations_applied", applied)
	return pgStore, pool.Ping, pool.Close, nil
}

// dialAddress turns a listener address into one the order API can dial: a
// wildcard listen address ("[::]:9003") is reached over loopback.
func dialAddress(addr net.Addr) string {
	tcp, ok := addr.(*net.TCPAddr)
	if !ok || !tcp.IP.IsUnspecified() {
		return addr.String()
	}
	return net.JoinHostPort("127.0.0.1", fmt.Sprint(tcp.Port))
}
