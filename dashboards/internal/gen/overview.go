package gen

import (
	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
)

// Strangler / Overview: per route, the split, weights, ramps, errors, latency,
// comparisons, shadows, guards, readiness and config reloads.
func overview() (dashboard.Dashboard, error) {
	d := newBoard("strangler-overview", "Strangler / Overview",
		"Per route: the traffic split, weights, ramps, errors and latency per backend, comparisons, shadowing, guards, readiness and config reloads.").
		Variables(append(append([]cog.Builder[dashboard.VariableModel]{prometheusVariable()}, scopeVariables(proxyScope)...), routeVariable())).
		Annotation(promAnnotation("Config reloads", "blue",
			`changes(strangler_config_last_reload_success_timestamp_seconds[2m]) > 0`,
			"config reloaded", "{{instance}}", "instance")).
		Annotation(promAnnotation("Guard trips", "red",
			`sum by (route, reason) (increase(strangler_guard_trips_total{route=~"$route"}[2m])) > 0`,
			"guard tripped", "{{route}}: {{reason}}", "route,reason"))
	trafficSplit(d)
	ramps(d)
	errorsAndLatency(d)
	shadowingAndComparison(d)
	guardsReadinessAndConfig(d)
	return d.Build()
}

// linkable is a panel builder with data links.
type linkable[B any] interface {
	DataLinks(links []cog.Builder[dashboard.DashboardLink]) B
}

// toDivergence links every series of a per-route panel to the divergence
// dashboard of its route, keeping the time range, the data source, the
// job and the namespace.
func toDivergence[B linkable[B]](b B) B {
	return b.DataLinks([]cog.Builder[dashboard.DashboardLink]{
		dashboard.NewDashboardLinkBuilder("Divergence of ${__field.labels.route}").
			Type(dashboard.DashboardLinkTypeLink).
			Url("/d/strangler-divergence/strangler-divergence?${__url_time_range}&${datasource:queryparam}&${namespace:queryparam}&${job:queryparam}&var-route=${__field.labels.route}"),
	})
}

func trafficSplit(d *dashboard.DashboardBuilder) {
	section(d, "Traffic split",
		toDivergence(stacked("Requests by backend",
			"Client requests per second per route, split by the backend that served them (SPEC §4), named by upstream: legacy, or the new service the route's to names. This is the split as it happened, fallbacks included.",
			"reqps", 12, 8,
			q(`sum by (route, backend, upstream) (rate(strangler_requests_total{route=~"$route"}[$__rate_interval]))`, "{{route}} → {{upstream}}"))),
		toDivergence(share(graph("Share of requests served by newpath",
			"Observed newpath share per route. It should sit near the effective weight; a gap means sticky keys are unevenly spread or fallbacks are sending newpath's traffic back to legacy.",
			"percentunit", 12, 8,
			q(`sum by (route) (rate(strangler_requests_total{route=~"$route",backend="newpath"}[$__rate_interval])) / sum by (route) (rate(strangler_requests_total{route=~"$route"}[$__rate_interval]))`, "{{route}}")))),
		toDivergence(share(lines("Configured vs effective weight",
			"Configured weight (the YAML, /100) against the weight in force after guards. Effective drops to 0 when the route's guard trips, and comes back when it is re-armed.",
			"percentunit", 12, 8,
			q(`strangler_route_weight_ratio{route=~"$route"}`, "{{route}} configured"),
			q(`strangler_route_effective_weight_ratio{route=~"$route"}`, "{{route}} effective"))).
			OverrideByRegexp(".* configured", []dashboard.DynamicConfigValue{
				{Id: "custom.lineStyle", Value: common.LineStyle{Fill: ptr(common.LineStyleFillDash), Dash: []float64{10, 10}}},
			})),
		toDivergence(stacked("Fallbacks to legacy",
			"Safe requests assigned to newpath that legacy answered, by reason (connect error, timeout, 502/503/504). Any steady rate means newpath is unhealthy for this route.",
			"reqps", 12, 8,
			q(`sum by (route, reason) (rate(strangler_fallbacks_total{route=~"$route"}[$__rate_interval]))`, "{{route}} {{reason}}"))),
		stacked("Requests by upstream",
			"Client requests per second each upstream served, over the selected routes: a new service's load as its routes move to it (routes' to; README, Many services).",
			"reqps", 24, 6,
			q(`sum by (upstream) (rate(strangler_requests_total{route=~"$route"}[$__rate_interval]))`, "{{upstream}}")),
	)
}

