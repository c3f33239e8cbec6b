package legacy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// maxBodyBytes caps every request body the simulator reads. Orders and
// control calls are tiny; the cap keeps a misbehaving client from making the
// simulator buffer without bound.
const maxBodyBytes = 64 << 10

// errBodyTooLarge is returned by readBody for a body over maxBodyBytes.
var errBodyTooLarge = errors.New("request body too large")

// readBody reads the whole request body, refusing more than maxBodyBytes.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return nil, errBodyTooLarge
		}
		return nil, fmt.Errorf("read request body: %w", err)
	}
	return body, nil
}

// writeJSON writes v as the compact JSON body of the documented contract:
// Content-Type application/json (no charset) and a single trailing newline.
// The body is marshalled before the status is sent, so that an encoding
// failure can still become a 500.
func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		body = []byte(`{"error":"internal error"}`)
	}
	writeRawJSON(w, status, body)
}

// writeRawJSON writes an already encoded JSON body; replays of stored
// idempotent responses use it to answer the very same bytes.
func writeRawJSON(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	w.WriteHeader(status)
	// A write error means the client is gone; there is no one left to tell.
	_, _ = w.Write(append(body, '\n'))
}

// errorBody is the one error shape of the order API and the fake services.
type errorBody struct {
	Error string `json:"error"`
}

// writeError answers {"error":msg} with status.
func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, errorBody{Error: msg})
}

// methodNotAllowed answers the methods a path does not support. ServeMux
// would answer 405 with the right Allow header by itself, but with a
// text/plain body; the contract promises JSON everywhere.
func methodNotAllowed(allow ...string) http.HandlerFunc {
	value := strings.Join(allow, ", ")
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", value)
		writeError(w, http.StatusMethodNotAllowed, "method not allowed")
	}
}

// notFound answers paths no route claims, in JSON for the same reason as
// methodNotAllowed.
func notFound(w http.ResponseWriter, _ *http.Request) {
	writeError(w, http.StatusNotFound, "not found")
}

// sleepContext waits for d or until ctx is done, whichever comes first; a
// simulated delay must never outlive the request that asked for it.
func sleepContext(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// isJSONObject reports whether body holds a JSON object rather than another
// JSON value: "null" or "[]" would otherwise decode into a zero struct and
// be reported as missing fields instead of a malformed body.
func isJSONObject(body []byte) bool {
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	return len(trimmed) > 0 && trimmed[0] == '{'
}

// decodeStrict decodes exactly one JSON object into v, refusing unknown
// fields and trailing data.
func decodeStrict(body []byte, v any) error {
	if !isJSONObject(body) {
		return errors.New("body must be a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if err := dec.Decode(&struct{}{}); err != io.EOF {
		return errors.New("unexpected data after the JSON object")
	}
	return nil
}
