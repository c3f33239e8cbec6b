// Package service is what strangler's three daemons (strangler,
// neworders, legacyorders) share: HTTP servers with one set of limits,
// serving until a context ends with a grace period for in-flight requests,
// and the OpenTelemetry tracer set-up.
package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// Server limits. Slow or oversized request headers are refused before a
// handler runs; idle keep-alive connections are reaped.
const (
	ReadHeaderTimeout = 10 * time.Second
	IdleTimeout       = 120 * time.Second
	MaxHeaderBytes    = 64 << 10
)

// maxHeldHeader bounds a header block the framing check holds: past what
// net/http reads of a header before it refuses it with 431
// (MaxHeaderBytes and 4 KiB), and the 4 KiB its bufio reader may already
// hold, so a block too large to check is one net/http refuses.
const maxHeldHeader = MaxHeaderBytes + 8<<10

// Server is an http.Server with the daemons' limits, bound to its
// listener. It refuses requests whose framing is ambiguous (see
// framingConn) before net/http parses them. Unlike a bare http.Server,
// its shutdown does not wait for connections that never sent a request:
// net/http counts a connection accepted but unused as busy for five
// seconds, and clients open such connections all the time (a transport's
// spare dial, a TCP health check, a pre-connect), so every SIGTERM would
// otherwise take five seconds.
type Server struct {
	http *http.Server // or fast
	fast *fasthttp.Server
	ln   net.Listener

	mu sync.Mutex // guards the fields below
	// fresh are the connections in http.StateNew: accepted, no request
	// read yet.
	fresh map[net.Conn]struct{}
	// open are a fasthttp server's connections, which it cannot close at
	// the end of the grace period itself.
	open     map[net.Conn]struct{}
	stopping bool
}

// NewServer returns a server of h on ln. Run serves it.
func NewServer(ln net.Listener, h http.Handler, logger *slog.Logger) *Server {
	s := &Server{fresh: map[net.Conn]struct{}{}}
	s.ln = framingListener{Listener: ln, log: &refusalLog{logger: logger}, maxHeader: maxHeldHeader, headerTimeout: ReadHeaderTimeout}
	s.http = &http.Server{
		Handler:           h,
		ReadHeaderTimeout: ReadHeaderTimeout,
		IdleTimeout:       IdleTimeout,
		MaxHeaderBytes:    MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		ConnState:         s.track,
	}
	return s
}

// NewFastServer returns a server of srv on ln, with NewServer's limits,
// framing check and shutdown. srv's handler's own needs (see
// proxy.Proxy.Server) are kept.
func NewFastServer(ln net.Listener, srv *fasthttp.Server, logger *slog.Logger) *Server {
	s := &Server{fast: srv, fresh: map[net.Conn]struct{}{}, open: map[net.Conn]struct{}{}}
	s.ln = framingListener{Listener: ln, log: &refusalLog{logger: logger}, maxHeader: srv.ReadBufferSize + 4<<10, headerTimeout: ReadHeaderTimeout}
	srv.ReadTimeout = ReadHeaderTimeout
	srv.IdleTimeout = IdleTimeout
	srv.CloseOnShutdown = true
	srv.SecureErrorLogMessage = true
	srv.Logger = fastLogger{logger}
	srv.ConnState = s.trackFast
	return s
}

// fastLogger is fasthttp's logger on slog.
type fastLogger struct{ l *slog.Logger }

func (f fastLogger) Printf(format string, args ...any) {
	f.l.Warn(fmt.Sprintf(format, args...))
}

// trackFast is the fasthttp server's ConnState hook: track's, and open
// connections for the end of the grace period.
func (s *Server) trackFast(c net.Conn, state fasthttp.ConnState) {
	switch state {
	case fasthttp.StateNew:
		s.mu.Lock()
		s.open[c] = struct{}{}
		s.mu.Unlock()
		s.track(c, http.StateNew)
	case fasthttp.StateActive:
		s.track(c, http.StateActive)
	case fasthttp.StateHijacked:
		s.track(c, http.StateHijacked)
	case fasthttp.StateClosed:
		s.mu.Lock()
		delete(s.open, c)
		s.mu.Unlock()
		s.track(c, http.StateClosed)
	}
}

