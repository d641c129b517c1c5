package observability

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/VictoriaMetrics/metricsql"
	"go.yaml.in/yaml/v3"
)

// Paths relative to this package's directory (go test runs tests there).
const (
	chartFiles     = "../../charts/streamhouse/files"
	dashboardsDir  = chartFiles + "/dashboards"
	rulesFile      = chartFiles + "/alerts/streamhouse.rules.yml"
	rulesTestFile  = "../alerts/streamhouse.rules.test.yml"
	promtoolBinary = "promtool"
)

// dashboardNames are the five dashboards the chart ships.
var dashboardNames = []string{"overview", "producer", "consumer-lag", "storage", "errors"}

// query is one PromQL expression and where it came from.
type query struct {
	where string // e.g. "producer.json: panel \"Records/s by topic\""
	expr  string // as written
}

// grafanaVar matches a Grafana template variable reference: $name, ${name}
// or ${name:format}, and [[name]].
var grafanaVar = regexp.MustCompile(`\$\{([A-Za-z0-9_]+)(?::[^}]*)?\}|\$([A-Za-z0-9_]+)|\[\[([A-Za-z0-9_]+)\]\]`)

// substituteGrafana replaces Grafana's variables with what Prometheus would
// receive: the interval variables by a duration, every other variable (used
// inside =~ matchers) by the regexp its "All" value sends.
func substituteGrafana(expr string) string {
	return grafanaVar.ReplaceAllStringFunc(expr, func(m string) string {
		name := strings.Trim(m, "${}[]")
		name, _, _ = strings.Cut(name, ":")
		switch name {
		case "__rate_interval", "__interval", "__range":
			return "5m"
		case "__interval_ms", "__range_ms":
			return "300000"
		case "__range_s":
			return "300"
		}
		return ".*"
	})
}

// labelValues matches a Grafana label_values(selector, label) variable query.
var labelValues = regexp.MustCompile(`^\s*label_values\((.*),\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*$`)

// dashboardQueries reads one dashboard and returns every PromQL expression
// in it: panel targets (rows' nested panels included) and the selectors of
// label_values template variables.
func dashboardQueries(t *testing.T, name string) []query {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dashboardsDir, name+".json"))
	if err != nil {
		t.Fatalf("read dashboard: %v", err)
	}
	var d struct {
		UID        string            `json:"uid"`
		Title      string            `json:"title"`
		Panels     []json.RawMessage `json:"panels"`
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Type  string `json:"type"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("%s.json is not valid JSON: %v", name, err)
	}
	if d.UID == "" || d.Title == "" {
		t.Errorf("%s.json: a dashboard needs a uid and a title", name)
	}
	var out []query
	var walk func(panels []json.RawMessage)
	walk = func(panels []json.RawMessage) {
		for _, pr := range panels {
			var p struct {
				Title   string            `json:"title"`
				Type    string            `json:"type"`
				Panels  []json.RawMessage `json:"panels"`
				Targets []struct {
					Expr string `json:"expr"`
				} `json:"targets"`
			}
			if err := json.Unmarshal(pr, &p); err != nil {
				t.Fatalf("%s.json: panel: %v", name, err)
			}
			if p.Type != "row" && len(p.Targets) == 0 {
				t.Errorf("%s.json: panel %q has no query", name, p.Title)
			}
			for _, tg := range p.Targets {
				if strings.TrimSpace(tg.Expr) == "" {
					t.Errorf("%s.json: panel %q has a target without an expression", name, p.Title)
					continue
				}
				out = append(out, query{where: fmt.Sprintf("%s.json: panel %q", name, p.Title), expr: tg.Expr})
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		q, _ := v.Query.(string)
		if m, ok := v.Query.(map[string]any); ok {
			q, _ = m["query"].(string)
		}
		mm := labelValues.FindStringSubmatch(q)
		if mm == nil {
			t.Errorf("%s.json: variable %q: query %q is not label_values(selector, label)", name, v.Name, q)
			continue
		}
		out = append(out, query{where: fmt.Sprintf("%s.json: variable %q", name, v.Name), expr: mm[1]})
	}
	return out
}

// alertRule is one rule of a Prometheus rule file.
type alertRule struct {
	Alert       string            `yaml:"alert"`
	Record      string            `yaml:"record"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

// readRules returns the alert rules of the chart's rule file.
func readRules(t *testing.T) []alertRule {
	t.Helper()
	raw, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatalf("read rules: %v", err)
	}
	var f struct {
		Groups []struct {
			Name  string      `yaml:"name"`
			Rules []alertRule `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(raw, &f); err != nil {
		t.Fatalf("%s: %v", rulesFile, err)
	}
	var out []alertRule
	for _, g := range f.Groups {
		out = append(out, g.Rules...)
	}
	if len(out) == 0 {
		t.Fatalf("%s holds no rules", rulesFile)
	}
	return out
}

// allQueries returns every expression of the dashboards and alert rules.
func allQueries(t *testing.T) []query {
	t.Helper()
	var qs []query
	for _, name := range dashboardNames {
		qs = append(qs, dashboardQueries(t, name)...)
	}
	for _, r := range readRules(t) {
		qs = append(qs, query{where: fmt.Sprintf("alert %s", r.Alert), expr: r.Expr})
	}
	return qs
}

// metricNames parses expr (after Grafana substitution) with metricsql and
// returns the metric names its selectors name.
func metricNames(expr string) ([]string, error) {
	e, err := metricsql.Parse(substituteGrafana(expr))
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	metricsql.VisitAll(e, func(x metricsql.Expr) {
		me, ok := x.(*metricsql.MetricExpr)
		if !ok {
			return
		}
		for _, lfs := range me.LabelFilterss {
			for _, lf := range lfs {
				if lf.Label == "__name__" && !lf.IsRegexp && !lf.IsNegative {
					seen[lf.Value] = true
				}
			}
		}
	})
	names := make([]string, 0, len(seen))
	for n := range seen {
		names = append(names, n)
	}
	sort.Strings(names)
	return names, nil
}

// referencedMetrics returns every metric name the dashboards and alert
// rules use, with the places that use it.
func referencedMetrics(t *testing.T) map[string][]string {
	t.Helper()
	refs := map[string][]string{}
	for _, q := range allQueries(t) {
		names, err := metricNames(q.expr)
		if err != nil {
			t.Errorf("%s: %q does not parse: %v", q.where, q.expr, err)
			continue
		}
		if len(names) == 0 {
			t.Errorf("%s: %q names no metric", q.where, q.expr)
		}
		for _, n := range names {
			refs[n] = append(refs[n], q.where)
		}
	}
	return refs
}

// promtool returns the path of promtool: STREAMHOUSE_PROMTOOL (set by `go
// tool task test`, which builds bin/promtool from tools/prometheus), else
// PATH. A missing promtool fails the test: it is a broken environment, not
// a reason to skip.
func promtool(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("STREAMHOUSE_PROMTOOL"); p != "" {
		return p
	}
	p, err := exec.LookPath(promtoolBinary)
	if err != nil {
		t.Fatalf("promtool not found (%v): run the tests with go tool task test (it builds bin/promtool), or set STREAMHOUSE_PROMTOOL", err)
	}
	return p
}

// runPromtool runs promtool with args and fails the test with its output
// when it exits non-zero.
func runPromtool(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(promtool(t), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}
