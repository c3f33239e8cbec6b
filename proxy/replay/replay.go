package replay

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/strangler-proxy/strangler/config"
	"github.com/strangler-proxy/strangler/proxy"
	"github.com/strangler-proxy/strangler/proxy/diff"
)

// Outcome is what a replay says of one record, against what was recorded.
type Outcome string

const (
	Matching       Outcome = "matching"        // matched when recorded, matches now
	Fixed          Outcome = "fixed"           // diverged when recorded, matches now
	StillDiverging Outcome = "still_diverging" // diverged then, diverges now
	NewlyDiverging Outcome = "newly_diverging" // matched then, diverges now
	Error          Outcome = "error"           // could not be replayed or compared
)

// Options configure Run.
type Options struct {
	// Legacy and Newpath are the base URLs replayed to.
	Legacy, Newpath string
	// Route returns the configuration of the route named name, whose
	// compare section the replay compares by, as the proxy does
	// (proxy.NewComparer). Nil, or a nil route, compares as a route with
	// no compare section does.
	Route func(name string) *config.Route
	// MaxBodyBytes bounds what an answer may decode to (0: 1 MiB, the
	// default shadow.max_body_bytes).
	MaxBodyBytes int64
	// Noise is how many more times a safe request is sent to legacy, to
	// tell noise from real differences (0: none).
	Noise int

	// Concurrency is how many records are replayed at once (0: 8).
	Concurrency int
	// Rate bounds the records started per second (0: no bound).
	Rate float64
	// Client sends the requests (nil: one with a 10 s timeout).
	Client *http.Client
	// Progress, when set, is called after each record with the count
	// done and the total.
	Progress func(done, total int)
}

// Result is one replayed record.
type Result struct {
	Record  proxy.Sample
	Outcome Outcome
	// Fields are the real differing fields now, for the diverging outcomes.
	Fields []string
	// Err says why an Error could not be replayed.
	Err string
}

// RouteSummary counts one route's outcomes.
type RouteSummary struct {
	Route          string `json:"route"`
	Replayed       int    `json:"replayed"`
	Matching       int    `json:"matching"`
	Fixed          int    `json:"fixed"`
	StillDiverging int    `json:"still_diverging"`
	NewlyDiverging int    `json:"newly_diverging"`
	Errors         int    `json:"errors"`
	// Fields counts the records diverging now by field.
	Fields map[string]int `json:"fields,omitempty"`
	// ErrorReasons counts the errors by reason.
	ErrorReasons map[string]int `json:"error_reasons,omitempty"`
}

// Report is a replay's outcome, route by route.
type Report struct {
	Routes  []RouteSummary `json:"routes"`
	Results []Result       `json:"-"`
}

// Failed reports whether anything still or newly diverges: what makes
// strangler replay exit 1 in a newpath's CI.
func (r *Report) Failed() bool {
	for _, s := range r.Routes {
		if s.StillDiverging > 0 || s.NewlyDiverging > 0 {
			return true
		}
	}
	return false
}

// Errors counts the records that could not be replayed or compared: a
// replay with any has not checked everything it was given.
func (r *Report) Errors() int {
	n := 0
	for _, s := range r.Routes {
		n += s.Errors
	}
	return n
}

// Run replays records: a safe request to both sides (and to legacy Noise
// more times), a write to newpath only, as a dry run, compared with the
// legacy answer recorded with it; legacy never receives a replayed write.
// Differences in fields whose noise explains them (the proxy's rule over
// the replay's own probes) are not real.
func Run(ctx context.Context, records []proxy.Sample, opts Options) *Report {
	if opts.Concurrency <= 0 {
		opts.Concurrency = 8
	}
	if opts.Client == nil {
		opts.Client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: opts.Concurrency}}
	}
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = 1 << 20
	}
	r := &replayer{opts: opts, comparers: map[comparerKey]*diff.Comparer{}, results: make([]replayed, len(records))}
	// A record no worker got to (the replay was cancelled) is an error,
	// never a silent match.
	for i := range r.results {
		r.results[i].err = "not replayed: the replay was cancelled"
	}
	next := make(chan int)
	var wg sync.WaitGroup
	var done sync.Mutex
	count := 0
	for range opts.Concurrency {
		wg.Go(func() {
			for i := range next {
				r.results[i] = r.replay(ctx, &records[i])
				if opts.Progress != nil {
					done.Lock()
					count++
					opts.Progress(count, len(records))
					done.Unlock()
				}
			}
		})
	}
	var tick <-chan time.Time
	if opts.Rate > 0 {
		t := time.NewTicker(time.Duration(float64(time.Second) / opts.Rate))
		defer t.Stop()
		tick = t.C
	}
feed:
	for i := range records {
		if tick != nil {
			select {
			case <-tick:
			case <-ctx.Done():
				break feed
			}
		}
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	return r.report(records)
}

// replayer is one Run's state.
type replayer struct {
	opts      Options
	mu        sync.Mutex
	comparers map[comparerKey]*diff.Comparer
	results   []replayed
}

