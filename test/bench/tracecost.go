package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/streamhouse/streamhouse/test/trace/jaeger"
)

// The tracecost command: what tracing costs produce throughput. Two
// `streamhouse dev` servers run side by side from one binary, one with
// tracing off (no OTLP endpoint: no interceptor, no-op provider) and one
// exporting over OTLP/HTTP at --trace-ratio; the same produce workload runs
// on each in turn, --rounds times, the order alternating every round so
// drift and noise from other work on the machine hit both. Reported: the
// medians, the ratio of the medians, and the median of the per-round
// (paired) ratios, which is the figure to quote.

// otlpSink receives the traced server's spans.
type otlpSink struct {
	endpoint string // http://host:port, for OTEL_EXPORTER_OTLP_ENDPOINT
	what     string
	requests atomic.Int64 // discard sink: export requests received
	stop     func()
	// count returns a description of what arrived, to show tracing was on.
	count func(ctx context.Context) (string, error)
}

// startSink starts a real Jaeger (kind "jaeger") or an in-process OTLP/HTTP
// endpoint that answers every export with 200 and drops it ("discard").
func startSink(kind, dir string) (*otlpSink, error) {
	switch kind {
	case "jaeger":
		j, err := jaeger.Start(dir)
		if err != nil {
			return nil, fmt.Errorf("--otlp jaeger: %w (or use --otlp discard)", err)
		}
		s := &otlpSink{endpoint: "http://" + j.OTLPHTTP, what: "Jaeger v2 at " + j.OTLPHTTP + " (memory storage)", stop: j.Stop}
		s.count = func(ctx context.Context) (string, error) {
			trs, err := j.Traces(ctx, "streamhouse", 1000)
			if err != nil {
				return "", err
			}
			if len(trs) == 0 {
				return "", errors.New("jaeger holds no trace of service streamhouse: tracing was not on")
			}
			spans := 0
			for _, t := range trs {
				spans += len(t.Spans)
			}
			return fmt.Sprintf("jaeger holds %d traces (%d spans) of service streamhouse", len(trs), spans), nil
		}
		return s, nil
	case "discard":
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		s := &otlpSink{endpoint: "http://" + ln.Addr().String(), what: "in-process OTLP/HTTP endpoint that discards"}
		srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			if r.URL.Path == "/v1/traces" {
				s.requests.Add(1)
			}
			w.Header().Set("Content-Type", "application/x-protobuf")
		})}
		go func() { _ = srv.Serve(ln) }()
		s.stop = func() { _ = srv.Close() }
		s.count = func(context.Context) (string, error) {
			n := s.requests.Load()
			if n == 0 {
				return "", errors.New("no OTLP export request arrived: tracing was not on")
			}
			return fmt.Sprintf("%d OTLP export requests", n), nil
		}
		return s, nil
	}
	return nil, fmt.Errorf("--otlp must be jaeger or discard, got %q", kind)
}

