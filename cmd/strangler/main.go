// Command strangler is the strangler-fig reverse proxy: serve, check a
// config, run the demo, report readiness.
package main

import (
	"context"
	"os"
)

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}
