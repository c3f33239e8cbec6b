package main

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/spf13/cobra"

	"github.com/strangler-proxy/strangler/legacy"
)

// demoOptions are the flags of `strangler demo`.
type demoOptions struct {
	listen, adminListen                               string
	legacyListen, newpathListen, newpathMetricsListen string
	rate                                              float64
	backendLogLevel                                   slog.Level
	duration                                          time.Duration
	dir                                               string
	// story, when set, is the migration the demo plays out (--story):
	// noisy backends, a real divergence, an error burst and a weight edit.
	story *demoStory
	// ready, when set, learns where everything listens once the proxy
	// serves.
	ready func(demoAddrs)
}

// demoStory is when the demo's story happens, counted from the proxy's
// start: newpath fails GET /orders from burstAt for burstFor, which trips
// list-orders' guard; at editAt ops lower list-orders' weight in the
// YAML, which re-arms it.
type demoStory struct {
	burstAt, burstFor, editAt time.Duration
}

// defaultStory is the story of make run: all of it within the first 90s.
var defaultStory = demoStory{burstAt: 15 * time.Second, burstFor: 6 * time.Second, editAt: 30 * time.Second}

// The weights list-orders has before and after the story's edit.
const storyWeightBefore, storyWeightAfter = 50, 40

func demoCmd() *cobra.Command {
	var opts demoOptions
	var story bool
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run legacy, a newpath, the proxy and traffic in one process (make run)",
		Long: `demo starts the legacy order simulator with its fake downstream services,
the newpath order service with its outbox relay, both on one store, the proxy
with a route for every order endpoint (reads at 50%, writes at 10%, everything
shadowed, writes as dry runs), and a traffic generator, and prints a live
progress line. Ctrl-C stops everything.

With --story (the default) it plays out a migration in its first 40 seconds:
both services' answers carry noise the proxy learns to ignore, newpath has one
real divergence (a cancelled order's status spelt "canceled"), an error burst
trips list-orders' guard, and a weight edit re-arms it. README.md walks
through it.

The store is in memory, or Postgres when DATABASE_URL is set.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			if story {
				opts.story = &defaultStory
			}
			return demo(ctx, opts, cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.listen, "listen", "127.0.0.1:8080", "proxy address (a free port is used if it is taken)")
	f.StringVar(&opts.adminListen, "admin-listen", "127.0.0.1:9090", "admin address (a free port is used if it is taken)")
	f.StringVar(&opts.legacyListen, "legacy-listen", "127.0.0.1:9001", "legacy simulator address (a free port is used if it is taken)")
	f.StringVar(&opts.newpathListen, "newpath-listen", "127.0.0.1:9002", "newpath order API address (a free port is used if it is taken)")
	f.StringVar(&opts.newpathMetricsListen, "newpath-metrics-listen", "127.0.0.1:9102", "newpath /metrics address (a free port is used if it is taken)")
	f.Float64Var(&opts.rate, "rate", 50, "requests per second the traffic generator sends (0: none, drive it yourself)")
	f.DurationVar(&opts.duration, "duration", 0, "stop after this long (0: until Ctrl-C)")
	f.StringVar(&opts.dir, "dir", "", "where the demo writes its config and logs (default: a new temp dir)")
	f.BoolVar(&story, "story", true, "play out the migration story: noisy answers, a real divergence, an error burst that trips a guard, a weight edit that re-arms it (false: clean backends, nothing scripted)")
	f.TextVar(&opts.backendLogLevel, "backend-log-level", slog.LevelWarn, "log level of the in-process legacy, newpath and downstream services: debug, info, warn or error")
	return cmd
}

// demoAddrs are the demo's listeners.
type demoAddrs struct {
	proxy, admin string // host:port
	backends     backendURLs
}

// demoRoutes is the proxy config of the demo: every order endpoint, reads
// at 50%, writes at 10%; list-orders' weight is the story's to edit, and
// its guard the one the story trips; cancel-order ramps up to its 10%.
const demoRoutes = `
listen: %q
admin: { listen: %q }
upstreams:
  legacy: { url: %q, timeout: 10s }
  newpath: { url: %q, timeout: 5s } # above the in-process newpath's 4s request timeout
sticky: { key: "header:X-User-Id", salt: "demo" }
capture: { file: %q, max_file_bytes: 8388608, keep: 1 } # for strangler replay
routes:
  - name: get-order
    match: "GET /orders/{id}"
    weight: 50
    shadow: { percent: 100 }
    compare: { noise_percent: 10, headers: [content-type, x-served-at] }
    capture: { percent: 20 }
  - name: list-orders
    match: "GET /orders"
    weight: %d
    shadow: { percent: 100 }
    compare: { noise_percent: 10 }
    guard: { max_error_rate: 0.05, min_samples: 20, window: 30s }
  - name: create-order
    match: "POST /orders"
    weight: 10
    shadow: { percent: 100, dry_run: true }
    compare:
      # generated per call (docs/order-api.md): never equal between two
      # services; served_at too, and a write is never sent twice to
      # learn that by noise probes
      ignore: ["/body/id", "/body/payment_id", "/body/created_at", "/body/updated_at", "/body/served_at"]
  - name: cancel-order
    match: "POST /orders/{id}/cancel"
    weight: 10
    # climbs to its weight by itself, a step every 10s (README, "Ramps")
    ramp: { steps: [1, 2, 5, 10], every: 10s, require: none }
    shadow: { percent: 100, dry_run: true }
    compare: { ignore: ["/body/updated_at", "/body/served_at"] }
`

func demo(ctx context.Context, opts demoOptions, stdout io.Writer) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if opts.duration > 0 {
		ctx, cancel = context.WithTimeout(ctx, opts.duration)
		defer cancel()
	}
	dir := opts.dir
	if dir == "" {
		d, err := os.MkdirTemp("", "strangler-demo-")
		if err != nil {
			return err
		}
		dir = d
	}
	logFile, err := os.Create(filepath.Join(dir, "demo.log"))
	if err != nil {
		return err
	}
	defer logFile.Close()
	// The in-process backends log at opts.backendLogLevel (warn: their
	// info lines would bury the proxy's); every line names its service.
	logger := slog.New(slog.NewJSONHandler(logFile, &slog.HandlerOptions{Level: opts.backendLogLevel}))

	var wg sync.WaitGroup
	defer wg.Wait()
	// The backends outlive the proxy: they stop once it has answered its
	// last request and drained its shadows (deferred after wg.Wait, so
	// this runs first).
	backendsCtx, stopBackends := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBackends()
	burst := &errorBurst{}
	urls, err := startBackends(backendsCtx, &wg, opts, burst, logger)
	if err != nil {
		return err
	}

	cfgPath := filepath.Join(dir, "strangler.yaml")
	listen, adminListen := freeOr(opts.listen), freeOr(opts.adminListen)
	captures := filepath.Join(dir, "captures.jsonl")
	cfg := fmt.Sprintf(demoRoutes, listen, adminListen, urls.legacy, urls.newpath, captures, storyWeightBefore)
	if db := os.Getenv("DATABASE_URL"); db != "" {
		// On Postgres, mismatch samples go to strangler_divergences too,
		// for the divergence dashboard's samples table.
		cfg += fmt.Sprintf("divergence_store: { database_url: %q }\n", db)
	}
	if err := writeFileAtomic(cfgPath, []byte(cfg)); err != nil {
		return err
	}
	addrs := make(chan [2]string, 1)
	serveErr := make(chan error, 1)
	go func() {
		serveErr <- serve(ctx, cfgPath, 5*time.Second, serviceWriter{logFile, "strangler"}, func(p, a string) { addrs <- [2]string{p, a} })
	}()
	var proxyAddr, adminAddr string
	select {
	case a := <-addrs:
		proxyAddr, adminAddr = a[0], a[1]
	case err := <-serveErr:
		return fmt.Errorf("start proxy: %w", err)
	}

	fmt.Fprintf(stdout, `strangler demo (%[8]s store)
  proxy         http://%[1]s/orders/ord_1
  console       http://%[2]s/ui/
  metrics       http://%[2]s/metrics
  routes        http://%[2]s/admin/routes
  divergences   http://%[2]s/admin/divergences
  config        http://%[2]s/admin/config   (edit %[3]s: weights reload live)
  legacy        %[4]s
  newpath       %[5]s   (metrics %[6]s)
  logs          %[7]s
  captures      %[9]s   (20%% of get-order's comparisons)
  replay them   strangler replay --from %[9]s --legacy %[4]s --newpath %[5]s --config %[3]s --noise 2
Ctrl-C to stop.
`, proxyAddr, adminAddr, cfgPath, urls.legacy, urls.newpath, urls.newpathMetrics, logFile.Name(), urls.store, captures)

	var notes chan string
	if opts.story != nil {
		fmt.Fprint(stdout, storyIntro(*opts.story, adminAddr))
		notes = make(chan string, 4)
		wg.Go(func() { playStory(ctx, *opts.story, burst, cfgPath, notes) })
	}
	if opts.ready != nil {
		opts.ready(demoAddrs{proxy: proxyAddr, admin: adminAddr, backends: urls})
	}
	if opts.rate > 0 {
		wg.Go(func() { generateTraffic(ctx, "http://"+proxyAddr, opts.rate) })
	}
	reportProgress(ctx, stdout, "http://"+adminAddr+"/metrics", notes)
	cancel()
	if err := <-serveErr; err != nil {
		return err
	}
	fmt.Fprintln(stdout, "\nstopped.")
	return nil
}

// storyIntro tells what the story will show, and when.
func storyIntro(s demoStory, adminAddr string) string {
	return fmt.Sprintf(`
The story (--story=false for a quiet demo), watch it in the console:
  now    both services stamp every answer (served_at, X-Served-At, request_ref):
         the noise probes learn these differ between any two answers: noise
  now    newpath spells a cancelled order's status "canceled", legacy "cancelled":
         a real divergence on get-order, with samples side by side
         http://%[1]s/ui/routes/get-order
  now    cancel-order ramps by itself, 1 -> 2 -> 5 -> 10%%, a step every 10s
         (its RAMP column in strangler report, the Ramps row of the overview)
  %-6[2]s newpath fails GET /orders for %[3]s: list-orders' guard trips, legacy serves it
  %-6[4]s ops lower list-orders' weight %[5]d -> %[6]d in the YAML: the reload re-arms the guard

`, adminAddr, shortDuration(s.burstAt), shortDuration(s.burstFor), shortDuration(s.editAt), storyWeightBefore, storyWeightAfter)
}

// shortDuration is d as the intro's timeline prints it: 15s, 1m, 1m30s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	return s
}

// playStory plays s out from now until ctx ends, sending a note of each
// step to notes: the error burst on, off, and the weight edit.
func playStory(ctx context.Context, s demoStory, burst *errorBurst, cfgPath string, notes chan<- string) {
	type step struct {
		at time.Duration
		do func() string // does the step and says what it did
	}
	start := time.Now()
	steps := []step{
		{s.burstAt, func() string {
			burst.on.Store(true)
			return fmt.Sprintf("story: newpath starts failing GET /orders with 503 for %s (an injected error burst); GETs fall back to legacy", s.burstFor)
		}},
		{s.burstAt + s.burstFor, func() string {
			burst.on.Store(false)
			return "story: newpath's GET /orders is healthy again; a tripped guard stays tripped until ops act"
		}},
		{s.editAt, func() string {
			data, err := os.ReadFile(cfgPath)
			if err != nil {
				return fmt.Sprintf("story: could not read the config: %v", err)
			}
			edited, ok := editWeight(string(data), "list-orders", storyWeightBefore, storyWeightAfter)
			if !ok {
				return fmt.Sprintf("story: list-orders' weight is no longer %d: you edited it, so the story leaves it alone", storyWeightBefore)
			}
			if err := writeFileAtomic(cfgPath, []byte(edited)); err != nil {
				return fmt.Sprintf("story: could not edit the config: %v", err)
			}
			return fmt.Sprintf("story: ops edit the YAML: list-orders weight %d -> %d (a weight edit re-arms a tripped guard)", storyWeightBefore, storyWeightAfter)
		}},
	}
	slices.SortStableFunc(steps, func(a, b step) int { return cmp.Compare(a.at, b.at) })
	for _, step := range steps {
		t := time.NewTimer(time.Until(start.Add(step.at)))
		select {
		case <-ctx.Done():
			t.Stop()
			burst.on.Store(false)
			return
		case <-t.C:
		}
		select {
		case notes <- step.do():
		case <-ctx.Done():
			return
		}
	}
}

// editWeight changes route's "weight: from" in the demo's config text to
// to, leaving everything else, such as a user's edits, as it is. It
// reports false when the route's weight is not from.
func editWeight(cfg, route string, from, to int) (string, bool) {
	lines := strings.SplitAfter(cfg, "\n")
	in := false
	for i, line := range lines {
		switch trimmed := strings.TrimSpace(line); {
		case strings.HasPrefix(trimmed, "- name:"):
			in = strings.TrimSpace(strings.TrimPrefix(trimmed, "- name:")) == route
		case in && strings.HasPrefix(trimmed, "weight:"):
			if strings.TrimSpace(strings.TrimPrefix(trimmed, "weight:")) != strconv.Itoa(from) {
				return cfg, false
			}
			indent := line[:len(line)-len(strings.TrimLeft(line, " \t"))]
			lines[i] = indent + "weight: " + strconv.Itoa(to) + "\n"
			return strings.Join(lines, ""), true
		}
	}
	return cfg, false
}

// writeFileAtomic replaces path with data by a rename, so that the
// proxy's reload never reads a half-written file.
func writeFileAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".strangler-*.yaml")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// serviceWriter adds "service":NAME to each JSON line written through
// it, so that the proxy's lines in the demo's shared log name their
// service as the backends' do. Each Write must hold whole lines: slog's
// handler writes one line a call, and the proxy's buffered access log
// never cuts one (Proxy.writeAccessLine).
type serviceWriter struct {
	w       io.Writer
	service string
}

func (sw serviceWriter) Write(p []byte) (int, error) {
	field := `"service":` + strconv.Quote(sw.service) + ","
	var out bytes.Buffer
	out.Grow(len(p) + 32)
	for line := range bytes.SplitAfterSeq(p, []byte("\n")) {
		if len(line) > 0 && line[0] == '{' {
			out.WriteByte('{')
			out.WriteString(field)
			line = line[1:]
		}
		out.Write(line)
	}
	if _, err := sw.w.Write(out.Bytes()); err != nil {
		return 0, err
	}
	return len(p), nil
}

// freeOr returns addr if it can be bound now, else a free loopback port.
func freeOr(addr string) string {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "127.0.0.1:0"
	}
	ln.Close()
	return addr
}

// generateTraffic sends a mix of order calls at rate per second until ctx
// is done, as users 1..1000 identified by X-User-Id.
func generateTraffic(ctx context.Context, base string, rate float64) {
	client := &http.Client{Timeout: 10 * time.Second}
	tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
	defer tick.Stop()
	var inflight sync.WaitGroup
	defer inflight.Wait()
	sem := make(chan struct{}, 32)
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		select {
		case sem <- struct{}{}:
		default:
			continue // the backends are saturated: skip a beat, never pile up
		}
		inflight.Go(func() {
			defer func() { <-sem }()
			req := demoRequest(ctx, base)
			res, err := client.Do(req)
			if err != nil {
				return
			}
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
		})
	}
}

func demoRequest(ctx context.Context, base string) *http.Request {
	user := rand.IntN(legacy.SeedUserCount) + 1
	var method, path, body string
	switch n := rand.IntN(100); {
	case n < 55:
		method, path = "GET", fmt.Sprintf("/orders/ord_%d", rand.IntN(10)+1)
	case n < 80:
		method, path = "GET", fmt.Sprintf("/orders?user_id=%d", user)
	case n < 95:
		item := fmt.Sprintf("sku-%d", rand.IntN(legacy.SeedItemCount)+1)
		if rand.IntN(10) == 0 {
			item = "sku-oos"
		}
		method, path = "POST", "/orders"
		body = fmt.Sprintf(`{"user_id":%d,"item_id":%q,"quantity":%d}`, user, item, rand.IntN(3)+1)
	default:
		method, path = "POST", fmt.Sprintf("/orders/ord_%d/cancel", rand.IntN(10)+1)
	}
	req, _ := http.NewRequestWithContext(ctx, method, base+path, strings.NewReader(body))
	req.Header.Set("X-User-Id", fmt.Sprint(user))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	return req
}

// progressWindow is how far back the progress line looks: the split it
// shows is the recent one, not the average since start, so a weight
// raised a minute ago shows as raised.
const progressWindow = 5 * time.Second

// reportProgress prints a progress line from the proxy's own metrics every
// second until ctx is done: each route's split over the last
// progressWindow, the comparisons of that window, and, on lines of their
// own, config reloads, guard trips and re-arms as they happen, and the
// notes it receives (the story's steps; notes may be nil).
func reportProgress(ctx context.Context, w io.Writer, metricsURL string, notes <-chan string) {
	// On a terminal the line rewrites itself; in a log it is one line a tick.
	lineStart, lineEnd, eventStart := "\r", "   ", "\r\033[K"
	if f, ok := w.(*os.File); !ok || !isTerminal(f) {
		lineStart, lineEnd, eventStart = "", "\n", ""
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var history []progress // oldest first, at most progressWindow back
	for {
		select {
		case <-ctx.Done():
			return
		case note := <-notes:
			fmt.Fprintf(w, "%s%s\n", eventStart, note)
			continue
		case <-tick.C:
		}
		p, err := scrapeProgress(ctx, metricsURL)
		if err != nil {
			if !errors.Is(err, context.Canceled) {
				fmt.Fprintf(w, "%smetrics unavailable: %v%s", lineStart, err, lineEnd)
			}
			continue
		}
		p.at = time.Now()
		if len(history) > 0 {
			for _, e := range progressEvents(history[len(history)-1], p) {
				fmt.Fprintf(w, "%s%s\n", eventStart, e)
			}
		}
		history = append(history, p)
		for len(history) > 1 && p.at.Sub(history[1].at) >= progressWindow {
			history = history[1:]
		}
		fmt.Fprintf(w, "%s%s%s", lineStart, progressLine(history[0], p), lineEnd)
	}
}

// progressLine is what changed from old to cur: each route's share served
// by newpath, errors, fallbacks and comparison results, then the totals
// since start. With no older scrape yet, old is cur: the line says so.
func progressLine(old, cur progress) string {
	var b strings.Builder
	secs := cur.at.Sub(old.at).Seconds()
	fmt.Fprintf(&b, "last %.0fs:", secs)
	for _, name := range cur.routeOrder {
		r, o := cur.routes[name], old.routes[name]
		legacy, newpath := r.legacy-o.legacy, r.newpath-o.newpath
		fmt.Fprintf(&b, " %s %.0f%% of %d", name, pct(newpath, legacy+newpath), legacy+newpath)
		if name != cur.routeOrder[len(cur.routeOrder)-1] {
			b.WriteString(" ·")
		}
	}
	compared := cur.compared - old.compared
	fmt.Fprintf(&b, " | errors %d  fallbacks %d | compared %d: match %.1f%%  noise %.1f%%  mismatch %.1f%%",
		cur.errors-old.errors, cur.fallbacks-old.fallbacks, compared,
		pct(cur.results["match"]-old.results["match"], compared),
		pct(cur.results["noise"]-old.results["noise"], compared),
		pct(cur.results["mismatch"]-old.results["mismatch"], compared))
	fmt.Fprintf(&b, " | since start: requests %d  legacy %d  newpath %d (%.1f%%)  errors %d  divergent fields %d",
		cur.total, cur.legacy, cur.newpath, pct(cur.newpath, cur.total), cur.errors, cur.fields)
	return b.String()
}

// progressEvents names what happened between two scrapes: reloads that
// succeeded or failed, and guards that tripped.
func progressEvents(prev, cur progress) []string {
	var out []string
	if n := cur.reloads["success"] - prev.reloads["success"]; n > 0 {
		out = append(out, fmt.Sprintf("reload: the config was reloaded (%d)", n))
	}
	if n := cur.reloads["failure"] - prev.reloads["failure"]; n > 0 {
		out = append(out, fmt.Sprintf("reload: FAILED (%d); the config in force keeps running, GET /admin/config says why", n))
	}
	for _, key := range slices.Sorted(maps.Keys(cur.trips)) {
		if cur.trips[key] > prev.trips[key] {
			route, reason, _ := strings.Cut(key, " ")
			out = append(out, fmt.Sprintf("guard: %s tripped (%s): newpath serves none of it until its weight is edited or it is re-armed", route, reason))
		}
	}
	for _, route := range slices.Sorted(maps.Keys(prev.tripped)) {
		if _, still := cur.tripped[route]; !still && prev.tripped[route] {
			out = append(out, fmt.Sprintf("guard: %s re-armed: newpath serves its weight again", route))
		}
	}
	return out
}

// labelMap returns a metric's labels by name.
func labelMap(labels []*dto.LabelPair) map[string]string {
	out := make(map[string]string, len(labels))
	for _, l := range labels {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

type progress struct {
	at                                        time.Time
	total, legacy, newpath, errors, fallbacks int
	compared, fields                          int // compared: match + noise + mismatch
	results                                   map[string]int
	routes                                    map[string]routeProgress
	routeOrder                                []string       // as the metrics list them: sorted
	reloads                                   map[string]int // by result
	trips                                     map[string]int // by "route reason"
	tripped                                   map[string]bool
}

// routeProgress are one route's requests by backend.
type routeProgress struct{ legacy, newpath int }

func pct(a, b int) float64 {
	if b == 0 {
		return 0
	}
	return 100 * float64(a) / float64(b)
}

func scrapeProgress(ctx context.Context, url string) (progress, error) {
	p := progress{results: map[string]int{}, routes: map[string]routeProgress{}, reloads: map[string]int{}, trips: map[string]int{}, tripped: map[string]bool{}}
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return p, err
	}
	defer res.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(res.Body)
	if err != nil {
		return p, err
	}
	if f, ok := families["strangler_requests_total"]; ok {
		for _, m := range f.GetMetric() {
			n := int(m.GetCounter().GetValue())
			p.total += n
			labels := labelMap(m.GetLabel())
			r := p.routes[labels["route"]]
			switch labels["backend"] {
			case "legacy":
				p.legacy += n
				r.legacy += n
			case "newpath":
				p.newpath += n
				r.newpath += n
			}
			if labels["route"] != "unmatched" {
				p.routes[labels["route"]] = r
			}
			if c := labels["code"]; c == "5xx" || c == "error" {
				p.errors += n
			}
		}
		p.routeOrder = slices.Sorted(maps.Keys(p.routes))
	}
	for _, m := range families["strangler_config_reloads_total"].GetMetric() {
		p.reloads[labelMap(m.GetLabel())["result"]] += int(m.GetCounter().GetValue())
	}
	for _, m := range families["strangler_guard_trips_total"].GetMetric() {
		labels := labelMap(m.GetLabel())
		p.trips[labels["route"]+" "+labels["reason"]] += int(m.GetCounter().GetValue())
	}
	for _, m := range families["strangler_guard_tripped"].GetMetric() {
		if m.GetGauge().GetValue() == 1 {
			p.tripped[labelMap(m.GetLabel())["route"]] = true
		}
	}
	if f, ok := families["strangler_comparisons_total"]; ok {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" {
					p.results[l.GetValue()] += int(m.GetCounter().GetValue())
				}
			}
		}
		p.compared = p.results["match"] + p.results["noise"] + p.results["mismatch"]
	}
	if f, ok := families["strangler_field_differences_total"]; ok {
		fields := map[string]bool{}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "field" {
					fields[l.GetValue()] = true
				}
			}
		}
		p.fields = len(fields)
	}
	if f, ok := families["strangler_fallbacks_total"]; ok {
		for _, m := range f.GetMetric() {
			p.fallbacks += int(m.GetCounter().GetValue())
		}
	}
	return p, nil
}
