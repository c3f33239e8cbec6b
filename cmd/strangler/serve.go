package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"

	"github.com/strangler-proxy/strangler/cmd/internal/service"
	"github.com/strangler-proxy/strangler/config"
	"github.com/strangler-proxy/strangler/proxy"
)

func serveCmd() *cobra.Command {
	var path string
	var grace time.Duration
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the proxy",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			return serve(ctx, path, grace, cmd.ErrOrStderr(), nil)
		},
	}
	configFlag(cmd, &path)
	cmd.Flags().DurationVar(&grace, "shutdown-grace", 30*time.Second, "how long in-flight requests may take to finish after SIGTERM")
	return cmd
}

// listening receives the bound addresses once both listeners are up; the
// demo uses it to find ports chosen by the kernel.
type listening func(proxyAddr, adminAddr string)

// accessLogFlush is how often serve writes buffered access lines out.
const accessLogFlush = 250 * time.Millisecond

// serve runs the proxy and its admin listener until ctx is done.
func serve(ctx context.Context, path string, grace time.Duration, stderr io.Writer, ready listening) error {
	level := new(slog.LevelVar)
	logger := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	rl, err := config.NewReloader(path, config.ReloaderOptions{Registerer: reg, Logger: logger})
	if err != nil {
		return err
	}
	cfg := rl.Current().Config
	setLevel(level, cfg.Log.Level)

	tp, flushTraces, err := service.NewTracerProvider(ctx, cfg.Tracing, "strangler", buildVersion(), stderr)
	if err != nil {
		return err
	}
	defer func() {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := flushTraces(fctx); err != nil {
			logger.Warn("flush traces", "error", err.Error())
		}
	}()
	p, err := proxy.New(rl.Current(), proxy.Options{Registerer: reg, Logger: logger, AccessLog: stderr, AccessLogFlush: accessLogFlush, Version: buildVersion(), TracerProvider: tp})
	if err != nil {
		return fmt.Errorf("provision config %q: %w", path, err)
	}
	rl.AddProvisioner(p.Prepare)
	// The proxy's background work outlives the servers by a little: it
	// writes the samples of the last comparisons.
	runCtx, stopRun := context.WithCancel(context.WithoutCancel(ctx))
	var background sync.WaitGroup
	background.Go(func() { p.Run(runCtx) })
	defer func() { stopRun(); background.Wait() }()
	rl.Subscribe(func(s *config.Snapshot) { setLevel(level, s.Config.Log.Level) })

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	adminLn, err := net.Listen("tcp", cfg.Admin.Listen)
	if err != nil {
		ln.Close()
		return fmt.Errorf("admin listen: %w", err)
	}
	logger.Info("strangler serving",
		"version", buildVersion(), "config", path, "listen", ln.Addr().String(), "admin", adminLn.Addr().String(),
		"legacy", config.Redact(cfg.Upstreams.Legacy().URL), "newpath", config.Redact(cfg.Upstreams.Newpath().URL), "routes", len(cfg.Routes))
	if ready != nil {
		ready(ln.Addr().String(), adminLn.Addr().String())
	}

	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	var wg sync.WaitGroup
	wg.Go(func() { _ = rl.Watch(watchCtx) })
	wg.Go(func() {
		for {
			select {
			case <-watchCtx.Done():
				return
			case <-hup:
				_ = rl.Reload()
			}
		}
	})

	// Either server failing stops both. The proxy's listener stops first;
	// the admin listener answers /metrics until the proxy has drained.
	admin := p.AdminHandler(proxy.AdminOptions{Gatherer: reg, Config: rl, Stopping: ctx.Done()})
	err = service.Run(ctx, grace, service.NewFastServer(ln, p.Server(), logger), service.NewServer(adminLn, admin, logger))
	if err != nil {
		logger.Error("server failed", "error", config.Redact(err.Error()))
	}
	// The clients are answered; let in-flight comparisons finish.
	drainCtx, cancelDrain := context.WithTimeout(context.Background(), grace)
	p.DrainShadows(drainCtx)
	cancelDrain()
	stopWatch()
	wg.Wait()
	logger.Info("strangler stopped")
	return err
}

func setLevel(v *slog.LevelVar, level string) {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level))
	v.Set(l)
}
