package proxy

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var (
	holds      = rampAnswer{holds: true}
	notReady   = rampAnswer{reason: rampNotReady, detail: "insufficient_data: 0 comparisons"}
	guardTrips = rampAnswer{reason: rampGuardTripped, detail: guardTrippedDetail}
)

func TestRampPositionRule(t *testing.T) {
	tests := []struct {
		name    string
		steps   int
		answers []rampAnswer
		want    rampPosition
	}{
		{"no tick yet: first step", 5, nil, rampPosition{}},
		{"one tick that holds climbs one step", 5, []rampAnswer{holds}, rampPosition{index: 1}},
		{"a tick that does not hold pauses on the step", 5, []rampAnswer{holds, notReady}, rampPosition{index: 1, paused: true, reason: rampNotReady, detail: notReady.detail}},
		{"a pause does not go back", 5, []rampAnswer{holds, holds, notReady, notReady}, rampPosition{index: 2, paused: true, reason: rampNotReady, detail: notReady.detail}},
		{"after a pause it climbs from where it paused", 5, []rampAnswer{holds, notReady, holds}, rampPosition{index: 2}},
		{"the guard pauses it with its own reason", 5, []rampAnswer{holds, guardTrips}, rampPosition{index: 1, paused: true, reason: rampGuardTripped, detail: guardTrippedDetail}},
		{"it stops on the last step", 3, []rampAnswer{holds, holds, holds, holds}, rampPosition{index: 2}},
		{"a one-step ramp never moves", 1, []rampAnswer{holds, holds}, rampPosition{}},
		{"not ready from the start", 5, []rampAnswer{notReady, notReady, notReady}, rampPosition{paused: true, reason: rampNotReady, detail: notReady.detail}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := rampPositionAfter(tt.steps, tt.answers); got != tt.want {
				t.Errorf("got %+v; want %+v", got, tt.want)
			}
		})
	}
}

// TestRampPositionRuleExhaustively checks every sequence of up to six
// answers on ramps of one to four steps against the rule in words: the
// step is how many ticks held, up to the last step; the ramp is paused
// when the last tick did not hold, with that tick's reason.
func TestRampPositionRuleExhaustively(t *testing.T) {
	kinds := []rampAnswer{holds, notReady, guardTrips}
	var answers []rampAnswer
	var walk func(depth int)
	checked := 0
	walk = func(depth int) {
		for steps := 1; steps <= 4; steps++ {
			held := 0
			for _, a := range answers {
				if a.holds {
					held++
				}
			}
			want := rampPosition{index: min(held, steps-1)}
			if n := len(answers); n > 0 && !answers[n-1].holds {
				last := answers[n-1]
				want.paused, want.reason, want.detail = true, last.reason, last.detail
			}
			if got := rampPositionAfter(steps, answers); got != want {
				t.Fatalf("%d steps, answers %v: got %+v; want %+v", steps, answers, got, want)
			}
			checked++
		}
		if depth == 6 {
			return
		}
		for _, k := range kinds {
			answers = append(answers, k)
			walk(depth + 1)
			answers = answers[:len(answers)-1]
		}
	}
	walk(0)
	if checked < 4000 {
		t.Errorf("checked %d sequences; the walk is broken", checked)
	}
}

func TestRampTicks(t *testing.T) {
	at := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	var none time.Time
	tests := []struct {
		name        string
		start       time.Time
		every       time.Duration
		seen, want  string
		now         string
		wantTicksAt int64
	}{
		{"no start: aligned up in Unix time", none, 10 * time.Minute, "2026-03-02T10:07:31Z", "2026-03-02T10:10:00Z", "2026-03-02T10:29:59Z", 1},
		{"no start, seen on a tick", none, 10 * time.Minute, "2026-03-02T10:10:00Z", "2026-03-02T10:10:00Z", "2026-03-02T10:20:00Z", 1},
		{"no start, an interval that does not divide an hour", none, 7 * time.Second, "1970-01-01T00:00:50Z", "1970-01-01T00:00:56Z", "1970-01-01T00:01:03Z", 1},
		{"a start ahead: the start", at("2026-03-02T12:00:00Z"), 10 * time.Minute, "2026-03-02T10:07:31Z", "2026-03-02T12:00:00Z", "2026-03-02T11:59:59Z", 0},
		{"a start behind: the grid's tick at or after", at("2026-03-02T09:03:00Z"), 10 * time.Minute, "2026-03-02T10:07:31Z", "2026-03-02T10:13:00Z", "2026-03-02T10:23:00Z", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := rampOrigin(tt.start, tt.every, at(tt.seen))
			if !got.Equal(at(tt.want)) {
				t.Fatalf("origin %v; want %s", got, tt.want)
			}
			if n := rampTicksDue(got, tt.every, at(tt.now)); n != tt.wantTicksAt {
				t.Errorf("ticks due at %s: %d; want %d", tt.now, n, tt.wantTicksAt)
			}
		})
	}
}