// Addr returns the listener's address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Run serves every server until ctx is done or one of them fails, then
// shuts them down one after the other, in the order given: each stops
// accepting, closes its connections that never sent a request, and lets
// its in-flight requests finish. All of them share one grace period;
// requests still running when it ends are cut off, and that is an error.
// Run returns nil after a clean shutdown on ctx.
//
// The order lets a server stop before the servers it calls: legacyorders
// stops its order API before the downstream services that API calls.
func Run(ctx context.Context, grace time.Duration, servers ...*Server) error {
	served := make(chan error, len(servers))
	for _, s := range servers {
		go func() { served <- s.serve() }()
	}
	var errs []error
	running := len(servers)
	select {
	case <-ctx.Done():
	case err := <-served:
		// One failed: the others stop too.
		errs = append(errs, err)
		running--
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), grace)
	defer cancel()
	for _, s := range servers {
		errs = append(errs, s.shutdown(shutdownCtx))
	}
	for ; running > 0; running-- {
		errs = append(errs, <-served)
	}
	return errors.Join(errs...)
}

// serve serves until shutdown, which is not an error.
func (s *Server) serve() error {
	if s.fast != nil {
		if err := s.fast.Serve(s.ln); err != nil && !s.isStopping() {
			return fmt.Errorf("serve %s: %w", s.ln.Addr(), err)
		}
		return nil
	}
	if err := s.http.Serve(s.ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve %s: %w", s.ln.Addr(), err)
	}
	return nil
}

// shutdown stops accepting, closes the connections that never sent a
// request, waits for the rest until ctx ends, then closes what is left.
//
// Closing a connection in StateNew loses nothing: net/http does not serve
// a request whose header it finishes reading after shutdown began, so one
// still arriving would be dropped anyway, only later.
func (s *Server) shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.stopping = true
	for c := range s.fresh {
		_ = c.Close()
	}
	clear(s.fresh)
	s.mu.Unlock()
	if s.fast != nil {
		return s.shutdownFast(ctx)
	}
	err := s.http.Shutdown(ctx)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, context.DeadlineExceeded):
		_ = s.http.Close()
		return fmt.Errorf("shutdown %s: in-flight requests cut off at the end of the grace period: %w", s.ln.Addr(), err)
	default:
		_ = s.http.Close()
		return fmt.Errorf("shutdown %s: %w", s.ln.Addr(), err)
	}
}

func (s *Server) isStopping() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopping
}

// shutdownFast is shutdown for a fasthttp server, which closes idle
// keep-alive connections as it goes but leaves the rest open at the
// deadline.
func (s *Server) shutdownFast(ctx context.Context) error {
	// Closed here first: a shutdown that starts before Serve took the
	// listener would otherwise leave it serving.
	_ = s.ln.Close()
	err := s.fast.ShutdownWithContext(ctx)
	if err == nil || errors.Is(err, net.ErrClosed) {
		return nil
	}
	s.mu.Lock()
	for c := range s.open {
		_ = c.Close()
	}
	s.mu.Unlock()
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("shutdown %s: in-flight requests cut off at the end of the grace period: %w", s.ln.Addr(), err)
	}
	return fmt.Errorf("shutdown %s: %w", s.ln.Addr(), err)
}

// track is the http.Server's ConnState hook. A connection accepted while
// the server stops is closed at once: Shutdown closes the listener only
// after it starts, so the accept loop may still hand one over.
func (s *Server) track(c net.Conn, state http.ConnState) {
	if state == http.StateIdle {
		return // only StateNew is tracked, and Idle never follows it
	}
	if fc, ok := c.(*framingConn); ok && state == http.StateHijacked {
		fc.hijacked()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case state != http.StateNew:
		delete(s.fresh, c)
	case s.stopping:
		_ = c.Close()
	default:
		s.fresh[c] = struct{}{}
	}
}
