package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Round is the outcome of one workload run against one system.
type Round struct {
	Records       int64    `json:"records"`
	Bytes         int64    `json:"bytes"`
	Seconds       float64  `json:"seconds"`
	RecordsPerSec float64  `json:"records_per_sec"`
	MBPerSec      float64  `json:"mb_per_sec"`
	Latency       *Latency `json:"latency,omitempty"`
	Errors        int64    `json:"errors"`
	LastError     string   `json:"last_error,omitempty"`
	// Object-store requests the run caused (StreamHouse only), from the
	// agent's own counters scraped before and after.
	S3 *S3Stats `json:"s3,omitempty"`
	// RSSBytes is the server process's resident set size after the run.
	RSSBytes float64 `json:"rss_bytes,omitempty"`
	// TargetRate is the offered load in records/s (0: as fast as it goes).
	TargetRate float64 `json:"target_rate,omitempty"`

	// ErrorsByCode splits Errors by errCode (the Connect code of each
	// failed record's callback, for StreamHouse).
	ErrorsByCode map[string]int64 `json:"errors_by_code,omitempty"`
	// Requests is the produce and fetch requests the workload caused, per
	// second over Seconds; RequestsByMethod is every request by method;
	// RequestsFrom says where the count comes from.
	Requests         float64            `json:"requests,omitempty"`
	RequestsPerSec   float64            `json:"requests_per_sec,omitempty"`
	RequestsByMethod map[string]float64 `json:"requests_by_method,omitempty"`
	RequestsFrom     string             `json:"requests_from,omitempty"`
	// CPUSeconds is the server processes' CPU time during the measured
	// phase (not counting External ones), CPUCores the same over the
	// phase's wall time, CPUSecondsPerGiB the same per GiB of record bytes
	// (keys and values) the phase moved.
	CPUSeconds       float64 `json:"cpu_seconds,omitempty"`
	CPUCores         float64 `json:"cpu_cores,omitempty"`
	CPUSecondsPerGiB float64 `json:"cpu_seconds_per_gib,omitempty"`
	// PeakRSSBytes is the sum of the server processes' sampled peak RSS
	// (exact for one process; for a cluster, an upper bound of the peak of
	// the sum, as the processes may peak at different moments).
	PeakRSSBytes float64 `json:"peak_rss_bytes,omitempty"`
	// Processes are the per-process figures behind CPUSeconds and
	// PeakRSSBytes.
	Processes []ProcStats `json:"processes,omitempty"`
}

// setUsage fills the CPU and RSS figures from the processes measured over
// a phase that moved bytes record bytes. cpuFallback (from the servers'
// /metrics) is used when no process could be measured (--url).
func (rd *Round) setUsage(procs []ProcStats, seconds float64, bytes int64, cpuFallback float64) {
	rd.Processes = procs
	cpu := 0.0
	for _, p := range procs {
		if !p.External {
			cpu += p.CPUSeconds
			rd.PeakRSSBytes += p.PeakRSSBytes
		}
	}
	if len(procs) == 0 {
		cpu = max(cpuFallback, 0)
	}
	rd.CPUSeconds = cpu
	if seconds > 0 {
		rd.CPUCores = cpu / seconds
	}
	if bytes > 0 {
		rd.CPUSecondsPerGiB = cpu / (float64(bytes) / (1 << 30))
	}
}

// setRequests fills the request figures from a /metrics delta over a
// phase of seconds.
func (rd *Round) setRequests(byMethod map[string]float64, seconds float64) {
	rd.RequestsByMethod = byMethod
	rd.Requests = dataRequests(byMethod)
	rd.RequestsFrom = "gateway /metrics: streamhouse_gateway_requests_total, methods Produce* and Fetch*"
	if seconds > 0 {
		rd.RequestsPerSec = rd.Requests / seconds
	}
}

// S3Stats are object-store requests during a run.
type S3Stats struct {
	Puts         float64 `json:"puts"`
	Gets         float64 `json:"gets"`
	PutBytes     float64 `json:"put_bytes"`
	GetBytes     float64 `json:"get_bytes"`
	Flushes      float64 `json:"flushes"`
	AppendBytes  float64 `json:"append_bytes"`
	PutsPerGiB   float64 `json:"puts_per_gib"` // per GiB of record batches appended (or read, for GETs)
	GetsPerGiB   float64 `json:"gets_per_gib"`
	PutsPerFlush float64 `json:"puts_per_flush"`
}

