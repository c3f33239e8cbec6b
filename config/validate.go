package config

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/strangler-proxy/strangler/proxy/diff"
)

// FieldError is one problem with one key of the file.
type FieldError struct {
	// Path names the key: listen, upstreams.legacy.url, routes[1].weight.
	Path    string
	Problem string
}

func (e FieldError) Error() string { return e.Path + ": " + e.Problem }

// ValidationError lists every problem of a file, so an operator fixes them
// in one pass (like nginx -t).
type ValidationError struct {
	Errors []FieldError
}

func (e *ValidationError) Error() string {
	lines := make([]string, len(e.Errors))
	for i, fe := range e.Errors {
		lines[i] = fe.Error()
	}
	return strings.Join(lines, "\n")
}

var (
	routeNameRE = regexp.MustCompile(`^[a-z0-9-]+$`)
	envNameRE   = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	// labelMatchersRE is a comma-separated list of PromQL label matchers,
	// the inside of {...}: name, operator, double-quoted value.
	labelMatchersRE = regexp.MustCompile(`^\s*` + labelMatcher + `(\s*,\s*` + labelMatcher + `)*\s*,?\s*$`)
	routeMatcherRE  = regexp.MustCompile(`(^|,)\s*route\s*(=|!=|=~|!~)`)
	// registeredAtRE strips the source locations ServeMux puts in its
	// messages: they point into strangler, not into the operator's file.
	registeredAtRE = regexp.MustCompile(` \(registered at [^)]*\)`)
)

// maxPipelineDepth bounds shadow.pipeline_depth: deeper pipelines save
// no more system calls, and hold more calls behind a slow one.
const maxPipelineDepth = 64

// maxSamplesPerRoute and maxCaptureQueue bound what the proxy allocates
// whole for divergence_store.samples_per_route and capture.queue: far
// above any use (a sample is a few KiB), far below a typo's terabytes.
const (
	maxSamplesPerRoute = 100_000
	maxCaptureQueue    = 1 << 20
)

const labelMatcher = `[a-zA-Z_][a-zA-Z0-9_]*\s*(=~|!~|!=|=)\s*"([^"\\]|\\.)*"`

// labelMatcherPartsRE splits one label matcher into its operator and its
// quoted value.
var labelMatcherPartsRE = regexp.MustCompile(`[a-zA-Z_][a-zA-Z0-9_]*\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*")`)

