package main

import (
	"context"
	"embed"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"text/template"
	"time"
)

//go:embed templates/*.tmpl
var templateFS embed.FS

// bench is one run of the harness: its options, temp dir, backends and loads.
type bench struct {
	opt       options
	dir       string // temp dir: configs, logs, wrk reports, scrapes
	progress  io.Writer
	client    *http.Client
	templates *template.Template

	legacy, newpath, slowNewpath string     // backend addresses, host:port
	backends                     []*process // stopped by close
	load, slowLoad               wrkLoad
}

func newBench(opt options, progress io.Writer) (*bench, error) {
	tmpl, err := template.ParseFS(templateFS, "templates/*.tmpl")
	if err != nil {
		return nil, fmt.Errorf("parse templates: %w", err)
	}
	dir, err := os.MkdirTemp("", "strangler-bench.")
	if err != nil {
		return nil, err
	}
	// nginx workers run as nobody and must reach their paths in here.
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	b := &bench{
		opt: opt, dir: dir, progress: progress, templates: tmpl,
		client: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}},
	}
	b.load = wrkLoad{threads: opt.threads, connections: opt.connections, script: b.file("users.lua")}
	b.slowLoad = b.load
	if err := b.render("users.lua.tmpl", b.load.script, struct{ DelayMS, Rate int }{}); err != nil {
		return nil, err
	}
	if opt.slowRate > 0 {
		// Each connection waits connections/rate between requests (less
		// the answer's own time): about rate requests a second in all.
		b.slowLoad.script = b.file("paced.lua")
		pace := struct{ DelayMS, Rate int }{opt.connections * 1000 / opt.slowRate, opt.slowRate}
		if err := b.render("users.lua.tmpl", b.slowLoad.script, pace); err != nil {
			return nil, err
		}
	}
	return b, nil
}

func (b *bench) file(name string) string { return filepath.Join(b.dir, name) }

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.progress, "bench: "+format+"\n", args...)
}

// close stops the backends and removes the temp dir, unless -keep or failed.
func (b *bench) close(failed bool) error {
	for _, p := range b.backends {
		p.stop()
	}
	if failed || b.opt.keep {
		b.logf("logs, configs and wrk reports kept in %s", b.dir)
		return nil
	}
	return os.RemoveAll(b.dir)
}

// rowResult is everything measured of one row over the rounds.
type rowResult struct {
	row     row
	samples []wrkResult
	// strangler rows: what they claim, /metrics counts summed over the
	// rounds (warm-ups included), and VmRSS after each run.
	claim   claim
	counts  counts
	scraped bool
	rssMB   []float64
	// peers that split: the newpath share they claim, access log lines,
	// and those to the newpath.
	wantShare            float64
	logLines, logNewpath int
	// problems are what contradicts the row's claim; notes the rest.
	problems, notes []string
}

// values is f of each round's sample, in round order.
func (r *rowResult) values(f func(wrkResult) float64) []float64 {
	v := make([]float64, len(r.samples))
	for i, s := range r.samples {
		v[i] = f(s)
	}
	return v
}

func (r *rowResult) measure(f func(wrkResult) float64) spread { return summarize(r.values(f)) }

func rps(w wrkResult) float64   { return w.rps }
func p50ms(w wrkResult) float64 { return float64(w.p50) / float64(time.Millisecond) }
func p99ms(w wrkResult) float64 { return float64(w.p99) / float64(time.Millisecond) }

// run measures the rows in interleaved rounds, then the soak, and returns
// the report.
func (b *bench) run(ctx context.Context) (string, error) {
	var rows []*rowResult
	for _, r := range b.rows() {
		if slices.Contains(b.opt.rows, r.key) {
			rows = append(rows, &rowResult{row: r})
		}
	}
	slow := slices.ContainsFunc(rows, func(r *rowResult) bool { return r.row.slow })
	busyBefore := cpuBusy(ctx)
	if err := b.startBackends(ctx, slow); err != nil {
		return "", err
	}
	// Round 1 runs every row, then round 2 every row, and so on: a slow
	// minute of the machine lands on one sample of every row, not on all
	// samples of one, and the median drops it.
	for round := 1; round <= b.opt.rounds; round++ {
		for _, r := range roundOrder(rows, round) {
			if err := b.measureRound(ctx, r, round); err != nil {
				return "", fmt.Errorf("round %d, %s: %w", round, r.row.name, err)
			}
		}
	}
	for _, r := range rows {
		r.check()
	}
	var soak *slowShadowSoak
	if i := slices.IndexFunc(rows, func(r *rowResult) bool { return r.row.key == rowSlowShadow }); i >= 0 && b.opt.soak > 0 {
		var err error
		if soak, err = b.soak(ctx, rows[i].row); err != nil {
			return "", fmt.Errorf("soak: %w", err)
		}
	}
	for _, p := range b.backends {
		p.stop()
	}
	b.backends = nil
	busyAfter := cpuBusy(ctx)
	header := fmt.Sprintf("nproc=%d  busy before/after=%s/%s  %s  %s  wrk -t%d -c%d -d%s --latency (warm-up %s)  %d round(s), medians (min–max)  GET %s",
		runtime.NumCPU(), percent(busyBefore), percent(busyAfter), time.Now().UTC().Format(time.RFC3339), runtime.Version(),
		b.opt.threads, b.opt.connections, b.opt.duration, b.opt.warmup, b.opt.rounds, b.opt.path)
	if w := busyWarning(busyBefore, busyAfter); w != "" {
		b.logf("%s", w)
		header += "\n\n" + w
	}
	return report(header, rows, soak, b.opt), nil
}

