// Package config is strangler's configuration: the YAML schema as Go structs,
// its defaults and validation, loading through viper, and live reload.
//
// A Config is immutable once Load returns it: derived state (parsed URLs,
// CIDRs, weights in basis points) is computed during validation and the whole
// value is swapped atomically on reload, so a request that started on one
// Config finishes on it.
package config

import (
	"fmt"
	"net/netip"
	"net/url"
	"slices"
	"time"

	"github.com/strangler-proxy/strangler/proxy/diff"
)

// Config is the whole strangler configuration (SPEC §3). Field comments are the
// user documentation; config/example.yaml shows every key.
type Config struct {
	// Listen is the client-facing address. Changing it requires a restart.
	Listen string `mapstructure:"listen" json:"listen"`
	// Admin configures the admin listener (/metrics, /healthz, /admin/*).
	Admin Admin `mapstructure:"admin" json:"admin"`
	// Upstreams are the backends by name: legacy, the side traffic moves
	// from, and the new services routes move it to (newpath, the
	// default, and any others a route names with to).
	Upstreams Upstreams `mapstructure:"upstreams" json:"upstreams"`
	// Sticky selects the request attribute that pins a user to a backend.
	Sticky Sticky `mapstructure:"sticky" json:"sticky"`
	// TrustedProxies are CIDRs (or single addresses) of proxies in front of
	// strangler whose X-Forwarded-* headers are kept and appended to.
	TrustedProxies []string `mapstructure:"trusted_proxies" json:"trusted_proxies"`
	// Overrides lets trusted clients force a backend with a header.
	Overrides Overrides `mapstructure:"overrides" json:"overrides"`
	// ClientBodyTimeout bounds the wait between two reads of a client's
	// request body, as nginx's client_body_timeout does: a client that
	// stalls mid-body is answered 408 and its connection closed.
	ClientBodyTimeout Duration `mapstructure:"client_body_timeout" json:"client_body_timeout"`
	// Shadow bounds shadow traffic across all routes.
	Shadow Shadow `mapstructure:"shadow" json:"shadow"`
	// DivergenceStore configures where divergence samples are kept.
	DivergenceStore DivergenceStore `mapstructure:"divergence_store" json:"divergence_store"`
	// Capture is where the routes' captured comparisons go.
	Capture Capture `mapstructure:"capture" json:"capture"`
	// Tracing configures OpenTelemetry export.
	Tracing Tracing `mapstructure:"tracing" json:"tracing"`
	// Log configures the JSON logger.
	Log Log `mapstructure:"log" json:"log"`
	// Routes are matched like net/http.ServeMux patterns; a request matches at
	// most one. Unmatched requests go to legacy untouched.
	Routes []Route `mapstructure:"routes" json:"routes"`

	trustedProxies []netip.Prefix
	warnings       []FieldError
}

// Warnings lists what is valid but probably not what the operator meant,
// such as a method-less route pattern that also moves writes. strangler
// check prints them; serve logs them at every load.
func (c *Config) Warnings() []FieldError { return c.warnings }

// Admin configures the admin listener.
type Admin struct {
	// Listen is the admin address. It defaults to loopback so the admin API is
	// never exposed by accident. Changing it requires a restart.
	Listen string `mapstructure:"listen" json:"listen"`
	// TokenEnv names the environment variable that holds the bearer token for
	// mutating admin calls. With the variable unset or empty, those calls
	// answer 403.
	TokenEnv string `mapstructure:"token_env" json:"token_env"`
}

// Upstreams holds the backends by name. LegacyUpstream and
// DefaultUpstream are required; any other name ([a-z0-9-]+) is one more
// new service, which routes pick with to.
type Upstreams map[string]*Upstream

// The names of the two upstreams every configuration has: legacy, and the
// new service a route without to moves its traffic to.
const (
	LegacyUpstream  = "legacy"
	DefaultUpstream = "newpath"
)

// Legacy returns the legacy upstream.
func (u Upstreams) Legacy() *Upstream { return u[LegacyUpstream] }

// Newpath returns the default new service, DefaultUpstream.
func (u Upstreams) Newpath() *Upstream { return u[DefaultUpstream] }