// validate checks every key and builds the derived state. It reports all
// problems rather than stopping at the first.
func (c *Config) validate() []FieldError {
	var errs []FieldError
	add := func(path, format string, args ...any) {
		errs = append(errs, FieldError{Path: path, Problem: fmt.Sprintf(format, args...)})
	}

	checkHostPort(add, "listen", c.Listen)
	checkHostPort(add, "admin.listen", c.Admin.Listen)
	if sameListener(c.Listen, c.Admin.Listen) {
		add("admin.listen", "%q is the address of listen too; the two listeners need addresses of their own", c.Admin.Listen)
	}
	if c.Admin.TokenEnv != "" && !envNameRE.MatchString(c.Admin.TokenEnv) {
		add("admin.token_env", "%q is not an environment variable name", c.Admin.TokenEnv)
	}

	c.checkUpstreams(add)

	c.Sticky.kind, c.Sticky.name = parseSticky(add, c.Sticky.Key)

	c.trustedProxies = parsePrefixes(add, "trusted_proxies", c.TrustedProxies)
	if !validHeaderName(c.Overrides.Header) {
		add("overrides.header", "%q is not a valid header name", c.Overrides.Header)
	}
	c.Overrides.trusted = parsePrefixes(add, "overrides.trusted_cidrs", c.Overrides.TrustedCIDRs)

	if c.ClientBodyTimeout <= 0 {
		add("client_body_timeout", "must be positive")
	}
	if c.Shadow.MaxInFlight < 0 {
		add("shadow.max_in_flight", "must be 0 or more, got %d", c.Shadow.MaxInFlight)
	}
	if c.Shadow.MaxBodyBytes < 0 {
		add("shadow.max_body_bytes", "must be 0 or more, got %d", c.Shadow.MaxBodyBytes)
	}
	if c.Shadow.Timeout <= 0 {
		add("shadow.timeout", "must be positive")
	}
	if d := c.Shadow.PipelineDepth; d < 1 || d > maxPipelineDepth {
		add("shadow.pipeline_depth", "must be 1 (no pipelining) to %d, got %d", maxPipelineDepth, d)
	}

	if u := c.DivergenceStore.DatabaseURL; u != "" {
		p, err := url.Parse(u)
		if err != nil || (p.Scheme != "postgres" && p.Scheme != "postgresql") {
			add("divergence_store.database_url", "must be a postgres:// URL")
		}
	}
	if c.DivergenceStore.Retention < 0 {
		add("divergence_store.retention", "must be 0 (keep forever) or more")
	}
	// Upper bounds on what is allocated whole when the config is put in
	// force: a typo must be refused, not run the proxy out of memory in
	// the middle of a reload.
	if n := c.DivergenceStore.SamplesPerRoute; n < 1 || n > maxSamplesPerRoute {
		add("divergence_store.samples_per_route", "must be 1 to %d, got %d", maxSamplesPerRoute, n)
	}
	d := &c.DivergenceStore
	d.redacted = redactSet(AlwaysRedacted, d.RedactHeaders, func(i int, h string) (string, bool) {
		if !validHeaderName(h) {
			add(fmt.Sprintf("divergence_store.redact_headers[%d]", i), "%q is not a valid header name", h)
			return "", false
		}
		return http.CanonicalHeaderKey(h), true
	})
	d.redactedQuery = redactSet(AlwaysRedactedQuery, d.RedactQuery, func(i int, q string) (string, bool) {
		if q == "" {
			add(fmt.Sprintf("divergence_store.redact_query[%d]", i), "empty parameter name")
		}
		return q, q != ""
	})
	if c.Capture.MaxFileBytes < 4096 {
		add("capture.max_file_bytes", "must be at least 4096, got %d", c.Capture.MaxFileBytes)
	}
	if c.Capture.Keep < 0 {
		add("capture.keep", "must be 0 or more, got %d", c.Capture.Keep)
	}
	if n := c.Capture.Queue; n < 1 || n > maxCaptureQueue {
		add("capture.queue", "must be 1 to %d, got %d", maxCaptureQueue, n)
	}
	if n := c.DivergenceStore.SampleBodyBytes; n < 0 || n > 16<<20 {
		add("divergence_store.sample_body_bytes", "must be 0 (keep no bodies) to 16777216 (16 MiB), got %d", n)
	}

	switch c.Tracing.Exporter {
	case "none", "otlp", "stdout":
	default:
		add("tracing.exporter", "must be none, otlp or stdout, got %q", c.Tracing.Exporter)
	}
	// NaN too: NaN != NaN would read as a tracing change on every reload.
	checkRatio(add, "tracing.sample_ratio", c.Tracing.SampleRatio)
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		add("log.level", "must be debug, info, warn or error, got %q", c.Log.Level)
	}

	c.validateRoutes(add)
	c.warnUnusedUpstreams()
	return errs
}

// checkUpstreams checks every upstream, legacy and newpath first: they are
// required, and named in the errors even when the file leaves them out.
func (c *Config) checkUpstreams(add func(path, format string, args ...any)) {
	if c.Upstreams == nil {
		c.Upstreams = Upstreams{}
	}
	for _, name := range []string{LegacyUpstream, DefaultUpstream} {
		if c.Upstreams[name] == nil {
			// Its entry did not decode (the decoder said why), or the file
			// set it to null.
			add("upstreams."+name, "must be a mapping with a url")
			// An empty one, so that what reads the config need not check.
			c.Upstreams[name] = &Upstream{}
			continue
		}
		checkUpstream(add, "upstreams."+name, c.Upstreams[name])
	}
	for _, name := range c.Upstreams.NewServices() {
		if name == DefaultUpstream {
			continue
		}
		p := "upstreams." + name
		if !routeNameRE.MatchString(name) {
			add(p, "upstream name %q must match [a-z0-9-]+", name)
		}
		if c.Upstreams[name] == nil {
			add(p, "must be a mapping with a url")
			c.Upstreams[name] = &Upstream{}
			continue
		}
		checkUpstream(add, p, c.Upstreams[name])
	}
}

