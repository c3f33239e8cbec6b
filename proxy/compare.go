package proxy

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/andybalholm/brotli"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"github.com/strangler-proxy/strangler/config"
	"github.com/strangler-proxy/strangler/proxy/diff"
	"github.com/strangler-proxy/strangler/router"
)

// maxFieldLabels bounds the distinct field label values of one route
// (SPEC §6); later fields are labelled "other".
const maxFieldLabels = 200

// maxSampleDifferences bounds the differences a sample keeps.
const maxSampleDifferences = 20

// NewComparer compiles a route's compare options (strangler replay uses
// it too, to compare as the proxy does). A body is never decoded past
// maxBody (shadow.max_body_bytes): the cap on what is compared bounds what
// a compressed answer may expand to as well, so that a gzip bomb costs the
// proxy no more than any other answer it compares.
func NewComparer(rc *config.Route, maxBody int64) (*diff.Comparer, error) {
	return diff.New(diff.Options{
		Headers:         rc.Compare.Headers,
		Ignore:          rc.Compare.Ignore,
		Unordered:       rc.Compare.Unordered,
		Rules:           rc.Compare.Rules(),
		Decode:          brotliDecoder(maxBody),
		MaxDecodedBytes: maxBody,
	})
}

// brotliDecoder undoes Content-Encoding: br for the differ, which knows
// gzip and deflate from the standard library, reading at most max+1 bytes.
func brotliDecoder(max int64) func(encoding string, body []byte) ([]byte, error) {
	return func(encoding string, body []byte) ([]byte, error) {
		if encoding != "br" {
			return nil, fmt.Errorf("unsupported content encoding %q", encoding)
		}
		return io.ReadAll(io.LimitReader(brotli.NewReader(bytes.NewReader(body)), max+1))
	}
}

// compareState is a route's comparison record: result counts, per-field
// raw and noise counts with their bounded labels, and recent mismatches.
// It survives reloads with the route.
type compareState struct {
	mu       sync.Mutex
	results  [len(results)]int64
	compared int64 // comparisons that ran the differ: the raw-rate denominator
	probes   int64 // noise probes compared: the noise-rate denominator
	fields   map[string]*fieldCount
	samples  sampleRing
	// lastSample numbers the route's samples (Sample.ID).
	lastSample uint64
	// window holds the recent counts the verdicts are judged on, at
	// z (compare.confidence); fields keeps those since start, for what
	// the window cannot decide; probeNoise says the route is set to probe
	// (compare.noise_percent).
	window     verdictWindow
	z          float64
	probeNoise bool
}

// labelled is the label path's differences are counted under: the path,
// or "other" once the route's labels are used up. Unlike label, it adds
// none. c.mu is held.
func (c *compareState) labelled(path string) string {
	path = cleanText(path)
	if _, ok := c.fields[path]; ok || len(c.fields) < maxFieldLabels {
		return path
	}
	return "other"
}

// fieldCount is one field's record since start: its raw and noise
// difference counts, the same by kind, and when it first and last
// differed.
type fieldCount struct {
	raw, noise          int64
	kinds               []kindCount // in the order first seen; at most the few kinds there are
	firstSeen, lastSeen time.Time
}

// kindCount are a field's differences of one kind.
type kindCount struct {
	kind diff.Kind
	fkCount
}

// kind returns the field's count of kind, made on first use.
func (f *fieldCount) kind(kind diff.Kind) *fkCount {
	if i := f.kindIndex(kind); i >= 0 {
		return &f.kinds[i].fkCount
	}
	f.kinds = append(f.kinds, kindCount{kind: kind})
	return &f.kinds[len(f.kinds)-1].fkCount
}

// counted returns the field's count of kind, zero when it has none.
func (f *fieldCount) counted(kind diff.Kind) fkCount {
	if i := f.kindIndex(kind); i >= 0 {
		return f.kinds[i].fkCount
	}
	return fkCount{}
}

