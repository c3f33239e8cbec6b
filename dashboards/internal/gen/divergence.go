package gen

import (
	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
)

// Strangler / Divergence: per route and field, raw vs noise difference
// rates, verdicts, recent samples from Postgres.
func divergence() (dashboard.Dashboard, error) {
	d := newBoard("strangler-divergence", "Strangler / Divergence",
		"Per route and field: how often legacy and newpath disagree, how often legacy disagrees with itself (noise), which fields are really divergent, and recent samples from Postgres.").
		Variables(append(append([]cog.Builder[dashboard.VariableModel]{prometheusVariable(), postgresVariable()}, scopeVariables(proxyScope)...),
			routeVariable(), fieldVariable()))
	comparisonResults(d)
	fieldsRawVsNoise(d)
	recentSamples(d)
	return d.Build()
}

// fieldVariable lists the schema paths that differed on the selected
// routes.
func fieldVariable() cog.Builder[dashboard.VariableModel] {
	return labelVariable("field", "Field", `label_values(strangler_field_differences_total{`+scopeMatchers+`,route=~"$route"}, field)`).
		AllValue(".*")
}

// compared selects the comparisons that ran the differ, the denominator
// of every raw rate: match, mismatch and noise (errors and skipped
// requests are not comparisons).
const compared = `strangler_comparisons_total{route=~"$route",result=~"match|mismatch|noise"}`

// rawRate is the share of comparisons in which each field differed,
// with fn (rate or increase) over window.
func rawRate(fn, window string) string {
	return `sum by (route, field) (` + fn + `(strangler_field_differences_total{route=~"$route",field=~"$field"}[` + window + `])) / on (route) group_left sum by (route) (` + fn + `(` + compared + `[` + window + `]))`
}

// noiseRate is the share of noise probes in which legacy disagreed with
// itself on each field.
func noiseRate(fn, window string) string {
	return `sum by (route, field) (` + fn + `(strangler_noise_differences_total{route=~"$route",field=~"$field"}[` + window + `])) / on (route) group_left sum by (route) (` + fn + `(strangler_noise_probes_total{route=~"$route"}[` + window + `]))`
}

// realDivergence is raw − noise per field. A field legacy never disagreed
// with itself on has no noise series: its noise rate counts as 0.
func realDivergence(fn, window string) string {
	raw := rawRate(fn, window)
	return `(` + raw + `) - (` + noiseRate(fn, window) + ` or ` + raw + ` * 0)`
}

// The series prometheus/recording.yml records per job, namespace, route
// and field, over the last 10 minutes, for the verdicts table without a
// 2 KB query on the dashboard.
const (
	recordedRawRate = "route_field:strangler_raw_difference:ratio_rate10m"
	recordedNoise   = "route_field:strangler_noise_difference:ratio_rate10m"
	recordedReal    = "route_field:strangler_real_divergence:ratio_rate10m"
)

func comparisonResults(d *dashboard.DashboardBuilder) {
	section(d, "Comparison results",
		limitLine(lines("Real mismatch rate",
			"mismatch / (match + mismatch + noise) per route: the rate the guard's max_divergence_rate and readiness (≤ 1% by default) judge. Noise-only comparisons do not count.",
			"percentunit", 8, 8,
			q(`sum by (route) (rate(strangler_comparisons_total{route=~"$route",result="mismatch"}[$__rate_interval])) / sum by (route) (rate(`+compared+`[$__rate_interval]))`, "{{route}}")).
			Min(0), 0.01),
		share(stacked("Comparison results share",
			"Share of compared requests per result; noise means every differing field was explained by legacy's own noise.",
			"percentunit", 8, 8,
			q(`sum by (route, result) (rate(`+compared+`[$__rate_interval])) / on (route) group_left sum by (route) (rate(`+compared+`[$__rate_interval]))`, "{{route}} {{result}}"))),
		lines("Comparisons and noise probes",
			"The denominators of the rates below: comparisons (match + mismatch + noise) and noise probes (legacy asked twice) per second.",
			"reqps", 8, 8,
			q(`sum by (route) (rate(`+compared+`[$__rate_interval]))`, "{{route}} comparisons"),
			q(`sum by (route) (rate(strangler_noise_probes_total{route=~"$route"}[$__rate_interval]))`, "{{route}} noise probes")),
	)
}

