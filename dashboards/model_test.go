package dashboards_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// The files under test, relative to this package's directory.
var dashboardFiles = []string{"strangler-overview.json", "strangler-divergence.json", "neworders-outbox.json"}

const (
	rulesFile       = "prometheus/rules.yml"
	recordingFile   = "prometheus/recording.yml"
	scrapeFile      = "prometheus/prometheus.yml"
	datasourcesGlob = "provisioning/datasources/*.yaml"
	providersGlob   = "provisioning/dashboards/*.yaml"
)

// dashboard is the part of Grafana's classic dashboard JSON model the tests
// read.
type dashboard struct {
	file          string
	UID           string  `json:"uid"`
	Title         string  `json:"title"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []variable `json:"list"`
	} `json:"templating"`
	Annotations struct {
		List []annotation `json:"list"`
	} `json:"annotations"`
}

type panel struct {
	ID          int      `json:"id"`
	Type        string   `json:"type"`
	Title       string   `json:"title"`
	Datasource  *dsRef   `json:"datasource"`
	Targets     []target `json:"targets"`
	FieldConfig struct {
		Defaults struct {
			Links []struct {
				Title string `json:"title"`
				URL   string `json:"url"`
			} `json:"links"`
		} `json:"defaults"`
	} `json:"fieldConfig"`
	GridPos *struct {
		H, W, X, Y int
	} `json:"gridPos"`
	// Panels are the children of a collapsed row.
	Panels []panel `json:"panels"`
}

type dsRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type target struct {
	RefID        string `json:"refId"`
	Datasource   *dsRef `json:"datasource"`
	Expr         string `json:"expr"`
	RawSQL       string `json:"rawSql"`
	Format       string `json:"format"`
	Instant      bool   `json:"instant"`
	LegendFormat string `json:"legendFormat"`
}

type variable struct {
	Name       string          `json:"name"`
	Type       string          `json:"type"`
	Query      json.RawMessage `json:"query"`
	Datasource *dsRef          `json:"datasource"`
	Multi      bool            `json:"multi"`
	IncludeAll bool            `json:"includeAll"`
	AllValue   string          `json:"allValue"`
	Current    struct {
		Value any `json:"value"`
	} `json:"current"`
}

// queryText returns a query variable's query, which Grafana saves either
// as a string or as {"query": "..."}.
func (v variable) queryText() string {
	var s string
	if json.Unmarshal(v.Query, &s) == nil {
		return s
	}
	var o struct {
		Query string `json:"query"`
	}
	_ = json.Unmarshal(v.Query, &o)
	return o.Query
}

type annotation struct {
	Name       string `json:"name"`
	BuiltIn    int    `json:"builtIn"`
	Datasource *dsRef `json:"datasource"`
	Expr       string `json:"expr"`
}

func loadDashboards(t *testing.T) []dashboard {
	t.Helper()
	var out []dashboard
	for _, f := range dashboardFiles {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d dashboard
		if err := json.Unmarshal(data, &d); err != nil {
			t.Fatalf("%s: not a JSON dashboard: %v", f, err)
		}
		d.file = f
		out = append(out, d)
	}
	return out
}

// allPanels returns every panel, rows' children included, in order.
func (d dashboard) allPanels() []panel {
	var out []panel
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			out = append(out, p)
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return out
}

// query is one expression a dashboard or the rule file sends to a data
// source.
type query struct {
	where string // dashboard title / panel title / refId, for messages
	kind  string // "promql", "label_values" or "sql"
	text  string
}

// queries lists every query of d: panel targets, annotations and query
// variables.
func (d dashboard) queries() []query {
	var out []query
	for _, p := range d.allPanels() {
		for _, tg := range p.Targets {
			where := d.Title + " / " + p.Title + " / " + tg.RefID
			switch {
			case tg.Expr != "":
				out = append(out, query{where, "promql", tg.Expr})
			case tg.RawSQL != "":
				out = append(out, query{where, "sql", tg.RawSQL})
			}
		}
	}
	for _, a := range d.Annotations.List {
		if a.Expr != "" {
			out = append(out, query{d.Title + " / annotation " + a.Name, "promql", a.Expr})
		}
	}
	for _, v := range d.Templating.List {
		if v.Type == "query" {
			out = append(out, query{d.Title + " / variable " + v.Name, "label_values", v.queryText()})
		}
	}
	return out
}

// rule is one alerting rule of rules.yml.
type rule struct {
	Alert       string            `yaml:"alert"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

func loadRules(t *testing.T) []rule {
	t.Helper()
	var f struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []rule `yaml:"rules"`
		} `yaml:"groups"`
	}
	readYAML(t, rulesFile, &f)
	var out []rule
	for _, g := range f.Groups {
		out = append(out, g.Rules...)
	}
	if len(out) == 0 {
		t.Fatalf("%s: no rules", rulesFile)
	}
	return out
}

// recordingRule is one rule of recording.yml.
type recordingRule struct {
	Record string `yaml:"record"`
	Expr   string `yaml:"expr"`
}

func loadRecordingRules(t *testing.T) []recordingRule {
	t.Helper()
	var f struct {
		Groups []struct {
			Name  string          `yaml:"name"`
			Rules []recordingRule `yaml:"rules"`
		} `yaml:"groups"`
	}
	readYAML(t, recordingFile, &f)
	var out []recordingRule
	for _, g := range f.Groups {
		out = append(out, g.Rules...)
	}
	if len(out) == 0 {
		t.Fatalf("%s: no rules", recordingFile)
	}
	return out
}

