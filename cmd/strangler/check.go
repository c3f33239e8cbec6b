package main

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/strangler-proxy/strangler/config"
	"github.com/strangler-proxy/strangler/proxy"
)

func checkCmd() *cobra.Command {
	var path string
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Validate a config file and print its effective routes (exit 1 listing every error)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return check(cmd.OutOrStdout(), cmd.ErrOrStderr(), path)
		},
	}
	configFlag(cmd, &path)
	return cmd
}

// check loads, validates and provisions the file exactly as serve's
// start-up and every reload do: a file it accepts is one the proxy runs.
func check(stdout, stderr io.Writer, path string) error {
	cfg, _, err := config.Load(path)
	if err == nil {
		_, err = proxy.Provision(cfg)
	}
	if err != nil {
		var ve *config.ValidationError
		if !errors.As(err, &ve) {
			fmt.Fprintf(stderr, "%s: %s\n", path, config.Redact(err.Error()))
			return errSilent
		}
		fmt.Fprintf(stderr, "%s: %d error(s):\n", path, len(ve.Errors))
		for _, fe := range ve.Errors {
			fmt.Fprintf(stderr, "  %s\n", fe.Error())
		}
		return errSilent
	}
	fmt.Fprintf(stdout, "%s: ok\n", path)
	for _, w := range cfg.Warnings() {
		fmt.Fprintf(stderr, "%s: warning: %s\n", path, w.Error())
	}
	upstreams := "legacy " + config.Redact(cfg.Upstreams.Legacy().URL)
	for _, name := range cfg.Upstreams.NewServices() {
		upstreams += ", " + name + " " + config.Redact(cfg.Upstreams[name].URL)
	}
	fmt.Fprintf(stdout, "listen %s, admin %s, %s, sticky %s\n\n",
		cfg.Listen, cfg.Admin.Listen, upstreams, cfg.Sticky.Key)
	printRoutes(stdout, cfg)
	return nil
}

func printRoutes(w io.Writer, cfg *config.Config) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ROUTE\tMATCH\tTO\tWEIGHT\tSHADOW\tDRY-RUN\tFALLBACK\tGUARD\tRAMP")
	for _, r := range cfg.Routes {
		guard := "-"
		if g := r.Guard; g != nil {
			guard = fmt.Sprintf("err>%g div>%g n>=%d/%s", g.MaxErrorRate, g.MaxDivergenceRate, g.MinSamples, g.Window)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%g%%\t%g%%\t%t\t%t\t%s\t%s\n",
			r.Name, r.Match, r.To, r.Weight, r.Shadow.Percent, r.Shadow.DryRun, r.Fallback, guard, rampPlan(r.Ramp))
	}
	fmt.Fprintf(tw, "(unmatched)\t*\tlegacy\t-\t-\t-\t-\t-\n")
	_ = tw.Flush()
}

// rampPlan is a route's ramp in one cell: "1,5,10% every 10m0s (ready)".
func rampPlan(r *config.Ramp) string {
	if r == nil {
		return "-"
	}
	steps := make([]string, len(r.Steps))
	for i, v := range r.Steps {
		steps[i] = strconv.FormatFloat(v, 'g', -1, 64)
	}
	plan := fmt.Sprintf("%s%% every %s (%s)", strings.Join(steps, ","), r.Every, r.Require)
	if r.Start != "" {
		plan += " from " + r.Start
	}
	return plan
}