func s3Of(d serverStats, readBytes int64) *S3Stats {
	s := &S3Stats{Puts: d.Puts, Gets: d.Gets, PutBytes: d.PutBytes, GetBytes: d.GetBytes, Flushes: d.Flushes, AppendBytes: d.AppendBytes}
	const gib = 1 << 30
	if d.AppendBytes > 0 {
		s.PutsPerGiB = d.Puts / (d.AppendBytes / gib)
	}
	if readBytes > 0 {
		s.GetsPerGiB = d.Gets / (float64(readBytes) / gib)
	}
	if d.Flushes > 0 {
		s.PutsPerFlush = d.Puts / d.Flushes
	}
	return s
}

// Result is one workload on one system over all rounds.
type Result struct {
	Name     string         `json:"name"`
	System   string         `json:"system"`
	Workload string         `json:"workload"`
	Params   map[string]any `json:"params"`
	Rounds   []Round        `json:"rounds"`
	Median   *Round         `json:"median,omitempty"`
	Skipped  string         `json:"skipped,omitempty"`
	Note     string         `json:"note,omitempty"`
}

// summarize sets Median from the rounds: the median of every figure
// independently (each percentile is the median of that percentile).
func (r *Result) summarize() {
	if len(r.Rounds) == 0 {
		return
	}
	pick := func(f func(Round) float64) float64 {
		xs := make([]float64, 0, len(r.Rounds))
		for _, x := range r.Rounds {
			xs = append(xs, f(x))
		}
		return median(xs)
	}
	m := &Round{
		Records:       int64(pick(func(x Round) float64 { return float64(x.Records) })),
		Bytes:         int64(pick(func(x Round) float64 { return float64(x.Bytes) })),
		Seconds:       pick(func(x Round) float64 { return x.Seconds }),
		RecordsPerSec: pick(func(x Round) float64 { return x.RecordsPerSec }),
		MBPerSec:      pick(func(x Round) float64 { return x.MBPerSec }),
		Errors:        int64(pick(func(x Round) float64 { return float64(x.Errors) })),
		RSSBytes:      pick(func(x Round) float64 { return x.RSSBytes }),
		TargetRate:    pick(func(x Round) float64 { return x.TargetRate }),
	}
	if r.Rounds[0].Latency != nil {
		l := func(f func(*Latency) float64) float64 {
			return pick(func(x Round) float64 {
				if x.Latency == nil {
					return 0
				}
				return f(x.Latency)
			})
		}
		m.Latency = &Latency{
			Count: int64(l(func(x *Latency) float64 { return float64(x.Count) })),
			P50:   l(func(x *Latency) float64 { return x.P50 }),
			P90:   l(func(x *Latency) float64 { return x.P90 }),
			P99:   l(func(x *Latency) float64 { return x.P99 }),
			P999:  l(func(x *Latency) float64 { return x.P999 }),
			Max:   l(func(x *Latency) float64 { return x.Max }),
			Mean:  l(func(x *Latency) float64 { return x.Mean }),
		}
	}
	m.CPUSeconds = pick(func(x Round) float64 { return x.CPUSeconds })
	m.CPUCores = pick(func(x Round) float64 { return x.CPUCores })
	m.CPUSecondsPerGiB = pick(func(x Round) float64 { return x.CPUSecondsPerGiB })
	m.PeakRSSBytes = pick(func(x Round) float64 { return x.PeakRSSBytes })
	m.Requests = pick(func(x Round) float64 { return x.Requests })
	m.RequestsPerSec = pick(func(x Round) float64 { return x.RequestsPerSec })
	m.RequestsFrom = r.Rounds[0].RequestsFrom
	m.RequestsByMethod = medianMap(r.Rounds, func(x Round) map[string]float64 { return x.RequestsByMethod })
	if ec := medianMap(r.Rounds, func(x Round) map[string]float64 {
		f := map[string]float64{}
		for k, v := range x.ErrorsByCode {
			f[k] = float64(v)
		}
		return f
	}); ec != nil {
		m.ErrorsByCode = map[string]int64{}
		for k, v := range ec {
			if v > 0 {
				m.ErrorsByCode[k] = int64(v)
			}
		}
	}
	// The same processes run every round: the median of each one's figures.
	for i, p := range r.Rounds[0].Processes {
		ps := p
		at := func(x Round) (ProcStats, bool) {
			if i < len(x.Processes) && x.Processes[i].Name == p.Name {
				return x.Processes[i], true
			}
			return ProcStats{}, false
		}
		ps.CPUSeconds = pick(func(x Round) float64 { q, _ := at(x); return q.CPUSeconds })
		ps.CPUCores = pick(func(x Round) float64 { q, _ := at(x); return q.CPUCores })
		ps.PeakRSSBytes = pick(func(x Round) float64 { q, _ := at(x); return q.PeakRSSBytes })
		m.Processes = append(m.Processes, ps)
	}
	if r.Rounds[0].S3 != nil {
		s := func(f func(*S3Stats) float64) float64 {
			return pick(func(x Round) float64 {
				if x.S3 == nil {
					return 0
				}
				return f(x.S3)
			})
		}
		m.S3 = &S3Stats{
			Puts: s(func(x *S3Stats) float64 { return x.Puts }), Gets: s(func(x *S3Stats) float64 { return x.Gets }),
			PutBytes: s(func(x *S3Stats) float64 { return x.PutBytes }), GetBytes: s(func(x *S3Stats) float64 { return x.GetBytes }),
			Flushes: s(func(x *S3Stats) float64 { return x.Flushes }), AppendBytes: s(func(x *S3Stats) float64 { return x.AppendBytes }),
			PutsPerGiB: s(func(x *S3Stats) float64 { return x.PutsPerGiB }), GetsPerGiB: s(func(x *S3Stats) float64 { return x.GetsPerGiB }),
			PutsPerFlush: s(func(x *S3Stats) float64 { return x.PutsPerFlush }),
		}
	}
	r.Median = m
}