// checkRouteUpstream checks the new service a route moves its traffic to.
func (c *Config) checkRouteUpstream(add func(path, format string, args ...any), path string, r *Route) {
	switch {
	case r.To == LegacyUpstream:
		add(path, "legacy is the side traffic moves from; name the new service that serves the route (have: %s)",
			strings.Join(c.Upstreams.NewServices(), ", "))
	case c.Upstreams[r.To] == nil:
		add(path, "unknown upstream %q (have: %s)", r.To, strings.Join(c.Upstreams.NewServices(), ", "))
	}
}

// warnUnusedUpstreams warns of a named new service no route moves traffic
// to: valid (it may be about to be used), but often a typo on either side.
// newpath is left out: it is required whether or not a route uses it.
func (c *Config) warnUnusedUpstreams() {
	used := map[string]bool{}
	for i := range c.Routes {
		used[c.Routes[i].To] = true
	}
	for _, name := range c.Upstreams.NewServices() {
		if name != DefaultUpstream && !used[name] {
			c.warnings = append(c.warnings, FieldError{Path: "upstreams." + name,
				Problem: fmt.Sprintf("no route sends traffic to it (to: %s)", name)})
		}
	}
}

func (c *Config) validateRoutes(add func(path, format string, args ...any)) {
	names := map[string]int{}
	// A throwaway ServeMux is the definition of pattern syntax and of a
	// conflict: it panics on either, naming both patterns.
	mux := http.NewServeMux()
	for i := range c.Routes {
		r := &c.Routes[i]
		p := fmt.Sprintf("routes[%d]", i)
		switch {
		case r.Name == "":
			add(p+".name", "required")
		case !routeNameRE.MatchString(r.Name):
			add(p+".name", "%q must match [a-z0-9-]+", r.Name)
		case r.Name == "unmatched":
			add(p+".name", `"unmatched" is reserved for requests no route matches`)
		default:
			if j, dup := names[r.Name]; dup {
				add(p+".name", "duplicate route name %q (also routes[%d])", r.Name, j)
			}
			names[r.Name] = i
		}
		switch {
		case r.Match == "":
			add(p+".match", "required")
		case !c.checkPattern(add, p+".match", r):
		default:
			if err := RegisterPattern(mux, r.Match, http.NotFoundHandler()); err != nil {
				add(p+".match", "%v", err)
			}
		}
		c.checkRouteUpstream(add, p+".to", r)
		checkPercent(add, p+".weight", r.Weight)
		r.weightBasisPoints = int(math.Round(r.Weight * 100))
		if math.Abs(r.Weight*100-float64(r.weightBasisPoints)) > 1e-6 {
			add(p+".weight", "at most two decimals, got %v", r.Weight)
		}
		checkPercent(add, p+".shadow.percent", r.Shadow.Percent)
		checkPercent(add, p+".compare.noise_percent", r.Compare.NoisePercent)
		checkPercent(add, p+".capture.percent", r.Capture.Percent)
		if r.Capture.Percent > 0 && c.Capture.File == "" {
			add(p+".capture.percent", "captures need somewhere to go: set capture.file")
		}
		checkPaths(add, p+".compare.ignore", r.Compare.Ignore)
		checkPaths(add, p+".compare.unordered", r.Compare.Unordered)
		checkRules(add, p+".compare", &r.Compare)
		if c := r.Compare.Confidence; !(c > 0.5 && c < 1) {
			add(p+".compare.confidence", "must be above 0.5 and below 1 (0.99: 99%%), got %v", c)
		}
		if w := time.Duration(r.Compare.VerdictWindow); w != 0 && w < time.Second {
			add(p+".compare.verdict_window", "must be 0 (the route's window) or at least 1s, got %s", w)
		}
		for j, h := range r.Compare.Headers {
			if !validHeaderName(h) {
				add(fmt.Sprintf("%s.compare.headers[%d]", p, j), "%q is not a valid header name", h)
			}
			r.Compare.Headers[j] = strings.ToLower(h)
		}
		if r.Guard != nil {
			checkGuard(add, p+".guard", r.Guard)
		}
		if r.Ramp != nil {
			c.checkRamp(add, p+".ramp", r)
		}
	}
}