func executeTraceCost(ctx context.Context, o *options, stderr io.Writer) (*Report, error) {
	if !o.start {
		return nil, errors.New("tracecost needs --start: it starts its own two servers")
	}
	if o.traceRatio <= 0 || o.traceRatio > 1 {
		return nil, fmt.Errorf("--trace-ratio must be in (0, 1], got %v", o.traceRatio)
	}
	tmp, err := os.MkdirTemp("", "shbench-trace-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	say := func(format string, args ...any) {
		if !o.quiet {
			fmt.Fprintf(stderr, format+"\n", args...)
		}
	}
	bin := o.bin
	if bin == "" {
		say("building cmd/streamhouse ...")
		if bin, err = buildStreamhouse(ctx, tmp, false, o.race); err != nil {
			return nil, err
		}
	}
	sinkDir := filepath.Join(tmp, "otlp")
	if err := os.Mkdir(sinkDir, 0o755); err != nil {
		return nil, err
	}
	sink, err := startSink(o.otlp, sinkDir)
	if err != nil {
		return nil, err
	}
	defer sink.stop()

	ratio := strconv.FormatFloat(o.traceRatio, 'g', -1, 64)
	offName, onName := "tracing-off", "tracing-"+strconv.FormatFloat(o.traceRatio*100, 'g', -1, 64)+"%"
	// Off: no endpoint, whatever this process's environment says.
	offEnv := []string{"OTEL_EXPORTER_OTLP_ENDPOINT=", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT="}
	onEnv := []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + sink.endpoint, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=",
		"OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf", "OTEL_SDK_DISABLED="}
	onArgs := append([]string{"--trace-sample-ratio=" + ratio}, o.devArgs...)
	offDev, err := startDevEnv(ctx, bin, filepath.Join(tmp, "off"), "", o.devArgs, offEnv)
	if err != nil {
		return nil, err
	}
	defer offDev.stop()
	onDev, err := startDevEnv(ctx, bin, filepath.Join(tmp, "on"), "", onArgs, onEnv)
	if err != nil {
		return nil, err
	}
	defer onDev.stop()
	off, err := newSH(offDev.URL, offDev.pid())
	if err != nil {
		return nil, err
	}
	defer off.close()
	on, err := newSH(onDev.URL, onDev.pid())
	if err != nil {
		return nil, err
	}
	defer on.close()
	off.label, on.label = offName, onName
	say("%s at %s, %s at %s exporting to %s", offName, offDev.URL, onName, onDev.URL, sink.what)

	rep := &Report{
		Schema: reportSchema, Command: strings.Join(os.Args, " "), Started: time.Now().UTC(),
		RoundsWanted: o.rounds, Machine: machineInfo(),
		Systems: []System{
			{Name: offName, Target: "started: streamhouse dev " + strings.Join(o.devArgs, " "), Fsync: shFsync, Config: "no OTLP endpoint: tracing off"},
			{Name: onName, Target: "started: streamhouse dev " + strings.Join(onArgs, " "), Fsync: shFsync, Config: "OTLP/HTTP to " + sink.what},
		},
	}
	began := time.Now()
	defer func() { rep.Seconds = time.Since(began).Seconds() }()

	r := &runner{progress: stderr}
	if o.quiet {
		r.progress = nil
	}
	w := o.producerSettings(o.w)
	name := fmt.Sprintf("produce-%s-%dp", w.durability(), w.Partitions)
	systems := []*shSystem{off, on}
	results := make([]*Result, 2)
	for i, s := range systems {
		results[i] = &Result{Name: name, System: s.name(), Workload: "produce", Params: w.params()}
		rep.Results = append(rep.Results, results[i])
	}
	var errs []error
	var paired []float64
	// Server CPU per record: less sensitive than throughput to the other
	// work on a shared machine (a busy CPU slows both, but the CPU time a
	// record costs stays much the same).
	var cpuPerRec [2][]float64
	pids := [2]int{offDev.pid(), onDev.pid()}
	for round := 1; round <= o.rounds; round++ {
		order := []int{0, 1}
		if round%2 == 0 {
			order = []int{1, 0}
		}
		var rps [2]float64
		for _, i := range order {
			if ctx.Err() != nil {
				return rep, ctx.Err()
			}
			s := systems[i]
			topic := fmt.Sprintf("tc%d-r%d", time.Now().UnixNano()%1e9, round)
			label := fmt.Sprintf("[%s %s r%d]", name, s.name(), round)
			cpu0 := cpuSeconds(pids[i])
			rd, err := r.runProduce(ctx, s, topic, w, label)
			if cpu := cpuSeconds(pids[i]) - cpu0; err == nil && rd.Records > 0 && cpu > 0 {
				cpuPerRec[i] = append(cpuPerRec[i], cpu/float64(rd.Records)*1e6)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("%s round %d: %w", s.name(), round, err))
				rd = Round{Errors: 1, LastError: err.Error()}
			}
			say("%-44s done: %s rec/s, %.1f MB/s", label, commas(rd.RecordsPerSec), rd.MBPerSec)
			results[i].Rounds = append(results[i].Rounds, rd)
			rps[i] = rd.RecordsPerSec
		}
		if rps[0] > 0 {
			paired = append(paired, rps[1]/rps[0])
		}
	}
	for _, res := range results {
		res.summarize()
	}
	if results[0].Median != nil && results[1].Median != nil && results[0].Median.RecordsPerSec > 0 && len(paired) > 0 {
		medRatio := results[1].Median.RecordsPerSec / results[0].Median.RecordsPerSec
		pr := median(paired)
		cost := (1 - pr) * 100
		var rounds []string
		for _, p := range paired {
			rounds = append(rounds, fmt.Sprintf("%.3f", p))
		}
		results[1].Note = fmt.Sprintf("throughput on/off: ratio of medians %.3f, median of per-round ratios %.3f (rounds: %s)",
			medRatio, pr, strings.Join(rounds, " "))
		rep.Targets = append(rep.Targets, Target{
			Figure:   fmt.Sprintf("produce throughput cost of tracing at %s sampling (%s)", strconv.FormatFloat(o.traceRatio*100, 'g', -1, 64)+"%", name),
			Target:   "< 3 %",
			Measured: fmt.Sprintf("%.1f %% (median of %d paired rounds; ratio of medians %.3f)", cost, len(paired), medRatio),
			Value:    cost, Met: cost < 3,
		})
		say("%s", results[1].Note)
	}
	if len(cpuPerRec[0]) > 0 && len(cpuPerRec[1]) > 0 {
		offCPU, onCPU := median(cpuPerRec[0]), median(cpuPerRec[1])
		results[0].Note = fmt.Sprintf("server CPU per record: median %.3f µs", offCPU)
		results[1].Note += fmt.Sprintf("; server CPU per record: median %.3f µs (off: %.3f µs, %+.1f %%)", onCPU, offCPU, (onCPU/offCPU-1)*100)
		rep.Targets = append(rep.Targets, Target{
			Figure:   "server CPU per produced record, tracing on vs off",
			Target:   "< 3 % more",
			Measured: fmt.Sprintf("%.3f vs %.3f µs (%+.1f %%)", onCPU, offCPU, (onCPU/offCPU-1)*100),
			Value:    (onCPU/offCPU - 1) * 100, Met: onCPU/offCPU-1 < 0.03,
		})
		say("server CPU per record: off %.3f µs, on %.3f µs", offCPU, onCPU)
	}
	// Tracing really was on in the traced server: spans reached the sink.
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var seen string
	for {
		seen, err = sink.count(cctx)
		if err == nil || cctx.Err() != nil {
			break
		}
		select {
		case <-cctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
	if err != nil {
		errs = append(errs, err)
	} else {
		rep.Systems[1].Config += "; " + seen
		say("%s", seen)
	}
	return rep, errors.Join(errs...)
}