func (f *fieldCount) kindIndex(kind diff.Kind) int {
	return slices.IndexFunc(f.kinds, func(k kindCount) bool { return k.kind == kind })
}

// skip counts a request selected for shadowing whose shadow never ran.
func (br *boundRoute) skip(target router.Backend, outcome string) {
	br.metrics.shadow[target][outcomeIndex(outcome)].Inc()
	br.count(resultSkipped)
}

// count counts a comparison result.
func (br *boundRoute) count(result int) {
	br.metrics.comparisons[result].Inc()
	rt := br.rt
	rt.cmp.mu.Lock()
	rt.cmp.results[result]++
	rt.cmp.mu.Unlock()
}

// compare judges one request's two answers, records field counts and a
// sample of a mismatch, and returns the result.
func (p *Proxy) compare(job *shadowJob, shadowRes, noiseRes *captured) int {
	rt := job.route.rt
	if shadowRes.outcome == outcomeDroppedSaturated {
		return resultSkipped // a pipelined call never sent in time
	}
	if job.fellBack || shadowRes.outcome != outcomeSent {
		return resultError
	}
	if !shadowRes.complete || !job.primaryRes.complete {
		return resultSkipped // too large to compare, or the client left
	}
	legacy, newpath := &job.primaryRes, shadowRes
	if job.primary == router.Newpath {
		legacy, newpath = shadowRes, &job.primaryRes
	}
	raw, err := job.route.comparer.Compare(legacy.response(), newpath.response())
	if errors.Is(err, diff.ErrBodyTooLarge) {
		// Like a body over max_body_bytes as it arrived: not compared.
		p.logger.Debug("comparison skipped: a body decodes past shadow.max_body_bytes", "request_id", job.id.requestID, "route", rt.name)
		return resultSkipped
	}
	if err != nil {
		p.logger.Debug("compare failed", "request_id", job.id.requestID, "route", rt.name, "error", err.Error())
		return resultError
	}
	var noise []diff.Difference
	probed := noiseRes != nil && noiseRes.outcome == outcomeSent && noiseRes.complete
	if probed {
		if noise, err = job.route.comparer.Compare(legacy.response(), noiseRes.response()); err != nil {
			probed, noise = false, nil
		}
	}
	result, real := rt.judge(p.metrics, p.now(), raw, noise, probed)
	// Undecided comparisons too (result skipped): they may be the
	// diverging requests a parity suite needs most.
	captured := p.capture != nil && job.capture
	if result != resultMismatch {
		if captured {
			// With the answers' bodies: a replayed write is compared
			// with the legacy answer recorded with it.
			p.capture.add(job.sample(legacy, newpath, result, real, job.sampleBody))
		}
		return result
	}
	s := job.sample(legacy, newpath, result, real, job.sampleBody)
	if captured {
		p.capture.add(s)
	}
	rt.cmp.mu.Lock()
	rt.cmp.lastSample++
	s.ID = rt.cmp.lastSample
	rt.cmp.samples.add(s)
	rt.cmp.mu.Unlock()
	if p.divergences != nil {
		p.divergences.add(s)
	}
	fields := make([]string, len(real))
	for i, d := range real {
		fields[i] = d.Path
	}
	p.logger.Info("divergence", "request_id", job.id.requestID, "trace_id", traceIDOf(job.id.traceCtx), "route", rt.name,
		"method", s.Method, "path", s.Path, "fields", fields)
	return resultMismatch
}

