// Command gen writes the Grafana dashboards of dashboards/ from their Go
// definitions (package dashboards/internal/gen): `make dashboards`.
//
//	go run ./dashboards/cmd/gen [-dir dashboards]
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/strangler-proxy/strangler/dashboards/internal/gen"
)

func main() {
	dir := flag.String("dir", "dashboards", "the folder to write the dashboard JSON files to")
	flag.Parse()
	if err := gen.Write(*dir); err != nil {
		fmt.Fprintln(os.Stderr, "dashboards:", err)
		os.Exit(1)
	}
}
