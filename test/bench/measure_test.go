package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"connectrpc.com/connect"
)

func TestErrCode(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{connect.NewError(connect.CodeUnavailable, errors.New("no lease holder")), "unavailable"},
		{fmt.Errorf("client: produce to t/3: %w", connect.NewError(connect.CodeResourceExhausted, errors.New("slow down"))), "resource_exhausted"},
		{fmt.Errorf("wait: %w", context.Canceled), "canceled"},
		{context.DeadlineExceeded, "deadline_exceeded"},
		{errors.New("nats: timeout"), "other: nats: timeout"},
	} {
		if got := errCode(tc.err); got != tc.want {
			t.Errorf("errCode(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
	if got := errCode(errors.New(strings.Repeat("x", 200))); len(got) > 70 {
		t.Errorf("long messages are cut, got %d bytes", len(got))
	}
}

func TestCountersByCode(t *testing.T) {
	var a, b counters
	if a.errorsByCode() != nil {
		t.Fatal("no failures: want nil")
	}
	a.fail(connect.NewError(connect.CodeUnavailable, errors.New("x")))
	b.fail(connect.NewError(connect.CodeUnavailable, errors.New("y")))
	b.fail(connect.NewError(connect.CodeInvalidArgument, errors.New("z")))
	a.addFailures(&b)
	got := a.errorsByCode()
	if a.errors.Load() != 3 || got["unavailable"] != 2 || got["invalid_argument"] != 1 || len(got) != 2 {
		t.Errorf("errors %d, by code %v", a.errors.Load(), got)
	}
	if a.lastError() != b.lastError() {
		t.Errorf("last error %q, want %q", a.lastError(), b.lastError())
	}
}

// TestMeterOwnProcess measures this test process, which certainly exists
// and has a resident set.
func TestMeterOwnProcess(t *testing.T) {
	m := startMeter([]procRef{{Name: "self", PID: os.Getpid()}, {Name: "s3", PID: os.Getpid(), External: true}})
	x := 0
	for i := range 1_000_000 { // some CPU, so the figures have something to show
		x ^= i * i
	}
	ps := m.stop()
	if len(ps) != 2 || ps[0].PeakRSSBytes <= 0 || ps[0].CPUSeconds < 0 || ps[0].Name != "self" || !ps[1].External {
		t.Fatalf("stats %+v (x %d)", ps, x)
	}
	var rd Round
	rd.setUsage(ps, 2, 1<<30, 99)
	if rd.PeakRSSBytes != ps[0].PeakRSSBytes || rd.CPUSeconds != ps[0].CPUSeconds || rd.CPUCores != ps[0].CPUSeconds/2 || rd.CPUSecondsPerGiB != ps[0].CPUSeconds {
		t.Errorf("external process counted, or wrong totals: %+v from %+v", rd, ps)
	}
	var url Round
	url.setUsage(nil, 2, 2<<30, 3)
	if url.CPUSeconds != 3 || url.CPUSecondsPerGiB != 1.5 || url.PeakRSSBytes != 0 {
		t.Errorf("--url fallback: %+v", url)
	}
}

func TestScrapeRequests(t *testing.T) {
	body := `# TYPE streamhouse_gateway_requests_total counter
streamhouse_gateway_requests_total{method="Produce",code="ok"} 10
streamhouse_gateway_requests_total{method="Produce",code="unavailable"} 2
streamhouse_gateway_requests_total{method="Fetch",code="ok"} 5
streamhouse_gateway_requests_total{method="DescribeTopic",code="ok"} 7
process_cpu_seconds_total 1.5
process_resident_memory_bytes 1024
`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, body) }))
	defer srv.Close()
	st, err := scrapeMetrics(context.Background(), srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if st.Requests["Produce"] != 12 || st.Requests["Fetch"] != 5 || st.Requests["DescribeTopic"] != 7 || st.CPU != 1.5 || st.RSS != 1024 {
		t.Fatalf("scraped %+v", st)
	}
	sum := st.add(st)
	d := sum.sub(st)
	if d.Requests["Produce"] != 12 || d.CPU != 1.5 || dataRequests(d.Requests) != 17 {
		t.Errorf("delta %+v, data requests %v", d, dataRequests(d.Requests))
	}
	var rd Round
	rd.setRequests(d.Requests, 2)
	if rd.Requests != 17 || rd.RequestsPerSec != 8.5 {
		t.Errorf("round requests %v, %v/s", rd.Requests, rd.RequestsPerSec)
	}
}

func TestSummarizeUsage(t *testing.T) {
	round := func(cpu, rss float64, codes map[string]int64) Round {
		return Round{
			CPUSeconds: cpu, CPUCores: cpu, PeakRSSBytes: rss, ErrorsByCode: codes, RequestsByMethod: map[string]float64{"Produce": cpu},
			Processes: []ProcStats{{Name: "a", CPUSeconds: cpu, PeakRSSBytes: rss}, {Name: "b", CPUSeconds: 2 * cpu}},
		}
	}
	r := &Result{Rounds: []Round{
		round(1, 10, nil),
		round(3, 30, map[string]int64{"unavailable": 4}),
		round(2, 20, map[string]int64{"unavailable": 1, "canceled": 1}),
	}}
	r.summarize()
	m := r.Median
	if m.CPUSeconds != 2 || m.PeakRSSBytes != 20 || m.RequestsByMethod["Produce"] != 2 {
		t.Errorf("median %+v", m)
	}
	if len(m.Processes) != 2 || m.Processes[0].CPUSeconds != 2 || m.Processes[1].CPUSeconds != 4 || m.Processes[0].PeakRSSBytes != 20 {
		t.Errorf("median processes %+v", m.Processes)
	}
	// Per code: unavailable 0, 4, 1 -> 1; canceled 0, 0, 1 -> 0 (dropped).
	if len(m.ErrorsByCode) != 1 || m.ErrorsByCode["unavailable"] != 1 {
		t.Errorf("median errors by code %v", m.ErrorsByCode)
	}
}
