package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/strangler-proxy/strangler/config"
	"github.com/strangler-proxy/strangler/router"
)

// A guard whose source is prometheus judges its route on the sums of every
// replica's counters, read from Prometheus' HTTP API, so that the replicas
// trip together even when none of them alone sees min_samples. Each replica
// asks on its own: they share the evidence, not a coordinator.

// promGuardIdle bounds Run's sleep, so a prometheus guard added by a reload
// is first judged within it.
const promGuardIdle = time.Second

// promGuardWarnEvery rate-limits the warning about a route's failing
// queries: a Prometheus outage must not flood the log at every interval.
const promGuardWarnEvery = time.Minute

// promMaxResponse bounds the answer read from Prometheus; the guard query
// answers four samples.
const promMaxResponse = 1 << 20

// errNoPrometheusSeries is a query that found none of the route's newpath
// answers over a whole window: the guard could never trip, which is worth
// a warning.
var errNoPrometheusSeries = errors.New("prometheus has no strangler_upstream_request_duration_seconds_count series of the route over the window: " +
	"check prometheus_matchers, and that prometheus scrapes every replica more than once a window")

// runPrometheusGuards judges each route whose guard source is prometheus
// every guard.prometheus_interval until ctx is done, then returns once its
// queries in flight have. Run owns it. Without such a route it only wakes
// once a second to notice one added by a reload.
func (p *Proxy) runPrometheusGuards(ctx context.Context) {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	defer transport.CloseIdleConnections()
	client := &http.Client{Transport: transport}
	schedules := map[string]*promSchedule{}
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		timer.Reset(p.checkPrometheusGuards(ctx, client, schedules))
	}
}

// promSchedule is runPrometheusGuards' record of one route. Its goroutine
// owns it; during a round, only that route's query touches it.
type promSchedule struct {
	since      time.Time // when the route was first seen
	due        time.Time
	lastWarn   time.Time
	warned     bool // a warning was logged since the queries last worked
	suppressed int  // failures not logged since lastWarn
}

// checkPrometheusGuards runs one round: the query of every armed
// prometheus guard that is due, concurrently, so a slow Prometheus delays
// no other route by more than its own interval. It returns how long to
// sleep until the next is due.
func (p *Proxy) checkPrometheusGuards(ctx context.Context, client *http.Client, schedules map[string]*promSchedule) time.Duration {
	now := time.Now()
	next := now.Add(promGuardIdle)
	live := map[string]bool{}
	var wg sync.WaitGroup
	for _, br := range p.state.Load().routes {
		g := br.cfg.Guard
		if g == nil || g.Source != config.GuardSourcePrometheus {
			continue
		}
		name := br.rt.name
		live[name] = true
		s := schedules[name]
		if s == nil {
			s = &promSchedule{since: now}
			schedules[name] = s
		}
		if now.Before(s.due) {
			next = earliest(next, s.due)
			continue
		}
		s.due = now.Add(time.Duration(g.PrometheusInterval))
		next = earliest(next, s.due)
		if br.rt.guard.tripped.Load() {
			continue // nothing to judge until re-armed
		}
		wg.Go(func() {
			err := p.checkPrometheusGuard(ctx, client, br)
			if errors.Is(err, errNoPrometheusSeries) && time.Since(s.since) < time.Duration(g.Window) {
				// A new deployment, or a route new to it, has no series
				// until Prometheus scraped it twice: not worth a warning yet.
				err = nil
			}
			s.report(p.logger, name, err)
		})
	}
	wg.Wait()
	for name := range schedules {
		if !live[name] {
			delete(schedules, name)
		}
	}
	return time.Until(next)
}