// latency is a quantile of a duration histogram per route and backend
// (and role, for upstream calls).
func latency(quantile, histogram, by string) string {
	return `histogram_quantile(` + quantile + `, sum by (` + by + `, le) (rate(` + histogram + `_bucket{route=~"$route"}[$__rate_interval])))`
}

func errorsAndLatency(d *dashboard.DashboardBuilder) {
	section(d, "Errors and latency",
		toDivergence(limitLine(lines("Error rate by backend",
			"Share of each backend's requests answered 5xx or not answered at all (code=error: connect refused → 502, timeout → 504). Compare the two lines of a route: newpath above legacy is what the guard's max_error_rate watches.",
			"percentunit", 8, 8,
			q(`sum by (route, backend, upstream) (rate(strangler_requests_total{route=~"$route",code=~"5xx|error"}[$__rate_interval])) / sum by (route, backend, upstream) (rate(strangler_requests_total{route=~"$route"}[$__rate_interval]))`, "{{route}} {{upstream}}")).
			Min(0), 0.02)),
		toDivergence(lines("Latency p50 by backend",
			"Median client-facing duration per route and serving backend, to the end of the response body.",
			"s", 8, 8,
			q(latency("0.5", "strangler_request_duration_seconds", "route, backend, upstream"), "{{route}} {{upstream}}"))),
		toDivergence(lines("Latency p99 by backend",
			"99th percentile client-facing duration per route and backend. Readiness wants newpath's p99 within 1.5× legacy's.",
			"s", 8, 8,
			q(latency("0.99", "strangler_request_duration_seconds", "route, backend, upstream"), "{{route}} {{upstream}}"))),
		toDivergence(lines("Upstream p99 by role",
			"99th percentile of upstream calls to their response headers, by backend and role: primary (serves the client), shadow (the other side, compared), noise (legacy asked twice). A slow shadow never delays the client; it fills the shadow queue instead.",
			"s", 12, 8,
			q(latency("0.99", "strangler_upstream_request_duration_seconds", "route, backend, upstream, role"), "{{route}} {{upstream}} {{role}}"))),
		toDivergence(lines("Upstream error rate by role",
			"Share of upstream calls that failed (no answer, a 5xx, a body broken off), by backend and role. Shadow calls count too: a newpath that fails only its shadows is caught here, and by the guard, which counts these same calls.",
			"percentunit", 12, 8,
			q(`sum by (route, backend, upstream, role) (rate(strangler_upstream_errors_total{route=~"$route"}[$__rate_interval])) / sum by (route, backend, upstream, role) (rate(strangler_upstream_request_duration_seconds_count{route=~"$route"}[$__rate_interval]))`, "{{route}} {{upstream}} {{role}}")).
			Min(0)),
		toDivergence(stacked("Requests by status class",
			"Client requests per second by route, backend and status class (error: no upstream answer).",
			"reqps", 24, 8,
			q(`sum by (route, backend, upstream, code) (rate(strangler_requests_total{route=~"$route"}[$__rate_interval]))`, "{{route}} {{upstream}} {{code}}"))),
	)
}

func shadowingAndComparison(d *dashboard.DashboardBuilder) {
	section(d, "Shadowing and comparison",
		toDivergence(stacked("Comparisons by result",
			"Compared requests per second by result: match, mismatch (a real difference), noise (every differing field is explained by legacy's own noise), error (a side failed), skipped (unsafe method without dry_run, body too large, dropped, or its differences still undecided: README, How verdicts are reached).",
			"reqps", 12, 8,
			q(`sum by (route, result) (rate(strangler_comparisons_total{route=~"$route"}[$__rate_interval]))`, "{{route}} {{result}}"))),
		toDivergence(stacked("Shadow outcomes",
			"Requests selected for shadowing by target and outcome: sent, dropped_saturated (max_in_flight reached), dropped_body_too_large, skipped_unsafe, failed, timeout.",
			"reqps", 12, 8,
			q(`sum by (route, target, upstream, outcome) (rate(strangler_shadow_requests_total{route=~"$route"}[$__rate_interval]))`, "{{route}} → {{upstream}} {{outcome}}"))),
		lines("Shadows in flight",
			"Shadow calls and comparisons running now, per proxy process (not per route). Near shadow.max_in_flight, new shadows are dropped as dropped_saturated.",
			"short", 12, 8,
			q(`strangler_shadow_in_flight`, "{{instance}}")),
		toDivergence(graph("Noise probes",
			"Requests sent to legacy a second time to measure noise (compare.noise_percent of compared safe requests).",
			"reqps", 12, 8,
			q(`sum by (route) (rate(strangler_noise_probes_total{route=~"$route"}[$__rate_interval]))`, "{{route}}"))),
		graph("Captures",
			"Compared requests captured to capture.file for strangler replay (routes' capture.percent), by result: written, dropped (the queue was full: captures never slow the proxy down) or failed (the write failed; the proxy's log says why).",
			"reqps", 12, 8,
			q(`sum by (result) (rate(strangler_capture_records_total[$__rate_interval]))`, "{{result}}")),
	)
}

