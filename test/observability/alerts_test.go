package observability

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// requiredAlerts are the alerts the runbooks refer to, with their runbook.
var requiredAlerts = map[string]string{
	"StreamHouseConsumerLagHigh":       "runbooks/consumer-lag.md",
	"StreamHouseS3Throttling":          "runbooks/s3-throttling.md",
	"StreamHouseErrorRateHigh":         "runbooks/faq.md",
	"StreamHouseWALDiskUsageHigh":      "runbooks/producer-backpressure.md",
	"StreamHouseWALDiskUsageCritical":  "runbooks/producer-backpressure.md",
	"StreamHouseControllerApplySlow":   "runbooks/controller-failover.md",
	"StreamHouseProducerFailures":      "runbooks/producer-backpressure.md",
	"StreamHouseProducerBackpressure":  "runbooks/producer-backpressure.md",
	"StreamHouseLeaseConflicts":        "runbooks/lease-rebalancing.md",
	"StreamHouseAgentHeartbeatMissing": "runbooks/lease-rebalancing.md",
	"StreamHouseNoControllerLeader":    "runbooks/controller-failover.md",
	"StreamHouseWALRecovery":           "runbooks/corruption.md",
	"StreamHouseObjectCorruption":      "runbooks/corruption.md",
}

// rangeInExpr matches a range selector's duration, e.g. [5m].
var rangeInExpr = regexp.MustCompile(`\[[0-9]+[smhdwy]\]`)

// TestAlertRules checks the rule file: every required alert is there with
// severity, summary, description and its runbook; `promtool check rules`
// accepts the file; the unit tests cover every alert with a firing and a
// not-firing case; and `promtool test rules` passes them.
func TestAlertRules(t *testing.T) {
	rules := readRules(t)
	seen := map[string]bool{}
	for _, r := range rules {
		if r.Alert == "" {
			continue
		}
		if seen[r.Alert] {
			t.Errorf("alert %s is defined twice", r.Alert)
		}
		seen[r.Alert] = true
		switch r.Labels["severity"] {
		case "warning", "critical":
		default:
			t.Errorf("alert %s: label severity is %q, want warning or critical", r.Alert, r.Labels["severity"])
		}
		for _, a := range []string{"summary", "description", "runbook_url"} {
			if strings.TrimSpace(r.Annotations[a]) == "" {
				t.Errorf("alert %s: annotation %s is missing", r.Alert, a)
			}
		}
		if want, ok := requiredAlerts[r.Alert]; ok && r.Annotations["runbook_url"] != want {
			t.Errorf("alert %s: runbook_url %q, want %q", r.Alert, r.Annotations["runbook_url"], want)
		}
		if !strings.HasPrefix(r.Annotations["runbook_url"], "runbooks/") || !strings.HasSuffix(r.Annotations["runbook_url"], ".md") {
			t.Errorf("alert %s: runbook_url %q is not runbooks/<file>.md", r.Alert, r.Annotations["runbook_url"])
		}
		// Ranges only feed rate/increase-style functions; how long a
		// condition must hold is the rule's `for:`, so that the bare expr
		// answers "is it true now?" when queried against Prometheus.
		for _, m := range rangeInExpr.FindAllString(r.Expr, -1) {
			if m != "[1m]" && m != "[5m]" {
				t.Errorf("alert %s: range %s in expr: keep durations in `for:` and rate windows at 1m or 5m", r.Alert, m)
			}
		}
	}
	for name := range requiredAlerts {
		if !seen[name] {
			t.Errorf("required alert %s is missing from %s", name, rulesFile)
		}
	}

	out := runPromtool(t, "check", "rules", rulesFile)
	t.Logf("promtool check rules: %s", strings.TrimSpace(out))

	// Every alert has a case where it fires and one where it does not.
	raw, err := os.ReadFile(rulesTestFile)
	if err != nil {
		t.Fatal(err)
	}
	var tf struct {
		RuleFiles []string `yaml:"rule_files"`
		Tests     []struct {
			AlertRuleTest []struct {
				Alertname string `yaml:"alertname"`
				ExpAlerts []any  `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		} `yaml:"tests"`
	}
	if err := yaml.Unmarshal(raw, &tf); err != nil {
		t.Fatalf("%s: %v", rulesTestFile, err)
	}
	fires, quiet := map[string]int{}, map[string]int{}
	for _, c := range tf.Tests {
		for _, a := range c.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname]++
			} else {
				quiet[a.Alertname]++
			}
		}
	}
	for name := range seen {
		if fires[name] == 0 || quiet[name] == 0 {
			t.Errorf("alert %s: %d firing and %d not-firing unit test cases in %s; want at least one of each", name, fires[name], quiet[name], rulesTestFile)
		}
	}

	out = runPromtool(t, "test", "rules", rulesTestFile)
	if !strings.Contains(out, "SUCCESS") {
		t.Fatalf("promtool test rules:\n%s", out)
	}
	t.Logf("promtool test rules: %d alerts, %d firing and %d not-firing cases: SUCCESS", len(seen), sum(fires), sum(quiet))
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}
