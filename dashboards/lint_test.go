package dashboards_test

import (
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"unicode"
)

// grafanaSchemaVersion is the dashboard model version the JSON files are
// written in: the classic model as Grafana 11.0 to 11.2 save it. Later
// Grafana versions migrate it forward on load.
const grafanaSchemaVersion = 39

func TestDashboardsAreValidGrafanaModels(t *testing.T) {
	want := map[string][2]string{ // file → uid, title
		"strangler-overview.json":   {"strangler-overview", "Strangler / Overview"},
		"strangler-divergence.json": {"strangler-divergence", "Strangler / Divergence"},
		"neworders-outbox.json":     {"neworders-outbox", "Neworders / Outbox"},
	}
	for _, d := range loadDashboards(t) {
		t.Run(d.file, func(t *testing.T) {
			if got := [2]string{d.UID, d.Title}; got != want[d.file] {
				t.Errorf("uid, title = %q; want %q", got, want[d.file])
			}
			if d.SchemaVersion != grafanaSchemaVersion {
				t.Errorf("schemaVersion = %d; want %d", d.SchemaVersion, grafanaSchemaVersion)
			}
			ids := map[int]string{}
			for _, p := range d.allPanels() {
				if p.ID <= 0 {
					t.Errorf("panel %q: id %d; want a positive id", p.Title, p.ID)
				}
				if other, dup := ids[p.ID]; dup {
					t.Errorf("panel id %d used by %q and %q", p.ID, other, p.Title)
				}
				ids[p.ID] = p.Title
				if p.Title == "" {
					t.Errorf("panel %d has no title", p.ID)
				}
				if g := p.GridPos; g == nil || g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 {
					t.Errorf("panel %q: gridPos %+v is not inside Grafana's 24 columns", p.Title, g)
				}
				if p.Type == "row" {
					continue
				}
				if len(p.Targets) == 0 {
					t.Errorf("panel %q has no query", p.Title)
				}
				refs := map[string]bool{}
				for _, tg := range p.Targets {
					if tg.RefID == "" || refs[tg.RefID] {
						t.Errorf("panel %q: refId %q empty or repeated", p.Title, tg.RefID)
					}
					refs[tg.RefID] = true
					if tg.Expr == "" && tg.RawSQL == "" {
						t.Errorf("panel %q / %s: neither expr nor rawSql", p.Title, tg.RefID)
					}
				}
			}
			vars := map[string]variable{}
			for _, v := range d.Templating.List {
				vars[v.Name] = v
			}
			if v := vars["datasource"]; v.Type != "datasource" || v.queryText() != "prometheus" {
				t.Errorf("variable datasource = %+v; want a prometheus data source variable", v)
			}
			// No allValue: with "All", Grafana then sends every route
			// (regex for Prometheus, a quoted list for the SQL IN clause);
			// a custom all value such as .* would be invalid SQL.
			const routes = `label_values(strangler_requests_total{` + scope + `}, route)`
			r := vars["route"]
			if r.Type != "query" || r.queryText() != routes || !r.Multi || !r.IncludeAll || r.AllValue != "" {
				t.Errorf("variable route = %+v; want %s, multi, include all, no custom all value", r, routes)
			}
			// The scope variables: "All" is .*, which also matches the
			// series of a Prometheus that adds no namespace label.
			for _, name := range []string{"namespace", "job"} {
				v := vars[name]
				m := labelValuesPattern.FindStringSubmatch(v.queryText())
				if v.Type != "query" || m == nil || m[2] != name || !v.Multi || !v.IncludeAll || v.AllValue != ".*" {
					t.Errorf("variable %s = %+v; want label_values(…, %s), multi, include all, all value .*", name, v, name)
				}
			}
			if q := vars["job"].queryText(); !strings.Contains(q, `namespace=~"$namespace"`) {
				t.Errorf("variable job = %q; want the jobs of the selected namespaces", q)
			}
			var order []string
			for _, v := range d.Templating.List {
				order = append(order, v.Name)
			}
			if i, j, k := slices.Index(order, "namespace"), slices.Index(order, "job"), slices.Index(order, "route"); !(i >= 0 && i < j && j < k) {
				t.Errorf("variables %v; want namespace, then job, then route (each lists the values of the ones before)", order)
			}
		})
	}
}

