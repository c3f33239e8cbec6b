// Command harness is the wrk half of make bench (bench/README.md): it starts
// the backends once, then in interleaved rounds starts each row's proxy,
// drives it with wrk and stops it; it checks from strangler's /metrics (and
// the peers' access logs) that each row split or shadowed its traffic as
// it claims, and prints one markdown table of medians and spreads with the
// verdicts of issue 11's targets. bench/run.sh installs the tools, builds
// the binaries and runs it.
//
// Usage:
//
//	harness [-rounds 3] [-duration 8s] [-rows bare,strangler-split] [-soak 60s] ...
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// options are the flags of the harness.
type options struct {
	rounds               int
	duration, warmup     time.Duration
	threads, connections int
	rows                 []string // row keys, in table order
	path                 string
	soak                 time.Duration
	slowLatency          time.Duration
	slowRate             int
	shadowMaxInFlight    int
	slowMaxInFlight      int
	pipelineDepth        int
	peerWorkers          int
	readyTimeout         time.Duration
	keep                 bool

	strangler, legacyorders, bareproxy, fastproxy, nginx, haproxy string
}

// parseOptions reads the flags; getenv supplies the BENCH_* variables of
// the former bench/run.sh, which set a flag's default.
func parseOptions(args []string, getenv func(string) string, stderr io.Writer) (options, error) {
	var o options
	var rows string
	fs := flag.NewFlagSet("harness", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&o.rounds, "rounds", 4, "interleaved rounds, every second one in reverse order: every row is measured once per round, the table shows medians")
	fs.DurationVar(&o.duration, "duration", 8*time.Second, "wrk -d of each measured run (whole seconds)")
	fs.DurationVar(&o.warmup, "warmup", 2*time.Second, "unrecorded wrk run before each measured run")
	fs.IntVar(&o.threads, "threads", 1, "wrk -t")
	fs.IntVar(&o.connections, "connections", 32, "wrk -c")
	fs.StringVar(&rows, "rows", strings.Join(allRows(), ","), "rows to run, comma- or space-separated: "+strings.Join(allRows(), " "))
	fs.StringVar(&o.path, "path", "/orders/ord_1", "request path; must answer 2xx on every row (ord_1..ord_10 are seeded)")
	fs.DurationVar(&o.soak, "soak", 60*time.Second, "after the rounds, how long strangler shadows to the slow newpath before its VmRSS is read (0: no soak); needs row strangler-slow-shadow")
	fs.DurationVar(&o.slowLatency, "slow-latency", 2*time.Second, "--latency of the slow newpath")
	fs.IntVar(&o.slowRate, "slow-rate", 0, "requests a second to pace the slow-newpath rows and the soak at (0: saturating, like every row)")
	fs.IntVar(&o.shadowMaxInFlight, "shadow-max-in-flight", 1024, "shadow.max_in_flight of the strangler rows on the fast newpath (raised so that drops cannot flatter the shadow row)")
	fs.IntVar(&o.slowMaxInFlight, "slow-max-in-flight", 256, "shadow.max_in_flight of the slow-newpath rows and the soak (the config default)")
	fs.IntVar(&o.pipelineDepth, "pipeline-depth", 16, "shadow.pipeline_depth of the strangler rows (the config default; 1: no pipelining)")
	fs.IntVar(&o.peerWorkers, "peer-workers", 1, "nginx worker_processes and HAProxy nbthread")
	fs.DurationVar(&o.readyTimeout, "ready-timeout", 20*time.Second, "how long a started process may take to answer")
	fs.BoolVar(&o.keep, "keep", false, "keep the temp dir (configs, logs, wrk reports, /metrics scrapes); it is always kept on failure")
	fs.StringVar(&o.strangler, "strangler", "bin/strangler", "strangler binary under test")
	fs.StringVar(&o.legacyorders, "legacyorders", "bin/legacyorders", "legacy simulator binary, the backends")
	fs.StringVar(&o.bareproxy, "bareproxy", "bin/bench/bareproxy", "bench/bareproxy binary")
	fs.StringVar(&o.fastproxy, "fastproxy", "bin/bench/fastproxy", "bench/fastproxy binary")
	fs.StringVar(&o.nginx, "nginx", "/usr/sbin/nginx", "nginx binary")
	fs.StringVar(&o.haproxy, "haproxy", "/usr/sbin/haproxy", "haproxy binary")

	// The variables of bench/run.sh, so that scripts and habits keep working.
	for _, env := range [][2]string{
		{"BENCH_REPEAT", "rounds"}, {"BENCH_DURATION", "duration"}, {"BENCH_WARMUP", "warmup"},
		{"BENCH_THREADS", "threads"}, {"BENCH_CONNECTIONS", "connections"}, {"BENCH_TARGETS", "rows"},
		{"BENCH_PATH", "path"}, {"BENCH_SOAK_DURATION", "soak"}, {"BENCH_SLOW_LATENCY", "slow-latency"},
		{"BENCH_SLOW_RATE", "slow-rate"}, {"BENCH_SHADOW_MAX_IN_FLIGHT", "shadow-max-in-flight"},
		{"BENCH_SLOW_MAX_IN_FLIGHT", "slow-max-in-flight"}, {"BENCH_KEEP_TMP", "keep"},
		{"STRANGLER_BIN", "strangler"}, {"LEGACYORDERS_BIN", "legacyorders"},
	} {
		if v := getenv(env[0]); v != "" {
			if env[0] == "BENCH_KEEP_TMP" {
				v = "true"
			}
			if err := fs.Set(env[1], v); err != nil {
				return options{}, fmt.Errorf("%s=%q: %w", env[0], v, err)
			}
		}
	}
	if err := fs.Parse(args); err != nil {
		return options{}, err
	}
	if fs.NArg() > 0 {
		return options{}, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var err error
	if o.rows, err = parseRows(rows); err != nil {
		return options{}, err
	}
	var bad []string
	for _, c := range []struct {
		ok   bool
		what string
	}{
		{o.rounds >= 1, "-rounds must be at least 1"},
		{o.duration >= time.Second, "-duration must be at least 1s"},
		{o.warmup >= 0 && o.soak >= 0, "-warmup and -soak must not be negative"},
		{o.threads >= 1 && o.connections >= o.threads, "-connections must be at least -threads, and -threads at least 1"},
		{strings.HasPrefix(o.path, "/"), "-path must start with /"},
		{o.slowRate >= 0, "-slow-rate must not be negative"},
		{o.shadowMaxInFlight >= 1 && o.slowMaxInFlight >= 1, "-shadow-max-in-flight and -slow-max-in-flight must be at least 1"},
		{o.peerWorkers >= 1, "-peer-workers must be at least 1"},
		{o.pipelineDepth >= 1 && o.pipelineDepth <= 64, "-pipeline-depth must be 1 to 64"},
	} {
		if !c.ok {
			bad = append(bad, c.what)
		}
	}
	if len(bad) > 0 {
		return options{}, errors.New(strings.Join(bad, "; "))
	}
	return o, nil
}

// allRows returns the row keys in table order.
func allRows() []string {
	return []string{rowDirect, rowBare, rowFasthttp, rowNginxSplit, rowHAProxy, rowStranglerSplit,
		rowNginxMirror, rowStranglerShadow, rowSlowOff, rowSlowShadow}
}

// parseRows turns "bare,strangler-split" (or BENCH_TARGETS' "bare
// strangler-split") into row keys in table order, whatever order they were
// given in.
func parseRows(s string) ([]string, error) {
	known := allRows()
	want := strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' })
	for _, k := range want {
		if !slices.Contains(known, k) {
			return nil, fmt.Errorf("-rows: unknown row %q; known: %s", k, strings.Join(allRows(), " "))
		}
	}
	if len(want) == 0 {
		return nil, errors.New("-rows: no row")
	}
	var keys []string
	for _, k := range known {
		if slices.Contains(want, k) {
			keys = append(keys, k)
		}
	}
	return keys, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	opt, err := parseOptions(args, os.Getenv, stderr)
	if err != nil {
		return err
	}
	b, err := newBench(opt, stderr)
	if err != nil {
		return err
	}
	report, err := b.run(ctx)
	if cerr := b.close(err != nil); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	_, err = io.WriteString(stdout, report)
	return err
}
