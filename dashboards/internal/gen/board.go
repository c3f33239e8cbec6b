package gen

import (
	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
)

// newBoard starts a dashboard with what the three share: the strangler
// tag and a menu of the other strangler dashboards (keeping the time range
// and the variables), a shared crosshair, the last hour refreshed every
// 30 s, and Grafana's own annotations.
func newBoard(uid, title, description string, tags ...string) *dashboard.DashboardBuilder {
	return dashboard.NewDashboardBuilder(title).
		Uid(uid).
		Description(description).
		Tags(append([]string{"strangler"}, tags...)).
		Editable().
		Tooltip(dashboard.DashboardCursorSyncCrosshair).
		Time("now-1h", "now").
		Timezone("browser").
		Refresh("30s").
		Version(1).
		WeekStart("").
		Link(dashboard.NewDashboardLinkBuilder("Strangler dashboards").
			Type(dashboard.DashboardLinkTypeDashboards).
			Tags([]string{"strangler"}).
			Icon("external link").
			IncludeVars(true).
			KeepTime(true)).
		Annotation(dashboard.NewAnnotationQueryBuilder().
			Name("Annotations & Alerts").
			BuiltIn(1).
			Type("dashboard").
			Datasource(grafanaDS).
			Enable(true).
			Hide(true).
			IconColor("rgba(0, 211, 255, 1)"))
}

// grafanaDS is Grafana's built-in annotation store.
var grafanaDS = dashboardDS("grafana", "-- Grafana --")

func dashboardDS(typ, uid string) dashboard.DataSourceRef {
	return dashboard.DataSourceRef{Type: ptr(typ), Uid: ptr(uid)}
}

// promAnnotation marks the times an expression returns a series.
func promAnnotation(name, color, expr, title, text, tags string) *dashboard.AnnotationQueryBuilder {
	return dashboard.NewAnnotationQueryBuilder().
		Name(name).
		Datasource(promDS).
		Enable(true).
		Hide(false).
		IconColor(color).
		Expr(scoped(expr)).
		Step("1m").
		TitleFormat(title).
		TextFormat(text).
		TagKeys(tags)
}

// datasourceVariable picks a data source of a plugin type, defaulting to
// the provisioned one.
func datasourceVariable(name, label, pluginType, uid, text string) cog.Builder[dashboard.VariableModel] {
	return dashboard.NewDatasourceVariableBuilder(name).
		Label(label).
		Type(pluginType).
		Current(dashboard.VariableOption{
			Selected: ptr(false),
			Text:     dashboard.StringOrArrayOfString{String: ptr(text)},
			Value:    dashboard.StringOrArrayOfString{String: ptr(uid)},
		}).
		Hide(dashboard.VariableHideDontHide).
		Regex("")
}

func prometheusVariable() cog.Builder[dashboard.VariableModel] {
	return datasourceVariable("datasource", "Prometheus", "prometheus", "strangler-prometheus", "Strangler Prometheus")
}

func postgresVariable() cog.Builder[dashboard.VariableModel] {
	return datasourceVariable("pgdatasource", "PostgreSQL", "grafana-postgresql-datasource", "strangler-postgres", "Strangler Postgres")
}

// labelVariable is a multi-value variable over the values of a label,
// "All" by default, refreshed with the time range.
func labelVariable(name, label, query string) *dashboard.QueryVariableBuilder {
	return dashboard.NewQueryVariableBuilder(name).
		Label(label).
		Datasource(promDS).
		Definition(query).
		Query(dashboard.StringOrMap{Map: map[string]any{
			"qryType": 1,
			"query":   query,
			"refId":   "PrometheusVariableQueryEditor-VariableQuery",
		}}).
		Refresh(dashboard.VariableRefreshOnTimeRangeChanged).
		Multi(true).
		IncludeAll(true).
		Current(dashboard.VariableOption{
			Selected: ptr(true),
			Text:     dashboard.StringOrArrayOfString{ArrayOfString: []string{"All"}},
			Value:    dashboard.StringOrArrayOfString{ArrayOfString: []string{"$__all"}},
		}).
		Sort(dashboard.VariableSortAlphabeticalAsc).
		Hide(dashboard.VariableHideDontHide).
		Regex("")
}

// The scope variables. Their "All" is .*, not the list of values: a
// namespace=~".*" matcher also matches the series of a Prometheus that
// adds no namespace label, where a list of the (zero) values would match
// nothing. namespace comes first, job lists the jobs of the selected
// namespaces.
//
// scopeMetrics selects the series whose labels the variables list: every
// strangler proxy exports strangler_build_info; the outbox dashboard also
// wants the neworders processes.
func scopeVariables(scopeMetrics string) []cog.Builder[dashboard.VariableModel] {
	return []cog.Builder[dashboard.VariableModel]{
		labelVariable("namespace", "Namespace", "label_values("+scopeMetrics+", namespace)").AllValue(".*"),
		labelVariable("job", "Job", "label_values("+withMatchers(scopeMetrics, `namespace=~"$namespace"`)+", job)").AllValue(".*"),
	}
}

// withMatchers adds matchers to a selector: a metric name, or {…}.
func withMatchers(selector, matchers string) string {
	if n := len(selector); n > 0 && selector[n-1] == '}' {
		return selector[:n-1] + "," + matchers + "}"
	}
	return selector + "{" + matchers + "}"
}

// proxyScope is the scope variables' selector on the proxy dashboards.
const proxyScope = "strangler_build_info"

// routeVariable lists the routes of the selected jobs. Its "All" is the
// list of routes (no custom all value): that works both as a Prometheus
// regex and in the samples query's SQL IN (...).
func routeVariable() cog.Builder[dashboard.VariableModel] {
	return labelVariable("route", "Route", "label_values(strangler_requests_total{"+scopeMatchers+"}, route)")
}
