// Package proxy is strangler's data plane and admin API: it forwards each
// request to the backend the router assigns, falls back to legacy when
// newpath cannot answer a safe request, and exports metrics and logs.
package proxy

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/strangler-proxy/strangler/config"
	"github.com/strangler-proxy/strangler/proxy/diff"
	"github.com/strangler-proxy/strangler/router"
)

// Options configures a Proxy. The zero value of each field is a documented
// default.
type Options struct {
	// Registerer receives the proxy's metrics. Default: a new registry that
	// nothing serves.
	Registerer prometheus.Registerer
	// Logger receives error and event logs, and says by its level whether
	// access lines are written (at info). Default: slog.Default().
	Logger *slog.Logger
	// AccessLog receives the access lines, one JSON object each, in the
	// shape Logger's JSON handler writes. Default: standard error.
	AccessLog io.Writer
	// AccessLogFlush, when positive, buffers access lines (64 KiB) and
	// writes them out this often (and when Run returns), as nginx's
	// access_log buffer= and Envoy's flush interval do: a write a request
	// is a system call a request. Zero writes each line at once.
	AccessLogFlush time.Duration
	// Version is reported by strangler_build_info.
	Version string
	// Now is the clock. Default: time.Now.
	Now func() time.Time
	// TracerProvider makes the proxy's spans. Default: a no-op provider,
	// which still propagates an inbound traceparent.
	TracerProvider trace.TracerProvider
	// ProbeInterval is how often Run dials each upstream for
	// strangler_upstream_up and /admin/routes. Default: 2s.
	ProbeInterval time.Duration
}

// Proxy is the client-facing handler. Configuration changes arrive through
// Prepare and are swapped in atomically: a request runs on the state it
// loaded when it started.
type Proxy struct {
	logger        *slog.Logger
	metrics       *metrics
	rampMetrics   *rampMetrics
	rampClient    *http.Client // asks Prometheus about ramp ticks
	now           func() time.Time
	tracer        trace.Tracer
	tracing       bool       // false with a no-op provider: no spans are made
	accessMu      sync.Mutex // guards accessOut
	accessOut     *bufio.Writer
	accessFlush   time.Duration
	probeInterval time.Duration
	health        upstreamHealth

	state atomic.Pointer[state]

	// divergences writes samples to Postgres; nil without
	// divergence_store.database_url. Its goroutine runs in Run.
	divergences *divergenceStore
	// capture writes captured comparisons; nil without capture.file.
	capture *captureSink

	// Shadows outlive their requests: p.shadows counts them, workers run
	// them, stopShadows cancels them at shutdown, shadowInFlight bounds
	// them. Once draining (under drainMu) no shadow is counted in: an Add
	// never races DrainShadows' Wait.
	shadows        sync.WaitGroup
	drainMu        sync.RWMutex
	draining       bool
	workers        *shadowWorkers
	shadowCaller   caller // the calls' caller: it gives up when shadows stop
	stopShadows    context.Context
	cancelShadows  context.CancelFunc
	shadowInFlight atomic.Int64
	// bufferedBodies is what request bodies buffered for shadows hold,
	// bounded by max_in_flight × max_body_bytes.
	bufferedBodies atomic.Int64
	// client makes every upstream call: primary, shadow and noise.
	client *client

	mu     sync.Mutex // guards the fields below; taken by activate and the admin re-arm
	routes map[string]*routeRuntime
	dials  map[dialKey]bool // where the current state's upstreams go
}

// state is everything a request needs, built once per configuration.
type state struct {
	snap    *config.Snapshot
	cfg     *config.Config
	table   *router.Table
	routes  []*boundRoute // index-aligned with cfg.Routes
	unmatch *routeMetrics
	// upstream is the pair of unmatched requests: legacy, and newpath
	// for the series they export at 0.
	upstream [2]*upstream
	// upstreams are all of them by name, for the probes.
	upstreams map[string]*upstream
	trusted   []netip.Prefix
}

// boundRoute is a route's configuration of one state with its runtime,
// which outlives reloads.
type boundRoute struct {
	cfg *config.Route
	rt  *routeRuntime
	// upstream is the route's pair by router.Backend: legacy, and the
	// new service its to names, resolved once per state so that a
	// request does no lookup by name.
	upstream [2]*upstream
	// metrics are the route's series, labelled with those upstreams.
	metrics *routeMetrics
	// pipelines carry the route's pipelined shadow calls to each of them
	// (pipeline.go).
	pipelines [2]*pipeline
	comparer  *diff.Comparer
	// headerKeys are the answer header fields comparer reads: all a
	// shadow keeps of an answer's header.
	headerKeys []string
}