// medianMap is the median, key by key, of a map-valued figure over rounds
// (a key missing from a round counts as 0 there); nil when every round's
// map is empty.
func medianMap(rounds []Round, f func(Round) map[string]float64) map[string]float64 {
	keys := map[string]bool{}
	for _, x := range rounds {
		for k := range f(x) {
			keys[k] = true
		}
	}
	if len(keys) == 0 {
		return nil
	}
	out := map[string]float64{}
	for k := range keys {
		xs := make([]float64, 0, len(rounds))
		for _, x := range rounds {
			xs = append(xs, f(x)[k])
		}
		out[k] = median(xs)
	}
	return out
}

// Comparison is StreamHouse's median over NATS's median for one workload.
type Comparison struct {
	Name        string  `json:"name"`
	Metric      string  `json:"metric"`
	StreamHouse float64 `json:"streamhouse"`
	NATS        float64 `json:"nats"`
	Ratio       float64 `json:"ratio"`
}

// Target is one of issue 3's targets with the measured figure.
type Target struct {
	Figure   string  `json:"figure"`
	Target   string  `json:"target"`
	Measured string  `json:"measured"`
	Value    float64 `json:"value"`
	Met      bool    `json:"met"`
}

// Machine describes where the run happened.
type Machine struct {
	NProc     int    `json:"nproc"`
	CPU       string `json:"cpu"`
	GoVersion string `json:"go_version"`
	OS        string `json:"os"`
	Kernel    string `json:"kernel,omitempty"`
}

// System describes one system under test.
type System struct {
	Name    string `json:"name"`
	Target  string `json:"target"`
	Version string `json:"version,omitempty"`
	Fsync   string `json:"fsync"`
	Skipped string `json:"skipped,omitempty"`
	Config  string `json:"config,omitempty"`
}

// GoBench is one line of `go test -bench` output.
type GoBench struct {
	Package string             `json:"package"`
	Name    string             `json:"name"`
	N       int64              `json:"n"`
	Metrics map[string]float64 `json:"metrics"`
}

// Report is the whole output of a run (--json prints it).
type Report struct {
	Schema       string       `json:"schema"`
	Command      string       `json:"command"`
	Started      time.Time    `json:"started"`
	Seconds      float64      `json:"seconds"`
	Smoke        bool         `json:"smoke"`
	RoundsWanted int          `json:"rounds"`
	Machine      Machine      `json:"machine"`
	Systems      []System     `json:"systems"`
	Results      []*Result    `json:"results"`
	Comparisons  []Comparison `json:"comparisons"`
	Targets      []Target     `json:"targets,omitempty"`
	GoBenchmarks []GoBench    `json:"go_benchmarks,omitempty"`
}