func earliest(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// report logs a failed query at warn level, at most once per
// promGuardWarnEvery with the count of those it left out, and the recovery
// after a logged failure at info level.
func (s *promSchedule) report(logger *slog.Logger, route string, err error) {
	now := time.Now()
	switch {
	case err == nil:
		if s.warned {
			logger.Info("guard reads prometheus again", "route", route)
			s.warned = false
		}
	case !s.lastWarn.IsZero() && now.Sub(s.lastWarn) < promGuardWarnEvery:
		s.suppressed++
	default:
		logger.Warn("guard cannot read prometheus; it will not trip until it can", "route", route,
			"error", config.Redact(err.Error()), "suppressed", s.suppressed)
		s.lastWarn, s.warned, s.suppressed = now, true, 0
	}
}

// checkPrometheusGuard queries the route's evidence across replicas and
// trips its guard when the evidence breaks the guard rule. A failed query,
// or one without enough evidence, never trips. After a re-arm it asks only
// about the time since, as the local window starts empty.
func (p *Proxy) checkPrometheusGuard(ctx context.Context, client *http.Client, br *boundRoute) error {
	g := br.cfg.Guard
	rearms, since := br.rt.guard.evidenceSince()
	now := p.now()
	span := time.Duration(g.Window)
	if !since.IsZero() && now.Sub(since) < span {
		span = now.Sub(since)
	}
	if span < time.Millisecond {
		return nil
	}
	timeout := time.Duration(g.PrometheusInterval)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	signals, err := queryPrometheus(ctx, client, g.ParsedPrometheusURL(), guardQuery(br.rt.name, g.PrometheusMatchers, span), timeout)
	if err != nil {
		return err
	}
	if _, ok := signals["calls"]; !ok && span == time.Duration(g.Window) {
		return errNoPrometheusSeries
	}
	e := guardEvidence{calls: signals["calls"], errors: signals["errors"], compared: signals["compared"], mismatches: signals["mismatches"]}
	if reason, detail := tripReason(g, e); reason != "" {
		p.trip(br, now, rearms, config.GuardSourcePrometheus, reason, detail+" across replicas")
	}
	return nil
}

// guardQuery is the PromQL of a route's guard evidence over span: one
// instant query answering a sample per signal (calls, errors, compared,
// mismatches), each summed across the replicas matchers select. The counts
// are the local window's, from the metrics of SPEC §8:
//
//   - calls: newpath's upstream answers, as primary or shadow;
//   - errors: those of newpath's calls, in every role, that failed
//     (strangler_upstream_errors_total): unanswered, 5xx, broken off;
//   - compared and mismatches: comparisons that ran, and the real mismatches.
//
// A missing term of errors counts 0; a missing calls or compared means no
// evidence, which never trips.
func guardQuery(route, matchers string, span time.Duration) string {
	q := newEvidenceQuery(route, matchers, span)
	return strings.Join([]string{
		signal("calls", q.increase("strangler_upstream_request_duration_seconds_count", `,backend="newpath"`)),
		signal("errors", q.errors(router.Newpath)),
		signal("compared", q.increase("strangler_comparisons_total", `,result=~"match|mismatch|noise"`)),
		signal("mismatches", q.increase("strangler_comparisons_total", `,result="mismatch"`)),
	}, " or ")
}

// evidenceQuery writes the PromQL terms of a route's evidence over a
// span, each summed across the replicas its matchers select: the guard's
// query and the ramps' readiness query are made of them.
type evidenceQuery struct {
	labels string // the route's matchers, and the guard's
	rng    string // the span, as a range
}

func newEvidenceQuery(route, matchers string, span time.Duration) evidenceQuery {
	labels := fmt.Sprintf("route=%q", route)
	if m := strings.TrimRight(strings.TrimSpace(matchers), ", \t"); m != "" {
		labels += "," + m
	}
	return evidenceQuery{labels: labels, rng: strconv.FormatInt(span.Milliseconds(), 10) + "ms"}
}

// increase is metric's increase over the span, summed; match adds
// matchers (",name=value").
func (q evidenceQuery) increase(metric, match string) string {
	return "sum(increase(" + metric + "{" + q.labels + match + "}[" + q.rng + "]))"
}

// errors is b's failed calls as the local window counts them, whatever
// their role: unanswered, 5xx (a shadow's too) or broken off. A missing
// term counts 0.
func (q evidenceQuery) errors(b router.Backend) string {
	return orZero(q.increase("strangler_upstream_errors_total", `,backend="`+b.String()+`"`))
}

func orZero(q string) string { return "(" + q + " or vector(0))" }

// signal labels q's sample with the signal it answers.
func signal(name, q string) string {
	return `label_replace(` + q + `, "signal", "` + name + `", "", "")`
}

// promResponse is the envelope of Prometheus' HTTP API.
type promResponse struct {
	Status    string `json:"status"`
	ErrorType string `json:"errorType"`
	Error     string `json:"error"`
	Data      struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"` // its shape depends on ResultType
	} `json:"data"`
}

// promSample is one sample of a vector result.
type promSample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"` // [unix seconds, "value"]
}

// queryPrometheus runs an instant query through Prometheus' HTTP API at
// base and returns each sample's value by its signal label. NaN and
// infinite values are left out: they are no evidence.
func queryPrometheus(ctx context.Context, client *http.Client, base *url.URL, query string, timeout time.Duration) (map[string]float64, error) {
	return queryPrometheusWith(ctx, client, base, url.Values{"query": {query}}, timeout)
}

// queryPrometheusWith is queryPrometheus with the query's form values
// given (query, and time for an instant other than now).
func queryPrometheusWith(ctx context.Context, client *http.Client, base *url.URL, form url.Values, timeout time.Duration) (map[string]float64, error) {
	if base == nil {
		return nil, errors.New("query prometheus: no prometheus_url")
	}
	endpoint := base.JoinPath("api/v1/query")
	form.Set("timeout", strconv.FormatFloat(timeout.Seconds(), 'f', -1, 64))
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint.String(), strings.NewReader(form.Encode()))
	if err != nil {
		return nil, fmt.Errorf("query prometheus: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	res, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("query prometheus: %w", err) // the client redacts a password
	}
	defer res.Body.Close()
	var body promResponse
	if err := json.NewDecoder(io.LimitReader(res.Body, promMaxResponse)).Decode(&body); err != nil {
		return nil, fmt.Errorf("query prometheus at %s: %s, not the API's JSON: %w", endpoint.Redacted(), res.Status, err)
	}
	if body.Status != "success" {
		return nil, fmt.Errorf("query prometheus at %s: %s: %s: %s", endpoint.Redacted(), res.Status, body.ErrorType, body.Error)
	}
	if body.Data.ResultType != "vector" {
		return nil, fmt.Errorf("query prometheus at %s: a %q result, want a vector", endpoint.Redacted(), body.Data.ResultType)
	}
	var vector []promSample
	if err := json.Unmarshal(body.Data.Result, &vector); err != nil {
		return nil, fmt.Errorf("query prometheus at %s: a vector that is not one: %w", endpoint.Redacted(), err)
	}
	out := make(map[string]float64, len(vector))
	for _, s := range vector {
		text, ok := s.Value[1].(string)
		if !ok {
			return nil, fmt.Errorf("query prometheus at %s: sample value %v is not a string", endpoint.Redacted(), s.Value[1])
		}
		v, err := strconv.ParseFloat(text, 64)
		if err != nil {
			return nil, fmt.Errorf("query prometheus at %s: sample value %q: %w", endpoint.Redacted(), text, err)
		}
		if math.IsNaN(v) || math.IsInf(v, 0) {
			continue
		}
		out[s.Metric["signal"]] = v
	}
	return out, nil
}