// routeRuntime is the state of a route that survives reloads, keyed by the
// route's name.
type routeRuntime struct {
	name string
	// effectiveBasisPoints is the weight after guards.
	effectiveBasisPoints atomic.Int64
	cmp                  compareState
	win                  *window
	guard                guardState
	// ramp is the route's ramp in force, nil without one; guarded by
	// guard.mu.
	ramp *rampRun
	// removed is set when a reload drops the route: work still in flight
	// on it must not bring its metric series back.
	removed atomic.Bool
}

// New returns a Proxy serving snap. It fails, naming the keys, when snap
// cannot be provisioned (see Provision).
func New(snap *config.Snapshot, opts Options) (*Proxy, error) {
	pv, err := Provision(snap.Config)
	if err != nil {
		return nil, err
	}
	p := &Proxy{
		logger:        opts.Logger,
		now:           opts.Now,
		probeInterval: opts.ProbeInterval,
		accessFlush:   opts.AccessLogFlush,
		routes:        map[string]*routeRuntime{},
		client:        newClient(),
	}
	p.accessOut = bufio.NewWriterSize(accessWriter(opts.AccessLog), 64<<10)
	if p.probeInterval <= 0 {
		p.probeInterval = defaultProbeInterval
	}
	if p.logger == nil {
		p.logger = slog.Default()
	}
	if p.now == nil {
		p.now = time.Now
	}
	tp := opts.TracerProvider
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	p.tracer = tp.Tracer(tracerName, trace.WithInstrumentationVersion(opts.Version))
	_, off := tp.(noop.TracerProvider)
	p.tracing = !off
	p.stopShadows, p.cancelShadows = context.WithCancel(context.Background())
	p.shadowCaller = &shadowCaller{p.stopShadows}
	p.workers = newShadowWorkers(p.runShadow)
	reg := opts.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	p.metrics = newMetrics(reg, opts.Version)
	p.rampMetrics = newRampMetrics(reg)
	p.rampClient = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	reg.MustRegister(newVerdictCollector(p))
	reg.MustRegister(readinessCollector{p: p, desc: prometheus.NewDesc("strangler_route_ready",
		"Whether the route is ready for promotion (1) by the readiness rule over its window.", []string{"route"}, nil)})
	if pv.divergences != nil {
		// The store's URL is a restart key: it is connected to once.
		retention := func() time.Duration { return time.Duration(p.state.Load().cfg.DivergenceStore.Retention) }
		if p.divergences, err = newDivergenceStore(pv.divergences, p.metrics, retention, p.logger); err != nil {
			return nil, err
		}
	}
	if cfg := snap.Config.Capture; cfg.File != "" {
		// A restart key too: the file is opened once.
		if p.capture, err = newCaptureSink(cfg, p.metrics.captures, p.logger); err != nil {
			return nil, err
		}
	}
	p.activate(snap, pv)
	return p, nil
}

// Run runs the proxy's background work until ctx is done, and returns when
// all of it has: the divergence store's writer, the upstream probes, and
// the guards whose source is prometheus, and the ramps. Cancel ctx after the servers stopped and
// DrainShadows returned, so the last samples are written.
func (p *Proxy) Run(ctx context.Context) {
	var wg sync.WaitGroup
	if p.divergences != nil {
		wg.Go(func() { p.divergences.run(ctx) })
	}
	if p.capture != nil {
		wg.Go(func() { p.capture.run(ctx) })
	}
	wg.Go(func() { p.runPrometheusGuards(ctx) })
	wg.Go(func() { p.runUpstreamProbes(ctx, p.probeInterval) })
	wg.Go(func() { p.runRamps(ctx) })
	if p.accessFlush > 0 {
		wg.Go(func() { p.flushAccessLog(ctx) })
	}
	wg.Wait()
}

// Prepare provisions snap without changing what the proxy serves, and
// returns the function that swaps it in. It is the proxy's
// config.Provisioner: a configuration it refuses fails the reload, and the
// proxy keeps serving the previous one.
func (p *Proxy) Prepare(snap *config.Snapshot) (activate func(), err error) {
	pv, err := Provision(snap.Config)
	if err != nil {
		return nil, err
	}
	return func() { p.activate(snap, pv) }, nil
}

var _ config.Provisioner = (*Proxy)(nil).Prepare