// fakeClock is a clock the test moves.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// rampBackends are a legacy slower than newpath, so that readiness's
// latency rule holds however loaded the machine, and a newpath that
// answers 500 while failing is set.
type rampBackends struct {
	failing atomic.Bool
}

func (b *rampBackends) legacy() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(40 * time.Millisecond) // the backend's latency, not a test wait
		io.WriteString(w, `{"id":1}`)
	})
}

func (b *rampBackends) newpath() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if b.failing.Load() {
			http.Error(w, `{"error":"boom"}`, http.StatusInternalServerError)
			return
		}
		io.WriteString(w, `{"id":1}`)
	})
}

// rampedRoute climbs 5, 10, 25, 50 under a weight of 40 (the last step
// serves 40), a step a minute while ready; readiness and the guard look
// at the last minute and need 10 comparisons.
const rampedRoute = `
sticky: { key: "header:X-User-Id" }
routes:
  - name: get-order
    match: "GET /orders/{id}"
    weight: 40
    shadow: { percent: 100 }
    guard: { max_error_rate: 0.2, max_divergence_rate: 0.5, min_samples: 10, window: 1m }
    ramp: %s
`

// feed sends enough orders, at the clock's time, for the route to be
// ready over its window, and waits until they are all compared.
func (h *harness) feed(n int) {
	h.t.Helper()
	before := 0.0
	for _, v := range h.comparisons("get-order") {
		before += v
	}
	sendOrders(h.t, h, n)
	h.waitCompared("get-order", int(before)+n)
	h.proxy.shadows.Wait()
}

// rampAt asserts the ramp's position and the effective weight, in the
// admin API and in the metrics.
func (h *harness) rampAt(when string, index int, effective float64, reason string) {
	h.t.Helper()
	st := h.routeState("get-order")
	if st.Ramp == nil {
		h.t.Fatalf("%s: no ramp in /admin/routes", when)
	}
	gotReason, _, _ := strings.Cut(st.Ramp.Reason, ":")
	if st.Ramp.StepIndex != index || st.EffectiveWeight != effective || gotReason != reason || st.Ramp.Paused != (reason != "") {
		h.t.Errorf("%s: step_index %d, effective %v, paused %v (%q); want %d, %v, %q",
			when, st.Ramp.StepIndex, st.EffectiveWeight, st.Ramp.Paused, st.Ramp.Reason, index, effective, reason)
	}
	if v, _ := h.metric("strangler_ramp_step", map[string]string{"route": "get-order"}); v != float64(index+1) {
		h.t.Errorf("%s: strangler_ramp_step = %v; want %d", when, v, index+1)
	}
	if v, _ := h.metric("strangler_route_effective_weight_ratio", map[string]string{"route": "get-order"}); v != effective/100 {
		h.t.Errorf("%s: strangler_route_effective_weight_ratio = %v; want %v", when, v, effective/100)
	}
	for _, r := range rampPauseReasons {
		want := 0.0
		if r == reason {
			want = 1
		}
		if v, ok := h.metric("strangler_ramp_paused", map[string]string{"route": "get-order", "reason": r}); !ok || v != want {
			h.t.Errorf("%s: strangler_ramp_paused{reason=%q} = %v (exists %v); want %v", when, r, v, ok, want)
		}
	}
}

var rampT0 = time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)