// NewServices returns the names of the upstreams routes may move traffic
// to, every one but legacy, sorted.
func (u Upstreams) NewServices() []string {
	names := make([]string, 0, len(u))
	for name := range u {
		if name != LegacyUpstream {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}

// Upstream is one backend.
type Upstream struct {
	// URL is the backend's base URL (http or https); its path, if any, is
	// prefixed to every request path.
	URL string `mapstructure:"url" json:"url"`
	// Timeout bounds one upstream call from dial to the end of the response
	// headers; an expired timeout answers 504.
	Timeout Duration `mapstructure:"timeout" json:"timeout"`
	// PreserveHost sends the client's Host header upstream; false sends the
	// upstream URL's host.
	PreserveHost bool `mapstructure:"preserve_host" json:"preserve_host"`

	parsed *url.URL
}

// ParsedURL returns URL parsed during validation.
func (u *Upstream) ParsedURL() *url.URL { return u.parsed }

// Sticky configures sticky bucket assignment (SPEC §4).
type Sticky struct {
	// Key is header:NAME, cookie:NAME, query:NAME, ip or none. With none, or
	// when the key is absent from a request, each request draws at random.
	Key string `mapstructure:"key" json:"key"`
	// Salt is mixed into the bucket hash; changing it reshuffles every user.
	Salt string `mapstructure:"salt" json:"salt"`

	kind StickyKind
	name string
}

// StickyKind is the source of a sticky key.
type StickyKind int

// The sticky key sources.
const (
	StickyNone StickyKind = iota
	StickyHeader
	StickyCookie
	StickyQuery
	StickyIP
)

// Source returns the parsed kind of Key and the header, cookie or query
// parameter name it names.
func (s *Sticky) Source() (StickyKind, string) { return s.kind, s.name }

// Overrides configures the backend override header.
type Overrides struct {
	// Header forces the backend ("legacy" or "newpath") when sent from a
	// client inside TrustedCIDRs. It is never forwarded upstream.
	Header string `mapstructure:"header" json:"header"`
	// TrustedCIDRs are the client networks whose override header is honoured.
	TrustedCIDRs []string `mapstructure:"trusted_cidrs" json:"trusted_cidrs"`

	trusted []netip.Prefix
}

// TrustedPrefixes returns TrustedCIDRs parsed during validation.
func (o *Overrides) TrustedPrefixes() []netip.Prefix { return o.trusted }

// Shadow bounds shadow traffic.
type Shadow struct {
	// MaxInFlight caps concurrent shadow calls; more are dropped and counted,
	// never queued.
	MaxInFlight int `mapstructure:"max_in_flight" json:"max_in_flight"`
	// MaxBodyBytes caps the request and response bodies buffered for
	// comparison; larger ones are forwarded but not compared.
	MaxBodyBytes int64 `mapstructure:"max_body_bytes" json:"max_body_bytes"`
	// Timeout bounds one shadow call, detached from the client.
	Timeout Duration `mapstructure:"timeout" json:"timeout"`
	// PipelineDepth is the most shadow calls of safe requests without a
	// body that share one upstream connection at once, pipelined; fewer
	// share it when the upstream answers slowly. 1 turns pipelining off.
	PipelineDepth int `mapstructure:"pipeline_depth" json:"pipeline_depth"`
}

// DivergenceStore configures divergence samples.
type DivergenceStore struct {
	// DatabaseURL, when set, also writes samples to Postgres.
	DatabaseURL string `mapstructure:"database_url" json:"database_url"`
	// SamplesPerRoute bounds the in-memory ring buffer of each route.
	SamplesPerRoute int `mapstructure:"samples_per_route" json:"samples_per_route"`
	// SampleBodyBytes caps each of the two response bodies a sample of
	// the ring buffer keeps for the console (0: none). Default 65536.
	SampleBodyBytes int `mapstructure:"sample_body_bytes" json:"sample_body_bytes"`
	// Retention is how long samples stay in Postgres: older ones are
	// deleted in small batches every minute. 0 keeps them forever.
	// Default: 168h (7 days).
	Retention Duration `mapstructure:"retention" json:"retention"`
	// RedactHeaders are request headers a sample or capture records as
	// "[redacted]", beside the ones it always redacts (AlwaysRedacted).
	RedactHeaders []string `mapstructure:"redact_headers" json:"redact_headers"`
	// RedactQuery are query parameters whose values a sample or capture
	// records as "[redacted]", beside AlwaysRedactedQuery.
	RedactQuery []string `mapstructure:"redact_query" json:"redact_query"`

	redacted      map[string]bool // canonical names: AlwaysRedacted and RedactHeaders
	redactedQuery map[string]bool // AlwaysRedactedQuery and RedactQuery
}

// AlwaysRedacted are the request headers no sample or capture ever keeps
// the value of: they carry credentials.
var AlwaysRedacted = []string{"Authorization", "Cookie", "Proxy-Authorization", "Set-Cookie", "X-Api-Key", "X-Auth-Token"}

// AlwaysRedactedQuery are the query parameters whose values no sample or
// capture ever keeps: the usual names of credentials in URLs.
var AlwaysRedactedQuery = []string{"access_token", "api_key", "apikey", "token", "password", "secret"}

// RedactedQuery reports whether a recorded query keeps the parameter named
// name as "[redacted]".
func (d *DivergenceStore) RedactedQuery(name string) bool {
	if d.redactedQuery == nil {
		return slices.Contains(AlwaysRedactedQuery, name)
	}
	return d.redactedQuery[name]
}

// Redacted reports whether a recorded request keeps the header named
// canonical (http.CanonicalHeaderKey) as "[redacted]".
func (d *DivergenceStore) Redacted(canonical string) bool {
	if d.redacted == nil {
		return slices.Contains(AlwaysRedacted, canonical)
	}
	return d.redacted[canonical]
}

// Capture is the sink of captured comparisons: a JSON Lines file, one
// sample (with its result) a line, rotated by size. It is opened once:
// changing it needs a restart.
type Capture struct {
	// File is the file appended to; empty: nothing is captured.
	File string `mapstructure:"file" json:"file"`
	// MaxFileBytes rotates the file once it would grow past this: File
	// becomes File.1, File.1 becomes File.2, and so on. Default 64 MiB.
	MaxFileBytes int64 `mapstructure:"max_file_bytes" json:"max_file_bytes"`
	// Keep is how many rotated files are kept. Default 3.
	Keep int `mapstructure:"keep" json:"keep"`
	// Queue bounds the captures waiting to be written; when it is full a
	// capture is dropped and counted, never waited for. Default 1024.
	Queue int `mapstructure:"queue" json:"queue"`
}

// Tracing configures OpenTelemetry.
type Tracing struct {
	// Exporter is none, otlp or stdout. OTEL_* environment variables are
	// respected by the otlp exporter.
	Exporter string `mapstructure:"exporter" json:"exporter"`
	// SampleRatio is the fraction of new traces recorded, 0..1.
	SampleRatio float64 `mapstructure:"sample_ratio" json:"sample_ratio"`
}

// Log configures logging.
type Log struct {
	// Level is debug, info, warn or error.
	Level string `mapstructure:"level" json:"level"`
	// Access writes one JSON line per request.
	Access bool `mapstructure:"access" json:"access"`
}

// Route is one migrated endpoint.
type Route struct {
	// Name labels the route in metrics and the admin API: [a-z0-9-]+, unique.
	Name string `mapstructure:"name" json:"name"`
	// Match is a net/http.ServeMux pattern such as "GET /orders/{id}".
	Match string `mapstructure:"match" json:"match"`
	// To names the new service (an upstream other than legacy) that
	// serves the route's newpath side: its weight, its shadows and its
	// comparisons. Default: newpath.
	To string `mapstructure:"to" json:"to"`
	// Weight is the percent of the route's traffic served by newpath,
	// 0..100 with at most two decimals.
	Weight float64 `mapstructure:"weight" json:"weight"`
	// Shadow selects requests whose other side is also called and compared.
	Shadow RouteShadow `mapstructure:"shadow" json:"shadow"`
	// Compare says what of the two responses is compared.
	Compare Compare `mapstructure:"compare" json:"compare"`
	// Fallback lets legacy answer a safe-method request when newpath cannot
	// (connect error, 502, 503, 504).
	Fallback bool `mapstructure:"fallback" json:"fallback"`
	// Guard rolls the route back by itself; nil means no guard.
	Guard *Guard `mapstructure:"guard" json:"guard,omitempty"`
	// Ramp raises the route's effective weight step by step up to Weight
	// while the route stays ready; nil means the weight applies at once.
	Ramp *Ramp `mapstructure:"ramp" json:"ramp,omitempty"`
	// Capture records compared requests of the route, whatever their
	// result, for an offline parity suite (strangler replay).
	Capture RouteCapture `mapstructure:"capture" json:"capture"`

	weightBasisPoints int
}

// RouteCapture selects the compared requests of a route that are captured.
type RouteCapture struct {
	// Percent of compared requests captured, 0..100 (default 0).
	Percent float64 `mapstructure:"percent" json:"percent"`
}

// WeightBasisPoints returns Weight × 100 as an integer, the unit sticky
// buckets are compared against (SPEC §4).
func (r *Route) WeightBasisPoints() int { return r.weightBasisPoints }

// RouteShadow configures shadowing for one route.
type RouteShadow struct {
	// Percent of requests whose other side is also called and compared.
	Percent float64 `mapstructure:"percent" json:"percent"`
	// DryRun shadows unsafe methods to newpath with X-Strangler-Dry-Run: 1.
	DryRun bool `mapstructure:"dry_run" json:"dry_run"`
}

// Compare configures the response comparison of one route.
type Compare struct {
	// Ignore lists schema paths never compared; * matches one segment and a
	// path covers its subtree.
	Ignore []string `mapstructure:"ignore" json:"ignore"`
	// Headers lists the response headers compared (lower case).
	Headers []string `mapstructure:"headers" json:"headers"`
	// Unordered lists array paths compared as multisets.
	Unordered []string `mapstructure:"unordered" json:"unordered"`
	// NoisePercent of compared safe requests call legacy a second time to
	// measure noise.
	NoisePercent float64 `mapstructure:"noise_percent" json:"noise_percent"`
	// Confidence is how sure a verdict must be: a field's differences
	// are real when their rate is above what noise explains at this
	// one-sided confidence, 0.5 < confidence < 1 (default 0.99).
	Confidence float64 `mapstructure:"confidence" json:"confidence"`
	// VerdictWindow is how far back verdicts look (default 0: the
	// route's guard window, else 2m), so that a fix shows as a changed
	// verdict; the lifetime counters stay in the metrics.
	VerdictWindow Duration `mapstructure:"verdict_window" json:"verdict_window"`
	// Tolerance, Time, Normalize and Mask are the rules that make two
	// values at a /body path equal when they differ only as the API
	// allows, keyed by the path (diff.ParseRules says how each reads):
	// numbers within an absolute ("0.005") or relative ("1%") tolerance,
	// instants however spelt (within a duration, "" or "0s": exactly),
	// strings up to "case" and "trim", and values that both match a
	// regular expression.
	Tolerance map[string]string   `mapstructure:"tolerance" json:"tolerance,omitempty"`
	Time      map[string]string   `mapstructure:"time" json:"time,omitempty"`
	Normalize map[string][]string `mapstructure:"normalize" json:"normalize,omitempty"`
	Mask      map[string]string   `mapstructure:"mask" json:"mask,omitempty"`

	rules []diff.Rule // the four, validated
}

// Rules returns the route's compare rules, validated and sorted by path.
func (c *Compare) Rules() []diff.Rule { return c.rules }

// Guard rolls a route back when newpath errs or diverges (SPEC §7).
type Guard struct {
	// MaxErrorRate is the share of newpath's answers (5xx or none at all)
	// above which the guard trips, 0..1.
	MaxErrorRate float64 `mapstructure:"max_error_rate" json:"max_error_rate"`
	// MaxDivergenceRate is the share of comparisons that are real
	// mismatches above which the guard trips, 0..1.
	MaxDivergenceRate float64 `mapstructure:"max_divergence_rate" json:"max_divergence_rate"`
	// MinSamples is how many newpath answers (for the error rate) or
	// comparisons (for the mismatch rate) the window needs before the guard
	// may trip.
	MinSamples int `mapstructure:"min_samples" json:"min_samples"`
	// Window is the sliding window the rates are taken over.
	Window Duration `mapstructure:"window" json:"window"`
	// Source is where the rates come from: local counts this replica's own
	// traffic; prometheus reads the sums across every replica from
	// Prometheus, so that all replicas trip together. Default: local.
	Source string `mapstructure:"source" json:"source"`
	// PrometheusURL is the Prometheus server queried when Source is
	// prometheus, such as http://prometheus:9090; a path prefixes
	// /api/v1/query, and user:password@ is sent as basic auth.
	PrometheusURL string `mapstructure:"prometheus_url" json:"prometheus_url,omitempty"`
	// PrometheusMatchers are label matchers added to every query, such as
	// job="strangler",namespace="prod", so that only this deployment's
	// replicas are summed. Empty: every series with the route's name.
	PrometheusMatchers string `mapstructure:"prometheus_matchers" json:"prometheus_matchers,omitempty"`
	// PrometheusInterval is how often Prometheus is queried; one query
	// also times out after it. Default: 5s.
	PrometheusInterval Duration `mapstructure:"prometheus_interval" json:"prometheus_interval"`

	prometheusURL *url.URL
}

// The values of Guard.Source.
const (
	GuardSourceLocal      = "local"
	GuardSourcePrometheus = "prometheus"
)

// ParsedPrometheusURL returns PrometheusURL parsed during validation, nil
// when it is empty.
func (g *Guard) ParsedPrometheusURL() *url.URL { return g.prometheusURL }

// Duration is a time.Duration written as "10s" in YAML and JSON.
type Duration time.Duration

// String formats d like time.Duration.String.
func (d Duration) String() string { return time.Duration(d).String() }

// MarshalText formats d like time.Duration.String.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// UnmarshalText parses d with time.ParseDuration.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf(`expected a duration such as "5s", got %q`, b)
	}
	*d = Duration(v)
	return nil
}

// TrustedProxyPrefixes returns TrustedProxies parsed during validation.
func (c *Config) TrustedProxyPrefixes() []netip.Prefix { return c.trustedProxies }