// activate swaps in a provisioned configuration; requests in flight finish
// on the state they started with.
func (p *Proxy) activate(snap *config.Snapshot, pv *Provisioned) {
	p.mu.Lock()
	defer p.mu.Unlock()

	cfg := snap.Config
	st := &state{
		snap:      snap,
		cfg:       cfg,
		table:     pv.table,
		routes:    make([]*boundRoute, len(cfg.Routes)),
		upstreams: make(map[string]*upstream, len(cfg.Upstreams)),
		trusted:   cfg.TrustedProxyPrefixes(),
	}
	used := map[dialKey]bool{}
	for name, uc := range cfg.Upstreams {
		u := newUpstream(name, uc)
		st.upstreams[name] = u
		used[u.key] = true
	}
	st.upstream = [2]*upstream{router.Legacy: st.upstreams[config.LegacyUpstream], router.Newpath: st.upstreams[config.DefaultUpstream]}
	p.runtimeFor("unmatched")
	st.unmatch = p.metrics.forRoute("unmatched", config.DefaultUpstream)
	seen := map[string]bool{"unmatched": true}
	previous := map[string]*config.Route{}
	if old := p.state.Load(); old != nil {
		for _, br := range old.routes {
			previous[br.rt.name] = br.cfg
		}
	}
	for i := range cfg.Routes {
		rc := &cfg.Routes[i]
		rt := p.runtimeFor(rc.Name)
		br := &boundRoute{cfg: rc, rt: rt, comparer: pv.comparers[i], headerKeys: pv.comparers[i].HeaderKeys(),
			upstream: [2]*upstream{router.Legacy: st.upstream[router.Legacy], router.Newpath: st.upstreams[rc.To]},
			metrics:  p.metrics.forRoute(rc.Name, rc.To)}
		for b, u := range br.upstream {
			br.pipelines[b] = p.client.pipeline(u.key, rc.Name, p.stopShadows)
		}
		st.routes[i] = br
		prev := previous[rc.Name]
		// A route moved to another service starts its windows afresh: the
		// old service's errors, latency and differences say nothing of
		// the new one's. The series of the old one would stay at their
		// last values for ever.
		moved := prev != nil && prev.To != rc.To
		if moved {
			p.metrics.forgetUpstream(rc.Name, prev.To)
		}
		rt.cmp.mu.Lock()
		rt.cmp.samples.resize(cfg.DivergenceStore.SamplesPerRoute)
		rt.cmp.z, rt.cmp.probeNoise = zScore(rc.Compare.Confidence), rc.Compare.NoisePercent > 0
		if span := verdictWindowOf(rc); rt.cmp.window.span() != span || moved {
			rt.cmp.window.reset(span)
		}
		rt.cmp.mu.Unlock()
		seen[rc.Name] = true
		p.metrics.weight.WithLabelValues(rc.Name).Set(rc.Weight / 100)
		guarded := 0.0
		if rc.Guard != nil {
			guarded = 1
		}
		p.metrics.guardConfigured.WithLabelValues(rc.Name).Set(guarded)
		if prev == nil || windowOf(prev) != windowOf(rc) || moved {
			rt.win.reset(windowOf(rc))
		}
		p.bindRamp(br, p.now())
		// A changed weight is how ops re-arm a tripped guard from the YAML;
		// otherwise a tripped guard keeps the effective weight at 0.
		p.rearm(br, "config", prev != nil && prev.Weight == rc.Weight && rc.Guard != nil)
	}
	for name := range p.routes {
		if !seen[name] {
			rt := p.routes[name]
			// Under the guard's lock: a trip racing the removal either
			// sees removed or has set its series before they go.
			rt.guard.mu.Lock()
			rt.removed.Store(true)
			p.metrics.forget(name)
			p.rampMetrics.forget(name)
			rt.guard.mu.Unlock()
			delete(p.routes, name)
		}
	}
	p.state.Store(st)
	p.trackUpstreams(st)
	pipes := map[pipeKey]bool{}
	for _, br := range st.routes {
		for _, u := range br.upstream {
			pipes[pipeKey{u.key, br.rt.name}] = true
		}
	}
	p.client.retireUnusedPipelines(pipes)
	for k := range p.dials {
		if !used[k] {
			// In-flight calls to it finish; only idle connections go.
			p.client.closeIdleTo(k)
		}
	}
	p.dials = used
}

func (p *Proxy) runtimeFor(name string) *routeRuntime {
	rt, ok := p.routes[name]
	if !ok {
		rt = &routeRuntime{name: name, win: newWindow(defaultWindow)}
		rt.cmp.window.reset(defaultWindow)
		rt.cmp.z = zScore(0.99)
		p.routes[name] = rt
	}
	return rt
}
