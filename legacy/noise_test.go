package legacy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// noisyEnv serves the legacy API of a fresh memory store through WithNoise.
func noisyEnv(t *testing.T) string {
	t.Helper()
	env := newTestEnv(t)
	store, err := NewMemoryStore(DefaultSeed())
	if err != nil {
		t.Fatal(err)
	}
	api, err := NewServer(Options{Store: store, DownstreamURL: env.downstreamURL})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(WithNoise(api))
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestWithNoiseAddsFieldsNoTwoAnswersShare(t *testing.T) {
	url := noisyEnv(t)
	for _, tc := range []struct {
		path    string
		fields  []string // the noise fields the body must carry
		without []string // and must not
	}{
		{"/orders/ord_1", []string{"served_at"}, []string{"request_ref"}},
		{"/orders?user_id=1", []string{"served_at", "request_ref"}, nil},
	} {
		first := send(t, "GET", url+tc.path, "", nil)
		second := send(t, "GET", url+tc.path, "", nil)
		for _, res := range []response{first, second} {
			if res.status != 200 {
				t.Fatalf("GET %s: status %d, body %s", tc.path, res.status, res.body)
			}
			if _, err := time.Parse(time.RFC3339Nano, res.header.Get(ServedAtHeader)); err != nil {
				t.Errorf("GET %s: %s = %q: %v", tc.path, ServedAtHeader, res.header.Get(ServedAtHeader), err)
			}
		}
		a, b := decodeJSON[map[string]any](t, first.body), decodeJSON[map[string]any](t, second.body)
		for _, f := range tc.fields {
			if a[f] == nil || a[f] == b[f] {
				t.Errorf("GET %s: %s = %v then %v; want a value per answer", tc.path, f, a[f], b[f])
			}
		}
		for _, f := range tc.without {
			if _, ok := a[f]; ok {
				t.Errorf("GET %s: body has %s: %s", tc.path, f, first.body)
			}
		}
		if first.header.Get(ServedAtHeader) == second.header.Get(ServedAtHeader) {
			t.Errorf("GET %s: two answers share %s %q", tc.path, ServedAtHeader, first.header.Get(ServedAtHeader))
		}
		// The rest of the body is legacy's, untouched.
		delete(a, "served_at")
		delete(a, "request_ref")
		delete(b, "served_at")
		delete(b, "request_ref")
		if len(a) == 0 || len(a) != len(b) {
			t.Errorf("GET %s: bodies %s and %s differ beyond the noise", tc.path, first.body, second.body)
		}
	}
}

func TestWithNoiseLeavesErrorsAlone(t *testing.T) {
	url := noisyEnv(t)
	res := send(t, "GET", url+"/orders/ord_nope", "", nil)
	if res.status != 404 || strings.Contains(res.body, "served_at") {
		t.Errorf("GET of a missing order: %d %s; want legacy's 404 body unchanged", res.status, res.body)
	}
	if res.header.Get(ServedAtHeader) == "" {
		t.Errorf("404 has no %s header", ServedAtHeader)
	}
}

// An empty object, however spaced, stays JSON.
func TestWithNoiseKeepsAnEmptyObjectJSON(t *testing.T) {
	for _, body := range []string{"{}", "{ }", "{\n}"} {
		srv := httptest.NewServer(WithNoise(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusEarlyHints) // not the answer
			_, _ = io.WriteString(w, body)
		})))
		res := send(t, "GET", srv.URL+"/x", "", nil)
		srv.Close()
		if res.status != 200 {
			t.Errorf("%q: status %d; want 200, the 103 skipped", body, res.status)
		}
		if m := decodeJSON[map[string]any](t, res.body); m["served_at"] == nil || len(m) != 1 {
			t.Errorf("%q became %s", body, res.body)
		}
	}
}
