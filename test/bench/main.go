// Command bench is StreamHouse's benchmark harness: a load generator in its
// own process that drives a deployment through the public API (the Go SDK)
// and, side by side in the same run, NATS JetStream with the same workload.
//
//	go run ./test/bench --help
//	go run ./test/bench suite --start --out bench/results/$(date +%F).json
//
// See usage below (or --help) for every subcommand and flag.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"
)

const usageText = `bench: throughput, latency and object-store cost of a StreamHouse deployment,
side by side with NATS JetStream, from a separate load-generator process.

Usage:
  go run ./test/bench <command> [flags]

Commands:
  produce   N producers (SDK, one connection each) write records of --record-size
            bytes to a --partitions topic with --durability acks, for --duration
            (or --records), as fast as possible or at --rate records/s. Reports
            records/s, MB/s, ack latency (produce call to acknowledgement; at full
            load this includes time waiting in the producer's buffer), object-store
            PUTs (per flush, per GiB appended) and server RSS.
  consume   --mode cold (default): prefill a durable topic with --records records,
            then read every partition from offset 0 over --consumers connections
            (--reader partition: an SDK Reader per partition; multi: one
            MultiReader per connection); durable acks mean the data is committed
            and dropped from the WAL, so StreamHouse serves it from objects (range
            GETs). NATS: one ordered consumer per subject, DeliverAll.
            --mode hot: readers tail the topic while it is produced at --rate;
            reports the consumers' throughput and publish-to-receive latency.
  e2e       produce at --rate while tailing every partition; each value carries
            its send time (8 bytes, unix ns), so latency is publish-to-receive.
  suite     the standard suite (what 'go tool task bench' runs):
              produce-wal-8p        wal topic, 8 partitions, full load          (+ NATS)
              produce-durable-8p    durable topic, 8 partitions, full load
              produce-wal-half      wal, at half of produce-wal-8p's median     (+ NATS at half of its own)
              produce-durable-half  durable, at half of produce-durable-8p's median
              consume-cold-8p       prefill --cold-records durable, read from 0  (+ NATS ordered consumers)
              e2e-wal               wal, at --e2e-rate, publish-to-receive       (+ NATS)
              produce-keyed-1000p-wal      wal, 1,000 partitions, keys uniform over
                                           100,000 keys (murmur2), full load    (+ NATS)
              produce-keyed-1000p-durable  the same, durable                     (+ NATS;
                                           + streamhouse-cluster with --start --start-cluster)
              produce-keyed-10000p-durable durable, 10,000 partitions, keyed, full load (+ NATS)
              produce-keyed-1000p-20k-durable
                                           durable, 1,000 partitions, keyed, offered
                                           20,000 records/s: p99 and errors       (+ NATS)
              produce-many-producers       200 producers, each its own connection and
                                           SDK Producer at 100 records/s (20,000 in all),
                                           100 partitions, wal, keyless: p99, server CPU (+ NATS)
              produce-1k                   wal, 8 partitions, 1 KiB values, full load (+ NATS)
              consume-1000p                prefill --cold-records durable, keyed over
                                           1,000 partitions; then ONE consumer (one
                                           connection, one SDK MultiReader: a single
                                           FetchPartitions long-poll for all partitions)
                                           reads them all from 0  (+ NATS: one connection,
                                           one ordered consumer on <topic>.*, all subjects)
              idle-partitions       RSS of a fresh dev server with --idle-partitions
                                    idle partitions (needs --start)
            NATS runs every one of these with one subject per partition (keyed
            records go to subject murmur2(key) mod partitions, as the SDK picks
            partitions). --smoke shrinks them: 100 partitions for "1000p", 200
            for "10000p", 5,000 records/s for "20k", 20 producers on 20
            partitions for many-producers, 0.5 s per timed run, 20,000 records
            per full-load run (5,000 of 1 KiB) and per consume prefill.
            Every workload runs --rounds times, each system in turn per round;
            the table shows medians and the StreamHouse/NATS ratio, then the
            issue's targets with measured figures (p99 <= flush + 150 ms and 0
            errors for the 20k run; p99 <= 10 ms and server CPU <= 0.5 core
            for many-producers; with --start --start-cluster, the cluster's
            keyed 1,000-partition durable throughput >= 50 % of the dev
            server's in the same rounds).
  tracecost the produce workload against two 'streamhouse dev' servers side by
            side (needs --start): one with tracing off, one exporting OTLP at
            --trace-ratio to --otlp (a real Jaeger, or an endpoint that
            discards); --rounds rounds, interleaved with the order alternating,
            so noise hits both. Reports medians and the on/off throughput
            ratio (median of the per-round ratios), e.g.
            go run ./test/bench tracecost --start --durability durable --rounds 7

Producer settings (unless --linger or --max-inflight is given): wal topics 1 ms
linger and 1 request in flight per partition; durable topics 25 ms linger and 16
in flight, because a durable ack waits for the next flush (250 ms) and with one
request in flight a partition's next batch would wait a whole cycle before being
sent. Keyless records stick to a partition for one batch's worth of bytes (the
SDK's uniform sticky partitioner).

Target (--url, or --start and/or --start-cluster):
  --url URL       drive a running deployment (its gateway, e.g. http://127.0.0.1:8080)
  --start         build cmd/streamhouse (from this workspace) and run 'streamhouse dev'
                  as a child process on a temp data dir and a free port; stopped at the end
  --start-cluster build cmd/streamhouse and start a cluster of separate processes on
                  loopback with free ports: versitygw as the object store (a real S3
                  server; bin/versitygw from 'go tool task tools:versitygw', or
                  $STREAMHOUSE_VERSITYGW), 3 controllers (Raft), 2 agents (S3, bucket
                  created at start), 1 gateway, found through gossip; so the gateway ->
                  agent hop and S3 are measured. --agent-arg passes flags to the agents.
                  Stopped at the end (gateway, agents, controllers, S3). Alone, the
                  cluster is the system under test ("streamhouse"). With --start too,
                  it is a second system, "streamhouse-cluster": produce, consume and
                  e2e run on both; the suite runs it on produce-keyed-1000p-durable
                  only and adds the ">= 50 % of the dev figure" target.

Measured per workload and system: records/s and MB/s; ack (or publish-to-receive)
latency percentiles; requests/s (StreamHouse: produce and fetch requests from the
gateway's /metrics, streamhouse_gateway_requests_total by method; NATS: one publish
per record, counted in the client; NATS consumers are pushed to and send none);
errors by code (the Connect code of each failed record callback); object-store
PUTs and GETs (agents' /metrics); server CPU (utime+stime from /proc/<pid>/stat
before and after the measured phase: cores, and CPU seconds per GiB of record
bytes moved) and peak RSS (VmRSS from /proc/<pid>/status sampled every 100 ms)
of every server process the harness started: the dev server, each cluster
process (versitygw is listed apart and left out of the totals: it stands in for
S3), nats-server. With --url the processes are not visible: CPU comes from the
servers' process_cpu_seconds_total and there is no peak RSS.

NATS side (by default when nats-server is on PATH): the harness starts
'nats-server -a 127.0.0.1 -p PORT -js -sd TMPDIR' and stops it at the end. nats-server
2.9 (Debian) does not fsync on publish; StreamHouse acks wal after a group-commit
fdatasync and durable after the object PUT and the Raft commit.

Output: a progress line per second on stderr; a table on stdout (Markdown), or JSON
with --json; --out FILE also writes the JSON to FILE.
`

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, " ") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// options are every flag of every command.
type options struct {
	command string

	url          string
	start        bool
	startCluster bool
	agentArgs    multiFlag
	bin          string
	race         bool
	pprof        string
	devArgs      multiFlag
	natsMode     string
	natsBin      string
	rounds       int
	jsonOut      bool
	out          string
	quiet        bool
	cpuprof      string

	w           workload
	lingerSet   bool // --linger given: use it for every durability
	inflightSet bool // --max-inflight given
	durability  string
	mode        string

	smoke          bool
	coldRecords    int64
	e2eRate        float64
	idlePartitions int
	gobench        string

	traceRatio float64
	otlp       string
}