// TestRampClimbsWhileReadyPausesWhileNotAndRestartsAfterATrip drives a
// route's readiness with real traffic under an injected clock: the ramp
// climbs at each tick where the route is ready, pauses (keeping its step)
// where it is not, drops to 0 on a guard trip, and climbs again from the
// first step after the re-arm.
func TestRampClimbsWhileReadyPausesWhileNotAndRestartsAfterATrip(t *testing.T) {
	t.Setenv("STRANGLER_ADMIN_TOKEN", "s3cret")
	clock := &fakeClock{t: rampT0} // on a tick: the origin
	b := &rampBackends{}
	h := newClockedHarness(t, clock.Now, b.legacy(), b.newpath(), fmt.Sprintf(rampedRoute, "{ steps: [5, 10, 25, 50], every: 1m }"))
	tick := func(minute int) {
		clock.Set(rampT0.Add(time.Duration(minute) * time.Minute))
		h.proxy.tickRamps(t.Context(), clock.Now())
	}
	// feedBefore sends traffic a second before the tick of minute.
	feedBefore := func(minute int) {
		clock.Set(rampT0.Add(time.Duration(minute)*time.Minute - time.Second))
		h.feed(12)
	}

	h.rampAt("loaded", 0, 5, "")
	if st := h.routeState("get-order"); !st.Ramp.Start.Equal(rampT0) || st.Ramp.NextStepAt == nil || !st.Ramp.NextStepAt.Equal(rampT0.Add(time.Minute)) {
		t.Errorf("start %v, next step %v; want %v and a minute later", st.Ramp.Start, st.Ramp.NextStepAt, rampT0)
	}
	feedBefore(1)
	tick(1)
	h.rampAt("ready at 10:01", 1, 10, "")
	tick(2) // the window of 10:02 has no traffic: insufficient data
	h.rampAt("not ready at 10:02", 1, 10, rampNotReady)
	if r := h.routeState("get-order").Ramp.Reason; !strings.Contains(r, "insufficient_data: 0 comparisons") {
		t.Errorf("reason %q; want the readiness verdict and its reason", r)
	}
	feedBefore(3)
	tick(3)
	h.rampAt("ready again at 10:03", 2, 25, "")

	// newpath fails: the guard trips at once, the weight drops to 0.
	clock.Set(rampT0.Add(3*time.Minute + 30*time.Second))
	b.failing.Store(true)
	h.feed(12)
	clock.Set(clock.Now().Add(time.Second))
	h.proxy.checkGuard(h.proxy.state.Load().routes[0], clock.Now())
	if st := h.routeState("get-order"); st.Guard.State != "tripped" {
		t.Fatalf("guard %+v; want tripped", st.Guard)
	}
	h.rampAt("tripped at 10:03:31", 2, 0, rampGuardTripped)
	tick(4)
	h.rampAt("still tripped at 10:04", 2, 0, rampGuardTripped)

	// The re-arm restarts the ramp from the first step, at the tick of
	// the re-arm: never straight back to 25, let alone the weight.
	b.failing.Store(false)
	clock.Set(rampT0.Add(4*time.Minute + 30*time.Second))
	if code, body := h.adminPost("/admin/routes/get-order/rearm", "s3cret"); code != http.StatusOK {
		t.Fatalf("rearm: %d %s", code, body)
	}
	h.rampAt("re-armed at 10:04:30", 0, 5, "")
	if st := h.routeState("get-order").Ramp; !st.Start.Equal(rampT0.Add(5 * time.Minute)) {
		t.Errorf("start after the re-arm %v; want 10:05:00, the first tick after it", st.Start)
	}
	feedBefore(5)
	tick(5)
	h.rampAt("at 10:05, the re-arm's origin: a whole interval on the first step", 0, 5, "")
	feedBefore(6)
	tick(6)
	h.rampAt("ready at 10:06", 1, 10, "")
	feedBefore(7)
	tick(7)
	h.rampAt("ready at 10:07", 2, 25, "")
	feedBefore(8)
	tick(8)
	h.rampAt("ready at 10:08: the last step, under the weight's ceiling", 3, 40, "")
	st := h.routeState("get-order").Ramp
	if !st.Complete || st.NextStepAt != nil || st.StepWeight != 50 {
		t.Errorf("on the last step: complete %v, next step %v, step weight %v; want true, none, 50", st.Complete, st.NextStepAt, st.StepWeight)
	}
	tick(10) // nothing left to judge: no traffic does not pause it
	h.rampAt("after the last step", 3, 40, "")
}

