package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/streamhouse/streamhouse/test/devproc"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestSmoke runs the standard suite in smoke mode against a real
// `streamhouse dev` child process (and nats-server when it is on PATH) and
// checks that the JSON report is complete. It asserts nothing about speed.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	bin, err := devproc.Build(t.TempDir()) // same build as the e2e tests: shares their cache
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	start := time.Now()
	code := run(ctx, []string{"suite", "--start", "--bin", bin, "--smoke", "--json", "--quiet", "--producers", "2"}, &stdout, &stderr)
	t.Logf("suite --smoke took %v", time.Since(start).Round(time.Millisecond))
	if code != 0 {
		t.Fatalf("exit %d\nstderr:\n%s\nstdout:\n%s", code, stderr.String(), stdout.String())
	}
	var rep Report
	dec := json.NewDecoder(&stdout)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rep); err != nil {
		t.Fatalf("report is not valid JSON: %v", err)
	}
	if rep.Schema != reportSchema || !rep.Smoke || rep.Machine.NProc < 1 || rep.Machine.GoVersion == "" {
		t.Errorf("report header: %+v", rep)
	}
	_, natsErr := exec.LookPath("nats-server")
	if len(rep.Systems) != 2 || rep.Systems[0].Fsync == "" || rep.Systems[1].Fsync == "" {
		t.Fatalf("systems: %+v", rep.Systems)
	}
	if natsSkipped := rep.Systems[1].Skipped != ""; natsSkipped != (natsErr != nil) {
		t.Errorf("nats skipped = %q, but nats-server on PATH: %v", rep.Systems[1].Skipped, natsErr == nil)
	}
	want := []string{"produce-wal-8p", "produce-durable-8p", "produce-wal-half", "produce-durable-half", "consume-cold-8p", "e2e-wal",
		"produce-keyed-1000p-wal", "produce-keyed-1000p-durable", "produce-keyed-10000p-durable", "produce-keyed-1000p-20k-durable",
		"produce-many-producers", "produce-1k", "consume-1000p"}
	noNATS := map[string]bool{"produce-durable-8p": true, "produce-durable-half": true}
	for _, name := range want {
		res := rep.result(name, "streamhouse")
		if res == nil || res.Median == nil || len(res.Rounds) != 1 {
			t.Errorf("%s: no streamhouse result: %+v", name, res)
			continue
		}
		m := res.Median
		if m.Records <= 0 || m.RecordsPerSec <= 0 || m.Errors != 0 {
			t.Errorf("%s: records %d, rate %.0f, errors %d (%s)", name, m.Records, m.RecordsPerSec, m.Errors, res.Rounds[0].LastError)
		}
		if m.S3 == nil || m.RSSBytes <= 0 {
			t.Errorf("%s: missing S3 counters or RSS: %+v", name, m)
		}
		if m.Requests <= 0 || m.RequestsPerSec <= 0 || m.RequestsByMethod == nil || m.RequestsFrom == "" {
			t.Errorf("%s: no requests counted from the gateway's /metrics: %v %v %q", name, m.Requests, m.RequestsByMethod, m.RequestsFrom)
		}
		if len(m.Processes) != 1 || m.Processes[0].PID <= 0 || m.PeakRSSBytes <= 0 || m.PeakRSSBytes != m.Processes[0].PeakRSSBytes {
			t.Errorf("%s: process figures: peak RSS %v, %+v", name, m.PeakRSSBytes, m.Processes)
		}
		// A consume of 20,000 records can take less than a clock tick
		// (10 ms) of CPU; a produce run of half a second cannot.
		if res.Workload != "consume-cold" && (m.CPUSeconds <= 0 || m.CPUCores <= 0 || m.CPUSecondsPerGiB <= 0) {
			t.Errorf("%s: server CPU %v s, %v cores, %v s/GiB", name, m.CPUSeconds, m.CPUCores, m.CPUSecondsPerGiB)
		}
		if res.Workload != "consume-cold" && (m.Latency == nil || m.Latency.Count == 0 || m.Latency.P99 < m.Latency.P50) {
			t.Errorf("%s: latency %+v", name, m.Latency)
		}
		if natsErr == nil && !noNATS[name] {
			n := rep.result(name, "nats")
			if n == nil || n.Median == nil || n.Median.Records <= 0 {
				t.Errorf("%s: no nats result: %+v", name, n)
				continue
			}
			if nm := n.Median; len(nm.Processes) != 1 || nm.PeakRSSBytes <= 0 || (res.Workload != "consume-cold" && nm.RequestsPerSec <= 0) {
				t.Errorf("%s: nats process figures or requests: %+v", name, nm)
			}
		}
	}
	if m := rep.result("produce-wal-8p", "streamhouse").Median; m.S3 != nil && (m.S3.Puts < 1 || m.S3.Flushes < 1) {
		t.Errorf("produce-wal-8p: no PUTs or flushes counted: %+v", m.S3)
	}
	if m := rep.result("consume-cold-8p", "streamhouse").Median; m.S3 != nil && m.S3.Gets < 1 {
		t.Errorf("consume-cold-8p: no GETs counted, so not read from objects: %+v", m.S3)
	}
	if idle := rep.result("idle-partitions", "streamhouse"); idle == nil || idle.Median == nil || idle.Median.RSSBytes <= 0 {
		t.Errorf("idle-partitions: %+v", idle)
	}
	if natsErr == nil && len(rep.Comparisons) < 4 {
		t.Errorf("comparisons: %+v", rep.Comparisons)
	}
	if c := rep.result("consume-1000p", "streamhouse"); c != nil && c.Median != nil && c.Median.RequestsByMethod["FetchPartitions"] <= 0 {
		t.Errorf("consume-1000p did not read with FetchPartitions (one MultiReader): %v", c.Median.RequestsByMethod)
	}
	if p := rep.result("produce-keyed-1000p-wal", "streamhouse"); p != nil && p.Params["partitions"] != float64(100) {
		t.Errorf("smoke mode runs the 1000p workloads on 100 partitions, got %v", p.Params["partitions"])
	}
	if len(rep.Targets) < 11 {
		t.Errorf("targets: %+v", rep.Targets)
	}
}

