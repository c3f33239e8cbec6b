package gen

import (
	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
)

// Neworders / Outbox: the newpath's outbox (pending, lag, deliveries, dead
// events) and orders.
func outbox() (dashboard.Dashboard, error) {
	d := newBoard("neworders-outbox", "Neworders / Outbox",
		"The newpath's transactional outbox (pending, lag, deliveries, dead events) and its orders (outcomes, idempotent replays).",
		"neworders").
		Variables(append(append([]cog.Builder[dashboard.VariableModel]{prometheusVariable()}, scopeVariables(outboxScope)...), routeVariable()))
	outboxRow(d)
	ordersRow(d)
	return d.Build()
}

// outboxScope selects the proxies and the neworders processes: this
// dashboard shows both, and each exports one of these series all the time.
const outboxScope = `{__name__=~"strangler_build_info|neworders_outbox_pending_events"}`

// Every neworders process reads the same outbox table, so the outbox
// gauges are shown as the max across processes, not the sum.
func outboxRow(d *dashboard.DashboardBuilder) {
	section(d, "Outbox",
		single("Pending events",
			"Outbox events written with their order and not delivered yet (leased ones included). Every neworders process reads the same outbox table, so this is the max across processes, not the sum.",
			"short", 6, 5,
			q(`max(neworders_outbox_pending_events)`, "pending")).
			GraphMode(common.BigValueGraphModeArea).
			Thresholds(thresholds(base("green"), above(100, "orange"), above(1000, "red"))),
		single("Oldest pending event",
			"Age of the oldest undelivered event: how late fulfilment and mail are running. 0 when nothing is pending.",
			"s", 6, 5,
			q(`max(neworders_outbox_oldest_pending_age_seconds)`, "age")).
			GraphMode(common.BigValueGraphModeArea).
			Thresholds(thresholds(base("green"), above(60, "orange"), above(300, "red"))),
		single("Dead events",
			"Events parked after MaxAttempts or a permanent refusal. Each is an order whose warehouse or mail step will not happen without a person.",
			"short", 6, 5,
			q(`max(neworders_outbox_dead_events)`, "dead")).
			Thresholds(thresholds(base("green"), above(1, "red"))),
		single("Delivery success in range",
			"Delivered / all delivery attempts (delivered, failed, dead) over the time range; skipped events (order cancelled meanwhile) are left out.",
			"percentunit", 6, 5,
			q(`sum(increase(neworders_outbox_deliveries_total{result="delivered"}[$__range])) / sum(increase(neworders_outbox_deliveries_total{result=~"delivered|failed|dead"}[$__range]))`, "success")).
			Thresholds(thresholds(base("red"), above(0.9, "orange"), above(0.99, "green"))),
		graph("Pending events",
			"Undelivered outbox events over time, per neworders process. A steady climb means the relay is down or the receivers refuse.",
			"short", 12, 8,
			q(`neworders_outbox_pending_events`, "{{instance}}")),
		limitLine(lines("Oldest pending age",
			"Age of the oldest undelivered event. The alert NewordersOutboxLag fires above 5 minutes.",
			"s", 12, 8,
			q(`neworders_outbox_oldest_pending_age_seconds`, "{{instance}}")), 300),
		stacked("Deliveries by result",
			"Delivery attempts per second: delivered, failed (retried after a backoff), dead (parked), skipped (order_paid of an order cancelled meanwhile).",
			"ops", 12, 8,
			q(`sum by (result) (rate(neworders_outbox_deliveries_total[$__rate_interval]))`, "{{result}}")).
			OverrideByName("dead", fixedColor("red")).
			OverrideByName("failed", fixedColor("orange")),
		limitLine(lines("Dead events",
			"Parked events over time; they stay until someone replays or discards them.",
			"short", 12, 8,
			q(`neworders_outbox_dead_events`, "{{instance}}")), 1),
	)
}

func ordersRow(d *dashboard.DashboardBuilder) {
	section(d, "Orders",
		stacked("Orders by outcome",
			"POST /orders per second by outcome: created, replayed (stored answer of an Idempotency-Key), out_of_stock, rejected (4xx), failed (5xx), dry_run (a shadow from the proxy, nothing committed).",
			"reqps", 12, 8,
			q(`sum by (outcome) (rate(neworders_orders_total[$__rate_interval]))`, "{{outcome}}")),
		graph("Idempotent replays",
			"POST /orders answered with the stored response of their Idempotency-Key: client retries that, on legacy, would have charged twice.",
			"reqps", 12, 8,
			q(`sum(rate(neworders_idempotent_replays_total[$__rate_interval]))`, "replays")),
		lines("Newpath latency p99 by endpoint",
			"99th percentile duration of the newpath's order API, by route pattern, as the newpath measures it.",
			"s", 12, 8,
			q(`histogram_quantile(0.99, sum by (route, le) (rate(neworders_http_request_duration_seconds_bucket[$__rate_interval])))`, "{{route}}")),
		stacked("Proxy traffic to newpath",
			"Where the newpath's load comes from, per proxy route: requests it serves (the split) and shadows it receives.",
			"reqps", 12, 8,
			q(`sum by (route) (rate(strangler_requests_total{route=~"$route",backend="newpath"}[$__rate_interval]))`, "{{route}} served"),
			q(`sum by (route) (rate(strangler_shadow_requests_total{route=~"$route",target="newpath",outcome="sent"}[$__rate_interval]))`, "{{route}} shadowed")),
		graph("Rows pruned by table",
			"Idempotency keys and delivered outbox events deleted past their retention (--idempotency-retention, --outbox-retention). Flat at 0 for longer than the retention while orders flow: no pruner runs (--prune-interval 0 everywhere), and both tables grow.",
			"cps", 12, 8,
			q(`sum by (table) (rate(neworders_pruned_rows_total[$__rate_interval]))`, "{{table}}")),
	)
}