// comparerKey names a route's comparer, with its compared headers or
// without (for a write, whose recorded legacy answer kept no header).
type comparerKey struct {
	route   string
	headers bool
}

// replayed is a record's raw outcome, before the noise verdicts of its
// route are known.
type replayed struct {
	err    string            // why it could not be replayed; "" when it was compared
	raw    []diff.Difference // legacy against newpath
	noise  map[fieldKind]int // how many of its probes differed, by field and kind
	probes int
}

// fieldKind is what verdicts are per, as the proxy's are: a field that is
// noisy as a value is not noisy as missing.
type fieldKind struct {
	field string
	kind  diff.Kind
}

// confidence is the route's compare.confidence, 0.99 for a route the
// config does not have.
func (r *replayer) confidence(route string) float64 {
	if r.opts.Route != nil {
		if rc := r.opts.Route(route); rc != nil && rc.Compare.Confidence > 0 {
			return rc.Compare.Confidence
		}
	}
	return 0.99
}

// comparer returns the route's comparer, built once. A route the config
// does not have compares as one with no compare section.
func (r *replayer) comparer(route string, headers bool) (*diff.Comparer, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	key := comparerKey{route, headers}
	if c, ok := r.comparers[key]; ok {
		return c, nil
	}
	var rc config.Route
	if r.opts.Route != nil {
		if found := r.opts.Route(route); found != nil {
			rc = *found
		}
	}
	if rc.Name == "" {
		rc.Compare.Headers = []string{"content-type"}
	}
	if !headers {
		rc.Compare.Headers = nil
	}
	c, err := proxy.NewComparer(&rc, r.opts.MaxBodyBytes)
	if err != nil {
		return nil, fmt.Errorf("route %s: %w", route, err)
	}
	r.comparers[key] = c
	return c, nil
}

func (r *replayer) replay(ctx context.Context, s *proxy.Sample) replayed {
	if s.RequestBodyCut {
		return replayed{err: "the request body was cut when recorded (divergence_store.sample_body_bytes)"}
	}
	body := []byte(s.RequestBody)
	if s.RequestBodyBase64 {
		b, err := base64.StdEncoding.DecodeString(s.RequestBody)
		if err != nil {
			return replayed{err: "the recorded body is not base64"}
		}
		body = b
	}
	if !proxy.SafeMethod(s.Method) {
		// Never to legacy; to newpath as a dry run, against what legacy
		// answered when it was recorded.
		if !s.BodiesKept || s.BodiesCut {
			return replayed{err: "a write needs its recorded legacy answer whole (captures and the admin API keep it; Postgres does not)"}
		}
		newpath, err := r.send(ctx, r.opts.Newpath, s, body, true)
		if err != nil {
			return replayed{err: "newpath: " + err.Error()}
		}
		c, err := r.comparer(s.Route, false)
		if err != nil {
			return replayed{err: "compare: " + err.Error()}
		}
		legacy := diff.Response{Status: s.LegacyStatus, Body: []byte(s.LegacyBody)}
		raw, err := c.Compare(legacy, newpath)
		if err != nil {
			return replayed{err: "compare: " + err.Error()}
		}
		return replayed{raw: raw}
	}

	var legacy, newpath diff.Response
	var lerr, nerr error
	var wg sync.WaitGroup
	wg.Go(func() { legacy, lerr = r.send(ctx, r.opts.Legacy, s, body, false) })
	wg.Go(func() { newpath, nerr = r.send(ctx, r.opts.Newpath, s, body, false) })
	wg.Wait()
	switch {
	case lerr != nil:
		return replayed{err: "legacy: " + lerr.Error()}
	case nerr != nil:
		return replayed{err: "newpath: " + nerr.Error()}
	}
	c, err := r.comparer(s.Route, true)
	if err != nil {
		return replayed{err: "compare: " + err.Error()}
	}
	raw, err := c.Compare(legacy, newpath)
	if err != nil {
		return replayed{err: "compare: " + err.Error()}
	}
	out := replayed{raw: raw, noise: map[fieldKind]int{}}
	for range r.opts.Noise {
		again, err := r.send(ctx, r.opts.Legacy, s, body, false)
		if err != nil {
			continue // a probe is evidence, not a must
		}
		noise, err := c.Compare(legacy, again)
		if err != nil {
			continue
		}
		out.probes++
		seen := map[fieldKind]bool{}
		for _, d := range noise {
			if k := (fieldKind{d.Path, d.Kind}); !seen[k] {
				seen[k] = true
				out.noise[k]++
			}
		}
	}
	return out
}

// maxAnswer bounds an answer replay reads.
const maxAnswer = 64 << 20

