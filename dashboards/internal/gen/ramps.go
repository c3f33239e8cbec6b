package gen

import (
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
)

// ramps is the overview's section on routes[].ramp: where each ramp is on
// its steps, whether it climbs, and why not.
func ramps(d *dashboard.DashboardBuilder) {
	section(d, "Ramps",
		toDivergence(share(lines("Ramp progress",
			"How far each route's ramp has climbed: its current step over its number of steps (1 = the last step). Only routes with a ramp: section appear. The weight this serves is in Configured vs effective weight; a guard trip drops it to 0 and the ramp climbs again from its first step after the re-arm.",
			"percentunit", 12, 8,
			q(`max by (route) (strangler_ramp_step{route=~"$route"}) / max by (route) (strangler_ramp_steps{route=~"$route"})`, "{{route}}")))),
		toDivergence(lines("Ramp pauses by reason",
			"1 while a ramp is paused, by reason: not_started (before ramp.start), not_ready (the route's readiness was not ready at the tick: strangler report says why), guard_tripped, prometheus_unavailable (with guard.source prometheus, the tick waits until Prometheus answers).",
			"short", 12, 8,
			q(`max by (route, reason) (strangler_ramp_paused{route=~"$route"})`, "{{route}} {{reason}}")).
			Min(0).Max(1)),
		toDivergence(states("Ramp",
			"Whether each ramp climbs at its ticks (on schedule, or on its last step) or is PAUSED: Ramp pauses by reason says why.",
			12, 6,
			q(`max by (route) (strangler_ramp_paused{route=~"$route"})`, "{{route}}"),
			state{"on schedule", "green"}, state{"PAUSED", "orange"})),
		toDivergence(perSeries(single("Next ramp step in",
			"Time to each ramp's next tick, where it climbs a step if the route holds; 0 once on its last step.",
			"s", 12, 6,
			q(`clamp_min(max by (route) (strangler_ramp_next_step_timestamp_seconds{route=~"$route"}) - time(), 0)`, "{{route}}"))).
			ColorMode(common.BigValueColorModeNone)),
	)
}