// roundOrder is the order round runs the rows in: table order, and
// reversed every second round. The rows compared with each other run
// next to each other (strangler after the peer it is judged against, the
// slow-newpath pair back to back), and whatever the row before leaves
// behind (a backend's heap grown by the heaviest row, a VM slowing down
// over a round) would otherwise land on the same side of each pair in
// every round.
func roundOrder(rows []*rowResult, round int) []*rowResult {
	if round%2 == 1 {
		return rows
	}
	reversed := slices.Clone(rows)
	slices.Reverse(reversed)
	return reversed
}

// measureRound starts the row's proxy, warms it up, measures it, records
// what it did and stops it: every sample starts from the same state, and
// only the proxy under test runs while a row is measured.
func (b *bench) measureRound(ctx context.Context, r *rowResult, round int) error {
	run, err := r.row.start(ctx)
	if err != nil {
		return err
	}
	defer run.stop()
	if status, err := getStatus(ctx, b.client, run.url); err != nil || status/100 != 2 {
		return fmt.Errorf("GET %s: status %d, %v; want 2xx (is -path %s a seeded order?)", run.url, status, err, b.opt.path)
	}
	load := b.load
	if r.row.slow {
		load = b.slowLoad
	}
	slug := fmt.Sprintf("%s-r%d", r.row.key, round)
	if b.opt.warmup > 0 {
		if _, err := load.run(ctx, run.url, b.opt.warmup, b.file("wrk-"+slug+"-warmup.txt")); err != nil {
			return err
		}
	}
	w, err := load.run(ctx, run.url, b.opt.duration, b.file("wrk-"+slug+".txt"))
	if err != nil {
		return err
	}
	r.samples = append(r.samples, w)
	b.logf("round %d/%d  %-40s %8.0f req/s  p50 %6.2f ms  p99 %7.2f ms", round, b.opt.rounds, r.row.name, w.rps, p50ms(w), p99ms(w))
	if w.non2xx > 0 || w.socketErrors > 0 {
		r.problems = append(r.problems, fmt.Sprintf("round %d: %d non-2xx/3xx answers, %d socket errors", round, w.non2xx, w.socketErrors))
	}
	if run.admin != "" {
		rss, err := run.proc.rssMB()
		if err != nil {
			return err
		}
		r.rssMB = append(r.rssMB, rss)
		c, err := scrapeMetrics(ctx, b.client, run.admin+"/metrics", b.file("metrics-"+slug+".txt"), b.opt.slowLatency+10*time.Second)
		if err != nil {
			return err
		}
		r.claim, r.counts, r.scraped = run.claim, r.counts.add(c), true
	}
	if run.accessLog != "" {
		text, err := os.ReadFile(run.accessLog)
		if err != nil {
			return err
		}
		hits, lines := logShare(string(text), run.newpathToken)
		r.wantShare = run.wantShare
		r.logNewpath += hits
		r.logLines += lines
	}
	return nil
}

// check turns what the row's counters say into problems and notes.
func (r *rowResult) check() {
	if r.scraped {
		r.problems = append(r.problems, r.counts.check(r.claim)...)
		r.notes = append(r.notes, "strangler /metrics: "+r.counts.summary())
		rss := make([]string, len(r.rssMB))
		for i, v := range r.rssMB {
			rss[i] = strconv.FormatFloat(v, 'f', 1, 64)
		}
		r.notes = append(r.notes, "VmRSS after each run: "+strings.Join(rss, " / ")+" MB")
	}
	if r.wantShare > 0 {
		share := 0.0
		if r.logLines > 0 {
			share = 100 * float64(r.logNewpath) / float64(r.logLines)
		}
		r.notes = append(r.notes, fmt.Sprintf("access log: %d requests, newpath %.1f%%", r.logLines, share))
		if r.logLines == 0 || math.Abs(share-r.wantShare) > shareTolerance {
			r.problems = append(r.problems, fmt.Sprintf("newpath served %.1f%% of %d logged requests, want %.0f%% ± %.0f", share, r.logLines, r.wantShare, shareTolerance))
		}
	}
}

// soak runs the slow-shadow row's strangler for -soak under the slow load
// and reads its VmRSS right after.
func (b *bench) soak(ctx context.Context, r row) (*slowShadowSoak, error) {
	run, err := r.start(ctx)
	if err != nil {
		return nil, err
	}
	defer run.stop()
	if b.opt.warmup > 0 {
		if _, err := b.slowLoad.run(ctx, run.url, b.opt.warmup, b.file("wrk-soak-warmup.txt")); err != nil {
			return nil, err
		}
	}
	b.logf("soak: %s for %s", r.name, b.opt.soak)
	w, err := b.slowLoad.run(ctx, run.url, b.opt.soak, b.file("wrk-soak.txt"))
	if err != nil {
		return nil, err
	}
	s := &slowShadowSoak{duration: b.opt.soak, wrk: w}
	if s.rssMB, err = run.proc.rssMB(); err != nil {
		return nil, err
	}
	if s.counts, err = scrapeMetrics(ctx, b.client, run.admin+"/metrics", b.file("metrics-soak.txt"), b.opt.slowLatency+10*time.Second); err != nil {
		return nil, err
	}
	s.problems = s.counts.check(run.claim)
	b.logf("soak: %.0f req/s, p99 %.2f ms, VmRSS %.1f MB", w.rps, p99ms(w), s.rssMB)
	return s, nil
}
