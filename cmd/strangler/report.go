package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/strangler-proxy/strangler/proxy"
)

// reportOutputs are the values of report's --output.
var reportOutputs = []string{"text", "json"}

func reportCmd() *cobra.Command {
	var opts reportOptions
	cmd := &cobra.Command{
		Use:   "report [--require-ready ROUTE...]",
		Short: "Print each route's migration readiness from a running proxy's admin API",
		Long: `Print each route's migration readiness from a running proxy's admin API
(GET /admin/routes), as a table or as JSON.

With --require-ready it is a promotion gate: it exits 1 unless every named
route is ready, one line on stderr for each route that is not.

Exit codes: 0 ok (and every required route ready); 1 a required route is
not ready or does not exist; 2 nothing was judged: the admin API cannot be
read (a pipeline may retry) or a flag is wrong. Stderr says which.`,
		Example: `  strangler report --admin http://proxy:9090
  strangler report --admin http://proxy:9090 --output json | jq '.routes[] | {name, verdict: .readiness.verdict}'
  strangler report --admin http://proxy:9090 --require-ready get-order list-orders || exit 1
  strangler report --admin http://proxy:9090 --require-ready get-order,list-orders --require-ready cancel-order`,
		// Arguments are more routes for --require-ready, so that
		// "--require-ready get-order list-orders" means what it reads as.
		// Without the flag they are refused: a bare route name must not
		// turn a report into a gate, nor be silently ignored.
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 && !cmd.Flags().Changed("require-ready") {
				return &exitError{code: 2, err: fmt.Errorf("unexpected arguments %q: routes to require need --require-ready", args)}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.requireReady = append(opts.requireReady, args...)
			return report(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), opts)
		},
	}
	cmd.Flags().StringVar(&opts.admin, "admin", "http://127.0.0.1:9090", "base URL of the proxy's admin listener")
	cmd.Flags().StringVarP(&opts.output, "output", "o", "text", "output format: "+strings.Join(reportOutputs, " or "))
	cmd.Flags().StringSliceVar(&opts.requireReady, "require-ready", nil,
		"exit 1 unless each of these routes is ready (names after it, separated by commas, or the flag repeated)")
	return cmd
}

// reportOptions are report's flags.
type reportOptions struct {
	admin        string
	output       string
	requireReady []string
}

// routeReport is what report reads of each route of /admin/routes, and
// also each route of its JSON output. It keeps the admin API's field names,
// so that a script can move between the two, but only these fields: the
// JSON output is a contract for pipelines, and the admin API may grow.
type routeReport struct {
	Name            string          `json:"name"`
	Match           string          `json:"match"`
	To              string          `json:"to"`
	Weight          float64         `json:"weight"`
	EffectiveWeight float64         `json:"effective_weight"`
	ShadowPercent   float64         `json:"shadow_percent"`
	DryRun          bool            `json:"dry_run"`
	Guard           proxy.GuardView `json:"guard"`
	Readiness       proxy.Readiness `json:"readiness"`
	// Ramp is absent for a route without one.
	Ramp *proxy.RampView `json:"ramp,omitempty"`
}

// routesReport is /admin/routes as report reads it, and report's JSON
// output.
type routesReport struct {
	Upstreams map[string]proxy.UpstreamHealth `json:"upstreams"`
	Routes    []routeReport                   `json:"routes"`
}

func report(ctx context.Context, stdout, stderr io.Writer, opts reportOptions) error {
	// Usage errors first: a typo in a pipeline must not look like a proxy
	// that is down, nor cost a request.
	if !slices.Contains(reportOutputs, opts.output) {
		return &exitError{code: 2, err: fmt.Errorf("--output %q: want %s", opts.output, strings.Join(reportOutputs, " or "))}
	}
	if slices.Contains(opts.requireReady, "") {
		return &exitError{code: 2, err: fmt.Errorf("--require-ready: an empty route name in %q", strings.Join(opts.requireReady, ","))}
	}
	body, err := fetchRoutes(ctx, opts.admin)
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	if opts.output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		err = enc.Encode(body)
	} else {
		err = printReport(stdout, body)
	}
	if err != nil {
		return err
	}
	// The report is printed before the gate judges, so that a failed
	// pipeline's log holds the whole table, not just the verdict.
	failures := gateFailures(body.Routes, opts.requireReady)
	for _, f := range failures {
		fmt.Fprintln(stderr, "strangler report:", f)
	}
	if len(failures) > 0 {
		return errSilent
	}
	return nil
}