// TestRampReplicasAgreeOnEveryTick runs two proxies on one config, as two
// replicas, fed the same traffic and the same ticks: they agree on the
// step at every tick, before the explicit start included. With require:
// none and no start, two proxies that loaded the ramp at different
// moments of one interval agree too.
func TestRampReplicasAgreeOnEveryTick(t *testing.T) {
	t.Run("require ready, explicit start", func(t *testing.T) {
		clock := &fakeClock{t: rampT0.Add(-90 * time.Second)}
		ramp := `{ steps: [1, 5, 10, 25, 50], every: 1m, start: "2026-03-02T10:00:00Z" }`
		var replicas []*harness
		for range 2 {
			b := &rampBackends{}
			replicas = append(replicas, newClockedHarness(t, clock.Now, b.legacy(), b.newpath(), fmt.Sprintf(rampedRoute, ramp)))
		}
		// Which minutes have traffic in the second before their tick:
		// ready there, not ready elsewhere.
		traffic := map[int]bool{1: true, 2: true, 4: true, 5: true, 6: true, 8: true}
		want := []int{-1, 0, 1, 2, 2, 3, 4, 4, 4, 4}
		for minute := -1; minute < len(want)-1; minute++ {
			if traffic[minute] {
				clock.Set(rampT0.Add(time.Duration(minute)*time.Minute - time.Second))
				for _, h := range replicas {
					h.feed(12)
				}
			}
			clock.Set(rampT0.Add(time.Duration(minute) * time.Minute))
			var got []string
			for _, h := range replicas {
				h.proxy.tickRamps(t.Context(), clock.Now())
				st := h.routeState("get-order")
				got = append(got, fmt.Sprintf("step %d effective %v paused %v", st.Ramp.StepIndex, st.EffectiveWeight, st.Ramp.Paused))
			}
			if got[0] != got[1] {
				t.Errorf("minute %d: the replicas disagree: %q and %q", minute, got[0], got[1])
			}
			st := replicas[0].routeState("get-order")
			if w := want[minute+1]; w < 0 {
				if st.EffectiveWeight != 0 || !strings.HasPrefix(st.Ramp.Reason, rampNotStarted) {
					t.Errorf("minute %d: effective %v, reason %q; want 0 and not_started", minute, st.EffectiveWeight, st.Ramp.Reason)
				}
			} else if st.Ramp.StepIndex != w {
				t.Errorf("minute %d: step %d; want %d", minute, st.Ramp.StepIndex, w)
			}
		}
	})
	t.Run("require none, no start", func(t *testing.T) {
		clock := &fakeClock{t: rampT0.Add(5 * time.Second)}
		cfg := fmt.Sprintf(rampedRoute, `{ steps: [1, 5, 10, 25, 50], every: 1m, require: none }`)
		first := newClockedHarness(t, clock.Now, nil, nil, cfg)
		clock.Set(rampT0.Add(50 * time.Second)) // the second loads later in the same minute
		second := newClockedHarness(t, clock.Now, nil, nil, cfg)
		for minute := 1; minute <= 6; minute++ {
			// The ticks are judged a little late, as Run's ticker does.
			clock.Set(rampT0.Add(time.Duration(minute)*time.Minute + time.Duration(minute)*100*time.Millisecond))
			var got []int
			for _, h := range []*harness{first, second} {
				h.proxy.tickRamps(t.Context(), clock.Now())
				got = append(got, h.routeState("get-order").Ramp.StepIndex)
			}
			// Both count from 10:01, the first tick at or after they loaded.
			if want := min(minute-1, 4); got[0] != want || got[1] != want {
				t.Errorf("minute %d: steps %v; want both %d (time alone climbs)", minute, got, want)
			}
		}
	})
}

// TestRampClimbsOneStepForTicksMissed: a process held up past several
// ticks reads local readiness once, now, which says nothing of the ticks
// that went by: it climbs one step, not one a tick.
func TestRampClimbsOneStepForTicksMissed(t *testing.T) {
	clock := &fakeClock{t: rampT0}
	b := &rampBackends{}
	h := newClockedHarness(t, clock.Now, b.legacy(), b.newpath(), fmt.Sprintf(rampedRoute, "{ steps: [5, 10, 25, 50], every: 1m }"))
	clock.Set(rampT0.Add(3*time.Minute - time.Second))
	h.feed(12)
	clock.Set(rampT0.Add(3 * time.Minute)) // ticks 10:01, 10:02 and 10:03 are all due
	h.proxy.tickRamps(t.Context(), clock.Now())
	h.rampAt("three ticks judged at 10:03", 1, 10, "")
}

