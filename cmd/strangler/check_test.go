package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const validUpstreams = `
upstreams:
  legacy: { url: "http://127.0.0.1:9001" }
  newpath: { url: "http://127.0.0.1:9002" }
`

func TestCheckNamesTheBrokenKey(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want string // must appear in stderr
	}{
		{"bad yaml", "upstreams: [\n", "invalid YAML"},
		{"unknown top-level key", validUpstreams + "lisen: x\n", "lisen: unknown key"},
		{"unknown route key", validUpstreams + "routes:\n  - {name: a, match: \"GET /a\"}\n  - {name: b, match: \"GET /b\", wieght: 5}\n", "routes[1].wieght: unknown key"},
		{"unknown nested key", validUpstreams + "shadow: { max_inflight: 3 }\n", "shadow.max_inflight: unknown key"},
		{"weight above 100", validUpstreams + "routes:\n  - {name: a, match: \"GET /a\", weight: 150}\n", "routes[0].weight: must be between 0 and 100"},
		{"weight with three decimals", validUpstreams + "routes:\n  - {name: a, match: \"GET /a\", weight: 10.125}\n", "routes[0].weight: at most two decimals"},
		{"weight not a number", validUpstreams + "routes:\n  - {name: a, match: \"GET /a\", weight: ten}\n", "routes[0].weight: expected a number"},
		{"conflicting patterns", validUpstreams + "routes:\n  - {name: a, match: \"GET /orders/{id}\"}\n  - {name: b, match: \"GET /orders/{oid}\"}\n", "routes[1].match"},
		{"bad pattern", validUpstreams + "routes:\n  - {name: a, match: \"GET orders\"}\n", "routes[0].match"},
		// ServeMux accepts these two, and they match nothing.
		{"lower-case method", validUpstreams + "routes:\n  - {name: get-order, match: \"get /orders/{id}\", weight: 10}\n",
			`routes[0].match: route "get-order": method "get" is not upper case`},
		{"path read as a host", validUpstreams + "routes:\n  - {name: get-order, match: \"GET orders/{id}\", weight: 10}\n",
			`routes[0].match: route "get-order": the path "orders/{id}" does not start with "/"`},
		{"invalid mask regex", validUpstreams + "routes:\n  - {name: a, match: \"GET /a\", compare: {mask: {\"/body/orderId\": \"^ord_(\"}}}\n",
			`routes[0].compare.mask["/body/orderId"]: "^ord_(" is not a regular expression`},
		{"duplicate route name", validUpstreams + "routes:\n  - {name: a, match: \"GET /a\"}\n  - {name: a, match: \"GET /b\"}\n", "routes[1].name: duplicate route name"},
		{"bad route name", validUpstreams + "routes:\n  - {name: Get_Order, match: \"GET /a\"}\n", "routes[0].name"},
		{"missing legacy url", "upstreams:\n  newpath: { url: \"http://127.0.0.1:9002\" }\n", "upstreams.legacy.url: required"},
		{"bad upstream url", "upstreams:\n  legacy: { url: \"ftp://x\" }\n  newpath: { url: \"http://127.0.0.1:9002\" }\n", "upstreams.legacy.url"},
		{"bad timeout", "upstreams:\n  legacy: { url: \"http://a\", timeout: soon }\n  newpath: { url: \"http://b\" }\n", "upstreams.legacy.timeout"},
		{"bad sticky key", validUpstreams + "sticky: { key: \"header:\" }\n", "sticky.key"},
		{"bad cidr", validUpstreams + "trusted_proxies: [\"10.0.0.0/33\"]\n", "trusted_proxies[0]"},
		{"bad listen", validUpstreams + "listen: \"8080\"\n", "listen:"},
		{"bad exporter", validUpstreams + "tracing: { exporter: jaeger }\n", "tracing.exporter"},
		{"bad log level", validUpstreams + "log: { level: loud }\n", "log.level"},
		{"shadow percent", validUpstreams + "routes:\n  - {name: a, match: \"GET /a\", shadow: {percent: -1}}\n", "routes[0].shadow.percent"},
		{"bad compare path", validUpstreams + "routes:\n  - {name: a, match: \"GET /a\", compare: {ignore: [\"body/x\"]}}\n", "routes[0].compare.ignore[0]"},
		{"guard min_samples", validUpstreams + "routes:\n  - {name: a, match: \"GET /a\", guard: {min_samples: 0, window: 1m}}\n", "routes[0].guard.min_samples"},
		{"bad database url", validUpstreams + "divergence_store: { database_url: \"mysql://x\" }\n", "divergence_store.database_url"},
		// What serve could not start, or would crash putting in force.
		{"timeout without a unit", "upstreams:\n  legacy: { url: \"http://a\", timeout: 10 }\n  newpath: { url: \"http://b\" }\n", "upstreams.legacy.timeout: expected a duration"},
		{"port out of range", validUpstreams + "listen: \"127.0.0.1:99999\"\n", "listen: port 99999 is out of range"},
		{"both listeners on one socket", validUpstreams + "listen: \":8080\"\nadmin: { listen: \":8080\" }\n", "admin.listen:"},
		{"capture file in a missing directory", validUpstreams + "capture: { file: /nonexistent-dir/c.jsonl }\n", "capture.file: its directory"},
		{"huge capture queue", validUpstreams + "capture: { file: /tmp/c.jsonl, queue: 1000000000000000 }\n", "capture.queue: must be 1 to"},
		{"huge samples_per_route", validUpstreams + "divergence_store: { samples_per_route: 1000000000000000 }\n", "divergence_store.samples_per_route: must be 1 to"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "strangler.yaml")
			if err := os.WriteFile(path, []byte(tt.yaml), 0o644); err != nil {
				t.Fatal(err)
			}
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), []string{"check", "--config", path}, &stdout, &stderr)
			if code != 1 {
				t.Fatalf("exit code = %d; want 1\nstdout: %s\nstderr: %s", code, &stdout, &stderr)
			}
			if !strings.Contains(stderr.String(), tt.want) {
				t.Errorf("stderr = %q; want it to contain %q", &stderr, tt.want)
			}
		})
	}
}

func TestCheckListsEveryErrorOfAFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "strangler.yaml")
	yaml := validUpstreams + `
log: { level: loud }
routes:
  - {name: a, match: "GET /a", weight: 150}
  - {name: b, match: "GET /b", wieght: 5}
`
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"check", "-c", path}, &stdout, &stderr); code != 1 {
		t.Fatalf("exit code = %d; want 1", code)
	}
	for _, want := range []string{"3 error(s)", "log.level", "routes[0].weight", "routes[1].wieght: unknown key"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr = %q; want it to contain %q", &stderr, want)
		}
	}
}

func TestCheckWarnsOfAMethodlessRouteThatMovesTraffic(t *testing.T) {
	tests := []struct {
		name, route string
		warn        bool
	}{
		{"weight", `{name: orders, match: "/orders/{id}", weight: 10}`, true},
		{"shadow", `{name: orders, match: "/orders/{id}", shadow: {percent: 5}}`, true},
		{"neither", `{name: orders, match: "/orders/{id}"}`, false},
		{"a method", `{name: orders, match: "GET /orders/{id}", weight: 10}`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "strangler.yaml")
			if err := os.WriteFile(path, []byte(validUpstreams+"routes:\n  - "+tt.route+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			var stdout, stderr bytes.Buffer
			if code := run(context.Background(), []string{"check", "--config", path}, &stdout, &stderr); code != 0 {
				t.Fatalf("exit code = %d; want 0 (a warning is no error)\nstderr: %s", code, &stderr)
			}
			const want = `warning: routes[0].match: route "orders": "/orders/{id}" has no method`
			if got := strings.Contains(stderr.String(), want); got != tt.warn {
				t.Errorf("stderr = %q; warning shown %t, want %t", &stderr, got, tt.warn)
			}
		})
	}
}

func TestCheckExampleConfig(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"check", "--config", "../../config/example.yaml"}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit code = %d; want 0\nstderr: %s", code, &stderr)
	}
	if stderr.Len() > 0 {
		t.Errorf("the example config has warnings: %s", &stderr)
	}
	for _, want := range []string{"get-order", "GET /orders/{id}", "10%", "create-order", "1,5,10% every 10m0s (ready)"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("stdout = %q; want it to contain %q", &stdout, want)
		}
	}
}
