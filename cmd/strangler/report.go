package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/strangler-proxy/strangler/proxy"
)

func reportCmd() *cobra.Command {
	var admin string
	cmd := &cobra.Command{
		Use:   "report",
		Short: "Print each route's migration readiness from a running proxy's admin API",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return report(cmd.Context(), cmd.OutOrStdout(), admin)
		},
	}
	cmd.Flags().StringVar(&admin, "admin", "http://127.0.0.1:9090", "base URL of the proxy's admin listener")
	return cmd
}

// routeReport is what report reads of /admin/routes.
type routeReport struct {
	Name            string          `json:"name"`
	Weight          float64         `json:"weight"`
	EffectiveWeight float64         `json:"effective_weight"`
	Guard           proxy.GuardView `json:"guard"`
	Readiness       proxy.Readiness `json:"readiness"`
}

func report(ctx context.Context, w io.Writer, admin string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", strings.TrimSuffix(admin, "/")+"/admin/routes", nil)
	if err != nil {
		return fmt.Errorf("admin URL: %w", err)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("read readiness: %w", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("read readiness: %s answered %s", req.URL, res.Status)
	}
	var body struct {
		Upstreams map[string]proxy.UpstreamHealth
		Routes    []routeReport
	}
	if err := json.NewDecoder(res.Body).Decode(&body); err != nil {
		return fmt.Errorf("read readiness: %w", err)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "UPSTREAM\tURL\tREACHABLE")
	for _, name := range []string{"legacy", "newpath"} {
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
	fmt.Fprintln(tw, "ROUTE\tWEIGHT\tEFFECTIVE\tGUARD\tCOMPARED\tMISMATCH\tNOISE\tERR LEGACY\tERR NEWPATH\tP99 LEGACY\tP99 NEWPATH\tVERDICT\tREASONS")
	for _, r := range body.Routes {
		rd := r.Readiness
		fmt.Fprintf(tw, "%s\t%g%%\t%g%%\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			r.Name, r.Weight, r.EffectiveWeight, r.Guard.State, rd.Comparisons,
			percent(rd.MismatchRate), percent(rd.NoiseRate),
			percent(rd.ErrorRate["legacy"]), percent(rd.ErrorRate["newpath"]),
			millis(rd.P99Seconds, "legacy"), millis(rd.P99Seconds, "newpath"),
			rd.Verdict, strings.Join(rd.Reasons, "; "))
	}
	return tw.Flush()
}

func percent(v float64) string { return fmt.Sprintf("%.2f%%", 100*v) }

func millis(p99 map[string]float64, backend string) string {
	v, ok := p99[backend]
	if !ok {
		return "-"
	}
	return fmt.Sprintf("%.1fms", 1000*v)
}
