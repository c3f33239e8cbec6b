package gen

import (
	"regexp"
	"strconv"

	"github.com/grafana/grafana-foundation-sdk/go/bargauge"
	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/variants"
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
	"github.com/grafana/grafana-foundation-sdk/go/stat"
	"github.com/grafana/grafana-foundation-sdk/go/table"
	"github.com/grafana/grafana-foundation-sdk/go/timeseries"
)

// The data sources, through the dashboards' data source variables: their
// defaults are the uids of provisioning/datasources/strangler.yaml.
var (
	promDS = common.DataSourceRef{Type: ptr("prometheus"), Uid: ptr("${datasource}")}
	pgDS   = common.DataSourceRef{Type: ptr("grafana-postgresql-datasource"), Uid: ptr("${pgdatasource}")}
)

func ptr[T any](v T) *T { return &v }

// scopeMatchers select the job and namespace of the dashboard's variables.
// With "All" both are .*, which also matches series without the label:
// a Prometheus that adds no namespace label loses nothing.
const scopeMatchers = `job=~"$job",namespace=~"$namespace"`

// selectorPattern is a selector of a strangler_ or neworders_ metric, or of
// a series recorded from them (level:metric:operations), with its optional
// matchers.
var selectorPattern = regexp.MustCompile(`\b((?:[a-z_]+:)?(?:strangler|neworders)_[a-z0-9_]+(?::[a-z0-9_]+)?)(?:\{([^}]*)\})?`)

// scoped adds the job and namespace matchers to every selector of expr.
func scoped(expr string) string {
	return selectorPattern.ReplaceAllStringFunc(expr, func(sel string) string {
		m := selectorPattern.FindStringSubmatch(sel)
		matchers := scopeMatchers
		if m[2] != "" {
			matchers += "," + m[2]
		}
		return m[1] + "{" + matchers + "}"
	})
}

// target is one PromQL query of a panel and its legend.
type target struct {
	expr, legend string
}

func q(expr, legend string) target { return target{expr, legend} }

// promQuery builds the i-th query of a panel (refId A, B, …): a range
// query for graphs, an instant one for stats, bar gauges and tables.
func (t target) promQuery(i int, instant, asTable bool) cog.Builder[variants.Dataquery] {
	b := prometheus.NewDataqueryBuilder().
		RefId(string(rune('A' + i))).
		Datasource(promDS).
		EditorMode(prometheus.QueryEditorModeCode).
		Expr(scoped(t.expr))
	if instant {
		b.Instant()
	} else {
		b.Range()
	}
	if t.legend != "" {
		b.LegendFormat(t.legend)
	}
	if asTable {
		b.Format(prometheus.PromQueryFormatTable)
	}
	return b
}

// step is one threshold: from value up (nil: from -∞), the color.
type step struct {
	from  *float64
	color string
}

func base(color string) step                 { return step{nil, color} }
func above(value float64, color string) step { return step{&value, color} }

func thresholds(steps ...step) *dashboard.ThresholdsConfigBuilder {
	var out []dashboard.Threshold
	for _, s := range steps {
		out = append(out, dashboard.Threshold{Value: s.from, Color: s.color})
	}
	return dashboard.NewThresholdsConfigBuilder().Mode(dashboard.ThresholdsModeAbsolute).Steps(out)
}

// state is what a stat shows for one value of a 0/1/2-valued series.
type state struct {
	text, color string
}

// valueMappings maps the values 0, 1, … to the states, in order.
func valueMappings(states ...state) []dashboard.ValueMapping {
	options := map[string]dashboard.ValueMappingResult{}
	for i, s := range states {
		options[strconv.Itoa(i)] = dashboard.ValueMappingResult{Text: ptr(s.text), Color: ptr(s.color), Index: ptr(int32(i))}
	}
	return []dashboard.ValueMapping{{ValueMap: &dashboard.ValueMap{Type: dashboard.MappingTypeValueToText, Options: options}}}
}

// stateThresholds colors the values 0, 1, … like the states.
func stateThresholds(states ...state) *dashboard.ThresholdsConfigBuilder {
	steps := []step{base(states[0].color)}
	for i, s := range states[1:] {
		steps = append(steps, above(float64(i+1), s.color))
	}
	return thresholds(steps...)
}

func colorMode(mode dashboard.FieldColorModeId) *dashboard.FieldColorBuilder {
	return dashboard.NewFieldColorBuilder().Mode(mode)
}

// fixedColor is an override property: one series in one color.
func fixedColor(color string) []dashboard.DynamicConfigValue {
	return []dashboard.DynamicConfigValue{{Id: "color", Value: map[string]any{"mode": "fixed", "fixedColor": color}}}
}

// graph is the shape of every time series panel: lines of rates or gauges
// with a table legend (last and max), a shared sorted tooltip, and an
// axis starting at 0 unless a series goes below. Callers chain what
// differs: stacked, lines, min/max, thresholds.
func graph(title, description, unit string, w, h uint32, targets ...target) *timeseries.PanelBuilder {
	b := timeseries.NewPanelBuilder().
		Title(title).
		Description(description).
		Datasource(promDS).
		Span(w).Height(h).
		Unit(unit).
		ColorScheme(colorMode(dashboard.FieldColorModeIdPaletteClassic)).
		DrawStyle(common.GraphDrawStyleLine).
		LineWidth(1).
		FillOpacity(10).
		ShowPoints(common.VisibilityModeNever).
		SpanNulls(common.BoolOrFloat64{Bool: ptr(false)}).
		AxisSoftMin(0).
		Stacking(common.NewStackingConfigBuilder().Mode(common.StackingModeNone).Group("A")).
		Legend(common.NewVizLegendOptionsBuilder().
			DisplayMode(common.LegendDisplayModeTable).
			Placement(common.LegendPlacementBottom).
			ShowLegend(true).
			Calcs([]string{"lastNotNull", "max"})).
		Tooltip(common.NewVizTooltipOptionsBuilder().Mode(common.TooltipDisplayModeMulti).Sort(common.SortOrderDescending))
	for i, t := range targets {
		b.WithTarget(t.promQuery(i, false, false))
	}
	return b
}

