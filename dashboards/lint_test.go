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
			r := vars["route"]
			if r.Type != "query" || r.queryText() != "label_values(strangler_requests_total, route)" || !r.Multi || !r.IncludeAll || r.AllValue != "" {
				t.Errorf("variable route = %+v; want label_values(strangler_requests_total, route), multi, include all, no custom all value", r)
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

// scrapeLabels are the labels Prometheus adds to every series.
var scrapeLabels = []string{"job", "instance"}

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
			if !slices.Contains(m.labels, l) && !slices.Contains(scrapeLabels, l) {
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
	known := registeredMetrics(t)
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
					if km, ok := lookup(known, name); ok && !slices.Contains(km.labels, m[2]) {
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
}

func TestEveryMetricIsOnADashboard(t *testing.T) {
	used := map[string]bool{}
	for _, d := range loadDashboards(t) {
		for _, q := range d.queries() {
			for _, name := range metricsOf(q.text) {
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
			t.Errorf("%s: README.md's alert runbook has no section for it", r.Alert)
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