// sample records job's request and its two answers, judged result with
// its real differences, keeping each body up to bodies bytes (0: none).
func (job *shadowJob) sample(legacy, newpath *captured, result int, real []diff.Difference, bodies int) Sample {
	s := Sample{
		Time:          time.Now().UTC(),
		Route:         job.route.rt.name,
		Result:        results[result],
		Method:        job.method,
		Path:          job.path,
		RequestID:     job.id.requestID,
		TraceID:       traceIDOf(job.id.traceCtx),
		LegacyStatus:  legacy.status,
		NewpathStatus: newpath.status,
		DryRun:        job.dryRun,
		RequestHeader: recordHeader(&job.out.Header, job.record),
		Query:         redactQuery(job.query, job.record),
	}
	body := job.body
	if len(body) > bodies {
		body, s.RequestBodyCut = body[:bodies], true
	}
	s.RequestBody, s.RequestBodyBase64 = recordBody(body)
	if bodies > 0 {
		var lcut, ncut bool
		s.LegacyBody, lcut = sampleBody(job.route.comparer, legacy, bodies)
		s.NewpathBody, ncut = sampleBody(job.route.comparer, newpath, bodies)
		s.BodiesCut, s.BodiesKept = lcut || ncut, true
	}
	for _, d := range real[:min(len(real), maxSampleDifferences)] {
		s.Differences = append(s.Differences, SampleDifference{
			Path: cleanText(d.Path), At: cleanText(d.At), Kind: d.Kind, Legacy: d.Legacy, Newpath: d.Newpath})
	}
	return s
}

// judge counts a comparison's raw and noise differences by field and kind,
// and returns its result with the differences that are real: not seen by
// this request's own noise probe, and in a field and kind whose verdict
// over the window is real (verdict.go). A comparison whose differences
// are not real but some still undecided cannot be judged yet (a cold
// start, thin evidence): it is skipped, rather than called a mismatch that
// could trip a guard, or noise that could hide one.
func (rt *routeRuntime) judge(m *metrics, now time.Time, raw, noise []diff.Difference, probed bool) (int, []diff.Difference) {
	c := &rt.cmp
	c.mu.Lock()
	defer c.mu.Unlock()
	c.compared++
	if probed {
		c.probes++
	}
	rawLabels, rawKeys := rt.countFields(m.fieldDifferences, raw, func(f *fieldCount, d diff.Difference, first bool) {
		if first {
			f.raw++
			if f.firstSeen.IsZero() {
				f.firstSeen = now
			}
			f.lastSeen = now
		}
	})
	_, noiseKeys := rt.countFields(m.noiseDifferences, noise, func(f *fieldCount, _ diff.Difference, first bool) {
		if first {
			f.noise++
		}
	})
	c.window.add(now, probed, rawKeys, noiseKeys)
	for k := range rawKeys {
		c.fields[k.field].kind(k.kind).raw++
	}
	for k := range noiseKeys {
		c.fields[k.field].kind(k.kind).noise++
	}
	if len(raw) == 0 {
		return resultMatch, nil
	}
	var real []diff.Difference
	undecided := false
	for i, d := range raw {
		k := fieldKind{rawLabels[i], d.Kind}
		if noiseKeys[k] {
			continue // this very request's legacy answers differed there
		}
		switch c.verdict(k) {
		case VerdictReal:
			real = append(real, d)
		case VerdictUndecided:
			undecided = true
		}
	}
	switch {
	case len(real) > 0:
		return resultMismatch, real
	case undecided:
		return resultSkipped, nil
	}
	return resultNoise, nil
}

// countFields counts each distinct (field, kind) of diffs once in vec, and
// hands each difference to seen with its field's count, first telling
// whether it is the field's first in diffs. It returns the label of each
// difference and the set of fields and kinds. c.mu is held.
func (rt *routeRuntime) countFields(vec *prometheus.CounterVec, diffs []diff.Difference, seen func(f *fieldCount, d diff.Difference, first bool)) ([]string, map[fieldKind]bool) {
	if len(diffs) == 0 {
		return nil, nil
	}
	c := &rt.cmp
	labels := make([]string, len(diffs))
	fields := make(map[string]bool, len(diffs))
	kinds := make(map[fieldKind]bool, len(diffs))
	for i, d := range diffs {
		label := c.label(d.Path)
		labels[i] = label
		seen(c.fields[label], d, !fields[label])
		fields[label] = true
		if k := (fieldKind{label, d.Kind}); !kinds[k] {
			kinds[k] = true
			if !rt.removed.Load() {
				vec.WithLabelValues(rt.name, label, string(d.Kind)).Inc()
			}
		}
	}
	return labels, kinds
}

