package config

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

const minimal = `
upstreams:
  legacy: { url: "http://127.0.0.1:9001" }
  newpath: { url: "http://127.0.0.1:9002/api" }
routes:
  - name: get-order
    match: "GET /orders/{id}"
`

func TestMinimalConfigGetsEveryDefault(t *testing.T) {
	cfg, err := Parse([]byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"listen", cfg.Listen, "127.0.0.1:8080"},
		{"admin.listen", cfg.Admin.Listen, "127.0.0.1:9090"},
		{"admin.token_env", cfg.Admin.TokenEnv, "STRANGLER_ADMIN_TOKEN"},
		{"upstreams.legacy.timeout", cfg.Upstreams.Legacy().Timeout, Duration(30 * time.Second)},
		{"upstreams.newpath.preserve_host", cfg.Upstreams.Newpath().PreserveHost, true},
		{"sticky.key", cfg.Sticky.Key, "none"},
		{"sticky.salt", cfg.Sticky.Salt, "strangler"},
		{"overrides.header", cfg.Overrides.Header, "X-Strangler-Backend"},
		{"overrides.trusted_cidrs", strings.Join(cfg.Overrides.TrustedCIDRs, ","), "127.0.0.0/8"},
		{"shadow.max_in_flight", cfg.Shadow.MaxInFlight, 256},
		{"shadow.max_body_bytes", cfg.Shadow.MaxBodyBytes, int64(1 << 20)},
		{"shadow.timeout", cfg.Shadow.Timeout, Duration(5 * time.Second)},
		{"shadow.pipeline_depth", cfg.Shadow.PipelineDepth, 16},
		{"divergence_store.samples_per_route", cfg.DivergenceStore.SamplesPerRoute, 100},
		{"divergence_store.sample_body_bytes", cfg.DivergenceStore.SampleBodyBytes, 65536},
		{"divergence_store.retention", cfg.DivergenceStore.Retention, Duration(7 * 24 * time.Hour)},
		{"client_body_timeout", cfg.ClientBodyTimeout, Duration(time.Minute)},
		{"tracing.exporter", cfg.Tracing.Exporter, "none"},
		{"tracing.sample_ratio", cfg.Tracing.SampleRatio, 1.0},
		{"log.level", cfg.Log.Level, "info"},
		{"log.access", cfg.Log.Access, true},
		{"routes[0].weight", cfg.Routes[0].Weight, 0.0},
		{"routes[0].fallback", cfg.Routes[0].Fallback, true},
		{"routes[0].shadow.percent", cfg.Routes[0].Shadow.Percent, 0.0},
		{"routes[0].compare.headers", strings.Join(cfg.Routes[0].Compare.Headers, ","), "content-type"},
		{"routes[0].guard", cfg.Routes[0].Guard == nil, true},
		{"newpath parsed path", cfg.Upstreams.Newpath().ParsedURL().Path, "/api"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v; want %v", c.name, c.got, c.want)
		}
	}
}

func TestPartialRouteSectionsKeepTheirOtherDefaults(t *testing.T) {
	cfg, err := Parse([]byte(minimal + `    weight: 12.5
    compare: { noise_percent: 5 }
    fallback: false
`))
	if err != nil {
		t.Fatal(err)
	}
	r := cfg.Routes[0]
	if r.WeightBasisPoints() != 1250 || r.Fallback || r.Compare.NoisePercent != 5 || len(r.Compare.Headers) != 1 {
		t.Errorf("route = %+v; want weight 1250bp, fallback off, noise 5, default headers", r)
	}
}

