package observability

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDashboards checks that the chart ships the five dashboards and that
// every PromQL expression in them parses: with metricsql (from which the
// metric names are taken) and with promtool, Prometheus's own parser, by
// loading the expressions as recording rules. Whether the metrics they name
// exist is TestMetricsExported's job.
func TestDashboards(t *testing.T) {
	entries, err := os.ReadDir(dashboardsDir)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	for _, n := range dashboardNames {
		want[n+".json"] = true
	}
	for _, e := range entries {
		if !want[e.Name()] {
			t.Errorf("unexpected file %s in %s: add it to dashboardNames so it is checked", e.Name(), dashboardsDir)
		}
		delete(want, e.Name())
	}
	for n := range want {
		t.Errorf("dashboard %s is missing from %s", n, dashboardsDir)
	}

	var rules strings.Builder
	rules.WriteString("groups:\n  - name: dashboards\n    rules:\n")
	total := 0
	for _, name := range dashboardNames {
		qs := dashboardQueries(t, name)
		if len(qs) < 5 {
			t.Errorf("%s.json has only %d queries", name, len(qs))
		}
		for _, q := range qs {
			names, err := metricNames(q.expr)
			if err != nil {
				t.Errorf("%s: %q does not parse (metricsql): %v", q.where, q.expr, err)
				continue
			}
			if len(names) == 0 {
				t.Errorf("%s: %q names no metric", q.where, q.expr)
			}
			total++
			fmt.Fprintf(&rules, "      - record: dashboard:%s:q%d\n        expr: %q\n", strings.ReplaceAll(name, "-", "_"), total, substituteGrafana(q.expr))
		}
	}
	path := filepath.Join(t.TempDir(), "dashboards.rules.yml")
	if err := os.WriteFile(path, []byte(rules.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	out := runPromtool(t, "check", "rules", path)
	if !strings.Contains(out, fmt.Sprintf("SUCCESS: %d rules found", total)) {
		t.Fatalf("promtool check rules did not accept all %d dashboard expressions:\n%s", total, out)
	}
	t.Logf("%d dashboard expressions parse with metricsql and promtool", total)
}
