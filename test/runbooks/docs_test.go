package runbooks

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// repoRoot is the repository, relative to this package.
const repoRoot = "../.."

// runbookAlerts is which runbook each alert of the rules file points to.
var runbookAlerts = map[string][]string{
	"consumer-lag.md":          {"StreamHouseConsumerLagHigh"},
	"s3-throttling.md":         {"StreamHouseS3Throttling"},
	"faq.md":                   {"StreamHouseErrorRateHigh"},
	"producer-backpressure.md": {"StreamHouseWALDiskUsageHigh", "StreamHouseWALDiskUsageCritical", "StreamHouseProducerFailures", "StreamHouseProducerBackpressure"},
	"controller-failover.md":   {"StreamHouseControllerApplySlow", "StreamHouseNoControllerLeader"},
	"lease-rebalancing.md":     {"StreamHouseLeaseConflicts", "StreamHouseAgentHeartbeatMissing"},
	"corruption.md":            {"StreamHouseWALRecovery", "StreamHouseObjectCorruption"},
}

func readRunbooks(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	for name := range runbookAlerts {
		b, err := os.ReadFile(filepath.Join(repoRoot, "runbooks", name))
		if err != nil {
			t.Fatal(err)
		}
		out[name] = string(b)
	}
	return out
}

// TestRunbooksMatchTheSystem checks the runbooks against what exists, so
// they cannot drift into fiction: every alert of the rules file points at
// an existing runbook that names it; the index links every runbook; every
// dashboard panel a runbook names exists in that dashboard; every `shctl`
// command line in a runbook names real subcommands and flags (checked
// against `shctl ... --help`); every streamhouse_* metric a runbook names
// is one the code exports, or that the rules or dashboards use.
func TestRunbooksMatchTheSystem(t *testing.T) {
	t.Parallel()
	books := readRunbooks(t)
	index, err := os.ReadFile(filepath.Join(repoRoot, "runbooks", "README.md"))
	if err != nil {
		t.Fatal(err)
	}

	// Alerts: the rules file's runbook_url of each alert, and the runbook
	// names the alert.
	rules, err := os.ReadFile(chartRules)
	if err != nil {
		t.Fatal(err)
	}
	alertRe := regexp.MustCompile(`(?m)^\s*- alert: (\S+)`)
	urlRe := regexp.MustCompile(`(?m)^\s*runbook_url: (\S+)`)
	alerts := alertRe.FindAllStringSubmatchIndex(string(rules), -1)
	seen := map[string]bool{}
	for i, m := range alerts {
		name := string(rules[m[2]:m[3]])
		end := len(rules)
		if i+1 < len(alerts) {
			end = alerts[i+1][0]
		}
		u := urlRe.FindSubmatch(rules[m[1]:end])
		if u == nil {
			t.Errorf("alert %s has no runbook_url", name)
			continue
		}
		file := strings.TrimPrefix(string(u[1]), "runbooks/")
		if !slices.Contains(runbookAlerts[file], name) {
			t.Errorf("alert %s: runbook_url %s, want the runbook that covers it", name, u[1])
		}
		seen[name] = true
	}
	for file, names := range runbookAlerts {
		if !strings.Contains(string(index), "("+file+")") {
			t.Errorf("runbooks/README.md does not link %s", file)
		}
		for _, name := range names {
			if !seen[name] {
				t.Errorf("alert %s (runbook %s) is not in the rules file", name, file)
			}
			if !strings.Contains(books[file], "**"+name+"**") {
				t.Errorf("%s does not name the alert **%s**", file, name)
			}
		}
	}

	// Dashboard panels: in each runbook's "Alert(s) and dashboards" section,
	// *StreamHouse / X* names a dashboard and the **bold** titles after it
	// its panels.
	panels := dashboardPanels(t)
	dashRe := regexp.MustCompile(`\*(StreamHouse / [^*]+)\*|\*\*([^*]+)\*\*`)
	for file, text := range books {
		sec := section(text, "## Alert")
		if sec == "" {
			t.Errorf("%s has no \"## Alert... and dashboards\" section", file)
			continue
		}
		current := ""
		for _, m := range dashRe.FindAllStringSubmatch(sec, -1) {
			m[1], m[2] = strings.Join(strings.Fields(m[1]), " "), strings.Join(strings.Fields(m[2]), " ")
			switch {
			case m[1] != "":
				current = m[1]
				if _, ok := panels[current]; !ok {
					t.Errorf("%s names dashboard %q, which does not exist", file, current)
				}
			case strings.HasPrefix(m[2], "StreamHouse"):
				// an alert, checked above
			case current == "":
				t.Errorf("%s names panel %q before naming its dashboard", file, m[2])
			case !panels[current][m[2]]:
				t.Errorf("%s: dashboard %q has no panel %q", file, current, m[2])
			}
		}
	}

	// shctl command lines.
	help := map[string]string{}
	helpOf := func(path []string) string {
		key := strings.Join(path, " ")
		if h, ok := help[key]; ok {
			return h
		}
		r := shctlQuiet(t, "", append(path, "--help")...)
		help[key] = r.Output()
		return help[key]
	}
	cmdRe := regexp.MustCompile("(?:^|[\\s`(])shctl ([^`\\n#|]*)")
	for file, text := range books {
		lines := cmdRe.FindAllStringSubmatch(text, -1)
		for _, m := range lines {
			checkShctlLine(t, file, m[1], helpOf)
		}
		t.Logf("%s: %d shctl command lines checked", file, len(lines))
	}

	// Metric names.
	known := exportedMetricNames(t)
	metricRe := regexp.MustCompile(`streamhouse_[a-z0-9_]+`)
	for file, text := range books {
		for _, name := range metricRe.FindAllString(text, -1) {
			base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_sum"), "_count")
			if !known[base] && !strings.Contains(string(rules), name) {
				t.Errorf("%s names metric %s, which no component exports", file, name)
			}
		}
	}
}