// checkPattern refuses the patterns ServeMux accepts that can never match
// what an operator meant, and warns of a method-less one that moves
// traffic. It reports whether the pattern may be registered.
func (c *Config) checkPattern(add func(string, string, ...any), path string, r *Route) bool {
	method, rest := splitPattern(r.Match)
	ok := true
	// Methods are case-sensitive (RFC 9110 §9.1): "get" matches no client.
	if method != "" && strings.ToUpper(method) != method {
		add(path, "route %q: method %q is not upper case and matches no request (methods are case-sensitive); write %q",
			r.Name, method, strings.ToUpper(method)+" "+rest)
		ok = false
	}
	// ServeMux reads what comes before the first slash as a host name, so
	// "GET orders/{id}" matches only requests for the host "orders".
	if !strings.HasPrefix(rest, "/") {
		add(path, "route %q: the path %q does not start with \"/\" (ServeMux would read %q as a host name; strangler matches paths only)",
			r.Name, rest, strings.SplitN(rest, "/", 2)[0])
		ok = false
	}
	if ok && method == "" && (r.Weight > 0 || r.Shadow.Percent > 0) {
		c.warnings = append(c.warnings, FieldError{Path: path, Problem: fmt.Sprintf(
			"route %q: %q has no method, so it matches every method: its weight and shadowing also apply to writes (POST, PUT, DELETE); name the method, as in %q",
			r.Name, r.Match, "GET "+rest)})
	}
	return ok
}

// splitPattern splits a ServeMux pattern "[METHOD ][HOST]/[PATH]" into its
// method (empty when it has none) and the rest, as ServeMux does.
func splitPattern(pattern string) (method, rest string) {
	if i := strings.IndexAny(pattern, " \t"); i >= 0 {
		return pattern[:i], strings.TrimLeft(pattern[i+1:], " \t")
	}
	return "", pattern
}

// RegisterPattern adds h to mux under pattern, turning ServeMux's panic on
// a bad or conflicting pattern into an error that names both patterns. It is
// the one definition of pattern validity, for validation and the router.
func RegisterPattern(mux *http.ServeMux, pattern string, h http.Handler) (err error) {
	defer func() {
		if r := recover(); r != nil {
			msg := registeredAtRE.ReplaceAllString(fmt.Sprint(r), "")
			err = errors.New(strings.ReplaceAll(msg, ":\n", ": "))
		}
	}()
	mux.Handle(pattern, h)
	return nil
}

func checkHostPort(add func(string, string, ...any), path, addr string) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		add(path, "%q is not a host:port address", addr)
		return
	}
	if n, err := portNumber(port); err != nil {
		add(path, "%q is neither a port number nor a service name", port)
	} else if n < 0 || n > 65535 {
		add(path, "port %d is out of range (0 to 65535)", n)
	}
}

// portNumber is a listen address's port as a number: digits, a service
// name, or "" (0: any free port).
func portNumber(port string) (int, error) {
	if n, err := strconv.Atoi(port); err == nil || port == "" {
		return n, nil
	}
	return net.LookupPort("tcp", port)
}

