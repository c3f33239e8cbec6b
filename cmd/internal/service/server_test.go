package service

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// unusedConnMark is when net/http itself would give up on a connection
// that never sent a request: it counts one in StateNew as busy for five
// seconds. A shutdown that ends before the mark did not wait on it.
const unusedConnMark = 5 * time.Second

// started is a server under Run, stopped by cancel.
type started struct {
	srv    *Server
	addr   string
	cancel context.CancelFunc
	done   chan error
}

func start(t *testing.T, h http.Handler, grace time.Duration) *started {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &started{srv: NewServer(ln, h, slog.New(slog.DiscardHandler)), addr: ln.Addr().String(), cancel: cancel, done: make(chan error, 1)}
	go func() { s.done <- Run(ctx, grace, s.srv) }()
	t.Cleanup(func() {
		cancel()
		<-s.done
	})
	return s
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// freshConns counts the server's connections in StateNew.
func (s *Server) freshConns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.fresh)
}

func TestShutdownDoesNotWaitForUnusedConnections(t *testing.T) {
	s := start(t, http.NotFoundHandler(), time.Minute)
	mark := time.Now().Add(unusedConnMark)
	unused := dial(t, s.addr)
	waitFor(t, "the server accepted the connection", func() bool { return s.srv.freshConns() == 1 })

	s.cancel()
	select {
	case err := <-s.done:
		s.done <- err // for the cleanup
		if err != nil {
			t.Fatalf("Run: %v; want nil", err)
		}
	case <-time.After(time.Until(mark)):
		t.Fatal("shutdown waited for a connection that never sent a request")
	}
	// The server hung up on it.
	_ = unused.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := unused.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Errorf("read on the unused connection: %d, %v; want it closed", n, err)
	}
}

func TestShutdownFinishesInFlightRequests(t *testing.T) {
	entered := make(chan struct{})
	release := make(chan struct{})
	s := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
		io.WriteString(w, "done")
	}), time.Minute)

	type result struct {
		status int
		body   string
		err    error
	}
	results := make(chan result, 1)
	go func() {
		res, err := http.Get("http://" + s.addr + "/slow")
		if err != nil {
			results <- result{err: err}
			return
		}
		b, err := io.ReadAll(res.Body)
		res.Body.Close()
		results <- result{res.StatusCode, string(b), err}
	}()
	<-entered
	s.cancel()
	// Shutdown has begun once new connections are refused.
	waitFor(t, "the listener is closed", func() bool {
		c, err := net.Dial("tcp", s.addr)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	select {
	case err := <-s.done:
		s.done <- err // for the cleanup
		t.Fatalf("Run returned %v with a request in flight", err)
	default:
	}
	close(release)
	r := <-results
	if r.err != nil || r.status != http.StatusOK || r.body != "done" {
		t.Errorf("in-flight request: %d %q %v; want 200 \"done\"", r.status, r.body, r.err)
	}
	if err := <-s.done; err != nil {
		t.Errorf("Run: %v; want nil", err)
	}
	s.done <- nil
}

func TestShutdownCutsOffAfterGrace(t *testing.T) {
	var entered atomic.Bool
	s := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered.Store(true)
		<-r.Context().Done() // until the server closes the connection
	}), 50*time.Millisecond)
	go func() {
		if res, err := http.Get("http://" + s.addr + "/forever"); err == nil {
			res.Body.Close()
		}
	}()
	waitFor(t, "the request reached the handler", entered.Load)
	s.cancel()
	err := <-s.done
	s.done <- nil
	if err == nil || !strings.Contains(err.Error(), "cut off") || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Run: %v; want the grace period's deadline", err)
	}
}

func TestOneFailedServerStopsTheOthers(t *testing.T) {
	logger := slog.New(slog.DiscardHandler)
	good, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	bad, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	bad.Close() // its Accept fails at once
	err = Run(context.Background(), time.Minute, NewServer(good, http.NotFoundHandler(), logger), NewServer(bad, http.NotFoundHandler(), logger))
	if err == nil || !strings.Contains(err.Error(), "serve "+bad.Addr().String()) {
		t.Errorf("Run: %v; want the failed server's error", err)
	}
	if c, err := net.Dial("tcp", good.Addr().String()); err == nil {
		c.Close()
		t.Error("the healthy server still accepts after the other failed")
	}
}

// Each shutdown starts after the previous server has drained: a server
// listed after another keeps serving while the first finishes.
func TestServersStopInOrder(t *testing.T) {
	logger := slog.New(slog.DiscardHandler)
	release := make(chan struct{})
	entered := make(chan struct{})
	first, _ := net.Listen("tcp", "127.0.0.1:0")
	second, _ := net.Listen("tcp", "127.0.0.1:0")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, time.Minute,
			NewServer(first, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				close(entered)
				<-release
			}), logger),
			NewServer(second, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.WriteString(w, "still here")
			}), logger))
	}()
	go func() {
		if res, err := http.Get("http://" + first.Addr().String()); err == nil {
			res.Body.Close()
		}
	}()
	<-entered
	cancel()
	waitFor(t, "the first server stopped accepting", func() bool {
		c, err := net.Dial("tcp", first.Addr().String())
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	res, err := client.Get("http://" + second.Addr().String())
	if err != nil {
		t.Fatalf("the second server stopped before the first drained: %v", err)
	}
	res.Body.Close()
	close(release)
	if err := <-done; err != nil {
		t.Errorf("Run: %v; want nil", err)
	}
}

func TestServerLimits(t *testing.T) {
	s := start(t, http.NotFoundHandler(), time.Minute)
	c := dial(t, s.addr)
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\nX-Big: "+strings.Repeat("a", MaxHeaderBytes+8192)+"\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("a header over MaxHeaderBytes: %d; want 431", res.StatusCode)
	}
}
