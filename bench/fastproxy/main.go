// Command fastproxy is the engine's bare forwarder in make bench: the least a
// reverse proxy on github.com/valyala/fasthttp does (one pooled HostClient,
// X-Forwarded-For set, hop-by-hop headers dropped), so the table shows how
// far strangler's own work on that engine is from the engine alone.
//
// Usage:
//
//	fastproxy -listen 127.0.0.1:8080 -upstream 127.0.0.1:9001
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
)

// shutdownGrace bounds how long in-flight requests may run after a signal.
const shutdownGrace = 5 * time.Second

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "fastproxy:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("fastproxy", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:8080", "client-facing listen address")
	upstream := fs.String("upstream", "", "upstream host:port, e.g. 127.0.0.1:9001")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if _, _, err := net.SplitHostPort(*upstream); err != nil {
		return fmt.Errorf("parse -upstream %q: want host:port: %w", *upstream, err)
	}

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen %q: %w", *listen, err)
	}
	return serve(ctx, ln, *upstream)
}

// serve forwards every request accepted on ln to upstream until ctx ends.
func serve(ctx context.Context, ln net.Listener, upstream string) error {
	// The same pool size as bareproxy's transport, so that neither
	// baseline waits for connections the other would have.
	client := &fasthttp.HostClient{Addr: upstream, MaxConns: 1024, ReadTimeout: 30 * time.Second}
	// The hop-by-hop headers of RFC 9110 §7.6.1; fasthttp itself frames
	// both sides, so Transfer-Encoding is its own.
	hopByHop := []string{"Connection", "Proxy-Connection", "Keep-Alive", "TE", "Trailer", "Upgrade"}
	forward := func(c *fasthttp.RequestCtx) {
		for _, h := range hopByHop {
			c.Request.Header.Del(h)
		}
		c.Request.Header.Set("X-Forwarded-For", c.RemoteIP().String())
		if err := client.Do(&c.Request, &c.Response); err != nil {
			c.Error("bad gateway", fasthttp.StatusBadGateway)
			return
		}
		for _, h := range hopByHop {
			c.Response.Header.Del(h)
		}
	}

	srv := &fasthttp.Server{Handler: forward, ReadTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()

	select {
	case err := <-serveErr:
		return fmt.Errorf("serve %q: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownGrace)
	defer cancel()
	if err := srv.ShutdownWithContext(shutdownCtx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	// Serve has returned nil since Shutdown closed the listener.
	return <-serveErr
}