// sameListener reports whether two listen addresses would take the same
// socket: the same port (not 0 or empty, which pick a free one) on the
// same host, or on all interfaces for either.
func sameListener(a, b string) bool {
	ha, pa, errA := net.SplitHostPort(a)
	hb, pb, errB := net.SplitHostPort(b)
	if errA != nil || errB != nil {
		return false
	}
	na, errA := portNumber(pa)
	nb, errB := portNumber(pb)
	if errA != nil || errB != nil || na == 0 || na != nb {
		return false
	}
	anyHost := func(h string) bool {
		ip, err := netip.ParseAddr(h)
		return h == "" || err == nil && ip.IsUnspecified()
	}
	return ha == hb || anyHost(ha) || anyHost(hb)
}

func checkUpstream(add func(string, string, ...any), path string, u *Upstream) {
	if u.URL == "" {
		add(path+".url", "required")
	} else {
		u.parsed = parseBaseURL(add, path+".url", u.URL)
	}
	if u.Timeout <= 0 {
		add(path+".timeout", "must be positive")
	}
}

// parseBaseURL parses an http(s) URL that paths are appended to, so it
// may have neither a query nor a fragment; nil when it is not one.
func parseBaseURL(add func(string, string, ...any), path, raw string) *url.URL {
	p, err := url.Parse(raw)
	switch {
	case err != nil:
		add(path, "%q is not a URL", raw)
	case p.Scheme != "http" && p.Scheme != "https":
		add(path, "%q must start with http:// or https://", raw)
	case p.Host == "":
		add(path, "%q has no host", raw)
	case p.RawQuery != "" || p.Fragment != "":
		add(path, "%q must not have a query or fragment", raw)
	case !validPort(p.Port()):
		// url.Parse accepts any digits.
		add(path, "port %s of %q is not between 1 and 65535", p.Port(), p.Redacted())
	default:
		return p
	}
	return nil
}

func validPort(port string) bool {
	if port == "" {
		return true
	}
	n, err := strconv.Atoi(port)
	return err == nil && n >= 1 && n <= 65535
}

// checkMatcherValues refuses what Prometheus would refuse in matchers, a
// list of label matchers of valid syntax: a value with a bad escape, a
// regular expression that does not compile (PromQL's are RE2, as Go's,
// and anchored).
func checkMatcherValues(add func(string, string, ...any), path, matchers string) {
	for _, m := range labelMatcherPartsRE.FindAllStringSubmatch(matchers, -1) {
		value, err := strconv.Unquote(m[2])
		if err != nil {
			add(path, "matcher %s: the value %s is not a valid string (bad escape)", m[0], m[2])
			continue
		}
		if m[1] == "=~" || m[1] == "!~" {
			if _, err := regexp.Compile("^(?s:" + value + ")$"); err != nil {
				add(path, "matcher %s: %v", m[0], err)
			}
		}
	}
}

func checkGuard(add func(string, string, ...any), path string, g *Guard) {
	// A NaN limit would never trip.
	checkRatio(add, path+".max_error_rate", g.MaxErrorRate)
	checkRatio(add, path+".max_divergence_rate", g.MaxDivergenceRate)
	if g.MinSamples < 1 {
		add(path+".min_samples", "must be at least 1, got %d", g.MinSamples)
	}
	if g.Window <= 0 {
		add(path+".window", "must be positive")
	}
	switch g.Source {
	case GuardSourceLocal:
	case GuardSourcePrometheus:
		if g.PrometheusURL == "" {
			add(path+".prometheus_url", "required when source is prometheus")
		}
		// Prometheus needs two scrapes inside the range to see an
		// increase; below a second, the guard could never trip.
		if g.Window > 0 && g.Window < Duration(time.Second) {
			add(path+".window", "must be at least 1s when source is prometheus (several scrape intervals), got %s", g.Window)
		}
	default:
		add(path+".source", "must be local or prometheus, got %q", g.Source)
	}
	// A URL kept while source is local is checked too, so that switching
	// back to prometheus cannot fail on it.
	if g.PrometheusURL != "" {
		g.prometheusURL = parseBaseURL(add, path+".prometheus_url", g.PrometheusURL)
	}
	if g.PrometheusMatchers != "" {
		if !labelMatchersRE.MatchString(g.PrometheusMatchers) {
			add(path+".prometheus_matchers", `%q is not a list of label matchers such as job="strangler",namespace="prod"`, g.PrometheusMatchers)
		} else if routeMatcherRE.MatchString(g.PrometheusMatchers) {
			add(path+".prometheus_matchers", "must not match on route: strangler adds the route's own matcher")
		} else {
			checkMatcherValues(add, path+".prometheus_matchers", g.PrometheusMatchers)
		}
	}
	if g.PrometheusInterval <= 0 {
		add(path+".prometheus_interval", "must be positive")
	}
}

