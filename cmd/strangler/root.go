package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"

	"github.com/spf13/cobra"
	"github.com/strangler-proxy/strangler/config"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = ""

// errSilent reports failure whose message the command already printed.
var errSilent = errors.New("")

// exitError is a failure with its own exit code: for a gate, a check that
// failed (1) is not a check that could not run (2).
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// run executes the command line and returns the process exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := &cobra.Command{
		Use:           "strangler",
		Short:         "A strangler-fig reverse proxy for migrating a legacy backend one endpoint at a time",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	// A wrong flag is a usage error (2), as for report's and replay's
	// own usage checks: a gate must not read it as "not ready".
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &exitError{code: 2, err: err} })
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(serveCmd(), checkCmd(), demoCmd(), reportCmd(), replayCmd(), versionCmd())
	if err := root.ExecuteContext(ctx); err != nil {
		if !errors.Is(err, errSilent) {
			fmt.Fprintln(stderr, "strangler:", config.Redact(err.Error()))
		}
		if ee, ok := errors.AsType[*exitError](err); ok {
			return ee.code
		}
		return 1
	}
	return 0
}

// configFlag is --config, defaulting to $STRANGLER_CONFIG, then strangler.yaml.
func configFlag(cmd *cobra.Command, path *string) {
	def := os.Getenv("STRANGLER_CONFIG")
	if def == "" {
		def = "strangler.yaml"
	}
	cmd.Flags().StringVarP(path, "config", "c", def, "config file (env STRANGLER_CONFIG)")
}

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

func versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintln(cmd.OutOrStdout(), "strangler", buildVersion())
			return nil
		},
	}
}