// section returns the text from the heading starting with prefix to the
// next "## " heading.
func section(text, prefix string) string {
	i := strings.Index(text, "\n"+prefix)
	if i < 0 {
		return ""
	}
	rest := text[i+1:]
	if j := strings.Index(rest[3:], "\n## "); j >= 0 {
		return rest[:j+3]
	}
	return rest
}

// dashboardPanels maps each dashboard's title to its panels' titles.
func dashboardPanels(t *testing.T) map[string]map[string]bool {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(repoRoot, "charts/streamhouse/files/dashboards/*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no dashboards: %v", err)
	}
	type panel struct {
		Title  string  `json:"title"`
		Panels []panel `json:"panels"`
	}
	out := map[string]map[string]bool{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d panel
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		titles := map[string]bool{}
		var walk func([]panel)
		walk = func(ps []panel) {
			for _, p := range ps {
				titles[p.Title] = true
				walk(p.Panels)
			}
		}
		walk(d.Panels)
		out[d.Title] = titles
	}
	return out
}

// globalFlagsWithValue are shctl's persistent flags that take a value.
var globalFlagsWithValue = []string{"--gateway", "--controller", "--timeout", "--output", "-o"}

// checkShctlLine checks one shctl command line of a runbook: its
// subcommands exist, and so does every --flag in `shctl <path> --help`.
func checkShctlLine(t *testing.T, file, line string, helpOf func([]string) string) {
	t.Helper()
	fields := strings.Fields(line)
	var path []string
	descending := true
	for i := 0; i < len(fields); i++ {
		f := fields[i]
		if strings.HasPrefix(f, "-") {
			name, _, hasValue := strings.Cut(f, "=")
			if slices.Contains(globalFlagsWithValue, name) && !hasValue {
				i++ // its value
			}
			continue
		}
		if !descending {
			continue
		}
		h := helpOf(path)
		if strings.Contains(h, "Available Commands:") && availableCommand(h, f) {
			path = append(path, f)
			continue
		}
		if strings.Contains(h, "Available Commands:") {
			t.Errorf("%s: `shctl %s`: %q is not a subcommand of `shctl %s`", file, line, f, strings.Join(path, " "))
			return
		}
		descending = false // an argument
	}
	if len(path) == 0 {
		t.Errorf("%s: `shctl %s` names no subcommand", file, line)
		return
	}
	h := helpOf(path)
	for _, f := range fields {
		if !strings.HasPrefix(f, "--") {
			continue
		}
		name, _, _ := strings.Cut(f, "=")
		if !regexp.MustCompile(regexp.QuoteMeta(name) + `\b`).MatchString(h) {
			t.Errorf("%s: `shctl %s`: `shctl %s` has no flag %s", file, line, strings.Join(path, " "), name)
		}
	}
}

// availableCommand reports whether help lists name under Available Commands.
func availableCommand(help, name string) bool {
	_, list, _ := strings.Cut(help, "Available Commands:")
	list, _, _ = strings.Cut(list, "\n\n")
	for _, line := range strings.Split(list, "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == name {
			return true
		}
	}
	_, aliases, ok := strings.Cut(help, "Aliases:")
	if ok {
		aliases, _, _ = strings.Cut(aliases, "\n\n")
		for _, a := range strings.Split(strings.TrimSpace(aliases), ",") {
			if strings.TrimSpace(a) == name {
				return true
			}
		}
	}
	return false
}

// exportedMetricNames collects the streamhouse_* names in the components'
// Go sources (non-test files), where every metric is registered by name.
func exportedMetricNames(t *testing.T) map[string]bool {
	t.Helper()
	re := regexp.MustCompile(`streamhouse_[a-z0-9_]+`)
	out := map[string]bool{}
	for _, dir := range []string{"agent", "controller", "gateway", "pkg", "cmd"} {
		err := filepath.Walk(filepath.Join(repoRoot, dir), func(path string, info os.FileInfo, err error) error {
			if err != nil || info.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return err
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			for _, n := range re.FindAllString(string(b), -1) {
				out[n] = true
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	// The S3 metrics are built from a prefix ("streamhouse_agent" + "_s3_...").
	for _, s := range []string{"s3_requests_total", "s3_request_duration_seconds", "s3_bytes_total", "s3_throttled_total",
		"s3_retries_total", "s3_unavailable_total", "s3_token_wait_seconds_total", "s3_breaker_state", "s3_put_rate", "s3_breaker_transitions_total"} {
		out["streamhouse_agent_"+s] = true
	}
	return out
}
