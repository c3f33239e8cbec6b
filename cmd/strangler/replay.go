package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/strangler-proxy/strangler/config"
	"github.com/strangler-proxy/strangler/proxy"
	"github.com/strangler-proxy/strangler/proxy/replay"
)

// replayOptions are replay's flags.
type replayOptions struct {
	from, legacy, newpath, config, output, since string
	routes                                       []string
	noise, concurrency                           int
	rate                                         float64
	timeout                                      time.Duration
}

func replayCmd() *cobra.Command {
	var opts replayOptions
	cmd := &cobra.Command{
		Use:   "replay --from SOURCE --legacy URL --newpath URL",
		Short: "Send recorded requests to legacy and newpath again and tell what is fixed and what still diverges",
		Long: `replay re-sends recorded requests (samples of mismatches, or captures of every
result) to legacy and newpath, compares the answers as the proxy does (the
routes' compare sections of --config, with --noise more legacy calls per
safe request to tell noise from real differences), and prints a table per
route: matching, fixed (diverged when recorded, matches now), still
diverging, newly diverging, errors.

SOURCE is a capture file (JSON Lines, capture.file), a postgres:// URL
(the divergence store's strangler_divergences, with --route and --since),
or a running proxy's admin URL (its samples).

A write (POST, PUT, PATCH, DELETE) is never sent to legacy: it goes to
newpath only, with X-Strangler-Dry-Run: 1, and is compared with the legacy
answer recorded with it (so Postgres, which keeps no answers, cannot replay
writes). Every replayed request carries X-Strangler-Shadow: 1; recorded
credentials were redacted and are not sent.

Exit codes: 0 every record replayed and nothing diverges; 1 a record still
or newly diverges (a gate for a newpath's CI); 2 the replay could not run or
check everything (a source, a flag, the config, no records, records that
could not be replayed).`,
		Example: `  strangler replay --from /var/log/strangler/captures.jsonl --legacy http://legacy:9001 --newpath http://newpath:9002 --config strangler.yaml
  strangler replay --from postgres://strangler@db/strangler --route get-order --since 24h --legacy http://legacy:9001 --newpath http://localhost:9002
  strangler replay --from http://proxy:9090 --legacy http://legacy:9001 --newpath http://localhost:9002 --output json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runReplay(cmd, opts)
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.from, "from", "", "the records: a capture file, a postgres:// URL or a proxy's admin URL (required)")
	f.StringVar(&opts.legacy, "legacy", "", "legacy's base URL (required)")
	f.StringVar(&opts.newpath, "newpath", "", "newpath's base URL (required)")
	f.StringVar(&opts.config, "config", "", "strangler config whose routes' compare sections to compare by (default: compare every route as one without)")
	f.StringSliceVar(&opts.routes, "route", nil, "replay only these routes (repeat the flag or separate by commas)")
	f.StringVar(&opts.since, "since", "", "replay only records this recent: a duration (24h) or an RFC 3339 time")
	f.IntVar(&opts.noise, "noise", 0, "legacy calls per safe request beyond the first, to tell noise from real differences")
	f.IntVar(&opts.concurrency, "concurrency", 8, "records replayed at once")
	f.Float64Var(&opts.rate, "rate", 0, "records started per second at most (0: no bound)")
	f.DurationVar(&opts.timeout, "timeout", 10*time.Second, "timeout of each call to legacy or newpath")
	f.StringVarP(&opts.output, "output", "o", "text", "output format: text or json")
	return cmd
}

func runReplay(cmd *cobra.Command, opts replayOptions) error {
	ctx := cmd.Context()
	stdout, stderr := cmd.OutOrStdout(), cmd.ErrOrStderr()
	usage := func(format string, args ...any) error {
		return &exitError{code: 2, err: fmt.Errorf(format, args...)}
	}
	switch {
	case opts.from == "":
		return usage("--from is required")
	case opts.legacy == "" || opts.newpath == "":
		return usage("--legacy and --newpath are required")
	case opts.output != "text" && opts.output != "json":
		return usage("--output %q: want text or json", opts.output)
	case opts.concurrency < 1 || opts.noise < 0 || opts.rate < 0:
		return usage("--concurrency must be at least 1, --noise and --rate at least 0")
	}
	filter := replay.Filter{Routes: opts.routes}
	if opts.since != "" {
		since, err := parseSince(opts.since, time.Now())
		if err != nil {
			return usage("--since: %v", err)
		}
		filter.Since = since
	}
	ro := replay.Options{Legacy: opts.legacy, Newpath: opts.newpath, Noise: opts.noise, Concurrency: opts.concurrency, Rate: opts.rate}
	if opts.config != "" {
		cfg, _, err := config.Load(opts.config)
		if err != nil {
			return &exitError{code: 2, err: err}
		}
		ro.MaxBodyBytes = cfg.Shadow.MaxBodyBytes
		ro.Route = func(name string) *config.Route {
			i := slices.IndexFunc(cfg.Routes, func(r config.Route) bool { return r.Name == name })
			if i < 0 {
				return nil
			}
			return &cfg.Routes[i]
		}
	}
	records, err := replay.Load(ctx, opts.from, filter)
	if err != nil {
		return &exitError{code: 2, err: fmt.Errorf("--from: %w", err)}
	}
	if f, ok := stderr.(*os.File); ok && isTerminal(f) {
		ro.Progress = func(done, total int) { fmt.Fprintf(stderr, "\rreplayed %d of %d", done, total) }
		defer fmt.Fprint(stderr, "\r\033[K")
	}
	if opts.noise == 0 && slices.ContainsFunc(records, func(s proxy.Sample) bool { return s.Result == "noise" }) {
		fmt.Fprintln(stderr, "strangler replay: some records were judged noise when recorded; without --noise their noise will count as divergences")
	}
	ro.Client = newReplayClient(opts.timeout, opts.concurrency)
	rep := replay.Run(ctx, records, ro)
	if opts.output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		err = enc.Encode(struct {
			Routes []replay.RouteSummary `json:"routes"`
			Failed bool                  `json:"failed"`
		}{rep.Routes, rep.Failed()})
	} else {
		err = printReplay(stdout, len(records), rep)
	}
	if err != nil {
		return err
	}
	switch {
	case rep.Failed():
		return errSilent
	case len(records) == 0:
		// A gate that checked nothing has not passed: a mistyped --route
		// or an empty source must not turn a pipeline green.
		return &exitError{code: 2, err: fmt.Errorf("no records to replay from %s", opts.from)}
	case rep.Errors() > 0:
		return &exitError{code: 2, err: fmt.Errorf("%d of %d records could not be replayed: nothing diverged, but not everything was checked", rep.Errors(), len(records))}
	}
	return nil
}

// newReplayClient calls legacy and newpath. It asks for no compression of
// its own: the recorded Accept-Encoding is sent, and the comparer undoes
// what the answers carry, as the proxy's does.
func newReplayClient(timeout time.Duration, concurrency int) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{
		MaxIdleConnsPerHost: concurrency, DisableCompression: true, Proxy: http.ProxyFromEnvironment}}
}

// parseSince reads --since: a duration back from now, or an RFC 3339 time.
func parseSince(v string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(v); err == nil {
		if d < 0 {
			return time.Time{}, fmt.Errorf("%q is negative", v)
		}
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither a duration (24h) nor an RFC 3339 time", v)
	}
	return t, nil
}

// printReplay writes the table of rep, then the fields of what diverges
// now and why records could not be replayed.
func printReplay(w io.Writer, n int, rep *replay.Report) error {
	if n == 0 {
		_, err := fmt.Fprintln(w, "no records to replay")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ROUTE\tREPLAYED\tMATCHING\tFIXED\tSTILL DIVERGING\tNEWLY DIVERGING\tERRORS")
	for _, r := range rep.Routes {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\n", r.Route, r.Replayed, r.Matching, r.Fixed, r.StillDiverging, r.NewlyDiverging, r.Errors)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, r := range rep.Routes {
		if len(r.Fields) > 0 {
			fmt.Fprintf(w, "%s diverges in: %s\n", r.Route, countList(r.Fields))
		}
		if len(r.ErrorReasons) > 0 {
			fmt.Fprintf(w, "%s errors: %s\n", r.Route, countList(r.ErrorReasons))
		}
	}
	return nil
}

// countList is "a (3), b (1)": most first, then by name.
func countList(counts map[string]int) string {
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if counts[keys[i]] != counts[keys[j]] {
			return counts[keys[i]] > counts[keys[j]]
		}
		return keys[i] < keys[j]
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s (%d)", k, counts[k])
	}
	return strings.Join(parts, ", ")
}
