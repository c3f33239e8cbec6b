package proxy

import (
	"bytes"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/strangler-proxy/strangler/config"
	"github.com/strangler-proxy/strangler/router"
)

// ConfigSource is what the admin API needs of a config.Reloader.
type ConfigSource interface {
	Current() *config.Snapshot
	LastFailure() *config.ReloadFailure
}

var _ ConfigSource = (*config.Reloader)(nil)

// AdminOptions configures the admin API.
type AdminOptions struct {
	// Gatherer serves /metrics.
	Gatherer prometheus.Gatherer
	// Config reports the configuration in force for /admin/config.
	Config ConfigSource
	// DialTimeout bounds the legacy reachability check of /readyz.
	// Default 1s.
	DialTimeout time.Duration
	// Stopping is closed when the process begins to shut down: from then
	// on /readyz answers 503, so that a load balancer probing it stops
	// sending traffic to a proxy whose listener is draining. Nil: never.
	Stopping <-chan struct{}
}

// AdminHandler serves the admin listener (SPEC §9): /metrics, /healthz,
// /readyz, /admin/config, /admin/routes, and the console under /ui/.
func (p *Proxy) AdminHandler(opts AdminOptions) http.Handler {
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = time.Second
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(opts.Gatherer, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		p.serveReady(w, r, opts.DialTimeout, opts.Stopping)
	})
	mux.HandleFunc("GET /admin/config", func(w http.ResponseWriter, r *http.Request) {
		serveConfig(w, opts.Config)
	})
	mux.HandleFunc("GET /admin/routes", p.serveRoutes)
	mux.HandleFunc("GET /admin/divergences", p.serveDivergences)
	mux.HandleFunc("POST /admin/routes/{name}/rearm", p.serveRearm)
	mux.Handle("GET /ui/", p.consoleHandler())
	return mux
}

// serveReady answers 200 when a config is loaded and legacy accepts TCP
// connections, else 503 saying why. Newpath is left out on purpose: legacy
// (and fallback) can serve every request, so a newpath outage must not
// pull every replica out of a load balancer. Its state is in the body,
// strangler_upstream_up and /admin/routes.
func (p *Proxy) serveReady(w http.ResponseWriter, r *http.Request, timeout time.Duration, stopping <-chan struct{}) {
	st := p.state.Load()
	body := map[string]any{"config_sha256": st.snap.SHA256}
	unavailable := func(reason string) {
		body["status"], body["reason"], body["upstreams"] = "unavailable", reason, p.upstreamsHealth()
		writeJSON(w, http.StatusServiceUnavailable, body)
	}
	select {
	case <-stopping:
		unavailable("shutting down: in-flight requests are finishing")
		return
	default:
	}
	if err := p.probeUpstream(r.Context(), config.LegacyUpstream, st.upstream[router.Legacy], timeout); err != nil {
		unavailable("legacy is unreachable: " + config.Redact(err.Error()))
		return
	}
	body["upstreams"] = p.upstreamsHealth()
	body["status"] = "ready"
	writeJSON(w, http.StatusOK, body)
}

// configView is /admin/config.
type configView struct {
	SHA256     string         `json:"sha256"`
	LoadedAt   time.Time      `json:"loaded_at"`
	Config     *config.Config `json:"config"`
	LastError  string         `json:"last_reload_error,omitempty"`
	LastErrorA *time.Time     `json:"last_reload_error_at,omitempty"`
}

// serveConfig answers the config in force and the last reload error with
// every secret redacted. The whole answer goes through config.Redact, so
// that no URL-bearing field, present or added later, can leak one; the
// admin token itself is never config, only the name of its variable.
func serveConfig(w http.ResponseWriter, src ConfigSource) {
	snap := src.Current()
	v := configView{SHA256: snap.SHA256, LoadedAt: snap.LoadedAt, Config: snap.Config}
	if f := src.LastFailure(); f != nil {
		v.LastError = f.Err.Error()
		v.LastErrorA = &f.At
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	// Unescaped, so that Redact sees the & and = of a query as they are.
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, config.Redact(buf.String()))
}

// routeView is one route of /admin/routes.
type routeView struct {
	Name  string `json:"name"`
	Match string `json:"match"`
	// To is the upstream that serves the route's newpath side, a key of
	// the answer's upstreams.
	To              string    `json:"to"`
	Weight          float64   `json:"weight"`
	EffectiveWeight float64   `json:"effective_weight"`
	Guard           GuardView `json:"guard"`
	Fallback        bool      `json:"fallback"`
	ShadowPercent   float64   `json:"shadow_percent"`
	DryRun          bool      `json:"dry_run"`
	NoisePercent    float64   `json:"noise_percent"`
	// Comparisons counts results since the route was configured.
	Comparisons ComparisonCounts `json:"comparisons"`
	// Fields are the fields that ever differed, with their noise verdicts.
	Fields []FieldVerdict `json:"fields"`
	// Readiness is the promotion verdict over the route's window.
	Readiness Readiness `json:"readiness"`
	// Ramp is the route's ramp and where it is; absent without one.
	Ramp *RampView `json:"ramp,omitempty"`
}

