package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/streamhouse/streamhouse/test/devproc"
)

// TestTraceCostSmoke runs the tracecost command for one short round,
// exporting to the in-process discarding OTLP endpoint, and checks the
// report: both servers measured, the traced one really exported (the
// command fails otherwise), and the cost figures present. It asserts
// nothing about speed.
func TestTraceCostSmoke(t *testing.T) {
	bin, err := devproc.Build(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	// Sample everything so the short run surely exports something.
	code := run(ctx, []string{"tracecost", "--start", "--bin", bin, "--otlp", "discard", "--trace-ratio", "1",
		"--rounds", "1", "--duration", "1s", "--producers", "2", "--partitions", "2", "--json", "--quiet"}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d\nstderr:\n%s\nstdout:\n%s", code, stderr.String(), stdout.String())
	}
	var rep Report
	if err := json.NewDecoder(&stdout).Decode(&rep); err != nil {
		t.Fatalf("report is not valid JSON: %v", err)
	}
	if len(rep.Systems) != 2 || rep.Systems[0].Name != "tracing-off" || rep.Systems[1].Name != "tracing-100%" ||
		!strings.Contains(rep.Systems[1].Config, "OTLP export requests") {
		t.Errorf("systems: %+v", rep.Systems)
	}
	for _, sys := range []string{"tracing-off", "tracing-100%"} {
		res := rep.result("produce-wal-2p", sys)
		if res == nil || res.Median == nil || res.Median.Records <= 0 || res.Median.Errors != 0 {
			t.Errorf("%s: %+v", sys, res)
		}
	}
	if len(rep.Targets) != 2 {
		t.Errorf("targets: %+v", rep.Targets)
	}
}