// stacked graphs parts of a whole (requests by backend, results): areas
// stacked on each other.
func stacked(title, description, unit string, w, h uint32, targets ...target) *timeseries.PanelBuilder {
	return graph(title, description, unit, w, h, targets...).
		Stacking(common.NewStackingConfigBuilder().Mode(common.StackingModeNormal).Group("A"))
}

// lines graphs series compared with each other (latencies, ratios):
// unfilled lines.
func lines(title, description, unit string, w, h uint32, targets ...target) *timeseries.PanelBuilder {
	return graph(title, description, unit, w, h, targets...).FillOpacity(0)
}

// share graphs a ratio between 0 and 1.
func share(b *timeseries.PanelBuilder) *timeseries.PanelBuilder {
	return b.Unit("percentunit").Min(0).Max(1)
}

// limitLine draws a dashed red line at the limit a guard, readiness or an
// alert applies.
func limitLine(b *timeseries.PanelBuilder, limit float64) *timeseries.PanelBuilder {
	return b.Thresholds(thresholds(base("green"), above(limit, "red"))).
		ThresholdsStyle(common.NewGraphThresholdsStyleConfigBuilder().Mode(common.GraphThresholdsStyleModeDashed))
}

// single is the shape of every stat panel: the last value of an instant
// query, on a colored background, without a sparkline.
func single(title, description, unit string, w, h uint32, t target) *stat.PanelBuilder {
	return stat.NewPanelBuilder().
		Title(title).
		Description(description).
		Datasource(promDS).
		Span(w).Height(h).
		Unit(unit).
		Mappings([]dashboard.ValueMapping{}).
		ColorScheme(colorMode(dashboard.FieldColorModeIdThresholds)).
		ReduceOptions(common.NewReduceDataOptionsBuilder().Calcs([]string{"lastNotNull"}).Fields("").Values(false)).
		ColorMode(common.BigValueColorModeBackground).
		GraphMode(common.BigValueGraphModeNone).
		TextMode(common.BigValueTextModeValue).
		Orientation(common.VizOrientationAuto).
		JustifyMode(common.BigValueJustifyModeAuto).
		WideLayout(true).
		ShowPercentChange(false).
		WithTarget(t.promQuery(0, true, false))
}

// perSeries names each value of a stat after its series (one per route or
// upstream).
func perSeries(b *stat.PanelBuilder) *stat.PanelBuilder {
	return b.TextMode(common.BigValueTextModeValueAndName)
}

// states is a stat of a series whose values 0, 1, … mean the given states,
// one per series.
func states(title, description string, w, h uint32, t target, s ...state) *stat.PanelBuilder {
	return perSeries(single(title, description, "short", w, h, t)).
		Mappings(valueMappings(s...)).
		Thresholds(stateThresholds(s...))
}

// gradientBars is a horizontal bar gauge of an instant query.
func gradientBars(title, description, unit string, w, h uint32, t target) *bargauge.PanelBuilder {
	return bargauge.NewPanelBuilder().
		Title(title).
		Description(description).
		Datasource(promDS).
		Span(w).Height(h).
		Unit(unit).
		ColorScheme(colorMode(dashboard.FieldColorModeIdThresholds)).
		DisplayMode(common.BarGaugeDisplayModeGradient).
		Orientation(common.VizOrientationHorizontal).
		ShowUnfilled(true).
		ValueMode(common.BarGaugeValueModeColor).
		ReduceOptions(common.NewReduceDataOptionsBuilder().Calcs([]string{"lastNotNull"}).Fields("").Values(false)).
		WithTarget(t.promQuery(0, true, false))
}

// grid is the shape of every table panel.
func grid(title, description string, w, h uint32) *table.PanelBuilder {
	return table.NewPanelBuilder().
		Title(title).
		Description(description).
		Span(w).Height(h).
		ShowHeader(true).
		CellHeight(common.TableCellHeightSm).
		Footer(common.NewTableFooterOptionsBuilder().Show(false).Reducer([]string{}).CountRows(false))
}

// promTable is a table of instant PromQL queries, one column per query.
func promTable(title, description string, w, h uint32, exprs ...string) *table.PanelBuilder {
	b := grid(title, description, w, h).Datasource(promDS)
	for i, e := range exprs {
		b.WithTarget(target{expr: e}.promQuery(i, true, true))
	}
	return b
}

func organize(options map[string]any) dashboard.DataTransformerConfig {
	return dashboard.DataTransformerConfig{Id: "organize", Options: options}
}

// sqlQuery is a raw SQL query of the PostgreSQL data source, which the SDK
// has no typed builder for.
func sqlQuery(sql string) cog.Builder[variants.Dataquery] {
	return variants.NewUnknownDataqueryBuilderFromObject(variants.UnknownDataquery{
		"refId":      "A",
		"datasource": pgDS,
		"editorMode": "code",
		"format":     "table",
		"rawQuery":   true,
		"rawSql":     sql,
	})
}

// section adds a row and, after it, its panels, laid out left to right in
// the order given. The row stays expanded: its panels are the dashboard's
// own, as Grafana keeps them for an expanded row.
func section(d *dashboard.DashboardBuilder, title string, panels ...cog.Builder[dashboard.Panel]) {
	d.WithRow(dashboard.NewRowBuilder(title))
	for _, p := range panels {
		d.WithPanel(p)
	}
}