const reportSchema = "streamhouse-bench/1"

func machineInfo() Machine {
	m := Machine{NProc: runtime.NumCPU(), GoVersion: runtime.Version(), OS: runtime.GOOS + "/" + runtime.GOARCH}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}

// result returns the named result of system sys, or nil.
func (r *Report) result(name, sys string) *Result {
	for _, x := range r.Results {
		if x.Name == name && x.System == sys {
			return x
		}
	}
	return nil
}

// compare adds the StreamHouse/NATS comparisons of every workload both ran.
func (r *Report) compare() {
	r.Comparisons = nil
	for _, sh := range r.Results {
		if sh.System != "streamhouse" || sh.Median == nil {
			continue
		}
		n := r.result(sh.Name, "nats")
		if n == nil || n.Median == nil {
			continue
		}
		if sh.Median.Latency != nil && n.Median.Latency != nil && sh.Workload == "e2e" {
			c := Comparison{Name: sh.Name, Metric: "p99_ms", StreamHouse: sh.Median.Latency.P99, NATS: n.Median.Latency.P99}
			if c.NATS > 0 {
				c.Ratio = c.StreamHouse / c.NATS
			}
			r.Comparisons = append(r.Comparisons, c)
			continue
		}
		c := Comparison{Name: sh.Name, Metric: "records_per_sec", StreamHouse: sh.Median.RecordsPerSec, NATS: n.Median.RecordsPerSec}
		if c.NATS > 0 {
			c.Ratio = c.StreamHouse / c.NATS
		}
		r.Comparisons = append(r.Comparisons, c)
	}
}

func (r *Report) writeJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

func f1(x float64) string { return fmt.Sprintf("%.1f", x) }

func ms(x float64) string {
	switch {
	case x >= 100:
		return fmt.Sprintf("%.0f", x)
	case x >= 10:
		return fmt.Sprintf("%.1f", x)
	}
	return fmt.Sprintf("%.2f", x)
}