// sourceMetrics returns the metrics an expression reads, through the
// recording rules: a recorded series stands for the metrics of its rule's
// expression.
func sourceMetrics(expr string, recorded []recordingRule) []string {
	var out []string
	var walk func(string)
	walk = func(expr string) {
		for _, name := range metricsOf(expr) {
			i := slices.IndexFunc(recorded, func(r recordingRule) bool { return r.Record == name })
			if i < 0 {
				if !slices.Contains(out, name) {
					out = append(out, name)
				}
				continue
			}
			walk(recorded[i].Expr)
		}
	}
	walk(expr)
	return out
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// provisionedDatasource is one entry of the provisioning files.
type provisionedDatasource struct {
	Name string `yaml:"name"`
	UID  string `yaml:"uid"`
	Type string `yaml:"type"`
	URL  string `yaml:"url"`
}

func loadProvisionedDatasources(t *testing.T) []provisionedDatasource {
	t.Helper()
	files, err := filepath.Glob(datasourcesGlob)
	if err != nil || len(files) == 0 {
		t.Fatalf("no data source provisioning files %s (%v)", datasourcesGlob, err)
	}
	var out []provisionedDatasource
	for _, f := range files {
		var doc struct {
			APIVersion  int                     `yaml:"apiVersion"`
			Datasources []provisionedDatasource `yaml:"datasources"`
		}
		readYAML(t, f, &doc)
		if doc.APIVersion != 1 {
			t.Errorf("%s: apiVersion %d; want 1", f, doc.APIVersion)
		}
		out = append(out, doc.Datasources...)
	}
	return out
}

// metricNamePattern finds the project's metric names in an expression, and
// the names of series recorded from them (level:metric:operations).
var metricNamePattern = regexp.MustCompile(`\b(?:[a-z_]+:)?(?:strangler|neworders)_[a-z0-9_]+(?::[a-z0-9_]+)?`)

// metricsOf returns the distinct metric names an expression names, in
// order.
func metricsOf(expr string) []string {
	var out []string
	for _, m := range metricNamePattern.FindAllString(expr, -1) {
		if !slices.Contains(out, m) {
			out = append(out, m)
		}
	}
	return out
}

// selectorPattern finds a metric with its label matchers.
var selectorPattern = regexp.MustCompile(`\b((?:[a-z_]+:)?(?:strangler|neworders)_[a-z0-9_]+(?::[a-z0-9_]+)?)\{([^}]*)\}`)

// matcherPattern is one label matcher inside braces.
var matcherPattern = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*"(?:[^"\\]|\\.)*"`)

// matchedLabels returns, per metric of expr, the label names its matchers
// use.
func matchedLabels(expr string) map[string][]string {
	out := map[string][]string{}
	for _, m := range selectorPattern.FindAllStringSubmatch(expr, -1) {
		for _, lm := range matcherPattern.FindAllStringSubmatch(m[2], -1) {
			out[m[1]] = append(out[m[1]], lm[1])
		}
	}
	return out
}

// balanced reports whether the brackets and double quotes of a PromQL or
// SQL expression pair up: a cheap guard against a truncated edit, ahead
// of the real parse in TestQueriesReturnDataFromARealPrometheus.
func balanced(expr string) bool {
	var stack []rune
	pairs := map[rune]rune{')': '(', ']': '[', '}': '{'}
	inString := rune(0)
	escaped := false
	for _, r := range expr {
		switch {
		case inString != 0:
			switch {
			case escaped:
				escaped = false
			case r == '\\':
				escaped = true
			case r == inString:
				inString = 0
			}
		case r == '"' || r == '\'':
			inString = r
		case r == '(' || r == '[' || r == '{':
			stack = append(stack, r)
		case pairs[r] != 0:
			if len(stack) == 0 || stack[len(stack)-1] != pairs[r] {
				return false
			}
			stack = stack[:len(stack)-1]
		}
	}
	return inString == 0 && len(stack) == 0
}

// grafanaVariable matches a template variable reference: $name, ${name}
// or ${name:format}.
var grafanaVariable = regexp.MustCompile(`\$\{?([A-Za-z_][A-Za-z0-9_]*)(?::[a-z]+)?\}?`)

// variablesOf returns the template variables and macros an expression
// uses.
func variablesOf(expr string) []string {
	var out []string
	for _, m := range grafanaVariable.FindAllStringSubmatch(expr, -1) {
		if !slices.Contains(out, m[1]) {
			out = append(out, m[1])
		}
	}
	return out
}

// builtinVariables are Grafana's own variables and macros a query may use.
var builtinVariables = []string{"__rate_interval", "__interval", "__range", "__timeFilter"}

// substitution is what Grafana puts in place of the variables when the
// test sends a query to Prometheus or Postgres.
type substitution struct {
	route string // the $route value, already formatted for the target language
	field string
	job   string
	ns    string // $namespace
}

// expand replaces the variables of a PromQL expression as Grafana would,
// with the intervals of a short test run: $__rate_interval spans many 1 s
// scrapes.
func (s substitution) expand(expr string) string {
	r := strings.NewReplacer(
		"$__rate_interval", "1m",
		"$__interval", "15s",
		"$__range", "5m",
		"${route}", s.route,
		"$route", s.route,
		"${field}", s.field,
		"$field", s.field,
		"${job}", s.job,
		"$job", s.job,
		"${namespace}", s.ns,
		"$namespace", s.ns,
	)
	return r.Replace(expr)
}