func parseSticky(add func(string, string, ...any), key string) (StickyKind, string) {
	switch key {
	case "none", "":
		return StickyNone, ""
	case "ip":
		return StickyIP, ""
	}
	kind, name, ok := strings.Cut(key, ":")
	if ok && name != "" {
		switch kind {
		case "header":
			if validHeaderName(name) {
				return StickyHeader, http.CanonicalHeaderKey(name)
			}
		case "cookie":
			return StickyCookie, name
		case "query":
			return StickyQuery, name
		}
	}
	add("sticky.key", "must be header:NAME, cookie:NAME, query:NAME, ip or none, got %q", key)
	return StickyNone, ""
}

func parsePrefixes(add func(string, string, ...any), path string, cidrs []string) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(cidrs))
	for i, s := range cidrs {
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
			continue
		}
		if a, err := netip.ParseAddr(s); err == nil {
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
			continue
		}
		add(fmt.Sprintf("%s[%d]", path, i), "%q is not a CIDR or an IP address", s)
	}
	return out
}

func checkRatio(add func(string, string, ...any), path string, v float64) {
	if v < 0 || v > 1 || math.IsNaN(v) {
		add(path, "must be between 0 and 1, got %v", v)
	}
}

func checkPercent(add func(string, string, ...any), path string, v float64) {
	if v < 0 || v > 100 || math.IsNaN(v) {
		add(path, "must be between 0 and 100, got %v", v)
	}
}

func checkPaths(add func(string, string, ...any), path string, paths []string) {
	for i, p := range paths {
		if p != "/status" && p != "/body" && p != "/headers" &&
			!strings.HasPrefix(p, "/body/") && !strings.HasPrefix(p, "/headers/") {
			add(fmt.Sprintf("%s[%d]", path, i), "%q must be /status or start with /body or /headers", p)
		}
	}
}

// redactSet is the names of always and of extra, each as key gives it
// (false: key refused it, naming it).
func redactSet(always, extra []string, key func(i int, name string) (string, bool)) map[string]bool {
	set := make(map[string]bool, len(always)+len(extra))
	for _, n := range always {
		set[n] = true
	}
	for i, n := range extra {
		if k, ok := key(i, n); ok {
			set[k] = true
		}
	}
	return set
}

// checkRules validates a route's compare rules and keeps them compiled.
func checkRules(add func(string, string, ...any), path string, c *Compare) {
	rules, err := diff.ParseRules(c.Tolerance, c.Time, c.Normalize, c.Mask)
	c.rules = rules
	if err == nil {
		return
	}
	errs := []error{err}
	if joined, ok := err.(interface{ Unwrap() []error }); ok {
		errs = joined.Unwrap()
	}
	for _, e := range errs {
		if re, ok := errors.AsType[*diff.RuleError](e); ok {
			add(fmt.Sprintf("%s.%s[%q]", path, re.List, re.Path), "%v", re.Err)
		} else {
			add(path, "%v", e)
		}
	}
}

// validHeaderName reports whether s is an RFC 9110 token.
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}
