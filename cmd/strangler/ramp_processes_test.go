package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// TestTwoServeProcessesAgreeOnEveryRampStep runs two `strangler serve`
// processes, started apart, on one config whose ramp has an explicit
// start: the fleet case. Each tick is judged by each process on its own
// ticker, so at one instant one may have taken a tick the other has not
// yet; what must agree is the step each takes at each tick. A process's
// /admin/routes names the next tick (next_step_at) with the step it is on,
// so the step after every tick is compared, keyed by that tick.
func TestTwoServeProcessesAgreeOnEveryRampStep(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	t.Cleanup(backend.Close)
	if _, err := buildStrangler(); err != nil { // before the start is chosen: it takes a while
		t.Fatal(err)
	}
	start := time.Now().Add(5 * time.Second).Truncate(time.Second).UTC()
	cfg := fmt.Sprintf(`
listen: "127.0.0.1:0"
admin: { listen: "127.0.0.1:0" }
upstreams:
  legacy: { url: %q }
  newpath: { url: %q }
routes:
  - name: get-order
    match: "GET /orders/{id}"
    weight: 10
    ramp: { steps: [1, 2, 4, 6, 8], every: 2s, require: none, start: %q }
`, backend.URL, backend.URL, start.Format(time.RFC3339))
	_, _, adminA := startServe(t, cfg)
	_, _, adminB := startServe(t, cfg) // a moment later: a pod that came up second

	type ramp struct {
		StepIndex  int        `json:"step_index"`
		NextStepAt *time.Time `json:"next_step_at"`
		Complete   bool       `json:"complete"`
		Start      time.Time  `json:"start"`
	}
	type routes struct {
		Routes []struct {
			EffectiveWeight float64 `json:"effective_weight"`
			Ramp            *ramp   `json:"ramp"`
		} `json:"routes"`
	}
	read := func(admin string) (ramp, float64) {
		var body routes
		getJSON(t, "http://"+admin+"/admin/routes", &body)
		if len(body.Routes) != 1 || body.Routes[0].Ramp == nil {
			t.Fatalf("%s: routes %+v; want get-order with its ramp", admin, body.Routes)
		}
		return *body.Routes[0].Ramp, body.Routes[0].EffectiveWeight
	}
	// stepAt[i] maps each tick process i has yet to take to the step it
	// is on until then; "done" is the last step, once complete.
	stepAt := [2]map[string]int{{}, {}}
	weightAt := [2]map[string]float64{{}, {}}
	deadline := time.Now().Add(time.Minute)
	for {
		complete := true
		for i, admin := range []string{adminA, adminB} {
			r, w := read(admin)
			// Both take the ramp up before its start, on a machine that is
			// not too slow; a process that came up after it would count
			// from a later tick of the same grid.
			if d := r.Start.Sub(start); d < 0 || d%(2*time.Second) != 0 {
				t.Fatalf("process %d counts from %v; want the ramp's start %v or a tick of its grid", i, r.Start, start)
			}
			key := "done"
			if r.NextStepAt != nil {
				key = r.NextStepAt.UTC().Format(time.RFC3339Nano)
			}
			if prev, seen := stepAt[i][key]; seen && prev != r.StepIndex {
				t.Fatalf("process %d: step %d then %d before the same tick %s", i, prev, r.StepIndex, key)
			}
			stepAt[i][key], weightAt[i][key] = r.StepIndex, w
			complete = complete && r.Complete
		}
		if complete {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the ramps did not complete within a minute: %v / %v", stepAt[0], stepAt[1])
		}
		time.Sleep(100 * time.Millisecond) // a poll interval, not a wait for an outcome
	}
	common := 0
	for key, a := range stepAt[0] {
		b, ok := stepAt[1][key]
		if !ok {
			continue
		}
		common++
		if a != b || weightAt[0][key] != weightAt[1][key] {
			t.Errorf("before tick %s: process A on step %d (weight %v), B on step %d (weight %v)",
				key, a, weightAt[0][key], b, weightAt[1][key])
		}
	}
	// The start, four ticks and the end: all but a tick or two seen by both.
	if common < 4 {
		t.Errorf("only %d ticks seen by both processes (%v / %v); want most of the ramp's 6", common, stepAt[0], stepAt[1])
	}
	if w := weightAt[0]["done"]; w != 8 {
		t.Errorf("effective weight %v once complete; want the last step, 8", w)
	}
}
