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
	// The shapes of the "real" workloads (issue 13); smoke mode shrinks
	// them so the whole suite stays well under a minute on two cores.
	sz := suiteSizes{
		p1000: 1000, p10000: 10_000, keySpace: 100_000, rate20k: 20_000,
		manyProducers: 200, manyPartitions: 100, perProducerRate: 100,
		duration: base.Duration,
	}
	if o.smoke {
		o.rounds = 1
		rep.RoundsWanted = 1
		base.Duration = time.Second
		cold = min(cold, 20_000)
		e2eRate = min(e2eRate, 5_000)
		idle = min(idle, 100)
		sz = suiteSizes{
			p1000: 100, p10000: 200, keySpace: 100_000, rate20k: 5_000,
			manyProducers: 20, manyPartitions: 20, perProducerRate: 100,
			duration: 500 * time.Millisecond, fullCount: 20_000,
		}
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
	step(runRealShapes(ctx, e, r, rep, base, cold, sz))
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

// suiteSizes are the sizes of the workloads runRealShapes runs.
type suiteSizes struct {
	p1000, p10000   int           // partitions of the "1000p" and "10000p" workloads
	keySpace        int           // distinct keys of the keyed workloads
	rate20k         float64       // offered load of produce-keyed-1000p-20k-durable
	manyProducers   int           // producers of produce-many-producers
	manyPartitions  int           // its partitions
	perProducerRate float64       // and each producer's records/s
	duration        time.Duration // of every workload of runRealShapes
	// fullCount, when set, bounds the full-load runs by records instead:
	// 100 KiB per partition of 1 KiB records would take a race-built
	// server seconds to drain from the producers' buffers after a timed
	// run, so smoke runs send a fixed amount (1 KiB runs a quarter of it).
	fullCount int64
}

// runRealShapes runs the workloads of issue 13 ("the harness measures real
// shapes"): many partitions with keyed records, a fixed offered load, many
// small producers, large values, and one consumer over many partitions;
// each on StreamHouse and NATS (one subject per partition) in turn. With
// --start and --start-cluster, produce-keyed-1000p-durable runs on the
// cluster too, in the same rounds.
func runRealShapes(ctx context.Context, e *env, r *runner, rep *Report, base workload, cold int64, sz suiteSizes) error {
	var errs []error
	step := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	keyed := base
	keyed.Duration = sz.duration
	keyed.KeyDist, keyed.KeySpace = "random", sz.keySpace
	keyed.Partitions = sz.p1000
	kDurable := keyed
	kDurable.Durable = true
	kWal, kFull := keyed, kDurable // the full-load ones
	kWal.Count, kFull.Count = sz.fullCount, sz.fullCount
	step(runRounds(ctx, e, r, rep, "produce-keyed-1000p-wal", "produce", kWal, true, nil))
	onCluster := e.each(true)
	if e.clusterSys != nil {
		onCluster = append([]system{e.sh, e.clusterSys}, onCluster[1:]...)
	}
	step(runRoundsOn(ctx, e, r, rep, "produce-keyed-1000p-durable", "produce", kFull, onCluster, nil))
	k10k := kFull
	k10k.Partitions = sz.p10000
	step(runRounds(ctx, e, r, rep, "produce-keyed-10000p-durable", "produce", k10k, true, nil))
	k20k := kDurable
	k20k.Rate = sz.rate20k
	step(runRounds(ctx, e, r, rep, "produce-keyed-1000p-20k-durable", "produce", k20k, true, nil))

	many := keyed
	many.KeyDist = "none"
	many.Durable = false
	many.Producers, many.Partitions = sz.manyProducers, sz.manyPartitions
	many.Rate = sz.perProducerRate * float64(sz.manyProducers)
	step(runRounds(ctx, e, r, rep, "produce-many-producers", "produce", many, true, nil))

	big := many
	big.Producers, big.Rate = base.Producers, 0
	big.Partitions, big.RecordSize = 8, 1024
	big.Count = sz.fullCount / 4
	step(runRounds(ctx, e, r, rep, "produce-1k", "produce", big, true, nil))

	// Keyed prefill, so every partition holds data (keyless records stick
	// to one partition per 1 MiB batch and would fill only a few). One
	// consumer is one connection with one MultiReader: one FetchPartitions
	// long-poll over all 1,000 partitions, as a Kafka consumer's Fetch.
	c1k := kDurable
	c1k.Consumers, c1k.Count, c1k.Reader = 1, cold, readerMulti
	step(runRounds(ctx, e, r, rep, "consume-1000p", "consume-cold", c1k, true, nil))
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
	flush := flushIntervalMS(o)
	if m := get("produce-durable-half", "streamhouse"); m != nil && m.Latency != nil {
		out = append(out, Target{Figure: "produce p99 at half of max load, durable", Target: fmt.Sprintf("<= flush interval + 150 ms = %.0f ms", flush+150),
			Measured: fmt.Sprintf("%s ms at %s records/s", ms(m.Latency.P99), commas(m.TargetRate)), Value: m.Latency.P99, Met: m.Latency.P99 <= flush+150})
	}
	if m := get("e2e-wal", "streamhouse"); m != nil && m.Latency != nil {
		out = append(out, Target{Figure: "end-to-end latency, wal topic", Target: "p99 <= 20 ms",
			Measured: fmt.Sprintf("%s ms at %s records/s", ms(m.Latency.P99), commas(m.TargetRate)), Value: m.Latency.P99, Met: m.Latency.P99 <= 20})
	}
	out = append(out, realShapeTargets(rep, get, flush)...)
	if m := get("idle-partitions", "streamhouse"); m != nil {
		n, _ := rep.result("idle-partitions", "streamhouse").Params["partitions"].(int)
		out = append(out, Target{Figure: fmt.Sprintf("agent RSS with %s idle partitions", commas(float64(n))), Target: "<= 256 MiB (10,000 partitions)",
			Measured: fmt.Sprintf("%.0f MiB (whole dev process)", m.RSSBytes/(1<<20)), Value: m.RSSBytes, Met: n >= 10000 && m.RSSBytes <= 256<<20})
	}
	return out
}

// flushIntervalMS is the dev server's flush interval in milliseconds:
// --dev-arg=--flush-interval=D if given, else streamhouse's default.
func flushIntervalMS(o *options) float64 {
	flush := 250.0 // streamhouse dev's default --flush-interval, ms
	for _, a := range o.devArgs {
		if v, ok := strings.CutPrefix(a, "--flush-interval="); ok {
			if d, err := time.ParseDuration(v); err == nil {
				flush = float64(d.Milliseconds())
			}
		}
	}
	return flush
}

// realShapeTargets are issue 13's targets for the workloads of
// runRealShapes.
func realShapeTargets(rep *Report, get func(name, sys string) *Round, flush float64) []Target {
	var out []Target
	if m := get("produce-keyed-1000p-20k-durable", "streamhouse"); m != nil && m.Latency != nil {
		// 0 errors in every round, not just in the median one.
		var errs int64
		for _, rd := range rep.result("produce-keyed-1000p-20k-durable", "streamhouse").Rounds {
			errs += rd.Errors
		}
		out = append(out, Target{Figure: "produce p99, keyed, 1,000 partitions, durable, offered 20,000 records/s",
			Target:   fmt.Sprintf("p99 <= flush interval + 150 ms = %.0f ms, 0 errors", flush+150),
			Measured: fmt.Sprintf("%s ms at %s records/s, %d errors", ms(m.Latency.P99), commas(m.TargetRate), errs),
			Value:    m.Latency.P99, Met: m.Latency.P99 <= flush+150 && errs == 0})
	}
	if m := get("produce-many-producers", "streamhouse"); m != nil && m.Latency != nil {
		out = append(out, Target{Figure: "produce p99, many producers (each its own connection, 100 records/s), wal",
			Target:   "<= 10 ms",
			Measured: fmt.Sprintf("%s ms at %s records/s", ms(m.Latency.P99), commas(m.TargetRate)),
			Value:    m.Latency.P99, Met: m.Latency.P99 <= 10})
		if len(m.Processes) > 0 || m.CPUSeconds > 0 {
			out = append(out, Target{Figure: "server CPU, many producers", Target: "<= 0.5 core",
				Measured: fmt.Sprintf("%.2f cores (%.1f CPU s over %.1f s)", m.CPUCores, m.CPUSeconds, m.Seconds),
				Value:    m.CPUCores, Met: m.CPUCores <= 0.5})
		}
	}
	dev, cl := get("produce-keyed-1000p-durable", "streamhouse"), get("produce-keyed-1000p-durable", clusterName)
	if dev != nil && cl != nil {
		x := 0.0
		if dev.RecordsPerSec > 0 {
			x = cl.RecordsPerSec / dev.RecordsPerSec
		}
		out = append(out, Target{Figure: "cluster (3 controllers, 2 agents, gateway, S3), keyed, 1,000 partitions, durable",
			Target:   ">= 50 % of the dev server's in the same run",
			Measured: fmt.Sprintf("%s vs %s records/s (%.0f %%)", commas(cl.RecordsPerSec), commas(dev.RecordsPerSec), x*100),
			Value:    x, Met: x >= 0.5})
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
