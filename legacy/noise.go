package legacy

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"mime"
	"net/http"
	"strconv"
	"time"
)

// ServedAtHeader is the Date-like header WithNoise adds to every answer.
const ServedAtHeader = "X-Served-At"

// WithNoise makes h's answers carry the noise real services carry, for
// demos and tests of noise detection: every answer gets an X-Served-At
// header, and every 2xx JSON object body a "served_at" field, both the
// time of the answer with nanoseconds; GET /orders bodies also get a
// "request_ref", a random id generated per answer. No two answers agree
// on them, so a proxy's noise probes (two calls to the same side) tell
// them from real differences without an ignore rule.
//
// The body is buffered whole; WithNoise is for small JSON answers, not
// for streams.
func WithNoise(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		nw := &noiseWriter{ResponseWriter: w, status: http.StatusOK, ref: r.Method == http.MethodGet && r.URL.Path == "/orders"}
		h.ServeHTTP(nw, r)
		nw.finish()
	})
}

// noiseWriter holds the status and body back until the handler returns,
// then writes them with the noise added.
type noiseWriter struct {
	http.ResponseWriter
	status      int
	wroteHeader bool
	ref         bool // add request_ref
	body        bytes.Buffer
}

func (nw *noiseWriter) WriteHeader(status int) {
	if nw.wroteHeader || status < 200 {
		return // informational answers (103) are not the answer
	}
	nw.status, nw.wroteHeader = status, true
}

func (nw *noiseWriter) Write(p []byte) (int, error) {
	nw.wroteHeader = true
	return nw.body.Write(p)
}

func (nw *noiseWriter) finish() {
	now := time.Now().UTC().Format(time.RFC3339Nano)
	h := nw.Header()
	h.Set(ServedAtHeader, now)
	body := nw.body.Bytes()
	if nw.status/100 == 2 && len(body) > 1 && body[0] == '{' && isJSON(h.Get("Content-Type")) {
		fields := `"served_at":` + strconv.Quote(now)
		if nw.ref {
			fields += `,"request_ref":"ref_` + randomHex(6) + `"`
		}
		if rest := bytes.TrimLeft(body[1:], " \t\r\n"); len(rest) > 0 && rest[0] != '}' {
			fields += ","
		}
		body = append([]byte("{"+fields), body[1:]...)
		h.Del("Content-Length")
	}
	nw.ResponseWriter.WriteHeader(nw.status)
	// A write error means the client is gone; nobody is left to tell.
	_, _ = nw.ResponseWriter.Write(body)
}

func isJSON(contentType string) bool {
	mediaType, _, err := mime.ParseMediaType(contentType)
	return err == nil && mediaType == "application/json"
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