func guardsReadinessAndConfig(d *dashboard.DashboardBuilder) {
	section(d, "Guards, readiness and configuration",
		// The value is 0 without a guard, 1 armed, 2 tripped.
		toDivergence(states("Guard",
			"Each route's guard: no guard (the route has no guard: section, nothing rolls it back), armed, or TRIPPED: newpath serves none of the route's traffic (shadowing goes on) until ops change the route's weight or POST /admin/routes/{name}/rearm. The value is strangler_guard_configured + strangler_guard_tripped.",
			8, 6,
			q(`max by (route) (strangler_guard_configured{route=~"$route"}) + max by (route) (strangler_guard_tripped{route=~"$route"})`, "{{route}}"),
			state{"no guard", "text"}, state{"armed", "green"}, state{"TRIPPED", "red"})),
		toDivergence(perSeries(single("Guard trips in range",
			"Guard trips in the dashboard's time range, by route and reason (error_rate or divergence).",
			"none", 8, 6,
			q(`sum by (route, reason) (increase(strangler_guard_trips_total{route=~"$route"}[$__range]))`, "{{route}} {{reason}}"))).
			Thresholds(thresholds(base("green"), above(0.5, "red")))),
		toDivergence(states("Readiness",
			"Whether each route is ready to promote (SPEC §7): enough comparisons in the window, real mismatch rate, newpath error rate and p99 within bounds. `strangler report --admin URL` prints the failing reasons.",
			8, 6,
			q(`max by (route) (strangler_route_ready{route=~"$route"})`, "{{route}}"),
			state{"not ready", "orange"}, state{"ready", "green"})),
		states("Last config reload",
			"Whether the last load of the YAML succeeded. FAILING: the file on disk is invalid and the previous config keeps serving; weight edits are not applied until the file is fixed.",
			6, 6,
			q(`min(strangler_config_last_reload_successful)`, "last reload"),
			state{"FAILING", "red"}, state{"OK", "green"}).
			TextMode(common.BigValueTextModeValue),
		single("Config age", "Time since the config in force was loaded.", "s", 6, 6,
			q(`time() - max(strangler_config_last_reload_success_timestamp_seconds)`, "age")).
			ColorMode(common.BigValueColorModeNone).
			Thresholds(thresholds(base("green"))),
		stacked("Config reloads",
			"Reloads by result (success, failure); the initial load is not counted.",
			"short", 12, 6,
			q(`sum by (result) (increase(strangler_config_reloads_total[$__rate_interval]))`, "{{result}}")).
			OverrideByName("failure", fixedColor("red")),
		states("Upstreams reachable",
			"Whether each upstream (legacy, newpath and every other new service) accepted a TCP connection at the proxies' last probe (the lowest over the replicas). A new service that is down does not make the proxy unready: legacy, and fallback, serve its routes. A legacy that is down does (/readyz answers 503).",
			8, 5,
			q(`min by (upstream) (strangler_upstream_up)`, "{{upstream}}"),
			state{"DOWN", "red"}, state{"up", "green"}),
		promTable("Running versions", "strangler_build_info of each scraped proxy process.", 16, 5,
			`strangler_build_info`).
			WithTransformation(organize(map[string]any{
				"excludeByName": map[string]bool{"Time": true, "Value": true, "__name__": true},
			})),
	)
}