// TestRampAcrossReloads: a reload that leaves the ramp and the weight
// alone keeps the ramp's step; one that changes the ramp restarts it from
// its first step; one that removes it applies the weight at once.
func TestRampAcrossReloads(t *testing.T) {
	clock := &fakeClock{t: rampT0} // on a tick: the origin
	h := newClockedHarness(t, clock.Now, nil, nil, fmt.Sprintf(rampedRoute, "{ steps: [5, 10, 25, 50], every: 1m, require: none }"))
	reload := func(yaml string) {
		t.Helper()
		h.writeConfig(yaml)
		if err := h.reloader.Reload(); err != nil {
			t.Fatal(err)
		}
	}
	for minute := 1; minute <= 2; minute++ {
		clock.Set(rampT0.Add(time.Duration(minute) * time.Minute))
		h.proxy.tickRamps(t.Context(), clock.Now())
	}
	h.rampAt("two ticks in", 2, 25, "")
	id := h.routeState("get-order").Ramp.ID

	clock.Set(rampT0.Add(2*time.Minute + 30*time.Second))
	reload(fmt.Sprintf(rampedRoute, "{ steps: [5, 10, 25, 50], every: 60s, require: none }") + "log: { level: debug }\n")
	h.rampAt("after an unrelated reload", 2, 25, "")
	if got := h.routeState("get-order").Ramp.ID; got != id {
		t.Errorf("id %s after an unrelated reload; want %s", got, id)
	}
	clock.Set(rampT0.Add(3 * time.Minute))
	h.proxy.tickRamps(t.Context(), clock.Now())
	h.rampAt("the next tick after it", 3, 40, "")

	clock.Set(rampT0.Add(3*time.Minute + 20*time.Second))
	reload(fmt.Sprintf(rampedRoute, "{ steps: [5, 10, 20, 30, 40], every: 1m, require: none }"))
	h.rampAt("after the ramp changed", 0, 5, "")
	if st := h.routeState("get-order").Ramp; !st.Start.Equal(rampT0.Add(4*time.Minute)) || st.ID == id {
		t.Errorf("start %v id %s; want 10:04:00 (the first tick after the reload) and a new id", st.Start, st.ID)
	}
	clock.Set(rampT0.Add(5 * time.Minute))
	h.proxy.tickRamps(t.Context(), clock.Now())
	h.rampAt("its first tick", 1, 10, "")

	reload(strings.Replace(fmt.Sprintf(rampedRoute, "{ steps: [5, 10, 20, 30, 40], every: 1m, require: none }"), "weight: 40", "weight: 30", 1))
	h.rampAt("after a weight edit, which is a new ramp", 0, 5, "")

	reload(strings.Replace(fmt.Sprintf(rampedRoute, "null"), "weight: 40", "weight: 30", 1))
	st := h.routeState("get-order")
	if st.Ramp != nil || st.EffectiveWeight != 30 {
		t.Errorf("ramp removed: ramp %+v, effective %v; want none and the weight, 30", st.Ramp, st.EffectiveWeight)
	}
	if _, ok := h.metric("strangler_ramp_step", map[string]string{"route": "get-order"}); ok {
		t.Error("strangler_ramp_step still exported for a route without a ramp")
	}
}

// TestRampWaitsForItsStart: before ramp.start a ramped route serves
// legacy only, and says so.
func TestRampWaitsForItsStart(t *testing.T) {
	clock := &fakeClock{t: rampT0.Add(-time.Hour)}
	h := newClockedHarness(t, clock.Now, nil, nil, fmt.Sprintf(rampedRoute, `{ steps: [5, 10], every: 1m, start: "`+rampT0.Format(time.RFC3339)+`" }`))
	st := h.routeState("get-order")
	if st.EffectiveWeight != 0 || st.Ramp.NextStepAt == nil || !st.Ramp.NextStepAt.Equal(rampT0) || !strings.HasPrefix(st.Ramp.Reason, "not_started") {
		t.Errorf("before the start: effective %v, next step %v, reason %q; want 0, the start, not_started", st.EffectiveWeight, st.Ramp.NextStepAt, st.Ramp.Reason)
	}
	if v, _ := h.metric("strangler_ramp_next_step_timestamp_seconds", map[string]string{"route": "get-order"}); v != float64(rampT0.Unix()) {
		t.Errorf("strangler_ramp_next_step_timestamp_seconds = %v; want %d", v, rampT0.Unix())
	}
	for i := range 5 {
		if res, body := h.get("/orders/"+strconv.Itoa(i), "X-User-Id", strconv.Itoa(i)); res.Header.Get("X-Served-By") != "legacy" {
			t.Fatalf("before the start, newpath answered: %s", body)
		}
	}
	clock.Set(rampT0)
	h.proxy.tickRamps(t.Context(), clock.Now())
	h.rampAt("at the start", 0, 5, "")

	rec := httptest.NewRecorder()
	h.proxy.AdminHandler(AdminOptions{Gatherer: h.reg, Config: h.reloader}).ServeHTTP(rec, httptest.NewRequest("GET", "/ui/routes/get-order", nil))
	if want := "ramp 5% of [5, 10]"; !strings.Contains(rec.Body.String(), want) {
		t.Errorf("the console's route page lacks %q:\n%s", want, rec.Body.String())
	}
}