// label returns the metric label of a schema path: the path itself for the
// first maxFieldLabels distinct paths of the route, "other" after. c.mu is
// held.
func (c *compareState) label(path string) string {
	// A key in a legacy body may be Latin-1: a label must be UTF-8.
	path = cleanText(path)
	if _, ok := c.fields[path]; ok {
		return path
	}
	if c.fields == nil {
		c.fields = map[string]*fieldCount{}
	}
	if len(c.fields) >= maxFieldLabels {
		path = "other"
	}
	if _, ok := c.fields[path]; !ok {
		c.fields[path] = &fieldCount{}
	}
	return path
}

// cleanText makes s valid UTF-8 without NUL bytes, as metric labels and
// Postgres text require: a response may carry anything in its keys.
func cleanText(s string) string {
	if utf8.ValidString(s) && !strings.ContainsRune(s, 0) {
		return s
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}

// sampleBody returns c's body, decoded, as text of at most max bytes, and
// whether it was cut. A body that cannot be decoded is shown as such.
func sampleBody(cmp *diff.Comparer, c *captured, max int) (string, bool) {
	body, err := cmp.Decode(c.header, c.body.Bytes())
	if err != nil {
		return fmt.Sprintf("[%d bytes that could not be decoded: %v]", c.body.Len(), err), false
	}
	cut := len(body) > max
	if cut {
		body = body[:max]
	}
	return cleanText(string(body)), cut
}

// Sample is one mismatch kept for engineers (SPEC §6).
type Sample struct {
	// ID numbers the route's samples from 1, in the order they were
	// kept: the console links to a sample by it, as request ids come
	// from clients and need not be unique.
	ID    uint64    `json:"id"`
	Time  time.Time `json:"time"`
	Route string    `json:"route"`
	// Result is the comparison's: mismatch for a sample, any of match,
	// noise, mismatch and skipped (its differences still undecided) for
	// a capture.
	Result        string             `json:"result"`
	Method        string             `json:"method"`
	Path          string             `json:"path"`
	Query         string             `json:"query,omitempty"` // raw, without "?"
	RequestID     string             `json:"request_id"`
	TraceID       string             `json:"trace_id,omitempty"`
	LegacyStatus  int                `json:"legacy_status"`
	NewpathStatus int                `json:"newpath_status"`
	Differences   []SampleDifference `json:"differences"`
	// LegacyBody and NewpathBody are the two answers' bodies as text, their
	// Content-Encoding undone, each cut to
	// divergence_store.sample_body_bytes (BodiesCut says one was). They
	// stay in memory, for the console and the admin API; Postgres keeps
	// the differences.
	LegacyBody  string `json:"legacy_body,omitempty"`
	NewpathBody string `json:"newpath_body,omitempty"`
	BodiesCut   bool   `json:"bodies_cut,omitempty"`
	// BodiesKept says the answers' bodies were kept, so that an empty
	// one is known to have been empty.
	BodiesKept bool `json:"bodies_kept,omitempty"`
	// The request, as strangler sent it to both sides, for strangler
	// replay: its header fields (recordHeader says which; credentials
	// are "[redacted]"), its body (base64 when it is not UTF-8), and
	// whether it was a write shadowed to newpath as a dry run.
	// The body is cut to divergence_store.sample_body_bytes, as the
	// answers' are (RequestBodyCut says so; replay refuses such a one).
	RequestHeader     map[string][]string `json:"request_header,omitempty"`
	RequestBody       string              `json:"request_body,omitempty"`
	RequestBodyBase64 bool                `json:"request_body_base64,omitempty"`
	RequestBodyCut    bool                `json:"request_body_cut,omitempty"`
	DryRun            bool                `json:"dry_run,omitempty"`
}

// RedactedValue replaces a recorded credential's value.
const RedactedValue = "[redacted]"

// recordHeader is the header of a recorded request: what strangler sent
// upstream but the fields a replay sets anew (the shadow and dry-run
// marks, forwarding headers, trace context, Host, Content-Length), with
// the values of the fields record redacts replaced.
func recordHeader(h *fasthttp.RequestHeader, record *config.DivergenceStore) map[string][]string {
	out := map[string][]string{}
	for k, v := range h.All() {
		name := http.CanonicalHeaderKey(string(k))
		switch {
		case notRecorded[name] || strings.HasPrefix(name, "X-Forwarded-"):
			continue
		case record != nil && record.Redacted(name):
			out[name] = append(out[name], RedactedValue)
		default:
			// Postgres text and jsonb hold no NUL; fasthttp refuses one
			// in a header anyway.
			out[name] = append(out[name], cleanText(string(v)))
		}
	}
	return out
}

// redactQuery is a recorded request's raw query with the values of the
// parameters record redacts replaced, the rest byte for byte.
func redactQuery(query string, record *config.DivergenceStore) string {
	if query == "" || record == nil {
		return query
	}
	parts := strings.Split(query, "&")
	for i, part := range parts {
		name, _, hasValue := strings.Cut(part, "=")
		if unescaped, err := url.QueryUnescape(name); err == nil && hasValue && record.RedactedQuery(unescaped) {
			parts[i] = name + "=" + url.QueryEscape(RedactedValue)
		}
	}
	return strings.Join(parts, "&")
}

// notRecorded are the request header fields a replay sets itself.
var notRecorded = map[string]bool{
	"Host": true, "Content-Length": true, "Transfer-Encoding": true, "Forwarded": true, "X-Real-Ip": true,
	"Traceparent": true, "Tracestate": true, http.CanonicalHeaderKey(ShadowHeader): true,
	http.CanonicalHeaderKey(DryRunHeader): true, http.CanonicalHeaderKey(headerRequestID): true,
}

// recordBody is a recorded request's body as text, base64 when it is not
// UTF-8 or holds a NUL (which Postgres text cannot).
func recordBody(body []byte) (string, bool) {
	if utf8.Valid(body) && bytes.IndexByte(body, 0) < 0 {
		return string(body), false
	}
	return base64.StdEncoding.EncodeToString(body), true
}

// SampleDifference is one differing field of a sample, values cut to 256
// bytes.
type SampleDifference struct {
	Path    string    `json:"field"`
	At      string    `json:"at"`
	Kind    diff.Kind `json:"kind"`
	Legacy  string    `json:"legacy"`
	Newpath string    `json:"newpath"`
}

// sampleRing keeps the newest samples of a route.
type sampleRing struct {
	buf  []Sample
	next int
	n    int
}

func (r *sampleRing) resize(capacity int) {
	if capacity == len(r.buf) {
		return
	}
	old := r.newest(r.n)
	r.buf, r.next, r.n = make([]Sample, capacity), 0, 0
	for i := len(old) - 1; i >= 0; i-- {
		r.add(old[i])
	}
}

func (r *sampleRing) add(s Sample) {
	if len(r.buf) == 0 {
		return
	}
	r.buf[r.next] = s
	r.next = (r.next + 1) % len(r.buf)
	if r.n < len(r.buf) {
		r.n++
	}
}

// newest returns up to limit samples, newest first.
func (r *sampleRing) newest(limit int) []Sample {
	if limit > r.n {
		limit = r.n
	}
	out := make([]Sample, 0, limit)
	for i := 0; i < limit; i++ {
		out = append(out, r.buf[(r.next-1-i+2*len(r.buf))%len(r.buf)])
	}
	return out
}

// FieldVerdict is one field of a route in /admin/routes.
type FieldVerdict struct {
	Field string `json:"field"`
	// Raw and Noise are its differences since start (lifetime, as the
	// metrics count them).
	Raw   int64 `json:"raw_differences"`
	Noise int64 `json:"noise_differences"`
	// RawRate and NoiseRate are over the verdict window: the highest of
	// its kinds' shares of comparisons, and of noise probes (each may be
	// another kind's).
	RawRate   float64 `json:"raw_rate"`
	NoiseRate float64 `json:"noise_rate"`
	// Verdict is the field's over the window: the gravest of its kinds'
	// (real, undecided, noisy, match); Verdicts is each kind's.
	Verdict  string               `json:"verdict"`
	Verdicts map[diff.Kind]string `json:"verdicts,omitempty"`
	Kinds    []diff.Kind          `json:"kinds,omitempty"` // of its raw differences, since start
	// FirstSeen and LastSeen are its first and last raw difference; a
	// field that only differed between two legacy answers has neither.
	FirstSeen *time.Time `json:"first_seen,omitempty"`
	LastSeen  *time.Time `json:"last_seen,omitempty"`
}

// ComparisonCounts are a route's comparison results.
type ComparisonCounts struct {
	Match       int64 `json:"match"`
	Mismatch    int64 `json:"mismatch"`
	Noise       int64 `json:"noise"`
	Error       int64 `json:"error"`
	Skipped     int64 `json:"skipped"`
	NoiseProbes int64 `json:"noise_probes"`
}

// report returns the route's comparison counts and field verdicts, the
// fields with the most raw differences first.
func (c *compareState) report(now time.Time) (ComparisonCounts, []FieldVerdict) {
	c.mu.Lock()
	defer c.mu.Unlock()
	counts := ComparisonCounts{
		Match: c.results[resultMatch], Mismatch: c.results[resultMismatch], Noise: c.results[resultNoise],
		Error: c.results[resultError], Skipped: c.results[resultSkipped], NoiseProbes: c.probes,
	}
	c.window.expire(now)
	byField := map[string]*FieldVerdict{}
	verdicts := make([]FieldVerdict, 0, len(c.fields))
	for name, f := range c.fields {
		v := FieldVerdict{Field: name, Raw: f.raw, Noise: f.noise, Verdict: VerdictMatch.String()}
		for _, k := range f.kinds {
			if k.raw > 0 {
				v.Kinds = append(v.Kinds, k.kind)
			}
		}
		if !f.firstSeen.IsZero() {
			first, last := f.firstSeen, f.lastSeen
			v.FirstSeen, v.LastSeen = &first, &last
		}
		verdicts = append(verdicts, v)
	}
	for i := range verdicts {
		byField[verdicts[i].Field] = &verdicts[i]
	}
	w := &c.window
	for k, n := range w.totals.counts {
		v := byField[k.field]
		if v == nil {
			continue
		}
		verdict := c.verdict(k)
		if v.Verdicts == nil {
			v.Verdicts = map[diff.Kind]string{}
		}
		v.Verdicts[k.kind] = verdict.String()
		if verdict > verdictNamed(v.Verdict) {
			v.Verdict = verdict.String()
		}
		if w.totals.compared > 0 {
			v.RawRate = max(v.RawRate, float64(n.raw)/float64(w.totals.compared))
		}
		if w.totals.probes > 0 {
			v.NoiseRate = max(v.NoiseRate, float64(n.noise)/float64(w.totals.probes))
		}
	}
	sort.Slice(verdicts, func(i, j int) bool {
		if verdicts[i].Raw != verdicts[j].Raw {
			return verdicts[i].Raw > verdicts[j].Raw
		}
		return verdicts[i].Field < verdicts[j].Field
	})
	return counts, verdicts
}
