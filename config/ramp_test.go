package config

import (
	"errors"
	"strings"
	"testing"
	"time"
)

const rampHead = `
upstreams:
  legacy: { url: "http://127.0.0.1:9001" }
  newpath: { url: "http://127.0.0.1:9002" }
routes:
  - name: get-order
    match: "GET /orders/{id}"
    weight: 50
  - name: list-orders
    match: "GET /orders"
    weight: 50
`

func TestRampDefaultsAndDerivedState(t *testing.T) {
	cfg, err := Parse([]byte(rampHead + `    ramp: { steps: [1, 5, 25.5, 50], every: 10m, start: "2026-03-02T10:00:00+01:00" }
`))
	if err != nil {
		t.Fatal(err)
	}
	if r := cfg.Routes[0].Ramp; r != nil {
		t.Errorf("routes[0].ramp = %+v; want nil without a ramp key", r)
	}
	r := cfg.Routes[1].Ramp
	if r == nil {
		t.Fatal("routes[1].ramp is nil")
	}
	if r.Require != RampRequireReady {
		t.Errorf("require = %q; want the default %q", r.Require, RampRequireReady)
	}
	if got, want := time.Duration(r.Every), 10*time.Minute; got != want {
		t.Errorf("every = %s; want %s", got, want)
	}
	if got := r.StepBasisPoints(); len(got) != 4 || got[0] != 100 || got[2] != 2550 || got[3] != 5000 {
		t.Errorf("step basis points = %v; want [100 500 2550 5000]", got)
	}
	if want := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC); !r.StartTime().Equal(want) {
		t.Errorf("start = %v; want %v", r.StartTime(), want)
	}
	if len(r.ID()) != 16 {
		t.Errorf("id = %q; want 16 hex digits", r.ID())
	}
	if w := cfg.Warnings(); len(w) != 0 {
		t.Errorf("warnings %v; want none (every step is within the weight)", w)
	}
}

func TestRampValidationNamesTheKey(t *testing.T) {
	tests := []struct {
		name, ramp, path, problem string
	}{
		{"no steps", `{ every: 10m }`, "routes[1].ramp.steps", "required"},
		{"empty steps", `{ steps: [], every: 10m }`, "routes[1].ramp.steps", "required"},
		{"not increasing", `{ steps: [1, 25, 5], every: 10m }`, "routes[1].ramp.steps[2]", "5 is not above the previous step 25"},
		{"repeated", `{ steps: [1, 5, 5], every: 10m }`, "routes[1].ramp.steps[2]", "5 is not above the previous step 5"},
		{"zero step", `{ steps: [0, 5], every: 10m }`, "routes[1].ramp.steps[0]", "must be above 0 and at most 100, got 0"},
		{"negative step", `{ steps: [-1, 5], every: 10m }`, "routes[1].ramp.steps[0]", "must be above 0"},
		{"above 100", `{ steps: [50, 101], every: 10m }`, "routes[1].ramp.steps[1]", "at most 100, got 101"},
		{"three decimals", `{ steps: [0.125, 5], every: 10m }`, "routes[1].ramp.steps[0]", "at most two decimals, got 0.125"},
		{"not a number", `{ steps: [1, lots], every: 10m }`, "routes[1].ramp.steps[1]", "expected a number"},
		{"no every", `{ steps: [1, 5] }`, "routes[1].ramp.every", "must be at least 1s, got 0s"},
		{"every too short", `{ steps: [1, 5], every: 500ms }`, "routes[1].ramp.every", "must be at least 1s, got 500ms"},
		{"every not a duration", `{ steps: [1, 5], every: often }`, "routes[1].ramp.every", `a duration such as "5s"`},
		{"bad require", `{ steps: [1, 5], every: 10m, require: always }`, "routes[1].ramp.require", `must be ready or none, got "always"`},
		{"bad start", `{ steps: [1, 5], every: 10m, start: "monday 10am" }`, "routes[1].ramp.start", `"monday 10am" is not an RFC 3339 time`},
		{"unknown key", `{ steps: [1, 5], every: 10m, evry: 1m }`, "routes[1].ramp.evry", "unknown key"},
		{"not a mapping", `[1, 5]`, "routes[1].ramp", "expected a map"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(rampHead + "    ramp: " + tt.ramp + "\n"))
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("Parse: %v; want a *ValidationError", err)
			}
			for _, fe := range ve.Errors {
				if fe.Path == tt.path && strings.Contains(fe.Problem, tt.problem) {
					return
				}
			}
			t.Errorf("errors:\n%v\nwant %s: …%s…", err, tt.path, tt.problem)
		})
	}
}

