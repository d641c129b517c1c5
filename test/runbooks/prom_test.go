package runbooks

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/streamhouse/streamhouse/test/devproc"
)

// chartRules is the chart's Prometheus alert rules file, relative to this
// package: the alert expressions the tests evaluate come from it.
const chartRules = "../../charts/streamhouse/files/alerts/streamhouse.rules.yml"

// rulesFile is the rules file the tests load: the chart's, or
// STREAMHOUSE_RULES_FILE (to try a changed rules file before it is in the
// chart).
func rulesFile() string {
	if f := os.Getenv("STREAMHOUSE_RULES_FILE"); f != "" {
		return f
	}
	return chartRules
}

// prometheusBin finds the Prometheus server: STREAMHOUSE_PROMETHEUS (set by
// `go tool task test`, which builds bin/prometheus from tools/prometheus),
// then PATH, then /usr/bin/prometheus. A missing binary fails the test: the
// runbook tests are acceptance tests and must not pass by skipping.
func prometheusBin(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("STREAMHOUSE_PROMETHEUS"); p != "" {
		return p
	}
	if p, err := exec.LookPath("prometheus"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/bin/prometheus"); err == nil {
		return "/usr/bin/prometheus"
	}
	t.Fatal("no Prometheus server: run the tests with go tool task test (it builds bin/prometheus), or set STREAMHOUSE_PROMETHEUS to its binary")
	return ""
}

// prom is a real Prometheus server scraping a test's processes every
// second, with the chart's alert rules loaded.
type prom struct {
	t      *testing.T
	url    string
	hc     *http.Client
	cmd    *exec.Cmd
	done   chan struct{}
	mu     sync.Mutex
	stderr bytes.Buffer
}

// targets maps a scrape job name to the host:port addresses whose /metrics
// it scrapes.
type targets map[string][]string

// startPrometheus starts Prometheus on a free port with a temporary TSDB, a
// 1 s scrape and rule-evaluation interval, the given targets and the chart's
// rules file (when it exists), and waits until it is ready. It is stopped
// at the end of the test.
func startPrometheus(t *testing.T, tg targets) *prom {
	t.Helper()
	binary := prometheusBin(t)
	dir := t.TempDir()
	var cfg strings.Builder
	cfg.WriteString("global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\n")
	if _, err := os.Stat(rulesFile()); err == nil {
		abs, err := filepath.Abs(rulesFile())
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&cfg, "rule_files:\n  - %q\n", abs)
	}
	cfg.WriteString("scrape_configs:\n")
	jobs := make([]string, 0, len(tg))
	for job := range tg {
		jobs = append(jobs, job)
	}
	sort.Strings(jobs)
	for _, job := range jobs {
		quoted := make([]string, len(tg[job]))
		for i, a := range tg[job] {
			quoted[i] = fmt.Sprintf("%q", a)
		}
		fmt.Fprintf(&cfg, "  - job_name: %q\n    static_configs:\n      - targets: [%s]\n", job, strings.Join(quoted, ", "))
	}
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := devproc.FreeAddr(t)
	p := &prom{t: t, url: "http://" + addr, hc: httpClient(t), done: make(chan struct{})}
	p.cmd = exec.Command(binary, "--config.file="+cfgPath, "--storage.tsdb.path="+filepath.Join(dir, "tsdb"),
		"--web.listen-address="+addr, "--log.level=warn")
	p.cmd.Stdout = &lockedBuf{mu: &p.mu, b: &p.stderr}
	p.cmd.Stderr = &lockedBuf{mu: &p.mu, b: &p.stderr}
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start prometheus: %v", err)
	}
	go func() {
		_ = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			p.mu.Lock()
			t.Logf("prometheus config:\n%s\nprometheus output:\n%s", cfg.String(), tailStr(p.stderr.String(), 4000))
			p.mu.Unlock()
		}
	})
	start := time.Now()
	for {
		resp, err := p.hc.Get(p.url + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case <-p.done:
			p.mu.Lock()
			defer p.mu.Unlock()
			t.Fatalf("prometheus exited: %v\n%s", p.cmd.ProcessState, tailStr(p.stderr.String(), 4000))
		default:
		}
		if time.Since(start) > 30*time.Second {
			t.Fatalf("prometheus not ready within 30s: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return p
}

type lockedBuf struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (l *lockedBuf) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(b)
}

func tailStr(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// get fetches a Prometheus API path and decodes its "data" into v.
func (p *prom) get(path string, q url.Values, v any) error {
	u := p.url + path
	if q != nil {
		u += "?" + q.Encode()
	}
	resp, err := p.hc.Get(u)
	if err != nil {
		return fmt.Errorf("prometheus %s: %w", path, err)
	}
	defer resp.Body.Close()
	var env struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&env); err != nil {
		return fmt.Errorf("prometheus %s: decode: %w", path, err)
	}
	if env.Status != "success" {
		return fmt.Errorf("prometheus %s: %s", path, env.Error)
	}
	return json.Unmarshal(env.Data, v)
}

// alertRule is one alerting rule as Prometheus loaded it.
type alertRule struct {
	Name        string            `json:"name"`
	Query       string            `json:"query"`
	Duration    float64           `json:"duration"` // the rule's "for", seconds
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	Health      string            `json:"health"`
	LastError   string            `json:"lastError"`
}

// alert returns the alerting rule called name from the rules file as the
// running Prometheus loaded it, and checks that its runbook_url annotation
// names the runbook file (e.g. "runbooks/faq.md").
func (p *prom) alert(name, runbook string) alertRule {
	p.t.Helper()
	if _, err := os.Stat(rulesFile()); err != nil {
		p.t.Fatalf("alert %s: the rules file is missing: %v", name, err)
	}
	var data struct {
		Groups []struct {
			Rules []alertRule `json:"rules"`
		} `json:"groups"`
	}
	if err := p.get("/api/v1/rules", url.Values{"type": {"alert"}}, &data); err != nil {
		p.t.Fatal(err)
	}
	var names []string
	for _, g := range data.Groups {
		for _, r := range g.Rules {
			if r.Name == name {
				if !strings.HasSuffix(r.Annotations["runbook_url"], runbook) {
					p.t.Errorf("alert %s: runbook_url %q does not name %s", name, r.Annotations["runbook_url"], runbook)
				}
				p.t.Logf("alert %s (for %gs): %s", name, r.Duration, r.Query)
				return r
			}
			names = append(names, r.Name)
		}
	}
	p.t.Fatalf("alert %s is not in %s (Prometheus loaded %d alerts: %v)", name, rulesFile(), len(names), names)
	return alertRule{}
}

// sample is one series of an instant query's answer.
type sample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

func (s sample) String() string {
	var labels []string
	for k, v := range s.Metric {
		labels = append(labels, k+"="+v)
	}
	sort.Strings(labels)
	return fmt.Sprintf("{%s} %v", strings.Join(labels, ","), s.Value[1])
}

// query evaluates expr now and returns the series of the answer (an
// alert's expression is true when this is not empty).
func (p *prom) query(expr string) ([]sample, error) {
	var data struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	}
	if err := p.get("/api/v1/query", url.Values{"query": {expr}}, &data); err != nil {
		return nil, err
	}
	switch data.ResultType {
	case "vector":
		var out []sample
		err := json.Unmarshal(data.Result, &out)
		return out, err
	case "scalar":
		var v [2]any
		if err := json.Unmarshal(data.Result, &v); err != nil {
			return nil, err
		}
		return []sample{{Value: v}}, nil
	default:
		return nil, fmt.Errorf("query %s: result type %s, want a vector", expr, data.ResultType)
	}
}