func newFlagSet(cmd string, o *options, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usageText)
		fmt.Fprintf(stderr, "\nFlags of %q:\n", cmd)
		fs.PrintDefaults()
	}
	fs.StringVar(&o.url, "url", "", "gateway URL of a running StreamHouse deployment")
	fs.BoolVar(&o.start, "start", false, "build and start 'streamhouse dev' as a child process (temp data dir, free port)")
	fs.BoolVar(&o.startCluster, "start-cluster", false, "build and start a cluster on loopback: 3 controllers, 2 agents, 1 gateway and versitygw as S3 (see 'Target' in --help); with --start too, the cluster is a second system (streamhouse-cluster)")
	fs.Var(&o.agentArgs, "agent-arg", "with --start-cluster: extra flag for each 'streamhouse agent' (repeatable), e.g. --agent-arg=--flush-interval=100ms")
	fs.StringVar(&o.bin, "bin", "", "with --start or --start-cluster: use this streamhouse binary instead of building one")
	fs.BoolVar(&o.race, "race", false, "with --start: build with the race detector (for smoke runs; slow)")
	fs.StringVar(&o.pprof, "pprof", "", "with --start: build with net/http/pprof (added by go build -overlay) served on this address, e.g. 127.0.0.1:6060")
	fs.Var(&o.devArgs, "dev-arg", "with --start: extra flag for 'streamhouse dev' (repeatable), e.g. --dev-arg=--flush-bytes=33554432")
	fs.StringVar(&o.natsMode, "nats", "auto", "run the NATS JetStream side too: auto (if nats-server is on PATH), on, off")
	fs.StringVar(&o.natsBin, "nats-server", "nats-server", "nats-server binary")
	fs.IntVar(&o.rounds, "rounds", 3, "rounds per workload; each system runs once per round, in turn; medians are reported")
	fs.BoolVar(&o.jsonOut, "json", false, "print the report as JSON on stdout instead of the table")
	fs.StringVar(&o.out, "out", "", "also write the JSON report to this file")
	fs.BoolVar(&o.quiet, "quiet", false, "no progress lines on stderr")
	fs.StringVar(&o.cpuprof, "cpuprofile", "", "write a CPU profile of this load-generator process to this file")

	w := &o.w
	fs.IntVar(&w.Partitions, "partitions", 8, "partitions of the topic (NATS: subjects of the stream)")
	fs.IntVar(&w.Producers, "producers", 4, "producers, each with its own connection and SDK Producer (NATS: connection and async publisher)")
	fs.IntVar(&w.Consumers, "consumers", 4, "consumer connections; each partition gets one reader (--reader multi: each connection one MultiReader) (NATS: one ordered consumer per subject)")
	fs.IntVar(&w.RecordSize, "record-size", 100, "value size in bytes")
	fs.StringVar(&w.KeyDist, "keys", "none", "key distribution: none (keyless, sticky partitioning) or random (uniform over --key-space keys, murmur2)")
	fs.IntVar(&w.KeySpace, "key-space", 1024, "distinct keys with --keys random")
	fs.StringVar(&o.durability, "durability", "wal", "topic durability and acks: wal (ack after WAL fdatasync) or durable (ack after object PUT + Raft commit)")
	fs.IntVar(&w.BatchBytes, "batch-bytes", 1<<20, "producer batch size in bytes (SDK BatchBytes); NATS async window = records per batch x --max-inflight")
	fs.DurationVar(&w.Linger, "linger", 0, "producer linger (SDK Linger); unset: 1ms for wal, 25ms for durable (see 'Producer settings' in --help)")
	fs.IntVar(&w.MaxInFlight, "max-inflight", 0, "requests in flight per partition per producer (SDK MaxInFlightPerPartition); unset: 1 for wal, 16 for durable")
	fs.DurationVar(&w.Duration, "duration", 10*time.Second, "how long each produce phase runs")
	fs.Int64Var(&w.Count, "records", 0, "produce: stop after this many records instead of --duration; consume --mode cold: records to prefill (default 1000000)")
	fs.Float64Var(&w.Rate, "rate", 0, "offered load in records/s over all producers; 0 = as fast as possible (e2e and consume --mode hot default 50000)")
	fs.IntVar(&w.FetchBytes, "fetch-bytes", 4<<20, "max bytes per fetch (SDK MaxBytes)")
	fs.DurationVar(&w.MaxWait, "max-wait", 500*time.Millisecond, "fetch long-poll wait when caught up (SDK MaxWait)")
	fs.StringVar(&o.mode, "mode", "cold", "consume: cold (from offset 0, from objects) or hot (tailing)")
	fs.StringVar(&w.Reader, "reader", readerPartition, "consume and e2e, StreamHouse side: partition (an SDK Reader per partition, one Fetch each) or multi (an SDK MultiReader per consumer connection, one FetchPartitions for all its partitions; NATS: one ordered consumer on <topic>.* instead of one per subject); the suite's consume-1000p always uses multi")

	fs.BoolVar(&o.smoke, "smoke", false, "suite: tiny runs (1 round, ~1 s each) to check the harness works; figures are not meaningful")
	fs.Int64Var(&o.coldRecords, "cold-records", 1_000_000, "suite: records to prefill for the cold consumes (consume-cold-8p, consume-1000p)")
	fs.Float64Var(&o.e2eRate, "e2e-rate", 50_000, "suite: offered load of the e2e latency run, records/s")
	fs.IntVar(&o.idlePartitions, "idle-partitions", 10_000, "suite: partitions of the idle-partition RSS check (0 skips it; needs --start)")
	fs.StringVar(&o.gobench, "gobench", "", "suite: a file of 'go test -bench' output to include in the JSON (go_benchmarks)")
	fs.Float64Var(&o.traceRatio, "trace-ratio", 0.01, "tracecost: --trace-sample-ratio of the traced server")
	fs.StringVar(&o.otlp, "otlp", "jaeger", "tracecost: where the traced server exports: jaeger (bin/jaeger or $STREAMHOUSE_JAEGER) or discard (an in-process OTLP/HTTP endpoint)")
	return fs
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// run is main without the process: tests call it.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, usageText)
		fmt.Fprint(stderr, "\nEvery command takes the same flags; see 'go run ./test/bench <command> --help'.\n")
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	o := &options{command: args[0]}
	switch o.command {
	case "produce", "consume", "e2e", "suite", "tracecost":
	default:
		fmt.Fprintf(stderr, "bench: unknown command %q (produce, consume, e2e, suite, tracecost; --help)\n", o.command)
		return 2
	}
	fs := newFlagSet(o.command, o, stderr)
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "linger":
			o.lingerSet = true
		case "max-inflight":
			o.inflightSet = true
		}
	})
	if err := o.validate(); err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 2
	}
	if o.cpuprof != "" {
		f, err := os.Create(o.cpuprof)
		if err != nil {
			fmt.Fprintf(stderr, "bench: %v\n", err)
			return 1
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(stderr, "bench: %v\n", err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}
	rep, err := execute(ctx, o, stderr)
	if rep != nil {
		if o.out != "" {
			if werr := writeJSONFile(o.out, rep); werr != nil {
				fmt.Fprintf(stderr, "bench: %v\n", werr)
				return 1
			}
		}
		if o.jsonOut {
			_ = rep.writeJSON(stdout)
		} else {
			rep.writeTable(stdout)
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 1
	}
	return 0
}

func (o *options) validate() error {
	if (o.url != "") == (o.start || o.startCluster) {
		return errors.New("give --url URL, or --start and/or --start-cluster")
	}
	if o.startCluster && o.command == "tracecost" {
		return errors.New("tracecost runs two dev servers of its own (--start); --start-cluster does not apply")
	}
	switch o.durability {
	case "wal":
	case "durable":
		o.w.Durable = true
	default:
		return fmt.Errorf("--durability must be wal or durable, got %q", o.durability)
	}
	switch o.natsMode {
	case "auto", "on", "off":
	default:
		return fmt.Errorf("--nats must be auto, on or off, got %q", o.natsMode)
	}
	switch o.w.KeyDist {
	case "none", "random":
	default:
		return fmt.Errorf("--keys must be none or random, got %q", o.w.KeyDist)
	}
	switch o.w.Reader {
	case readerPartition, readerMulti:
	default:
		return fmt.Errorf("--reader must be %s or %s, got %q", readerPartition, readerMulti, o.w.Reader)
	}
	switch o.mode {
	case "cold", "hot":
	default:
		return fmt.Errorf("--mode must be cold or hot, got %q", o.mode)
	}
	w := o.w
	if o.lingerSet && w.Linger < 0 {
		return errors.New("--linger must not be negative")
	}
	if o.inflightSet && w.MaxInFlight < 1 {
		return errors.New("--max-inflight must be at least 1")
	}
	if w.Partitions < 1 || w.Producers < 1 || w.Consumers < 1 || w.RecordSize < 8 || w.BatchBytes < 1 {
		return errors.New("--partitions, --producers, --consumers and --batch-bytes must be at least 1, --record-size at least 8")
	}
	if o.rounds < 1 {
		return errors.New("--rounds must be at least 1")
	}
	if w.Duration <= 0 && w.Count <= 0 {
		return errors.New("give a positive --duration or --records")
	}
	return nil
}

// Producer settings per durability, used unless --linger or --max-inflight
// is given. They are what a user would pick for each kind of topic:
//   - wal acks come after a group-commit fdatasync (about a millisecond), so
//     a 1 ms linger costs little throughput and keeps latency low; one
//     request in flight per partition keeps Produce order.
//   - durable acks come only after the next flush (every 250 ms) is uploaded
//     and committed. With one request in flight, a partition's next batch
//     waits for that whole cycle before it is even sent, so records wait
//     about two cycles. Sixteen in flight with a 25 ms linger keep sending
//     while earlier batches wait for their flush (Kafka's default is 5 in
//     flight; its acks take milliseconds, not a flush interval).
const (
	walLinger          = time.Millisecond
	walMaxInFlight     = 1
	durableLinger      = 25 * time.Millisecond
	durableMaxInFlight = 16
)

// producerSettings fills w's linger and in-flight limit from the flags or,
// when they were not given, from the per-durability settings above.
func (o *options) producerSettings(w workload) workload {
	if !o.lingerSet {
		w.Linger = walLinger
		if w.Durable {
			w.Linger = durableLinger
		}
	}
	if !o.inflightSet {
		w.MaxInFlight = walMaxInFlight
		if w.Durable {
			w.MaxInFlight = durableMaxInFlight
		}
	}
	return w
}

func writeJSONFile(path string, rep *Report) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := rep.writeJSON(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// env is the systems under test for one run.
type env struct {
	o   *options
	tmp string
	bin string
	dev *devServer
	sh  *shSystem
	cl  *cluster
	// clusterSys is the cluster as a second StreamHouse system when both
	// --start and --start-cluster are given (with --start-cluster alone
	// the cluster is sh).
	clusterSys *shSystem
	natsSrv    *natsServer
	nats       *natsSystem
	systems    []System
}

func (e *env) close() {
	if e.nats != nil {
		e.nats.close()
	}
	if e.natsSrv != nil {
		e.natsSrv.stop()
	}
	if e.sh != nil {
		e.sh.close()
	}
	if e.clusterSys != nil {
		e.clusterSys.close()
	}
	if e.dev != nil {
		e.dev.stop()
	}
	e.cl.stop()
	if e.tmp != "" {
		_ = os.RemoveAll(e.tmp)
	}
}

const shFsync = "wal acks: group-commit fdatasync of the agent WAL; durable acks: object PUT + Raft commit (fsynced raft-wal)"

func setup(ctx context.Context, o *options, stderr io.Writer) (*env, error) {
	e := &env{o: o}
	tmp, err := os.MkdirTemp("", "shbench-")
	if err != nil {
		return nil, err
	}
	e.tmp = tmp
	target := o.url
	pid := 0
	if o.start || o.startCluster {
		e.bin = o.bin
		if e.bin == "" {
			if !o.quiet {
				fmt.Fprintln(stderr, "building cmd/streamhouse ...")
			}
			if e.bin, err = buildStreamhouse(ctx, tmp, o.pprof != "", o.race); err != nil {
				e.close()
				return nil, err
			}
		}
	}
	if o.start {
		if e.dev, err = startDev(ctx, e.bin, tmp+"/sh", o.pprof, o.devArgs); err != nil {
			e.close()
			return nil, err
		}
		target, pid = e.dev.URL, e.dev.pid()
		if !o.quiet {
			fmt.Fprintf(stderr, "streamhouse dev (pid %d) at %s, data in %s\n", pid, target, tmp)
		}
	}
	if o.start || o.url != "" {
		if e.sh, err = newSH(target, pid); err != nil {
			e.close()
			return nil, err
		}
		how := "--url " + target
		if o.start {
			how = "started: streamhouse dev " + strings.Join(o.devArgs, " ")
		}
		e.systems = append(e.systems, System{Name: "streamhouse", Target: strings.TrimSpace(how), Fsync: shFsync})
	}
	if o.startCluster {
		if !o.quiet {
			fmt.Fprintln(stderr, "starting a cluster: versitygw, 3 controllers, 2 agents, 1 gateway ...")
		}
		if e.cl, err = startCluster(ctx, e.bin, tmp+"/cluster", o.agentArgs); err != nil {
			e.close()
			return nil, err
		}
		if !o.quiet {
			fmt.Fprintf(stderr, "cluster gateway at %s, S3 at %s\n", e.cl.gateway.URL, e.cl.s3Endpoint)
		}
		cs, err := newSHCluster(e.cl)
		if err != nil {
			e.close()
			return nil, err
		}
		sys := System{Name: "streamhouse", Target: strings.TrimSpace(e.cl.describe() + " " + strings.Join(o.agentArgs, " ")), Fsync: shFsync}
		if e.sh == nil {
			e.sh = cs // --start-cluster alone: the cluster is the system under test
		} else {
			cs.label = clusterName
			sys.Name = clusterName
			e.clusterSys = cs
		}
		e.systems = append(e.systems, sys)
	}

	ns := System{Name: "nats", Target: "started: nats-server -js (file storage)", Fsync: natsFsync}
	bin, lookErr := exec.LookPath(o.natsBin)
	switch {
	case o.natsMode == "off":
		ns.Skipped = "--nats off"
	case lookErr != nil && o.natsMode == "auto":
		ns.Skipped = fmt.Sprintf("%s not found on PATH (apt-get install nats-server)", o.natsBin)
	case lookErr != nil:
		e.close()
		return nil, fmt.Errorf("--nats on: %w", lookErr)
	default:
		if e.natsSrv, err = startNATS(ctx, bin, tmp+"/nats"); err != nil {
			e.close()
			return nil, err
		}
		ns.Version = e.natsSrv.Version
		if e.nats, err = newNATS(e.natsSrv.URL, e.natsSrv.pid()); err != nil {
			e.close()
			return nil, err
		}
	}
	e.systems = append(e.systems, ns)
	return e, nil
}

// clusterName names the --start-cluster system when --start runs too.
const clusterName = "streamhouse-cluster"

// each returns the systems to measure, StreamHouse first. The second
// StreamHouse system (--start with --start-cluster) is in it for the
// single-workload commands; the suite runs it on one workload only (see
// runSuite), to keep the suite's length.
func (e *env) each(withNATS bool) []system {
	out := []system{e.sh}
	if e.clusterSys != nil && e.o.command != "suite" {
		out = append(out, e.clusterSys)
	}
	if withNATS && e.nats != nil {
		out = append(out, e.nats)
	}
	return out
}

func newReport(o *options, e *env) *Report {
	return &Report{
		Schema: reportSchema, Command: strings.Join(os.Args, " "), Started: time.Now().UTC(),
		Smoke: o.smoke, RoundsWanted: o.rounds, Machine: machineInfo(), Systems: e.systems,
	}
}

func execute(ctx context.Context, o *options, stderr io.Writer) (*Report, error) {
	if o.command == "tracecost" {
		return executeTraceCost(ctx, o, stderr)
	}
	e, err := setup(ctx, o, stderr)
	if err != nil {
		return nil, err
	}
	defer e.close()
	r := &runner{progress: stderr}
	if o.quiet {
		r.progress = nil
	}
	rep := newReport(o, e)
	began := time.Now()
	defer func() { rep.Seconds = time.Since(began).Seconds() }()
	w := o.w
	switch o.command {
	case "produce":
		name := fmt.Sprintf("produce-%s-%dp", w.durability(), w.Partitions)
		err = runRounds(ctx, e, r, rep, name, "produce", w, true, nil)
	case "consume":
		if o.mode == "cold" {
			w.Durable = true
			if w.Count == 0 {
				w.Count = 1_000_000
			}
			err = runRounds(ctx, e, r, rep, fmt.Sprintf("consume-cold-%dp", w.Partitions), "consume-cold", w, true, nil)
		} else {
			if w.Rate == 0 {
				w.Rate = 50_000
			}
			err = runRounds(ctx, e, r, rep, fmt.Sprintf("consume-hot-%dp", w.Partitions), "e2e", w, true, nil)
		}
	case "e2e":
		if w.Rate == 0 {
			w.Rate = 50_000
		}
		err = runRounds(ctx, e, r, rep, fmt.Sprintf("e2e-%s-%dp", w.durability(), w.Partitions), "e2e", w, true, nil)
	case "suite":
		err = runSuite(ctx, e, r, rep)
	}
	rep.compare()
	return rep, err
}

// runRounds runs one workload o.rounds times on every system, in turn, and
// appends one Result per system. rateOf, when set, gives a system's offered
// load (for "half of max load").
func runRounds(ctx context.Context, e *env, r *runner, rep *Report, name, kind string, w workload, withNATS bool, rateOf func(sys string) float64) error {
	return runRoundsOn(ctx, e, r, rep, name, kind, w, e.each(withNATS), rateOf)
}

// runRoundsOn is runRounds on the given systems.
func runRoundsOn(ctx context.Context, e *env, r *runner, rep *Report, name, kind string, w workload, systems []system, rateOf func(sys string) float64) error {
	w = e.o.producerSettings(w)
	results := make([]*Result, len(systems))
	for i, s := range systems {
		sw := w
		if rateOf != nil {
			sw.Rate = rateOf(s.name())
		}
		results[i] = &Result{Name: name, System: s.name(), Workload: kind, Params: sw.params()}
		rep.Results = append(rep.Results, results[i])
	}
	var errs []error
	defer func() {
		for _, res := range results {
			res.summarize()
		}
	}()
	for round := 1; round <= e.o.rounds; round++ {
		for i, s := range systems {
			if ctx.Err() != nil {
				return ctx.Err() // the rounds run so far are summarised
			}
			sw := w
			if rateOf != nil {
				sw.Rate = rateOf(s.name())
				if sw.Rate <= 0 {
					results[i].Skipped = "no full-load figure to halve"
					continue
				}
			}
			topic := fmt.Sprintf("b%d-%s-r%d", time.Now().UnixNano()%1e9, strings.ReplaceAll(name, ".", "-"), round)
			label := fmt.Sprintf("[%s %s r%d]", name, s.name(), round)
			var rd Round
			var err error
			switch kind {
			case "produce":
				rd, err = r.runProduce(ctx, s, topic, sw, label)
			case "consume-cold":
				rd, err = r.runConsumeCold(ctx, s, topic, sw, label)
			case "e2e":
				rd, err = r.runE2E(ctx, s, topic, sw, label)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("%s on %s, round %d: %w", name, s.name(), round, err))
				rd = Round{Errors: 1, LastError: err.Error()}
			}
			if r.progress != nil {
				fmt.Fprintf(r.progress, "%-34s done: %s rec/s, %.1f MB/s", label, commas(rd.RecordsPerSec), rd.MBPerSec)
				if rd.Latency != nil {
					fmt.Fprintf(r.progress, ", p50 %s ms, p99 %s ms", ms(rd.Latency.P50), ms(rd.Latency.P99))
				}
				if rd.Errors > 0 {
					fmt.Fprintf(r.progress, ", %d errors (%s)", rd.Errors, rd.LastError)
				}
				fmt.Fprintln(r.progress)
			}
			results[i].Rounds = append(results[i].Rounds, rd)
		}
	}
	return errors.Join(errs...)
}