func TestRampWarnings(t *testing.T) {
	cfg, err := Parse([]byte(rampHead + `    ramp: { steps: [1, 5, 25, 100], every: 1m }
  - name: cancel-order
    match: "POST /orders/{id}/cancel"
    ramp: { steps: [1, 5], every: 1m }
`))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, w := range cfg.Warnings() {
		got = append(got, w.Error())
	}
	joined := strings.Join(got, "\n")
	for _, want := range []string{
		`routes[1].ramp.steps[3]: route "list-orders": step 100 is above the route's weight 50`,
		`routes[2].ramp: route "cancel-order": the weight is 0`,
	} {
		if !strings.Contains(joined, want) {
			t.Errorf("warnings:\n%s\nwant one containing %q", joined, want)
		}
	}
}

// TestRampIDFollowsWhatThePositionDependsOn: the ID changes with the
// route's weight and every key of the ramp, and with nothing else.
func TestRampIDFollowsWhatThePositionDependsOn(t *testing.T) {
	id := func(route string) string {
		t.Helper()
		cfg, err := Parse([]byte(`
upstreams:
  legacy: { url: "http://127.0.0.1:9001" }
  newpath: { url: "http://127.0.0.1:9002" }
  other: { url: "http://127.0.0.1:9003" }
routes:
` + route))
		if err != nil {
			t.Fatal(err)
		}
		return cfg.Routes[0].Ramp.ID()
	}
	base := id(`  - { name: a, match: "GET /a", weight: 50, ramp: { steps: [1, 5, 25], every: 10m } }`)
	same := []string{
		`  - { name: a, match: "GET /a", weight: 50.0, ramp: { steps: [1.0, 5, 25], every: 600s, require: ready } }`,
		`  - { name: a, match: "GET /a", weight: 50, shadow: { percent: 100 }, ramp: { steps: [1, 5, 25], every: 10m } }`,
	}
	for _, r := range same {
		if got := id(r); got != base {
			t.Errorf("%s: id %s; want %s as the base", r, got, base)
		}
	}
	changed := []string{
		`  - { name: b, match: "GET /a", weight: 50, ramp: { steps: [1, 5, 25], every: 10m } }`,
		`  - { name: a, match: "GET /a", weight: 40, ramp: { steps: [1, 5, 25], every: 10m } }`,
		`  - { name: a, match: "GET /a", weight: 50, to: other, ramp: { steps: [1, 5, 25], every: 10m } }`,
		`  - { name: a, match: "GET /a", weight: 50, ramp: { steps: [1, 5, 26], every: 10m } }`,
		`  - { name: a, match: "GET /a", weight: 50, ramp: { steps: [1, 5, 25], every: 5m } }`,
		`  - { name: a, match: "GET /a", weight: 50, ramp: { steps: [1, 5, 25], every: 10m, require: none } }`,
		`  - { name: a, match: "GET /a", weight: 50, ramp: { steps: [1, 5, 25], every: 10m, start: "2026-03-02T10:00:00Z" } }`,
	}
	for _, r := range changed {
		if got := id(r); got == base {
			t.Errorf("%s: id %s, the base's; want another", r, got)
		}
	}
}
