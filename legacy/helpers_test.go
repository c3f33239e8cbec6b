package legacy

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// testClock is a deterministic Options.Clock: every reading is one second
// after the previous one, so that timestamps in responses are predictable
// and distinct.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func newTestClock() *testClock {
	return &testClock{now: time.Date(2025, time.June, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(time.Second)
	return c.now
}

// testEnv is a legacy server and its fake downstream services, each on a
// real socket.
type testEnv struct {
	store         *MemoryStore
	downstream    *Downstream
	downstreamURL string
	url           string
}

// envOption adjusts the options of newTestEnv.
type envOption func(*Options, *DownstreamOptions)

func newTestEnv(t *testing.T, opts ...envOption) *testEnv {
	t.Helper()
	store, err := NewMemoryStore(DefaultSeed())
	if err != nil {
		t.Fatalf("NewMemoryStore: %v", err)
	}
	o := Options{Store: store, Clock: newTestClock().Now}
	var do DownstreamOptions
	for _, opt := range opts {
		opt(&o, &do)
	}
	ds, err := NewDownstream(do)
	if err != nil {
		t.Fatalf("NewDownstream: %v", err)
	}
	dsSrv := httptest.NewServer(ds)
	t.Cleanup(dsSrv.Close)
	if o.DownstreamURL == "" {
		o.DownstreamURL = dsSrv.URL
	}
	srv, err := NewServer(o)
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	legacySrv := httptest.NewServer(srv)
	t.Cleanup(legacySrv.Close)
	return &testEnv{store: store, downstream: ds, downstreamURL: dsSrv.URL, url: legacySrv.URL}
}

// response is a fully read HTTP answer.
type response struct {
	status int
	header http.Header
	body   string
}

// send performs one request and reads the whole answer. Any transport
// error fails the test.
func send(t *testing.T, method, url, body string, header map[string]string) response {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, url, r)
	if err != nil {
		t.Fatalf("new request: %v", err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, url, err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: string(b)}
}

// decodeJSON decodes a response body, failing the test on malformed JSON.
func decodeJSON[T any](t *testing.T, body string) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatalf("decode %q: %v", body, err)
	}
	return v
}

// httptestServer serves h on a real socket for the test and returns its URL.
func httptestServer(t *testing.T, h http.HandlerFunc) string {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}

// jsonDecode decodes a response body; safe to call off the test goroutine.
func jsonDecode(resp *http.Response, v any) error {
	return json.NewDecoder(resp.Body).Decode(v)
}
