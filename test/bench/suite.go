package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// runSuite is the standard suite (see usageText).
func runSuite(ctx context.Context, e *env, r *runner, rep *Report) error {
	o := e.o
	base := o.w
	base.Partitions = 8
	cold := o.coldRecords
	e2eRate := o.e2eRate
	idle := o.idlePartitions
	if o.smoke {
		o.rounds = 1
		rep.RoundsWanted = 1
		base.Duration = time.Second
		cold = min(cold, 20_000)
		e2eRate = min(e2eRate, 5_000)
		idle = min(idle, 100)
	}
	var errs []error
	step := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	fullRate := func(name string) func(string) float64 {
		return func(sys string) float64 {
			if res := rep.result(name, sys); res != nil && res.Median != nil {
				return res.Median.RecordsPerSec / 2
			}
			return 0
		}
	}

	wal := base
	wal.Durable = false
	durable := base
	durable.Durable = true
	step(runRounds(ctx, e, r, rep, "produce-wal-8p", "produce", wal, true, nil))
	step(runRounds(ctx, e, r, rep, "produce-durable-8p", "produce", durable, false, nil))
	step(runRounds(ctx, e, r, rep, "produce-wal-half", "produce", wal, true, fullRate("produce-wal-8p")))
	step(runRounds(ctx, e, r, rep, "produce-durable-half", "produce", durable, false, fullRate("produce-durable-8p")))
	cw := durable
	cw.Count = cold
	step(runRounds(ctx, e, r, rep, "consume-cold-8p", "consume-cold", cw, true, nil))
	ew := wal
	ew.Rate = e2eRate
	step(runRounds(ctx, e, r, rep, "e2e-wal", "e2e", ew, true, nil))
	if ctx.Err() != nil {
		return errors.Join(append(errs, ctx.Err())...)
	}
	step(runIdle(ctx, e, rep, idle))
	if o.gobench != "" {
		gb, err := parseGoBench(o.gobench)
		step(err)
		rep.GoBenchmarks = gb
	}
	rep.compare()
	rep.Targets = targets(rep, o)
	return errors.Join(errs...)
}

// runIdle measures the RSS of a fresh dev server holding n idle partitions.
func runIdle(ctx context.Context, e *env, rep *Report, n int) error {
	res := &Result{Name: "idle-partitions", System: "streamhouse", Workload: "idle", Params: map[string]any{"partitions": n}}
	rep.Results = append(rep.Results, res)
	switch {
	case n <= 0:
		res.Skipped = "--idle-partitions 0"
		return nil
	case e.dev == nil:
		res.Skipped = "needs --start (a fresh server)"
		return nil
	}
	dir, err := os.MkdirTemp(e.tmp, "idle-")
	if err != nil {
		return err
	}
	d, err := startDev(ctx, e.bin, dir, "", e.o.devArgs)
	if err != nil {
		return fmt.Errorf("idle partitions: %w", err)
	}
	defer d.stop()
	sh, err := newSH(d.URL, d.pid())
	if err != nil {
		return err
	}
	defer sh.close()
	base, _ := scrapeMetrics(ctx, d.URL)
	rss, took, err := sh.idlePartitionsRSS(ctx, n, 3*time.Second)
	if err != nil {
		res.Skipped = err.Error()
		return fmt.Errorf("idle partitions: %w", err)
	}
	res.Rounds = []Round{{Seconds: took.Seconds(), RSSBytes: rss}}
	res.Note = fmt.Sprintf("RSS of the whole dev process (controller+agent+gateway): %.0f MiB with no topic, %.0f MiB with %d idle partitions (leased in %.1fs)",
		base.RSS/(1<<20), rss/(1<<20), n, took.Seconds())
	res.summarize()
	return nil
}