// serveRoutes answers every route's state, and the last reachability probe
// of each upstream by name: a new service that is down is the reason the
// routes whose to names it fall back.
func (p *Proxy) serveRoutes(w http.ResponseWriter, r *http.Request) {
	st := p.state.Load()
	views := make([]routeView, 0, len(st.routes))
	for _, br := range st.routes {
		views = append(views, p.routeView(br))
	}
	writeJSON(w, http.StatusOK, map[string]any{"upstreams": p.upstreamsHealth(), "routes": views})
}

func (p *Proxy) routeView(br *boundRoute) routeView {
	counts, fields := br.rt.cmp.report(p.now())
	return routeView{
		Name:            br.cfg.Name,
		Match:           br.cfg.Match,
		To:              br.cfg.To,
		Weight:          br.cfg.Weight,
		EffectiveWeight: float64(br.rt.effectiveBasisPoints.Load()) / 100,
		Guard:           br.guardView(),
		Fallback:        br.cfg.Fallback,
		ShadowPercent:   br.cfg.Shadow.Percent,
		DryRun:          br.cfg.Shadow.DryRun,
		NoisePercent:    br.cfg.Compare.NoisePercent,
		Comparisons:     counts,
		Fields:          fields,
		Readiness:       readiness(br.cfg, br.rt.win.sum(p.now()), br.rt.cmp.undecided(p.now())),
		Ramp:            br.rampView(p.now()),
	}
}

// serveRearm lifts a route's tripped guard. It is a mutation, so it needs
// the bearer token.
func (p *Proxy) serveRearm(w http.ResponseWriter, r *http.Request) {
	if !authorized(w, r, p.state.Load().cfg.Admin.TokenEnv) {
		return
	}
	// Under p.mu, so a reload cannot swap the route's weight between the
	// lookup and the re-arm.
	p.mu.Lock()
	defer p.mu.Unlock()
	name := r.PathValue("name")
	if br := p.boundRoute(name); br != nil {
		p.rearm(br, "admin", false)
		writeJSON(w, http.StatusOK, p.routeView(br))
		return
	}
	writeJSON(w, http.StatusNotFound, map[string]string{"error": fmt.Sprintf("no route named %q", name)})
}

// authorized checks the bearer token of a mutating admin call against the
// environment variable tokenEnv names, in constant time. Without a token
// configured every mutation is refused with the way to configure one.
func authorized(w http.ResponseWriter, r *http.Request, tokenEnv string) bool {
	token := ""
	if tokenEnv != "" {
		token = os.Getenv(tokenEnv)
	}
	if token == "" {
		writeJSON(w, http.StatusForbidden, map[string]string{"error": fmt.Sprintf(
			"admin mutations are disabled: set the environment variable named by admin.token_env (%q) to a secret token and restart, then send Authorization: Bearer <token>",
			tokenEnv)})
		return false
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(token)) != 1 {
		w.Header().Set("WWW-Authenticate", `Bearer realm="strangler admin"`)
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "missing or wrong bearer token"})
		return false
	}
	return true
}

// serveDivergences answers recent mismatch samples, newest first, of one
// route (?route=NAME) or of all, at most ?limit=N (default 50).
func (p *Proxy) serveDivergences(w http.ResponseWriter, r *http.Request) {
	limit := 50
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "limit must be a positive integer"})
			return
		}
		limit = n
	}
	name := r.URL.Query().Get("route")
	st := p.state.Load()
	var samples []Sample
	found := name == ""
	for _, br := range st.routes {
		if name != "" && br.rt.name != name {
			continue
		}
		found = true
		br.rt.cmp.mu.Lock()
		samples = append(samples, br.rt.cmp.samples.newest(limit)...)
		br.rt.cmp.mu.Unlock()
	}
	if !found {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": fmt.Sprintf("no route named %q", name)})
		return
	}
	sort.SliceStable(samples, func(i, j int) bool { return samples[i].Time.After(samples[j].Time) })
	if len(samples) > limit {
		samples = samples[:limit]
	}
	if samples == nil {
		samples = []Sample{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"samples": samples})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