// value evaluates expr (one series expected) and returns its value, or
// false when the answer is empty.
func (p *prom) value(expr string) (float64, bool) {
	p.t.Helper()
	res, err := p.query(expr)
	if err != nil {
		p.t.Fatal(err)
	}
	if len(res) == 0 {
		return 0, false
	}
	var f float64
	if s, ok := res[0].Value[1].(string); ok {
		fmt.Sscanf(s, "%g", &f)
	}
	return f, true
}

// waitTrue polls expr until its answer is not empty (the alert's condition
// holds), fails the test after limit, and returns the answer.
func (p *prom) waitTrue(what, expr string, limit time.Duration) []sample {
	p.t.Helper()
	var res []sample
	took := eventually(p.t, limit, what+" becomes true", func() (bool, string) {
		var err error
		res, err = p.query(expr)
		if err != nil {
			return false, err.Error()
		}
		return len(res) > 0, "empty answer"
	})
	p.t.Logf("%s true after %v: %v", what, took.Round(100*time.Millisecond), res)
	return res
}

// waitFalse polls expr until its answer is empty (the alert resolves),
// failing the test after limit.
func (p *prom) waitFalse(what, expr string, limit time.Duration) {
	p.t.Helper()
	took := eventually(p.t, limit, what+" becomes false", func() (bool, string) {
		res, err := p.query(expr)
		if err != nil {
			return false, err.Error()
		}
		return len(res) == 0, fmt.Sprint(res)
	})
	p.t.Logf("%s: false after %v", what, took.Round(100*time.Millisecond))
}

// waitScraped waits until every target has been scraped successfully
// at least once (up == 1 for each).
func (p *prom) waitScraped(n int) {
	p.t.Helper()
	eventually(p.t, 30*time.Second, fmt.Sprintf("%d targets up", n), func() (bool, string) {
		res, err := p.query("up == 1")
		if err != nil {
			return false, err.Error()
		}
		return len(res) >= n, fmt.Sprint(res)
	})
}
