package newpath

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// maxBodyBytes caps every request body, as legacy does (64 KiB).
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

// writeJSON writes v as the contract's body: compact JSON, one trailing
// newline, Content-Type application/json without charset. The body is
// encoded before the status is sent, so that a failure can still be a 500.
func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		status, body = http.StatusInternalServerError, []byte(`{"error":"internal error"}`)
	}
	writeRawJSON(w, status, body)
}

// orderJSONBody encodes an order for an answer; Order.MarshalJSON cannot
// fail (strings, integers and formatted times).
func orderJSONBody(o Order) []byte {
	body, _ := o.MarshalJSON()
	return body
}

// writeRawJSON writes an already encoded body; stored idempotent answers
// are replayed through it, byte for byte.
func writeRawJSON(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	// A write error means the client is gone; nobody is left to tell.
	_, _ = w.Write(append(body, '\n'))
}

// errorBody is the one error shape of the order API.
type errorBody struct {
	Error string `json:"error"`
}

// errorJSON encodes {"error":msg}.
func errorJSON(msg string) []byte {
	body, _ := json.Marshal(errorBody{Error: msg})
	return body
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeRawJSON(w, status, errorJSON(msg))
}

// methodNotAllowed answers the methods a path does not support in JSON
// with an Allow header, as legacy does (ServeMux's own 405 is text/plain).
func methodNotAllowed(allow ...string) http.HandlerFunc {
	value := strings.Join(allow, ", ")
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Allow", value)
		writeError(w, http.StatusMethodNotAllowed, "method not allowed")
	}
}

// notFound answers paths no route claims, in JSON.
func notFound(w http.ResponseWriter, _ *http.Request) {
	writeError(w, http.StatusNotFound, "not found")
}

// isJSONObject reports whether body holds a JSON object rather than another
// JSON value, so that "null" or "[]" is a malformed body, not missing
// fields.
func isJSONObject(body []byte) bool {
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	return len(trimmed) > 0 && trimmed[0] == '{'
}