func TestEnvironmentOverrides(t *testing.T) {
	t.Setenv("STRANGLER_LISTEN", "0.0.0.0:8081")
	t.Setenv("STRANGLER_UPSTREAMS_LEGACY_URL", "http://legacy.internal:80")
	t.Setenv("STRANGLER_SHADOW_MAX_IN_FLIGHT", "12")
	t.Setenv("STRANGLER_LOG_ACCESS", "false")
	cfg, err := Parse([]byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != "0.0.0.0:8081" || cfg.Upstreams.Legacy().URL != "http://legacy.internal:80" ||
		cfg.Shadow.MaxInFlight != 12 || cfg.Log.Access {
		t.Errorf("env overrides not applied: listen %q legacy %q max_in_flight %d access %v",
			cfg.Listen, cfg.Upstreams.Legacy().URL, cfg.Shadow.MaxInFlight, cfg.Log.Access)
	}
	t.Setenv("STRANGLER_SHADOW_MAX_IN_FLIGHT", "lots")
	_, err = Parse([]byte(minimal))
	var ve *ValidationError
	if !errors.As(err, &ve) || !strings.Contains(err.Error(), "shadow.max_in_flight") {
		t.Errorf("bad env value: err = %v; want a ValidationError naming shadow.max_in_flight", err)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestReloaderCountsAndRefuses(t *testing.T) {
	path := filepath.Join(t.TempDir(), "strangler.yaml")
	writeFile(t, path, minimal)
	reg := prometheus.NewRegistry()
	now := time.Unix(1700000000, 0)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	rl, err := NewReloader(path, ReloaderOptions{Registerer: reg, Logger: logger, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	var applied []*Snapshot
	rl.Subscribe(func(s *Snapshot) { applied = append(applied, s) })
	reloads := func(result string) float64 {
		return testutil.ToFloat64(rl.metrics.reloads.WithLabelValues(result))
	}
	if got := testutil.ToFloat64(rl.metrics.successTS); got != 1700000000 {
		t.Errorf("success timestamp = %v; want the load time", got)
	}

	// Same bytes: not a reload.
	if err := rl.Reload(); err != nil || len(applied) != 0 || reloads("success") != 0 {
		t.Errorf("unchanged file: err %v, applied %d, successes %v; want a no-op", err, len(applied), reloads("success"))
	}

	writeFile(t, path, strings.Replace(minimal, `"GET /orders/{id}"`, `"GET /orders/{id}"`+"\n    weight: 200", 1))
	for i := 0; i < 3; i++ { // the poll sees the same broken file again
		if err := rl.Reload(); err == nil {
			t.Fatal("invalid file reloaded without error")
		}
	}
	if reloads("failure") != 1 || testutil.ToFloat64(rl.metrics.successful) != 0 || len(applied) != 0 {
		t.Errorf("after a broken file: failures %v, successful %v, applied %d; want 1, 0, 0",
			reloads("failure"), testutil.ToFloat64(rl.metrics.successful), len(applied))
	}
	if rl.Current().Config.Routes[0].Weight != 0 {
		t.Error("the broken file's weight is in force")
	}

	writeFile(t, path, "listen: \"127.0.0.1:1\"\n"+minimal)
	err = rl.Reload()
	if !errors.Is(err, ErrRestartRequired) || !strings.Contains(err.Error(), "listen: changed from") {
		t.Errorf("listen change: err = %v; want restart required", err)
	}

	writeFile(t, path, strings.Replace(minimal, `"GET /orders/{id}"`, `"GET /orders/{id}"`+"\n    weight: 20", 1))
	if err := rl.Reload(); err != nil {
		t.Fatal(err)
	}
	if len(applied) != 1 || applied[0].Config.Routes[0].Weight != 20 || rl.LastFailure() != nil {
		t.Errorf("valid edit: applied %d, failure %v; want the new weight applied once", len(applied), rl.LastFailure())
	}
	if testutil.ToFloat64(rl.metrics.successful) != 1 || reloads("success") != 1 {
		t.Error("valid edit not counted as a successful reload")
	}
}

// A provisioner's refusal is a failed reload: no provisioner activates,
// no subscriber hears of it, the old config stays in force.
func TestReloaderProvisionersAllOrNothing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "strangler.yaml")
	writeFile(t, path, minimal)
	rl, err := NewReloader(path, ReloaderOptions{Registerer: prometheus.NewRegistry(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	var activated []string
	refuse := false
	rl.AddProvisioner(func(*Snapshot) (func(), error) {
		return func() { activated = append(activated, "first") }, nil
	})
	rl.AddProvisioner(func(s *Snapshot) (func(), error) {
		if refuse {
			return nil, &ValidationError{Errors: []FieldError{{Path: "routes[0].compare", Problem: "cannot compile"}}}
		}
		return func() { activated = append(activated, "second") }, nil
	})
	var heard int
	rl.Subscribe(func(*Snapshot) { heard++ })

	refuse = true
	writeFile(t, path, strings.Replace(minimal, `"GET /orders/{id}"`, `"GET /orders/{id}"`+"\n    weight: 20", 1))
	if err := rl.Reload(); err == nil || !strings.Contains(err.Error(), "routes[0].compare: cannot compile") {
		t.Errorf("Reload: %v; want the provisioner's refusal", err)
	}
	if len(activated) != 0 || heard != 0 || rl.Current().Config.Routes[0].Weight != 0 {
		t.Errorf("after a refusal: activated %v, subscribers called %d, weight %v; want nothing changed",
			activated, heard, rl.Current().Config.Routes[0].Weight)
	}
	if testutil.ToFloat64(rl.metrics.successful) != 0 || rl.LastFailure() == nil {
		t.Error("a refused config is not reported as a failed reload")
	}

	refuse = false
	if err := rl.Reload(); err != nil {
		t.Fatal(err)
	}
	if strings.Join(activated, ",") != "first,second" || heard != 1 || rl.Current().Config.Routes[0].Weight != 20 {
		t.Errorf("after an accepted reload: activated %v, subscribers called %d; want both activated in order, then the subscriber", activated, heard)
	}
}

func TestNewReloaderRefusesAnInvalidFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "strangler.yaml")
	writeFile(t, path, "routes: 5\n")
	_, err := NewReloader(path, ReloaderOptions{})
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("err = %v; want a ValidationError", err)
	}
	if !strings.Contains(err.Error(), "upstreams.legacy.url: required") || !strings.Contains(err.Error(), "routes: ") {
		t.Errorf("err = %v; want it to name the missing upstream and the bad routes", err)
	}
}

func TestGuardSourceDefaultsAndValidation(t *testing.T) {
	guarded := func(extra string) string {
		return minimal + "    guard: { max_error_rate: 0.05, max_divergence_rate: 0.05, min_samples: 10, window: 1m" + extra + " }\n"
	}
	cfg, err := Parse([]byte(guarded("")))
	if err != nil {
		t.Fatal(err)
	}
	if g := cfg.Routes[0].Guard; g.Source != GuardSourceLocal || g.PrometheusInterval != Duration(5*time.Second) || g.ParsedPrometheusURL() != nil {
		t.Errorf("guard = %+v; want source local, prometheus_interval 5s, no URL", *g)
	}

	// A guard that names nothing has SPEC §3's values.
	cfg, err = Parse([]byte(minimal + "    guard: {}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if g := cfg.Routes[0].Guard; g.MaxErrorRate != 0.02 || g.MaxDivergenceRate != 0.05 || g.MinSamples != 100 || g.Window != Duration(2*time.Minute) {
		t.Errorf("guard: {} = %+v; want 0.02, 0.05, 100 samples over 2m", *g)
	}

	cfg, err = Parse([]byte(guarded(`, source: prometheus, prometheus_url: "http://prom:9090/prom", prometheus_matchers: 'job="strangler", namespace=~"prod|canary"', prometheus_interval: 2s`)))
	if err != nil {
		t.Fatal(err)
	}
	if g := cfg.Routes[0].Guard; g.Source != GuardSourcePrometheus || g.ParsedPrometheusURL().Path != "/prom" || g.PrometheusInterval != Duration(2*time.Second) {
		t.Errorf("guard = %+v; want source prometheus at /prom every 2s", *g)
	}

	tests := []struct {
		name, extra, want string
	}{
		{"unknown source", `, source: thanos`, `routes[0].guard.source: must be local or prometheus, got "thanos"`},
		{"prometheus without url", `, source: prometheus`, "routes[0].guard.prometheus_url: required when source is prometheus"},
		{"url not http", `, source: prometheus, prometheus_url: "prom:9090"`, "routes[0].guard.prometheus_url"},
		{"url with query", `, source: prometheus, prometheus_url: "http://prom:9090/?x=1"`, "routes[0].guard.prometheus_url"},
		{"bad url kept with source local", `, prometheus_url: "ftp://prom"`, "routes[0].guard.prometheus_url"},
		{"unquoted matcher", `, source: prometheus, prometheus_url: "http://prom", prometheus_matchers: "job=strangler"`, "routes[0].guard.prometheus_matchers"},
		{"route matcher", `, source: prometheus, prometheus_url: "http://prom", prometheus_matchers: 'route="x"'`, "routes[0].guard.prometheus_matchers: must not match on route"},
		{"zero interval", `, source: prometheus, prometheus_url: "http://prom", prometheus_interval: 0s`, "routes[0].guard.prometheus_interval: must be positive"},
		{"sub-second window", `, source: prometheus, prometheus_url: "http://prom", window: 500ms`, "routes[0].guard.window: must be at least 1s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			yaml := guarded(tt.extra)
			if strings.Contains(tt.extra, "window:") {
				yaml = strings.Replace(yaml, "window: 1m, ", "", 1)
			}
			_, err := Parse([]byte(yaml))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v; want it to contain %q", err, tt.want)
			}
		})
	}
}

// A FIFO swapped in for the config file fails the reload at once, naming
// it, instead of blocking the reloader until someone writes to the pipe;
// the next regular file reloads.
func TestReloaderRefusesAFIFO(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "strangler.yaml")
	writeFile(t, path, minimal)
	rl, err := NewReloader(path, ReloaderOptions{Registerer: prometheus.NewRegistry(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(fifo, path); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- rl.Reload() }()
	select {
	case err := <-done:
		if !errors.Is(err, ErrNotRegular) || !strings.Contains(err.Error(), "named pipe") {
			t.Errorf("Reload of a FIFO: %v; want ErrNotRegular naming a named pipe", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Reload blocked on the FIFO")
	}
	if testutil.ToFloat64(rl.metrics.successful) != 0 {
		t.Error("a FIFO in place of the config is not a failed reload")
	}
	if _, err := NewReloader(path, ReloaderOptions{}); !errors.Is(err, ErrNotRegular) {
		t.Errorf("NewReloader on a FIFO: %v; want ErrNotRegular", err)
	}

	writeFile(t, path+".new", strings.Replace(minimal, `"GET /orders/{id}"`, `"GET /orders/{id}"`+"\n    weight: 20", 1))
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
	if err := rl.Reload(); err != nil || rl.Current().Config.Routes[0].Weight != 20 {
		t.Errorf("a regular file after the FIFO: %v, weight %v; want it reloaded", err, rl.Current().Config.Routes[0].Weight)
	}
}

func TestSampleBodyBytesBounds(t *testing.T) {
	base := "upstreams:\n  legacy: { url: \"http://127.0.0.1:1\" }\n  newpath: { url: \"http://127.0.0.1:2\" }\n"
	for value, want := range map[string]string{
		"0":        "",
		"1024":     "",
		"-1":       "divergence_store.sample_body_bytes: must be 0 (keep no bodies) to 16777216 (16 MiB), got -1",
		"20000000": "divergence_store.sample_body_bytes: must be 0 (keep no bodies) to 16777216 (16 MiB), got 20000000",
	} {
		_, err := Parse([]byte(base + "divergence_store: { sample_body_bytes: " + value + " }\n"))
		switch {
		case want == "" && err != nil:
			t.Errorf("sample_body_bytes %s: %v; want valid", value, err)
		case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
			t.Errorf("sample_body_bytes %s: err = %v; want %q", value, err, want)
		}
	}
}

func TestPipelineDepthBounds(t *testing.T) {
	base := "upstreams:\n  legacy: { url: \"http://127.0.0.1:1\" }\n  newpath: { url: \"http://127.0.0.1:2\" }\n"
	for value, want := range map[string]string{
		"1":  "",
		"64": "",
		"0":  "shadow.pipeline_depth: must be 1 (no pipelining) to 64, got 0",
		"65": "shadow.pipeline_depth: must be 1 (no pipelining) to 64, got 65",
	} {
		_, err := Parse([]byte(base + "shadow: { pipeline_depth: " + value + " }\n"))
		switch {
		case want == "" && err != nil:
			t.Errorf("pipeline_depth %s: %v; want valid", value, err)
		case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
			t.Errorf("pipeline_depth %s: err = %v; want %q", value, err, want)
		}
	}
}

// The compare rules keep the case of their paths (viper folds keys), and
// each invalid one is an error naming its key.
func TestCompareRules(t *testing.T) {
	cfg, err := Parse([]byte(minimal + `    compare:
      tolerance: {"/body/totalCents": 0.005, "/body/tax": "1%"}
      time: {"/body/createdAt": 2s, "/body/paid_at": ""}
      normalize: {"/body/email": [case, trim]}
      mask: {"/body/id": "^ord_[0-9]+$"}
`))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range cfg.Routes[0].Compare.Rules() {
		got = append(got, fmt.Sprintf("%s abs=%v rel=%v time=%v/%v case=%v trim=%v mask=%v",
			r.Path, r.Absolute, r.Relative, r.Time, r.Within, r.FoldCase, r.TrimSpace, r.Mask))
	}
	want := []string{
		"/body/createdAt abs=0 rel=0 time=true/2s case=false trim=false mask=<nil>",
		"/body/email abs=0 rel=0 time=false/0s case=true trim=true mask=<nil>",
		"/body/id abs=0 rel=0 time=false/0s case=false trim=false mask=^ord_[0-9]+$",
		"/body/paid_at abs=0 rel=0 time=true/0s case=false trim=false mask=<nil>",
		"/body/tax abs=0 rel=0.01 time=false/0s case=false trim=false mask=<nil>",
		"/body/totalCents abs=0.005 rel=0 time=false/0s case=false trim=false mask=<nil>",
	}
	if !slices.Equal(got, want) {
		t.Errorf("rules:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	for _, tt := range []struct{ compare, want string }{
		{`mask: {"/body/id": "^ord_[0-9+$"}`, `routes[0].compare.mask["/body/id"]: "^ord_[0-9+$" is not a regular expression`},
		{`tolerance: {"/body/total": "-1"}`, `routes[0].compare.tolerance["/body/total"]: "-1" is not a tolerance`},
		{`tolerance: {"/body/total": "NaN"}`, `routes[0].compare.tolerance["/body/total"]: "NaN" is not a tolerance`},
		{`tolerance: {"/status": 1}`, `routes[0].compare.tolerance["/status"]: a rule's path starts with /body/`},
		{`tolerance: {"/body//x": 1}`, `routes[0].compare.tolerance["/body//x"]: segment 2 is empty`},
		{`time: {"/body/at": soon}`, `routes[0].compare.time["/body/at"]: "soon" is not a duration`},
		{`normalize: {"/body/name": [upper]}`, `routes[0].compare.normalize["/body/name"]: "upper" is not "case" or "trim"`},
		{`normalize: {"/body/name": []}`, `routes[0].compare.normalize["/body/name"]: names what to normalise`},
		{"tolerance: {\"/body/x\": 1}\n      mask: {\"/body/x\": \".\"}", `routes[0].compare.mask["/body/x"]: the path has a tolerance rule already`},
	} {
		_, err := Parse([]byte(minimal + "    compare:\n      " + tt.compare + "\n"))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("compare %s: err = %v; want it to contain %q", tt.compare, err, tt.want)
		}
	}
}

func TestCaptureConfig(t *testing.T) {
	cfg, err := Parse([]byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if c := cfg.Capture; c.File != "" || c.MaxFileBytes != 64<<20 || c.Keep != 3 || c.Queue != 1024 || cfg.Routes[0].Capture.Percent != 0 {
		t.Errorf("capture defaults = %+v, route %+v", c, cfg.Routes[0].Capture)
	}
	for _, tt := range []struct{ yaml, want string }{
		{minimal + "    capture: { percent: 5 }\n", "routes[0].capture.percent: captures need somewhere to go: set capture.file"},
		{minimal + "    capture: { percent: 101 }\ncapture: { file: /tmp/c.jsonl }\n", "routes[0].capture.percent: must be between 0 and 100"},
		{minimal + "capture: { file: /tmp/c.jsonl, max_file_bytes: 10 }\n", "capture.max_file_bytes: must be at least 4096"},
		{minimal + "capture: { file: /tmp/c.jsonl, queue: 0 }\n", "capture.queue: must be 1 to 1048576, got 0"},
		// Allocated whole when the config goes in force: a typo must not
		// take the proxy down in the middle of a reload.
		{minimal + "capture: { file: /tmp/c.jsonl, queue: 1000000000000000 }\n", "capture.queue: must be 1 to 1048576"},
		{minimal + "divergence_store: { samples_per_route: 1000000000000000 }\n", "divergence_store.samples_per_route: must be 1 to 100000"},
	} {
		if _, err := Parse([]byte(tt.yaml)); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("err = %v; want it to contain %q", err, tt.want)
		}
	}

	// The file is opened once: a reload that changes it is refused.
	path := filepath.Join(t.TempDir(), "strangler.yaml")
	writeFile(t, path, minimal+"capture: { file: /tmp/a.jsonl }\n")
	rl, err := NewReloader(path, ReloaderOptions{Registerer: prometheus.NewRegistry(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, path, minimal+"capture: { file: /tmp/b.jsonl }\n")
	if err := rl.Reload(); err == nil || !strings.Contains(err.Error(), "capture: changed") {
		t.Errorf("reload with another capture.file: %v; want it refused", err)
	}
}

const services = `
upstreams:
  legacy: { url: "http://127.0.0.1:9001" }
  newpath: { url: "http://127.0.0.1:9002" }
  payments-v2: { url: "http://127.0.0.1:9003/pay", timeout: 2s, preserve_host: false }
routes:
  - { name: get-order, match: "GET /orders/{id}" }
  - { name: charge, match: "POST /payments", to: payments-v2 }
`

// Named upstreams are new services routes pick with to; newpath stays
// the default, and every reference is checked by name.
func TestNamedUpstreams(t *testing.T) {
	cfg, err := Parse([]byte(services))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Upstreams.NewServices(); !slices.Equal(got, []string{"newpath", "payments-v2"}) {
		t.Errorf("NewServices() = %q; want newpath, payments-v2", got)
	}
	pay := cfg.Upstreams["payments-v2"]
	if pay.Timeout != Duration(2*time.Second) || pay.PreserveHost || pay.ParsedURL().Path != "/pay" {
		t.Errorf("payments-v2 = %+v; want timeout 2s, preserve_host false, path /pay", *pay)
	}
	if got := [2]string{cfg.Routes[0].To, cfg.Routes[1].To}; got != [2]string{"newpath", "payments-v2"} {
		t.Errorf("routes' to = %q; want newpath (the default) and payments-v2", got)
	}
	if w := cfg.Warnings(); len(w) != 0 {
		t.Errorf("warnings = %v; want none, every upstream is used", w)
	}

	// An upstream's own keys get the defaults newpath's get.
	cfg, err = Parse([]byte(withUpstream(services, `billing: { url: "http://127.0.0.1:9004" }`) +
		"  - { name: refund, match: \"POST /refunds\", to: billing }\n"))
	if err != nil {
		t.Fatal(err)
	}
	if b := cfg.Upstreams["billing"]; b.Timeout != Duration(30*time.Second) || !b.PreserveHost {
		t.Errorf("billing = %+v; want the defaults, timeout 30s and preserve_host true", *b)
	}

	// A value that does not decode is named by its key, once.
	_, err = Parse([]byte(withUpstream(services, `billing: { url: "http://127.0.0.1:1", timeout: soon }`)))
	if want := `upstreams.billing.timeout: expected a duration such as "5s", got "soon"`; err == nil || err.Error() != want {
		t.Errorf("err = %v; want only %q", err, want)
	}

	for _, tt := range []struct{ name, yaml, want string }{
		{"unknown", minimal + "    to: payments\n" + "  - { name: b, match: \"GET /b\" }\n" + "  - { name: c, match: \"GET /c\", to: payments }\n",
			`routes[2].to: unknown upstream "payments" (have: newpath)`},
		{"unknown lists the names", services + "  - { name: c, match: \"GET /c\", to: payments }\n",
			`routes[2].to: unknown upstream "payments" (have: newpath, payments-v2)`},
		{"legacy", services + "  - { name: c, match: \"GET /c\", to: legacy }\n",
			"routes[2].to: legacy is the side traffic moves from"},
		{"bad name", withUpstream(services, `pay_v3: { url: "http://127.0.0.1:1" }`),
			`upstreams.pay_v3: upstream name "pay_v3" must match [a-z0-9-]+`},
		{"no url", withUpstream(services, "billing: { timeout: 1s }"), "upstreams.billing.url: required"},
		{"unknown key", withUpstream(services, `billing: { url: "http://127.0.0.1:1", tmeout: 1s }`), "upstreams.billing.tmeout: unknown key"},
		{"newpath still required", "upstreams:\n  legacy: { url: \"http://127.0.0.1:1\" }\n  payments: { url: \"http://127.0.0.1:2\" }\nroutes:\n  - { name: a, match: \"GET /a\", to: payments }\n",
			"upstreams.newpath.url: required"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v; want it to contain %q", err, tt.want)
			}
		})
	}
}

// An upstream no route uses is valid, and strangler check warns of it.
func TestUnusedUpstreamWarns(t *testing.T) {
	cfg, err := Parse([]byte(withUpstream(minimal, `billing: { url: "http://127.0.0.1:9004" }`)))
	if err != nil {
		t.Fatal(err)
	}
	want := FieldError{Path: "upstreams.billing", Problem: "no route sends traffic to it (to: billing)"}
	if w := cfg.Warnings(); !slices.Contains(w, want) {
		t.Errorf("warnings = %v; want %v", w, want)
	}
}

// withUpstream adds an upstream entry, one line of YAML, to a config's
// upstreams mapping.
func withUpstream(yaml, entry string) string {
	return strings.Replace(yaml, "upstreams:\n", "upstreams:\n  "+entry+"\n", 1)
}

// NaN is not between 0 and 1: a guard with NaN limits would never trip.
func TestGuardRatesRejectNaN(t *testing.T) {
	_, err := Parse([]byte(minimal + `    weight: 50
    guard: { max_error_rate: .nan, max_divergence_rate: .nan }
`))
	if err == nil || !strings.Contains(err.Error(), "max_error_rate") || !strings.Contains(err.Error(), "max_divergence_rate") {
		t.Fatalf("a guard with NaN limits: %v; want a validation error naming each", err)
	}
}

// A duration needs its unit: weakly typed decoding would read 10 as 10ns,
// which validates and then times out every call.
func TestDurationWithoutUnitIsAnError(t *testing.T) {
	const up = "upstreams:\n  legacy: { url: \"http://127.0.0.1:9001\" }\n  newpath: { url: \"http://127.0.0.1:9002\" }\n"
	for _, tt := range []struct{ key, yaml string }{
		{"upstreams.legacy.timeout", "upstreams:\n  legacy: { url: \"http://127.0.0.1:9001\", timeout: 10 }\n  newpath: { url: \"http://127.0.0.1:9002\" }\n"},
		{"shadow.timeout", up + "shadow: { timeout: 5 }\n"},
		{"client_body_timeout", up + "client_body_timeout: 1.5\n"},
		{"routes[0].guard.window", up + "routes:\n  - { name: a, match: \"GET /a\", guard: { window: 120 } }\n"},
	} {
		_, err := Parse([]byte(tt.yaml))
		if err == nil || !strings.Contains(err.Error(), tt.key+": ") || !strings.Contains(err.Error(), "without a unit") {
			t.Errorf("%s given a bare number: %v; want an error naming it", tt.key, err)
		}
	}
	cfg, err := Parse([]byte(up + "divergence_store: { retention: 0 }\n"))
	if err != nil || cfg.DivergenceStore.Retention != 0 {
		t.Errorf("retention: 0 (keep forever) = %v, %v; want valid, 0", cfg, err)
	}
}

// What serve could not start, check must refuse: a port out of range,
// the two listeners on one socket, a NaN sampling ratio.
func TestListenersAndRatiosServeCanRun(t *testing.T) {
	for _, tt := range []struct{ yaml, want string }{
		{minimal + "listen: \"127.0.0.1:99999\"\n", "listen: port 99999 is out of range"},
		{minimal + "listen: \"127.0.0.1:nosuchservice\"\n", `listen: "nosuchservice" is neither a port number nor a service name`},
		{minimal + "listen: \":8080\"\nadmin: { listen: \"127.0.0.1:8080\" }\n", "admin.listen: \"127.0.0.1:8080\" is the address of listen too"},
		{minimal + "listen: \"127.0.0.1:8080\"\nadmin: { listen: \"127.0.0.1:8080\" }\n", "admin.listen:"},
		{minimal + "listen: \"[::]:80\"\nadmin: { listen: \"127.0.0.1:http\" }\n", "admin.listen:"},
		{minimal + "tracing: { sample_ratio: .nan }\n", "tracing.sample_ratio: must be between 0 and 1"},
	} {
		if _, err := Parse([]byte(tt.yaml)); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("err = %v; want it to contain %q", err, tt.want)
		}
	}
	for _, ok := range []string{
		"listen: \"127.0.0.1:0\"\nadmin: { listen: \"127.0.0.1:0\" }\n", // each picks a free port
		"listen: \"127.0.0.1:8080\"\nadmin: { listen: \"127.0.0.2:8080\" }\n",
		"listen: \"127.0.0.1:\"\nadmin: { listen: \"127.0.0.1:\" }\n", // an empty port picks a free one too
		"listen: \"127.0.0.1:http\"\n",                                // a service name, known to Go without /etc/services
	} {
		if _, err := Parse([]byte(minimal + ok)); err != nil {
			t.Errorf("%q: %v; want valid", ok, err)
		}
	}
}

// A file missing for a moment is an editor's rename; one that stays
// missing is a failed reload, which the metric must show: the next
// restart would not start.
func TestReloaderReportsAFileThatStaysMissing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "strangler.yaml")
	writeFile(t, path, minimal)
	now := time.Unix(1700000000, 0)
	rl, err := NewReloader(path, ReloaderOptions{Registerer: prometheus.NewRegistry(), Logger: slog.New(slog.DiscardHandler),
		Now: func() time.Time { return now }, PollInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := rl.Reload(); err != nil || rl.LastFailure() != nil {
		t.Fatalf("file gone a moment: %v, last failure %v; want no failure (mid-rename)", err, rl.LastFailure())
	}
	now = now.Add(missingGrace)
	err = rl.Reload()
	ok, fails := testutil.ToFloat64(rl.metrics.successful), testutil.ToFloat64(rl.metrics.reloads.WithLabelValues("failure"))
	if err == nil || !errors.Is(err, os.ErrNotExist) || rl.LastFailure() == nil || ok != 0 || fails != 1 {
		t.Fatalf("file gone for %v: %v, last_reload_successful %v, failures %v; want a failed reload", missingGrace, err, ok, fails)
	}
	writeFile(t, path, minimal) // back, unchanged
	if err := rl.Reload(); err != nil || rl.LastFailure() != nil || testutil.ToFloat64(rl.metrics.successful) != 1 {
		t.Errorf("file back: %v, last failure %v; want the reload to succeed", err, rl.LastFailure())
	}
}

// YAML keys are case-sensitive, and the schema's are lower case; viper
// folds case, so without a look at the file as written "Weight: 90" passed
// and, beside "weight: 10", one of them won unseen.
func TestMiscasedKeysAreUnknown(t *testing.T) {
	for _, tt := range []struct{ yaml, want string }{
		{minimal + "    weight: 10\n    Weight: 90\n", "routes[0].Weight: unknown key (keys are lower case: weight)"},
		{minimal + "Shadow: { timeout: 5s }\n", "Shadow: unknown key (keys are lower case: shadow)"},
		{minimal + "shadow: { Timeout: 5s }\n", "shadow.Timeout: unknown key (keys are lower case: timeout)"},
	} {
		if _, err := Parse([]byte(tt.yaml)); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("err = %v; want it to contain %q", err, tt.want)
		}
	}
	// The user's keys keep their case: a JSON path in a compare rule.
	if _, err := Parse([]byte(minimal + "    compare: { mask: { \"/body/orderId\": \"^ord_\" } }\n")); err != nil {
		t.Errorf("a mask on /body/orderId: %v; want valid", err)
	}
}