func fieldsRawVsNoise(d *dashboard.DashboardBuilder) {
	section(d, "Fields: raw vs noise",
		lines("Raw difference rate by field",
			"Share of comparisons (legacy vs newpath) in which the field differed, per route and schema path.",
			"percentunit", 12, 9,
			q(rawRate("rate", "$__rate_interval"), "{{route}} {{field}}")).
			Min(0),
		lines("Noise difference rate by field",
			"Share of noise probes (legacy vs legacy, same request) in which the field differed: how often the field changes on its own.",
			"percentunit", 12, 9,
			q(noiseRate("rate", "$__rate_interval"), "{{route}} {{field}}")).
			Min(0),
		limitLine(lines("Real divergence by field (raw − noise)",
			"Raw rate minus noise rate per field. A field is noisy when this is ≤ 0.001 (dashed line) or ≤ 20% of raw + noise; above that its differences are real and newpath must change (or the path go to compare.ignore).",
			"percentunit", 12, 9,
			q(realDivergence("rate", "$__rate_interval"), "{{route}} {{field}}")), 0.001),
		gradientBars("Top real divergent fields",
			"The ten fields with the highest raw − noise rate over the dashboard's time range.",
			"percentunit", 12, 9,
			q(`topk(10, clamp_min(`+realDivergence("increase", "$__range")+`, 0))`, "{{route}} {{field}}")).
			Min(0).Max(1).
			Thresholds(thresholds(base("green"), above(0.001, "orange"), above(0.05, "red"))),
		noiseVerdicts(),
		stacked("Raw differences by kind",
			"Field differences per second by kind: value, type, missing (only legacy has it), extra (only newpath has it), size (array length), order.",
			"ops", 12, 8,
			q(`sum by (route, kind) (rate(strangler_field_differences_total{route=~"$route",field=~"$field"}[$__rate_interval]))`, "{{route}} {{kind}}")),
		lines("Divergence samples dropped and pruned",
			"Mismatch samples not written to Postgres (full queue or failed batch). The proxy never waits on Postgres; drops mean the samples table below is incomplete, not that requests suffered. Pruned: samples deleted from Postgres because they were older than divergence_store.retention (7 days by default).",
			"ops", 12, 8,
			q(`sum by (instance) (rate(strangler_divergence_samples_dropped_total[$__rate_interval]))`, "dropped {{instance}}"),
			q(`sum by (instance) (rate(strangler_divergence_samples_pruned_total[$__rate_interval]))`, "pruned {{instance}}")),
	)
}

// noiseVerdicts is one row per job, namespace, route and field: the
// recorded raw rate, noise rate and raw − noise, and the proxy's own
// verdict, merged.
func noiseVerdicts() cog.Builder[dashboard.Panel] {
	selected := `{route=~"$route",field=~"$field"}`
	return promTable("Noise verdicts",
		"Per route and field: raw rate, noise rate and raw − noise over the last 10 minutes (the recording rules of prometheus/recording.yml), and the proxy's verdict over its verdict window (strangler_field_verdict, the gravest of the field's kinds): real when the raw rate is significantly above what noise explains at compare.confidence, noisy when noise explains it, undecided while the evidence is thin (README, \"How verdicts are reached\"). /admin/routes has each kind's.",
		24, 9,
		recordedRawRate+selected, recordedNoise+selected, recordedReal+selected,
		`max by (job, namespace, route, field) (strangler_field_verdict`+selected+`)`).
		Unit("percentunit").
		Align(common.FieldTextAlignmentAuto).
		CellOptions(common.TableCellOptions{TableAutoCellOptions: &common.TableAutoCellOptions{Type: common.TableCellDisplayModeAuto}}).
		OverrideByName("verdict", []dashboard.DynamicConfigValue{
			{Id: "unit", Value: "none"},
			{Id: "mappings", Value: valueMappings(state{"match", "green"}, state{"noisy", "blue"}, state{"undecided", "orange"}, state{"real", "red"})},
			{Id: "custom.cellOptions", Value: map[string]string{"type": "color-background"}},
		}).
		SortBy([]cog.Builder[common.TableSortByFieldState]{common.NewTableSortByFieldStateBuilder().DisplayName("raw − noise").Desc(true)}).
		WithTransformation(dashboard.DataTransformerConfig{Id: "merge", Options: map[string]any{}}).
		WithTransformation(organize(map[string]any{
			"excludeByName": map[string]bool{"Time": true},
			"renameByName": map[string]string{
				"Value #A": "raw rate",
				"Value #B": "noise rate",
				"Value #C": "raw − noise",
				"Value #D": "verdict",
			},
		}))
}

func recentSamples(d *dashboard.DashboardBuilder) {
	section(d, "Recent samples",
		grid("Recent divergence samples",
			"The newest mismatch samples from Postgres table strangler_divergences (divergence_store.database_url): both statuses, the differing fields, and the request and trace ids to find the request in the logs and traces. The full values of each difference are in the last column; /admin/divergences holds the proxy's in-memory ring.",
			24, 10).
			Datasource(pgDS).
			Align(common.FieldTextAlignmentAuto).
			CellOptions(common.TableCellOptions{TableAutoCellOptions: &common.TableAutoCellOptions{Type: common.TableCellDisplayModeAuto}}).
			Inspect(true).
			WithTarget(sqlQuery(samplesSQL)),
	)
}

// samplesSQL lists the newest samples of the selected routes. $route is
// Grafana's quoted, comma-separated list of the selected routes.
const samplesSQL = `SELECT
  time,
  route,
  method,
  path,
  legacy_status,
  newpath_status,
  CASE WHEN jsonb_typeof(differences) = 'array'
    THEN (SELECT string_agg(DISTINCT elem->>'field', ', ') FROM jsonb_array_elements(differences) AS elem)
  END AS fields,
  request_id,
  trace_id,
  differences::text AS differences
FROM strangler_divergences
WHERE $__timeFilter(time)
  AND route IN ($route)
ORDER BY time DESC
LIMIT 200`
