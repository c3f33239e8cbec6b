package legacy

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestGate: a payment behind a closed gate is charged at once and its
// answer waits for Open; a caller that gives up leaves the charge and gets
// nothing; other paths, and calls after Open, pass at once.
func TestGate(t *testing.T) {
	d, err := NewDownstream(DownstreamOptions{})
	if err != nil {
		t.Fatal(err)
	}
	gate := NewGate(d, "POST", "/payments")
	srv := httptest.NewServer(gate)
	t.Cleanup(srv.Close)
	charge := func(ctx context.Context, key string) (int, string, error) {
		req, err := http.NewRequestWithContext(ctx, "POST", srv.URL+"/payments", strings.NewReader(`{"user_id":7,"amount_cents":100}`))
		if err != nil {
			return 0, "", err
		}
		req.Header.Set(IdempotencyKeyHeader, key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), err
	}
	waitUntil := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}

	type result struct {
		status int
		body   string
		err    error
	}
	held := make(chan result, 1)
	go func() {
		status, body, err := charge(context.Background(), "k-held")
		held <- result{status, body, err}
	}()
	waitUntil("the first answer to be held", func() bool { return gate.Held() == 1 })
	if n := d.Charges(7); n != 1 {
		t.Errorf("charges while the answer is held = %d; want 1 (the call acted)", n)
	}
	select {
	case r := <-held:
		t.Fatalf("answer came through a closed gate: %+v", r)
	default:
	}
	if r := send(t, "GET", srv.URL+"/inventory/sku-1", "", nil); r.status != http.StatusOK {
		t.Errorf("GET /inventory/sku-1 behind the gate = %d; want 200 at once", r.status)
	}

	ctx, cancel := context.WithCancel(context.Background())
	gaveUp := make(chan error, 1)
	go func() {
		_, _, err := charge(ctx, "k-abandoned")
		gaveUp <- err
	}()
	waitUntil("the second answer to be held", func() bool { return gate.Held() == 2 })
	cancel()
	if err := <-gaveUp; err == nil {
		t.Error("a caller that gave up got an answer")
	}
	waitUntil("the abandoned answer to be dropped", func() bool { return gate.Held() == 1 })
	if n := d.Charges(7); n != 2 {
		t.Errorf("charges after a caller gave up = %d; want 2 (its charge stays)", n)
	}

	gate.Open()
	if r := <-held; r.err != nil || r.status != http.StatusCreated || !strings.Contains(r.body, `"payment_id":"pay_1001"`) {
		t.Errorf("held answer after Open = %+v; want 201 with pay_1001", r)
	}
	if status, body, err := charge(t.Context(), "k-abandoned"); err != nil || status != http.StatusCreated || !strings.Contains(body, `"payment_id":"pay_1002"`) {
		t.Errorf("retry of the abandoned charge = %d %s %v; want the stored pay_1002 at once", status, body, err)
	}
	gate.Open()
	if got := gate.Arrived(); got != 3 {
		t.Errorf("Arrived = %d; want 3", got)
	}
}