// fetchRoutes reads /admin/routes of the admin listener at admin.
func fetchRoutes(ctx context.Context, admin string) (*routesReport, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", strings.TrimSuffix(admin, "/")+"/admin/routes", nil)
	if err != nil {
		return nil, fmt.Errorf("admin URL: %w", err)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("read readiness: %w", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("read readiness: %s answered %s", req.URL, res.Status)
	}
	var body routesReport
	if err := json.NewDecoder(res.Body).Decode(&body); err != nil {
		return nil, fmt.Errorf("read readiness: %w", err)
	}
	return &body, nil
}

// gateFailures returns why each of the required routes may not be
// promoted, one line per route, in the order they were named; none when
// all are ready. A route whose guard has tripped fails even with a ready
// verdict: the proxy itself rolled it back, and the verdict's thresholds
// are not the guard's.
func gateFailures(routes []routeReport, required []string) []string {
	var failures []string
	seen := map[string]bool{}
	for _, name := range required {
		if seen[name] {
			continue
		}
		seen[name] = true
		i := slices.IndexFunc(routes, func(r routeReport) bool { return r.Name == name })
		if i < 0 {
			failures = append(failures, fmt.Sprintf("no route named %q", name))
			continue
		}
		r := routes[i]
		switch {
		case r.Readiness.Verdict != "ready":
			why := strings.Join(r.Readiness.Reasons, "; ")
			if why == "" {
				why = "no reason given"
			}
			failures = append(failures, fmt.Sprintf("route %s is %s: %s", name, r.Readiness.Verdict, why))
		case r.Guard.State == "tripped":
			failures = append(failures, fmt.Sprintf("route %s is ready but its guard tripped: %s", name, r.Guard.Reason))
		}
	}
	return failures
}

// printReport writes the upstreams' reachability and the readiness table.
func printReport(w io.Writer, body *routesReport) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "UPSTREAM\tURL\tREACHABLE")
	for _, name := range upstreamNames(body.Upstreams) {
		u, ok := body.Upstreams[name]
		state := "up"
		switch {
		case !ok || u.CheckedAt.IsZero():
			state = "not probed yet"
		case !u.Up:
			state = "DOWN: " + u.Error
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", name, u.URL, state)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	fmt.Fprintln(tw, "ROUTE\tUPSTREAM\tWEIGHT\tEFFECTIVE\tGUARD\tRAMP\tCOMPARED\tMISMATCH\tNOISE\tERR LEGACY\tERR NEWPATH\tP99 LEGACY\tP99 NEWPATH\tVERDICT\tREASONS")
	for _, r := range body.Routes {
		rd := r.Readiness
		fmt.Fprintf(tw, "%s\t%s\t%g%%\t%g%%\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			r.Name, r.To, r.Weight, r.EffectiveWeight, r.Guard.State, rampColumn(r.Ramp), rd.Comparisons,
			percent(rd.MismatchRate), percent(rd.NoiseRate),
			percent(rd.ErrorRate["legacy"]), percent(rd.ErrorRate["newpath"]),
			millis(rd.P99Seconds, "legacy"), millis(rd.P99Seconds, "newpath"),
			rd.Verdict, strings.Join(rd.Reasons, "; "))
	}
	return tw.Flush()
}

// upstreamNames are the upstreams to list: legacy and newpath always, so
// that one the proxy does not report shows as not probed, then the other
// new services by name.
func upstreamNames(upstreams map[string]proxy.UpstreamHealth) []string {
	names := []string{"legacy", "newpath"}
	var others []string
	for name := range upstreams {
		if !slices.Contains(names, name) {
			others = append(others, name)
		}
	}
	slices.Sort(others)
	return append(names, others...)
}

// rampColumn is a ramp in one cell: its step's weight and position, and
// why it is paused ("25% (3/5), paused: not_ready"); "-" without one.
func rampColumn(r *proxy.RampView) string {
	if r == nil {
		return "-"
	}
	cell := fmt.Sprintf("%g%% (%d/%d)", r.StepWeight, r.StepIndex+1, len(r.Steps))
	switch {
	case r.Paused:
		// The readiness reasons have a column of their own.
		reason, _, _ := strings.Cut(r.Reason, ":")
		cell += ", paused: " + reason
	case r.Complete:
		cell += ", complete"
	case r.NextStepAt != nil:
		cell += ", next " + r.NextStepAt.UTC().Format(time.TimeOnly)
	}
	return cell
}

func percent(v float64) string { return fmt.Sprintf("%.2f%%", 100*v) }

func millis(p99 map[string]float64, backend string) string {
	v, ok := p99[backend]
	if !ok {
		return "-"
	}
	return fmt.Sprintf("%.1fms", 1000*v)
}