// writeTable prints the medians as a Markdown table (readable in a terminal
// and pasteable into the README), then the comparisons and targets.
func (r *Report) writeTable(w io.Writer) {
	fmt.Fprintf(w, "machine: %d cores, %s, %s, %s; rounds: %d (medians)", r.Machine.NProc, r.Machine.CPU, r.Machine.GoVersion, r.Machine.OS, r.RoundsWanted)
	if r.Smoke {
		fmt.Fprint(w, "; SMOKE MODE (tiny runs, figures are not meaningful)")
	}
	fmt.Fprintln(w)
	for _, s := range r.Systems {
		line := fmt.Sprintf("%s (%s): fsync: %s", s.Name, s.Target, s.Fsync)
		if s.Version != "" {
			line += "; version " + s.Version
		}
		if s.Config != "" {
			line += "; " + s.Config
		}
		if s.Skipped != "" {
			line += "; SKIPPED: " + s.Skipped
		}
		fmt.Fprintln(w, line)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', tabwriter.Debug)
	fmt.Fprintln(tw, "| workload\t system\t records/s\t MB/s\t p50 ms\t p90 ms\t p99 ms\t p99.9 ms\t max ms\t req/s\t PUTs\t PUT/GiB\t PUT/flush\t GETs\t GET/GiB\t CPU cores\t CPU s/GiB\t peak RSS MiB\t RSS MiB\t errors\t")
	fmt.Fprintln(tw, "| ---\t ---\t ---\t ---\t ---\t ---\t ---\t ---\t ---\t ---\t ---\t ---\t ---\t ---\t ---\t ---\t ---\t ---\t ---\t ---\t")
	var multi []*Result // results of systems with more than one process
	for _, x := range r.Results {
		if x.Skipped != "" || x.Median == nil {
			why := x.Skipped
			if why == "" {
				why = "no round completed (interrupted)"
			}
			fmt.Fprintf(tw, "| %s\t %s\t skipped: %s%s\t\n", x.Name, x.System, why, strings.Repeat("\t", 17))
			continue
		}
		if len(x.Median.Processes) > 1 {
			multi = append(multi, x)
		}
		m := x.Median
		cols := []string{x.Name, x.System, commas(m.RecordsPerSec), f1(m.MBPerSec)}
		if l := m.Latency; l != nil {
			cols = append(cols, ms(l.P50), ms(l.P90), ms(l.P99), ms(l.P999), ms(l.Max))
		} else {
			cols = append(cols, "", "", "", "", "")
		}
		cols = append(cols, blankZero(m.RequestsPerSec, commas))
		if s := m.S3; s != nil {
			cols = append(cols, commas(s.Puts), f1(s.PutsPerGiB), fmt.Sprintf("%.2f", s.PutsPerFlush), commas(s.Gets), f1(s.GetsPerGiB))
		} else {
			cols = append(cols, "", "", "", "", "")
		}
		cols = append(cols, blankZero(m.CPUCores, func(x float64) string { return fmt.Sprintf("%.2f", x) }),
			blankZero(m.CPUSecondsPerGiB, f1), blankZero(m.PeakRSSBytes, mib), blankZero(m.RSSBytes, mib), errorsCell(m))
		fmt.Fprintf(tw, "| %s\t\n", strings.Join(cols, "\t "))
	}
	_ = tw.Flush()
	if len(multi) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 0, 1, ' ', tabwriter.Debug)
		fmt.Fprintln(tw, "| workload\t system\t process\t CPU s\t CPU cores\t peak RSS MiB\t")
		fmt.Fprintln(tw, "| ---\t ---\t ---\t ---\t ---\t ---\t")
		for _, x := range multi {
			for _, p := range x.Median.Processes {
				name := p.Name
				if p.External {
					name += " (external, not in totals)"
				}
				fmt.Fprintf(tw, "| %s\t %s\t %s\t %.2f\t %.2f\t %s\t\n", x.Name, x.System, name, p.CPUSeconds, p.CPUCores, mib(p.PeakRSSBytes))
			}
		}
		_ = tw.Flush()
	}
	if len(r.Comparisons) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 0, 1, ' ', tabwriter.Debug)
		fmt.Fprintln(tw, "| workload\t metric\t StreamHouse\t NATS JetStream\t StreamHouse/NATS\t")
		fmt.Fprintln(tw, "| ---\t ---\t ---\t ---\t ---\t")
		for _, c := range r.Comparisons {
			fmt.Fprintf(tw, "| %s\t %s\t %s\t %s\t %.2f×\t\n", c.Name, c.Metric, fmtMetric(c.Metric, c.StreamHouse), fmtMetric(c.Metric, c.NATS), c.Ratio)
		}
		_ = tw.Flush()
	}
	if len(r.Targets) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 0, 1, ' ', tabwriter.Debug)
		fmt.Fprintln(tw, "| figure\t target\t measured\t met\t")
		fmt.Fprintln(tw, "| ---\t ---\t ---\t ---\t")
		for _, t := range r.Targets {
			met := "no"
			if t.Met {
				met = "yes"
			}
			fmt.Fprintf(tw, "| %s\t %s\t %s\t %s\t\n", t.Figure, t.Target, t.Measured, met)
		}
		_ = tw.Flush()
	}
	if len(r.GoBenchmarks) > 0 {
		fmt.Fprintf(w, "\n%d Go micro-benchmarks in the JSON (go_benchmarks)\n", len(r.GoBenchmarks))
	}
}

func mib(b float64) string { return fmt.Sprintf("%.0f", b/(1<<20)) }

// blankZero formats x, or leaves the cell empty when the figure is unknown.
func blankZero(x float64, f func(float64) string) string {
	if x == 0 {
		return ""
	}
	return f(x)
}

// errorsCell is the error count with its split by code, e.g.
// "3 (unavailable 2, resource_exhausted 1)".
func errorsCell(m *Round) string {
	if m.Errors == 0 || len(m.ErrorsByCode) == 0 {
		return fmt.Sprint(m.Errors)
	}
	codes := slices.Sorted(maps.Keys(m.ErrorsByCode))
	parts := make([]string, len(codes))
	for i, c := range codes {
		parts[i] = fmt.Sprintf("%s %d", c, m.ErrorsByCode[c])
	}
	return fmt.Sprintf("%d (%s)", m.Errors, strings.Join(parts, ", "))
}

func fmtMetric(metric string, v float64) string {
	if strings.HasSuffix(metric, "_ms") {
		return ms(v)
	}
	return commas(v)
}