// targets evaluates issue 3's targets against the medians.
func targets(rep *Report, o *options) []Target {
	var out []Target
	get := func(name, sys string) *Round {
		if r := rep.result(name, sys); r != nil && r.Median != nil && len(r.Rounds) > 0 {
			return r.Median
		}
		return nil
	}
	ratio := func(name string) (float64, bool) {
		for _, c := range rep.Comparisons {
			if c.Name == name && c.Metric == "records_per_sec" {
				return c.Ratio, true
			}
		}
		return 0, false
	}
	if m := get("produce-wal-8p", "streamhouse"); m != nil {
		out = append(out, Target{Figure: "produce, wal topic, 8 partitions", Target: ">= 1,000,000 records/s",
			Measured: commas(m.RecordsPerSec) + " records/s", Value: m.RecordsPerSec, Met: m.RecordsPerSec >= 1e6})
		if x, ok := ratio("produce-wal-8p"); ok {
			out = append(out, Target{Figure: "produce, wal topic, vs JetStream", Target: ">= 5x", Measured: fmt.Sprintf("%.2fx", x), Value: x, Met: x >= 5})
		}
		if s := m.S3; s != nil {
			// A flush in progress at the closing scrape has its PUT counted
			// but not yet its flush: allow one.
			out = append(out, Target{Figure: "object-store PUTs per flush", Target: "<= 1 per agent per flush",
				Measured: fmt.Sprintf("%.0f PUTs in %.0f flushes", s.Puts, s.Flushes), Value: s.PutsPerFlush, Met: s.Flushes > 0 && s.Puts <= s.Flushes+1})
			out = append(out, Target{Figure: "object-store PUTs per GiB at full load", Target: "<= 64",
				Measured: fmt.Sprintf("%.1f", s.PutsPerGiB), Value: s.PutsPerGiB, Met: s.AppendBytes > 0 && s.PutsPerGiB <= 64})
		}
	}
	if m := get("produce-durable-8p", "streamhouse"); m != nil {
		out = append(out, Target{Figure: "produce, durable topic", Target: ">= 500,000 records/s",
			Measured: commas(m.RecordsPerSec) + " records/s", Value: m.RecordsPerSec, Met: m.RecordsPerSec >= 5e5})
	}
	if m := get("consume-cold-8p", "streamhouse"); m != nil {
		out = append(out, Target{Figure: "consume from objects (cold)", Target: ">= 2,000,000 records/s",
			Measured: commas(m.RecordsPerSec) + " records/s", Value: m.RecordsPerSec, Met: m.RecordsPerSec >= 2e6})
		if x, ok := ratio("consume-cold-8p"); ok {
			out = append(out, Target{Figure: "consume cold vs JetStream ordered consumer", Target: ">= 5x", Measured: fmt.Sprintf("%.2fx", x), Value: x, Met: x >= 5})
		}
	}
	if m := get("produce-wal-half", "streamhouse"); m != nil && m.Latency != nil {
		out = append(out, Target{Figure: "produce p99 at half of max load, wal", Target: "<= 5 ms",
			Measured: fmt.Sprintf("%s ms at %s records/s", ms(m.Latency.P99), commas(m.TargetRate)), Value: m.Latency.P99, Met: m.Latency.P99 <= 5})
	}
	if m := get("produce-durable-half", "streamhouse"); m != nil && m.Latency != nil {
		flush := 250.0 // streamhouse dev's default --flush-interval, ms
		for _, a := range o.devArgs {
			if v, ok := strings.CutPrefix(a, "--flush-interval="); ok {
				if d, err := time.ParseDuration(v); err == nil {
					flush = float64(d.Milliseconds())
				}
			}
		}
		out = append(out, Target{Figure: "produce p99 at half of max load, durable", Target: fmt.Sprintf("<= flush interval + 150 ms = %.0f ms", flush+150),
			Measured: fmt.Sprintf("%s ms at %s records/s", ms(m.Latency.P99), commas(m.TargetRate)), Value: m.Latency.P99, Met: m.Latency.P99 <= flush+150})
	}
	if m := get("e2e-wal", "streamhouse"); m != nil && m.Latency != nil {
		out = append(out, Target{Figure: "end-to-end latency, wal topic", Target: "p99 <= 20 ms",
			Measured: fmt.Sprintf("%s ms at %s records/s", ms(m.Latency.P99), commas(m.TargetRate)), Value: m.Latency.P99, Met: m.Latency.P99 <= 20})
	}
	if m := get("idle-partitions", "streamhouse"); m != nil {
		n, _ := rep.result("idle-partitions", "streamhouse").Params["partitions"].(int)
		out = append(out, Target{Figure: fmt.Sprintf("agent RSS with %s idle partitions", commas(float64(n))), Target: "<= 256 MiB (10,000 partitions)",
			Measured: fmt.Sprintf("%.0f MiB (whole dev process)", m.RSSBytes/(1<<20)), Value: m.RSSBytes, Met: n >= 10000 && m.RSSBytes <= 256<<20})
	}
	return out
}

// parseGoBench reads `go test -bench` output: "pkg:" lines name the package,
// "BenchmarkX-N  iters  value unit ..." lines are results.
func parseGoBench(path string) ([]GoBench, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []GoBench
	pkg := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if p, ok := strings.CutPrefix(line, "pkg: "); ok {
			pkg = strings.TrimSpace(p)
			continue
		}
		if !strings.HasPrefix(line, "Benchmark") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) < 4 {
			continue
		}
		n, err := strconv.ParseInt(fields[1], 10, 64)
		if err != nil {
			continue
		}
		gb := GoBench{Package: pkg, Name: fields[0], N: n, Metrics: map[string]float64{}}
		for i := 2; i+1 < len(fields); i += 2 {
			if v, err := strconv.ParseFloat(fields[i], 64); err == nil {
				gb.Metrics[fields[i+1]] = v
			}
		}
		out = append(out, gb)
	}
	return out, sc.Err()
}