func TestParseGoBench(t *testing.T) {
	f := t.TempDir() + "/b.txt"
	out := "goos: linux\npkg: example.com/x\nBenchmarkA/n=1-2   \t 1000\t  123.5 ns/op\t  42.0 MB/s\t 8 B/op\t 1 allocs/op\nPASS\n"
	if err := writeFile(f, out); err != nil {
		t.Fatal(err)
	}
	got, err := parseGoBench(f)
	if err != nil || len(got) != 1 {
		t.Fatalf("got %+v, %v", got, err)
	}
	if g := got[0]; g.Package != "example.com/x" || g.Name != "BenchmarkA/n=1-2" || g.N != 1000 || g.Metrics["ns/op"] != 123.5 || g.Metrics["allocs/op"] != 1 {
		t.Errorf("got %+v", g)
	}
}

func writeFile(path, s string) error { return os.WriteFile(path, []byte(s), 0o644) }

// TestClusterSmoke runs one short produce against a --start-cluster
// cluster (versitygw, 3 controllers, 2 agents, a gateway) and checks that
// every process was measured and the gateway -> agent -> S3 path was used.
// It needs bin/versitygw (go tool task tools), like every S3 test.
func TestClusterSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 7 processes")
	}
	bin, err := devproc.Build(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	code := run(ctx, []string{"produce", "--start-cluster", "--bin", bin, "--nats", "off", "--durability", "durable",
		"--keys", "random", "--partitions", "8", "--producers", "2", "--records", "5000", "--rounds", "1", "--json", "--quiet"}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d\nstderr:\n%s\nstdout:\n%s", code, stderr.String(), stdout.String())
	}
	var rep Report
	if err := json.NewDecoder(&stdout).Decode(&rep); err != nil {
		t.Fatalf("report is not valid JSON: %v", err)
	}
	if len(rep.Systems) != 2 || !strings.Contains(rep.Systems[0].Target, "3 controllers, 2 agents") {
		t.Fatalf("systems: %+v", rep.Systems)
	}
	res := rep.result("produce-durable-8p", "streamhouse")
	if res == nil || res.Median == nil {
		t.Fatalf("no result: %+v", rep.Results)
	}
	m := res.Median
	if m.Records != 5000 || m.Errors != 0 {
		t.Errorf("records %d, errors %d (%s)", m.Records, m.Errors, res.Rounds[0].LastError)
	}
	if m.S3 == nil || m.S3.Puts < 1 || m.Requests <= 0 {
		t.Errorf("no S3 PUTs or requests counted (agents' and gateway's /metrics): %+v, requests %v", m.S3, m.Requests)
	}
	names := map[string]bool{}
	for _, p := range m.Processes {
		names[p.Name] = p.PID > 0 && p.PeakRSSBytes > 0
	}
	for _, n := range []string{"controller-1", "controller-2", "controller-3", "agent-1", "agent-2", "gateway", "versitygw (S3)"} {
		if !names[n] {
			t.Errorf("process %s not measured: %+v", n, m.Processes)
		}
	}
	if m.PeakRSSBytes <= 0 || m.CPUSeconds <= 0 {
		t.Errorf("cluster totals: peak RSS %v, CPU %v s", m.PeakRSSBytes, m.CPUSeconds)
	}
}
