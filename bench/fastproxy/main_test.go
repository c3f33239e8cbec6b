package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// startForwarder serves the forwarder to upstream on a loopback port until
// the test ends, and returns its base URL.
func startForwarder(t *testing.T, upstream string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, ln, upstream) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return "http://" + ln.Addr().String()
}

func TestForwards(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Seen-Forwarded-For", r.Header.Get("X-Forwarded-For"))
		w.Header().Set("X-Seen-Keep-Alive", r.Header.Get("Keep-Alive"))
		w.Header().Set("Keep-Alive", "timeout=5")
		io.WriteString(w, "order "+r.URL.Path)
	}))
	defer backend.Close()
	base := startForwarder(t, strings.TrimPrefix(backend.URL, "http://"))

	req, err := http.NewRequest(http.MethodGet, base+"/orders/ord_1", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Forwarded-For", "203.0.113.9") // spoofed: must not reach the upstream
	req.Header.Set("Keep-Alive", "timeout=99")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || string(body) != "order /orders/ord_1" {
		t.Errorf("got %d %q; want 200 %q", resp.StatusCode, body, "order /orders/ord_1")
	}
	if got := resp.Header.Get("X-Seen-Forwarded-For"); got != "127.0.0.1" {
		t.Errorf("upstream saw X-Forwarded-For %q; want %q", got, "127.0.0.1")
	}
	if got := resp.Header.Get("X-Seen-Keep-Alive"); got != "" {
		t.Errorf("upstream saw Keep-Alive %q; want none (hop-by-hop)", got)
	}
	if got := resp.Header.Get("Keep-Alive"); got != "" {
		t.Errorf("client got Keep-Alive %q; want none (hop-by-hop)", got)
	}
}

func TestBadGatewayWhenUpstreamIsDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := ln.Addr().String()
	ln.Close()
	base := startForwarder(t, down)

	resp, err := http.Get(base + "/orders/ord_1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway {
		t.Errorf("got status %d; want 502", resp.StatusCode)
	}
}