func TestDashboardUIDsAreUniqueAndNoOtherJSONIsProvisioned(t *testing.T) {
	uids := map[string]string{}
	for _, d := range loadDashboards(t) {
		if other, dup := uids[d.UID]; dup {
			t.Errorf("uid %q used by %s and %s", d.UID, other, d.file)
		}
		uids[d.UID] = d.file
	}
	// Grafana's file provider loads every *.json below its path,
	// recursively: a stray JSON file (a golden file, a fixture) would
	// become a dashboard.
	err := filepath.WalkDir(".", func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !e.IsDir() && strings.HasSuffix(path, ".json") && !slices.Contains(dashboardFiles, path) {
			t.Errorf("%s: a JSON file that is not a dashboard would be provisioned as one", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestDatasourceReferencesMatchProvisioning(t *testing.T) {
	provisioned := map[string]string{} // uid → type
	for _, ds := range loadProvisionedDatasources(t) {
		if ds.UID == "" || ds.Name == "" || ds.Type == "" {
			t.Errorf("provisioned data source %+v: name, uid and type are required", ds)
		}
		provisioned[ds.UID] = ds.Type
	}
	for _, typ := range []string{"prometheus", "grafana-postgresql-datasource"} {
		if !slices.Contains(slices.Collect(maps.Values(provisioned)), typ) {
			t.Errorf("no %s data source is provisioned", typ)
		}
	}
	for _, d := range loadDashboards(t) {
		dsVars := map[string]string{} // variable name → plugin type
		for _, v := range d.Templating.List {
			if v.Type != "datasource" {
				continue
			}
			dsVars[v.Name] = v.queryText()
			if uid, _ := v.Current.Value.(string); provisioned[uid] != v.queryText() {
				t.Errorf("%s: variable %s defaults to %q, not a provisioned %s data source", d.file, v.Name, uid, v.queryText())
			}
		}
		check := func(where string, ref *dsRef) {
			if ref == nil {
				t.Errorf("%s: %s has no data source", d.file, where)
				return
			}
			if ref.UID == "-- Grafana --" && ref.Type == "grafana" {
				return // Grafana's built-in annotations
			}
			if m := regexp.MustCompile(`^\$\{?(\w+)\}?$`).FindStringSubmatch(ref.UID); m != nil {
				if typ, ok := dsVars[m[1]]; !ok || typ != ref.Type {
					t.Errorf("%s: %s uses %q of type %s; want a data source variable of that type", d.file, where, ref.UID, ref.Type)
				}
				return
			}
			if provisioned[ref.UID] != ref.Type {
				t.Errorf("%s: %s uses data source uid %q (%s), which is not provisioned", d.file, where, ref.UID, ref.Type)
			}
		}
		for _, p := range d.allPanels() {
			if p.Type == "row" {
				continue
			}
			check("panel "+p.Title, p.Datasource)
			for _, tg := range p.Targets {
				check("panel "+p.Title+" / "+tg.RefID, tg.Datasource)
			}
		}
		for _, a := range d.Annotations.List {
			check("annotation "+a.Name, a.Datasource)
		}
		for _, v := range d.Templating.List {
			if v.Type == "query" {
				check("variable "+v.Name, v.Datasource)
			}
		}
	}
}

// registeredMetrics is every metric of the proxy's and the newpath's real
// registries.
func registeredMetrics(t *testing.T) map[string]knownMetric {
	t.Helper()
	known := proxyMetrics(t)
	for name, m := range newpathMetrics(t) {
		known[name] = m
	}
	return known
}

// byClausePattern is an aggregation's or a vector match's label list.
var byClausePattern = regexp.MustCompile(`\b(by|on|without|ignoring)\s*\(([^)]*)\)`)

// withRecorded adds the series of recording.yml to known, each with the
// labels its rule keeps: those of its by clauses and of the recorded
// series it reads.
func withRecorded(t *testing.T, known map[string]knownMetric) map[string]knownMetric {
	t.Helper()
	out := maps.Clone(known)
	for _, r := range loadRecordingRules(t) {
		var labels []string
		for _, m := range byClausePattern.FindAllStringSubmatch(r.Expr, -1) {
			if m[1] != "by" {
				continue
			}
			for l := range strings.SplitSeq(m[2], ",") {
				if l = strings.TrimSpace(l); l != "" && !slices.Contains(labels, l) {
					labels = append(labels, l)
				}
			}
		}
		for _, name := range metricsOf(r.Expr) {
			if src, ok := out[name]; ok && strings.Contains(name, ":") {
				for _, l := range src.labels {
					if !slices.Contains(labels, l) {
						labels = append(labels, l)
					}
				}
			}
		}
		out[r.Record] = knownMetric{labels: labels}
	}
	return out
}

// targetLabels are the labels Prometheus adds to every series: job and
// instance, and namespace where a shared Prometheus's service discovery
// adds it.
var targetLabels = []string{"job", "instance", "namespace"}

// scope is what every selector of a panel or annotation query must match:
// the dashboard's job and namespace variables.
const scope = `job=~"$job",namespace=~"$namespace"`

// checkExpr reports what is wrong with a PromQL expression: a metric no
// registry exports, a label matcher on a label the metric does not have,
// unbalanced brackets, or a variable the dashboard does not define.
func checkExpr(t *testing.T, where, expr string, known map[string]knownMetric, vars []string) {
	t.Helper()
	if !balanced(expr) {
		t.Errorf("%s: unbalanced brackets or quotes in %q", where, expr)
	}
	names := metricsOf(expr)
	if len(names) == 0 {
		t.Errorf("%s: names no strangler_ or neworders_ metric: %q", where, expr)
	}
	for _, name := range names {
		if _, ok := lookup(known, name); !ok {
			t.Errorf("%s: metric %s is not exported by the proxy or the newpath", where, name)
		}
	}
	for name, labels := range matchedLabels(expr) {
		m, ok := lookup(known, name)
		if !ok {
			continue
		}
		for _, l := range labels {
			if !slices.Contains(m.labels, l) && !slices.Contains(targetLabels, l) {
				t.Errorf("%s: %s has no label %q (it has %v)", where, name, l, m.labels)
			}
		}
	}
	for _, v := range variablesOf(expr) {
		if !slices.Contains(vars, v) && !slices.Contains(builtinVariables, v) {
			t.Errorf("%s: unknown variable $%s", where, v)
		}
	}
}

func TestQueriesNameOnlyRegisteredMetrics(t *testing.T) {
	raw := registeredMetrics(t)
	known := withRecorded(t, raw)
	for _, d := range loadDashboards(t) {
		var vars []string
		for _, v := range d.Templating.List {
			vars = append(vars, v.Name)
		}
		for _, q := range d.queries() {
			switch q.kind {
			case "promql":
				checkExpr(t, q.where, q.text, known, vars)
			case "label_values":
				m := regexp.MustCompile(`^label_values\((.+), *(\w+)\)$`).FindStringSubmatch(q.text)
				if m == nil {
					t.Errorf("%s: %q is not label_values(selector, label)", q.where, q.text)
					continue
				}
				checkExpr(t, q.where, m[1], known, vars)
				for _, name := range metricsOf(m[1]) {
					if km, ok := lookup(known, name); ok && !slices.Contains(km.labels, m[2]) && !slices.Contains(targetLabels, m[2]) {
						t.Errorf("%s: %s has no label %q", q.where, name, m[2])
					}
				}
			case "sql":
				// Checked in TestRecentSamplesQueryReadsTheDivergenceStore
				// against the proxy's own table; here only its shape.
				for _, want := range []string{"FROM strangler_divergences", "$__timeFilter(time)", "route IN ($route)"} {
					if !strings.Contains(q.text, want) {
						t.Errorf("%s: the samples query lacks %q", q.where, want)
					}
				}
			}
		}
	}
	for _, r := range loadRules(t) {
		checkExpr(t, rulesFile+" / "+r.Alert, r.Expr, known, nil)
	}
	// A recording rule reads the registries' metrics or the series of the
	// rules before it in the file, never its own or a later one.
	recorded := withRecorded(t, map[string]knownMetric{})
	seen := maps.Clone(raw)
	for _, r := range loadRecordingRules(t) {
		if !strings.Contains(r.Record, ":") || len(metricsOf(r.Record)) != 1 || metricsOf(r.Record)[0] != r.Record {
			t.Errorf("%s: record %q is not a level:strangler_metric:operations name", recordingFile, r.Record)
		}
		checkExpr(t, recordingFile+" / "+r.Record, r.Expr, seen, nil)
		seen[r.Record] = recorded[r.Record]
	}
}

// TestAggregationsKeepJobAndNamespace requires every by and on clause of
// the rule files to keep job and namespace, so that the series of two
// migrations sharing one Prometheus never mix, and the dashboards' scope
// variables select the recorded series as they select the raw ones.
func TestAggregationsKeepJobAndNamespace(t *testing.T) {
	check := func(where, expr string) {
		for _, m := range byClausePattern.FindAllStringSubmatch(expr, -1) {
			if m[1] == "without" || m[1] == "ignoring" {
				for _, l := range []string{"job", "namespace"} {
					if slices.Contains(strings.Fields(strings.ReplaceAll(m[2], ",", " ")), l) {
						t.Errorf("%s: %s drops %s", where, m[0], l)
					}
				}
				continue
			}
			labels := strings.Fields(strings.ReplaceAll(m[2], ",", " "))
			if !slices.Contains(labels, "job") || !slices.Contains(labels, "namespace") {
				t.Errorf("%s: %s; want job and namespace kept", where, m[0])
			}
		}
	}
	for _, r := range loadRules(t) {
		check(rulesFile+" / "+r.Alert, r.Expr)
	}
	for _, r := range loadRecordingRules(t) {
		check(recordingFile+" / "+r.Record, r.Expr)
	}
}

// TestPanelQueriesAreScoped requires job=~"$job",namespace=~"$namespace"
// in every selector of every panel and annotation query, so that a
// dashboard over a shared Prometheus shows only the selected migration.
func TestPanelQueriesAreScoped(t *testing.T) {
	for _, d := range loadDashboards(t) {
		for _, q := range d.queries() {
			if q.kind != "promql" {
				continue
			}
			for _, loc := range metricNamePattern.FindAllStringIndex(q.text, -1) {
				rest := q.text[loc[1]:]
				end := strings.IndexByte(rest, '}')
				if !strings.HasPrefix(rest, "{") || end < 0 || !strings.Contains(rest[:end], scope) {
					t.Errorf("%s: selector %s lacks %s\n%s", q.where, q.text[loc[0]:loc[1]], scope, q.text)
				}
			}
		}
	}
}

// TestRoutePanelsLinkToTheirDivergence requires every per-route panel of
// the overview to link each series to the divergence dashboard of its
// route, in the same job and namespace.
func TestRoutePanelsLinkToTheirDivergence(t *testing.T) {
	var vars []string
	var linked int
	for _, d := range loadDashboards(t) {
		if d.UID == "strangler-divergence" {
			for _, v := range d.Templating.List {
				vars = append(vars, v.Name)
			}
		}
	}
	for _, d := range loadDashboards(t) {
		if d.UID != "strangler-overview" {
			continue
		}
		for _, p := range d.allPanels() {
			perRoute := p.Type != "row" && len(p.Targets) > 0
			for _, tg := range p.Targets {
				perRoute = perRoute && strings.Contains(tg.LegendFormat, "{{route}}")
			}
			if !perRoute {
				continue
			}
			linked++
			var url string
			for _, l := range p.FieldConfig.Defaults.Links {
				if strings.HasPrefix(l.URL, "/d/strangler-divergence/") {
					url = l.URL
				}
			}
			if url == "" {
				t.Errorf("%s: a per-route panel without a data link to /d/strangler-divergence/", p.Title)
				continue
			}
			for _, want := range []string{"var-route=${__field.labels.route}", "${job:queryparam}", "${namespace:queryparam}", "${__url_time_range}"} {
				if !strings.Contains(url, want) {
					t.Errorf("%s: link %s lacks %s", p.Title, url, want)
				}
			}
			for _, m := range regexp.MustCompile(`\$\{(\w+):queryparam\}`).FindAllStringSubmatch(url, -1) {
				if !slices.Contains(vars, m[1]) {
					t.Errorf("%s: link passes $%s, which the divergence dashboard does not define", p.Title, m[1])
				}
			}
		}
	}
	if linked < 10 {
		t.Errorf("%d per-route overview panels; want the traffic, error, latency, comparison and guard panels", linked)
	}
}

func TestEveryMetricIsOnADashboard(t *testing.T) {
	used := map[string]bool{}
	recorded := loadRecordingRules(t)
	for _, d := range loadDashboards(t) {
		for _, q := range d.queries() {
			for _, name := range sourceMetrics(q.text, recorded) {
				for _, suffix := range []string{"_bucket", "_sum", "_count"} {
					name = strings.TrimSuffix(name, suffix)
				}
				used[name] = true
			}
		}
	}
	for name := range registeredMetrics(t) {
		if (strings.HasPrefix(name, "strangler_") || strings.HasPrefix(name, "neworders_")) && !used[name] {
			t.Errorf("%s is exported but no dashboard shows it", name)
		}
	}
}

func TestAlertRulesHaveRunbooks(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	runbooks := runbookAnchors(string(readme))
	rules := loadRules(t)
	var names []string
	for _, r := range rules {
		names = append(names, r.Alert)
		if r.Alert == "" || r.Expr == "" {
			t.Errorf("rule %+v: alert and expr are required", r)
		}
		if s := r.Labels["severity"]; s != "warning" && s != "critical" {
			t.Errorf("%s: severity %q; want warning or critical", r.Alert, s)
		}
		for _, a := range []string{"summary", "description", "runbook"} {
			if strings.TrimSpace(r.Annotations[a]) == "" {
				t.Errorf("%s: no %s annotation", r.Alert, a)
			}
		}
		if !strings.Contains(string(readme), "### "+r.Alert) {
			t.Errorf("%s: README.md's runbooks have no section for it", r.Alert)
		}
		url, anchor, _ := strings.Cut(r.Annotations["runbook_url"], "#")
		if url != runbookBase {
			t.Errorf("%s: runbook_url %q; want %s#ANCHOR", r.Alert, r.Annotations["runbook_url"], runbookBase)
		}
		if !slices.Contains(runbooks, anchor) {
			t.Errorf("%s: runbook_url anchor #%s is no heading of README.md's Runbooks section (%v)", r.Alert, anchor, runbooks)
		}
	}
	// The alerts issue 5 asks for.
	for _, want := range []string{
		"StranglerRealDivergenceHigh", "StranglerGuardTripped", "StranglerConfigReloadFailing",
		"StranglerShadowSaturated", "NewordersOutboxLag", "NewordersOutboxDeadEvents",
	} {
		if !slices.Contains(names, want) {
			t.Errorf("no alert %s in %s", want, rulesFile)
		}
	}
}

func TestProvisioningVariablesAreDocumented(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(datasourcesGlob)
	providers, _ := filepath.Glob(providersGlob)
	if len(providers) == 0 {
		t.Fatalf("no dashboard provider file %s", providersGlob)
	}
	for _, f := range append(files, providers...) {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range regexp.MustCompile(`\$\{(\w+)\}`).FindAllStringSubmatch(string(data), -1) {
			if !strings.Contains(string(readme), m[1]) {
				t.Errorf("%s uses $%s, which README.md does not document", f, m[1])
			}
		}
	}
	var p struct {
		APIVersion int `yaml:"apiVersion"`
		Providers  []struct {
			Type    string `yaml:"type"`
			Options struct {
				Path string `yaml:"path"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	readYAML(t, providers[0], &p)
	if p.APIVersion != 1 || len(p.Providers) != 1 || p.Providers[0].Type != "file" || p.Providers[0].Options.Path != "${STRANGLER_DASHBOARDS_DIR}" {
		t.Errorf("%s = %+v; want one file provider reading ${STRANGLER_DASHBOARDS_DIR}", providers[0], p)
	}
}

// runbookBase is where the alerts' runbook_url annotations point: this
// folder's README.md as GitHub renders it.
const runbookBase = "https://github.com/strangler-proxy/strangler/blob/main/dashboards/README.md"

// runbookAnchors returns the anchors GitHub gives the headings of
// README.md's "## Runbooks" section: lower case, spaces to hyphens,
// punctuation other than - and _ dropped.
func runbookAnchors(readme string) []string {
	var out []string
	in := false
	for line := range strings.SplitSeq(readme, "\n") {
		if strings.HasPrefix(line, "## ") {
			in = strings.TrimSpace(line) == "## Runbooks"
		}
		if !in || !strings.HasPrefix(line, "#") {
			continue
		}
		heading := strings.ToLower(strings.TrimSpace(strings.TrimLeft(line, "#")))
		var slug strings.Builder
		for _, r := range heading {
			switch {
			case r == ' ':
				slug.WriteRune('-')
			case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
				slug.WriteRune(r)
			}
		}
		out = append(out, slug.String())
	}
	return out
}