// send replays s to base and reads the answer.
func (r *replayer) send(ctx context.Context, base string, s *proxy.Sample, body []byte, dryRun bool) (diff.Response, error) {
	target := strings.TrimSuffix(base, "/") + s.Path
	if s.Query != "" {
		target += "?" + s.Query
	}
	req, err := http.NewRequestWithContext(ctx, s.Method, target, bytes.NewReader(body))
	if err != nil {
		return diff.Response{}, err
	}
	for name, values := range s.RequestHeader {
		for _, v := range values {
			// A redacted credential is not sent: the replay has none.
			if v != proxy.RedactedValue {
				req.Header.Add(name, v)
			}
		}
	}
	req.Header.Set(proxy.ShadowHeader, "1")
	if dryRun {
		req.Header.Set(proxy.DryRunHeader, "1")
	}
	if s.RequestID != "" {
		req.Header.Set("X-Request-Id", s.RequestID+"-replay")
	}
	res, err := r.opts.Client.Do(req)
	if err != nil {
		return diff.Response{}, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, maxAnswer+1))
	if err != nil {
		return diff.Response{}, err
	}
	if len(b) > maxAnswer {
		return diff.Response{}, fmt.Errorf("an answer larger than %d MiB is not compared", maxAnswer>>20)
	}
	return diff.Response{Status: res.StatusCode, Header: res.Header, Body: b}, nil
}

// report judges every result with its route's noise verdicts and counts
// the outcomes by route.
func (r *replayer) report(records []proxy.Sample) *Report {
	// The proxy's verdicts (proxy.VerdictOf), per route, field and kind,
	// over the replay's comparisons and probes. Without probes every
	// difference is real; with them, one that is not shown to be noise
	// (undecided) still counts as a divergence: a gate must not pass on
	// thin evidence.
	type counts struct {
		compared, probes int64
		raw, noise       map[fieldKind]int64
	}
	byRoute := map[string]*counts{}
	for i, res := range r.results {
		c := byRoute[records[i].Route]
		if c == nil {
			c = &counts{raw: map[fieldKind]int64{}, noise: map[fieldKind]int64{}}
			byRoute[records[i].Route] = c
		}
		if res.err != "" {
			continue
		}
		c.compared++
		c.probes += int64(res.probes)
		for k, n := range res.noise {
			c.noise[k] += int64(n)
		}
		// Counted before this request's own probes mask any, as the
		// proxy counts them: masked counts would make the raw rate look
		// smaller than the noise's.
		seen := map[fieldKind]bool{}
		for _, d := range res.raw {
			if k := (fieldKind{d.Path, d.Kind}); !seen[k] {
				seen[k] = true
				c.raw[k]++
			}
		}
	}
	noisy := func(route string, k fieldKind) bool {
		c := byRoute[route]
		return proxy.VerdictOf(c.raw[k], c.compared, c.noise[k], c.probes, r.confidence(route), c.probes > 0) == proxy.VerdictNoisy
	}

	rep := &Report{Results: make([]Result, len(records))}
	summaries := map[string]*RouteSummary{}
	for i, res := range r.results {
		s := &records[i]
		sum := summaries[s.Route]
		if sum == nil {
			sum = &RouteSummary{Route: s.Route, Fields: map[string]int{}, ErrorReasons: map[string]int{}}
			summaries[s.Route] = sum
		}
		sum.Replayed++
		out := Result{Record: *s}
		if res.err != "" {
			out.Outcome, out.Err = Error, res.err
			sum.Errors++
			sum.ErrorReasons[reason(res.err)]++
			rep.Results[i] = out
			continue
		}
		// Real now: not seen by this request's own probes, nor noisy on
		// the route.
		seen := map[string]bool{}
		for _, d := range res.raw {
			k := fieldKind{d.Path, d.Kind}
			if !seen[d.Path] && res.noise[k] == 0 && !noisy(s.Route, k) {
				seen[d.Path] = true
				out.Fields = append(out.Fields, d.Path)
			}
		}
		// Undecided when recorded (skipped) counts as diverged: a gate
		// must not call it a match it never was.
		diverged := s.Result == "mismatch" || s.Result == "skipped" || s.Result == ""
		switch {
		case len(out.Fields) == 0 && diverged:
			out.Outcome = Fixed
			sum.Fixed++
		case len(out.Fields) == 0:
			out.Outcome = Matching
			sum.Matching++
		case diverged:
			out.Outcome = StillDiverging
			sum.StillDiverging++
		default:
			out.Outcome = NewlyDiverging
			sum.NewlyDiverging++
		}
		for _, f := range out.Fields {
			sum.Fields[f]++
		}
		rep.Results[i] = out
	}
	for _, name := range slices.Sorted(maps.Keys(summaries)) {
		rep.Routes = append(rep.Routes, *summaries[name])
	}
	return rep
}

// reason is an error's kind, for counting: the step that failed (the
// part before the first colon) and the last, most specific, part.
func reason(err string) string {
	step, rest, ok := strings.Cut(err, ": ")
	if !ok || strings.Contains(step, " ") {
		return err
	}
	if i := strings.LastIndex(rest, ": "); i >= 0 {
		rest = rest[i+2:]
	}
	return step + ": " + rest
}

// String is a record's one-line description, for the diverging lists.
func (res Result) String() string {
	path := res.Record.Path
	if res.Record.Query != "" {
		path += "?" + res.Record.Query
	}
	return fmt.Sprintf("%s %s %s", res.Record.Method, path, strings.Join(res.Fields, ","))
}
