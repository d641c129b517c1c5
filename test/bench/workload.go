package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/streamhouse/streamhouse/pkg/partition"
)

// workload is what one run does; the same settings drive every system.
type workload struct {
	Partitions  int
	Producers   int
	Consumers   int
	RecordSize  int
	KeyDist     string // none, random
	KeySpace    int
	Durable     bool
	BatchBytes  int
	Linger      time.Duration
	MaxInFlight int
	Duration    time.Duration
	Count       int64 // produce: stop after this many records (0: Duration); consume: records to prefill
	Rate        float64
	FetchBytes  int
	MaxWait     time.Duration
	// Reader is how StreamHouse consumers read: readerPartition or
	// readerMulti (NATS: always an ordered consumer per subject).
	Reader string
}

// Reader kinds (--reader).
const (
	readerPartition = "partition" // a client.Reader per partition: one Fetch per partition per poll
	readerMulti     = "multi"     // a client.MultiReader per connection: one FetchPartitions per poll
)

func (w workload) durability() string {
	if w.Durable {
		return "durable"
	}
	return "wal"
}

func (w workload) params() map[string]any {
	return map[string]any{
		"partitions": w.Partitions, "producers": w.Producers, "consumers": w.Consumers,
		"record_size": w.RecordSize, "keys": w.KeyDist, "key_space": w.KeySpace,
		"durability": w.durability(), "batch_bytes": w.BatchBytes, "linger_ms": w.Linger.Milliseconds(),
		"max_in_flight": w.MaxInFlight, "duration_s": w.Duration.Seconds(), "records": w.Count,
		"rate": w.Rate, "fetch_bytes": w.FetchBytes, "reader": w.Reader,
	}
}

// recordsPerBatch is how many records of this size fill one batch; the NATS
// side uses it as its async publish window.
func (w workload) recordsPerBatch() int {
	return max(1, w.BatchBytes/(w.RecordSize+16))
}

// system is one system under test.
type system interface {
	name() string
	// createTopic makes a topic (StreamHouse) or stream (NATS) with
	// w.Partitions partitions or subjects.
	createTopic(ctx context.Context, topic string, w workload) error
	deleteTopic(ctx context.Context, topic string)
	// newSender returns one producer connection.
	newSender(ctx context.Context, topic string, w workload) (sender, error)
	// consume reads every partition from the start (fromEnd false) until
	// want records arrived, or tails from the end until ctx ends; onRecord
	// is called for every record with its value and partition.
	consume(ctx context.Context, topic string, w workload, fromEnd bool, ready func(), onRecord func(part int, value []byte)) error
	// stats scrapes the server's counters (zero values when unknown).
	stats(ctx context.Context) serverStats
	// procs are the server processes to measure CPU and RSS of (none for
	// a --url deployment).
	procs() []procRef
	close()
}

// sender produces asynchronously and calls a.done once per record with the
// record's send time t0 (also its timestamp), size n and histogram shard.
// (No closure per record here: at a million records per second the load
// generator's own allocations compete with the server for the CPU.)
type sender interface {
	send(ctx context.Context, part int, key, value []byte, t0 time.Time, n int64, a *acker)
	flush(ctx context.Context) error
	close() error
}

// acker counts acknowledgements and records their latency.
type acker struct {
	c     *counters
	h     *shardedHist
	shard int
}

func (a *acker) done(err error, t0 time.Time, n int64) {
	if err != nil {
		a.c.fail(err)
		return
	}
	a.h.record(a.shard, time.Since(t0))
	a.c.records.Add(1)
	a.c.bytes.Add(n)
}

// runner runs workloads and prints progress.
type runner struct {
	progress io.Writer // nil: quiet
}

// produceLoad runs w.Producers senders until w.Duration or w.Count, at
// w.Rate records/s if set, and records ack latencies (produce call to
// acknowledgement). stamp puts the send time into each value (e2e).
// onStart, if set, is called once every sender is connected, just before
// the first record: the returned duration is measured from then.
func (r *runner) produceLoad(ctx context.Context, sys system, topic string, w workload, label string, c *counters, h *shardedHist, stamp bool, onStart func()) (time.Duration, error) {
	senders := make([]sender, w.Producers)
	for i := range senders {
		s, err := sys.newSender(ctx, topic, w)
		if err != nil {
			for _, s := range senders[:i] {
				_ = s.close()
			}
			return 0, err
		}
		senders[i] = s
	}
	defer func() {
		for _, s := range senders {
			_ = s.close()
		}
	}()
	stop := progress(r.progress, label, c)
	defer stop()

	static := make([]byte, w.RecordSize)
	for i := range static {
		static[i] = byte('a' + i%26)
	}
	keys := make([][]byte, max(w.KeySpace, 1))
	// keyParts is each key's partition by Kafka's murmur2, as the SDK picks
	// it: systems that take the partition from the harness (NATS: one
	// subject per partition) spread keyed records the same way.
	keyParts := make([]int, len(keys))
	for i := range keys {
		keys[i] = fmt.Appendf(nil, "key-%08d", i)
		keyParts[i] = int(partition.ForKey(keys[i], int32(w.Partitions)))
	}
	var quota atomic.Int64 // records left when w.Count is set
	quota.Store(w.Count)
	perProducerRate := w.Rate / float64(w.Producers)
	runCtx, cancel := context.WithTimeout(ctx, w.Duration)
	if w.Count > 0 {
		runCtx, cancel = context.WithCancel(ctx)
	}
	defer cancel()

	if onStart != nil {
		onStart()
	}
	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, len(senders))
	for g, s := range senders {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), uint64(time.Now().UnixNano())))
			sent := 0
			part := g % w.Partitions
			perBatch := w.recordsPerBatch()
			ack := &acker{c: c, h: h, shard: g}
			for runCtx.Err() == nil {
				if w.Count > 0 && quota.Add(-1) < 0 {
					break
				}
				if perProducerRate > 0 {
					due := start.Add(time.Duration(float64(sent) / perProducerRate * float64(time.Second)))
					if d := time.Until(due); d > 0 {
						if d > 200*time.Microsecond {
							select {
							case <-time.After(d):
							case <-runCtx.Done():
							}
						}
						if runCtx.Err() != nil {
							break
						}
					}
				}
				var key []byte
				if w.KeyDist == "random" {
					k := rng.IntN(len(keys))
					key, part = keys[k], keyParts[k]
				} else if sent%perBatch == 0 && sent > 0 {
					// keyless: stick to a partition for one batch (Kafka's
					// sticky partitioner; the StreamHouse SDK does its own).
					part = (part + 1) % w.Partitions
				}
				value := static
				if stamp {
					value = make([]byte, w.RecordSize)
					copy(value[8:], static)
				}
				t0 := time.Now()
				if stamp {
					binary.BigEndian.PutUint64(value, uint64(t0.UnixNano()))
				}
				s.send(ctx, part, key, value, t0, int64(len(key)+len(value)), ack)
				sent++
			}
			fctx, fcancel := context.WithTimeout(ctx, 2*time.Minute)
			errs[g] = s.flush(fctx)
			fcancel()
		})
	}
	wg.Wait()
	return time.Since(start), errors.Join(errs...)
}

// runProduce measures produce throughput and ack latency.
func (r *runner) runProduce(ctx context.Context, sys system, topic string, w workload, label string) (Round, error) {
	if err := sys.createTopic(ctx, topic, w); err != nil {
		return Round{}, err
	}
	defer sys.deleteTopic(ctx, topic)
	before := sys.stats(ctx)
	c := &counters{}
	h := newShardedHist(w.Producers)
	var m *meter
	el, err := r.produceLoad(ctx, sys, topic, w, label, c, h, false, func() { m = startMeter(sys.procs()) })
	procs := m.stop()
	if err != nil {
		c.fail(err)
	}
	mid := sys.stats(ctx) // requests and CPU end with the load; PUTs may not
	if !w.Durable {
		// wal acks come before the upload: wait for the uploader to catch
		// up so the run's PUTs are counted (durable acks mean committed).
		waitUploaded(ctx, sys, before)
	}
	after := sys.stats(ctx)
	rd := roundOf(c, el, h)
	rd.TargetRate = w.Rate
	rd.RSSBytes = after.RSS
	rd.setUsage(procs, el.Seconds(), rd.Bytes, mid.sub(before).CPU)
	if _, ok := sys.(*shSystem); ok {
		rd.S3 = s3Of(after.sub(before), 0)
		rd.setRequests(mid.sub(before).Requests, el.Seconds())
	} else {
		rd.Requests = float64(rd.Records + rd.Errors)
		rd.RequestsPerSec = rd.Requests / max(el.Seconds(), 1e-9)
		rd.RequestsFrom = "client: one JetStream publish (and PubAck) per record"
	}
	return rd, nil
}

// waitUploaded waits until the agent's appended bytes are all uploaded
// (put bytes stop growing) or 5 s pass.
func waitUploaded(ctx context.Context, sys system, before serverStats) {
	if _, ok := sys.(*shSystem); !ok {
		return
	}
	deadline := time.Now().Add(5 * time.Second)
	last := sys.stats(ctx)
	for time.Now().Before(deadline) {
		time.Sleep(300 * time.Millisecond)
		cur := sys.stats(ctx)
		if cur.PutBytes-before.PutBytes >= cur.AppendBytes-before.AppendBytes && cur.PutBytes == last.PutBytes {
			return
		}
		last = cur
	}
}

func roundOf(c *counters, el time.Duration, h *shardedHist) Round {
	rd := Round{
		Records: c.records.Load(), Bytes: c.bytes.Load(), Seconds: el.Seconds(),
		Errors: c.errors.Load(), LastError: c.lastError(), ErrorsByCode: c.errorsByCode(),
	}
	if el > 0 {
		rd.RecordsPerSec = float64(rd.Records) / el.Seconds()
		rd.MBPerSec = float64(rd.Bytes) / el.Seconds() / 1e6
	}
	if h != nil {
		rd.Latency = latencyOf(h.merge())
	}
	return rd
}

// runConsumeCold prefills a topic with w.Count records, then measures
// reading all of them from the start (StreamHouse: from objects, as
// durable acks mean the data is committed and dropped from the WAL). CPU,
// RSS and requests are those of the read phase only.
func (r *runner) runConsumeCold(ctx context.Context, sys system, topic string, w workload, label string) (Round, error) {
	if err := sys.createTopic(ctx, topic, w); err != nil {
		return Round{}, err
	}
	defer sys.deleteTopic(ctx, topic)
	pc := &counters{}
	pw := w
	pw.Rate, pw.Duration = 0, time.Hour
	if _, err := r.produceLoad(ctx, sys, topic, pw, label+" (prefill)", pc, newShardedHist(1), false, nil); err != nil {
		return Round{}, fmt.Errorf("prefill: %w", err)
	}
	if pc.errors.Load() > 0 {
		return Round{}, fmt.Errorf("prefill: %d records failed: %s", pc.errors.Load(), pc.lastError())
	}
	want := pc.records.Load()
	before := sys.stats(ctx)
	c := &counters{}
	stop := progress(r.progress, label, c)
	cctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	m := startMeter(sys.procs())
	start := time.Now()
	err := sys.consume(cctx, topic, w, false, func() {}, func(_ int, v []byte) {
		c.bytes.Add(int64(len(v)))
		if c.records.Add(1) == want {
			cancel()
		}
	})
	el := time.Since(start)
	procs := m.stop()
	stop()
	if err != nil && !errors.Is(err, context.Canceled) {
		c.fail(err)
	}
	if got := c.records.Load(); got < want {
		c.fail(fmt.Errorf("read %d of %d records", got, want))
	}
	after := sys.stats(ctx)
	rd := roundOf(c, el, nil)
	rd.RSSBytes = after.RSS
	d := after.sub(before)
	rd.setUsage(procs, el.Seconds(), rd.Bytes, d.CPU)
	if _, ok := sys.(*shSystem); ok {
		rd.S3 = s3Of(d, rd.Bytes)
		rd.S3.Puts, rd.S3.PutsPerGiB, rd.S3.PutsPerFlush = d.Puts, 0, 0
		rd.setRequests(d.Requests, el.Seconds())
	} else {
		rd.RequestsFrom = natsPushed
	}
	return rd, nil
}

// natsPushed says why NATS consume runs report no requests.
const natsPushed = "none: NATS pushes messages to ordered consumers (no fetch requests)"

// runE2E tails every partition while producing at w.Rate and measures
// publish-to-receive latency from a timestamp in each value; the throughput
// reported is the consumers'. CPU per GiB is per GiB received (the server
// both stored and served each byte).
func (r *runner) runE2E(ctx context.Context, sys system, topic string, w workload, label string) (Round, error) {
	if err := sys.createTopic(ctx, topic, w); err != nil {
		return Round{}, err
	}
	defer sys.deleteTopic(ctx, topic)
	before := sys.stats(ctx)
	c := &counters{}
	h := newShardedHist(w.Partitions)
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var produced atomic.Int64
	produced.Store(-1)
	ready := make(chan struct{})
	var once sync.Once
	consumeErr := make(chan error, 1)
	go func() {
		consumeErr <- sys.consume(cctx, topic, w, true, func() { once.Do(func() { close(ready) }) }, func(part int, v []byte) {
			if len(v) >= 8 {
				h.record(part, time.Since(time.Unix(0, int64(binary.BigEndian.Uint64(v)))))
			}
			c.bytes.Add(int64(len(v)))
			n := c.records.Add(1)
			if p := produced.Load(); p >= 0 && n >= p {
				cancel()
			}
		})
	}()
	select {
	case <-ready:
	case err := <-consumeErr:
		return Round{}, fmt.Errorf("consumers: %w", err)
	case <-time.After(30 * time.Second):
		return Round{}, errors.New("consumers not ready after 30s")
	}
	pc := &counters{}
	start := time.Now()
	m := startMeter(sys.procs())
	_, perr := r.produceLoad(ctx, sys, topic, w, label, pc, newShardedHist(1), true, nil)
	produced.Store(pc.records.Load())
	if c.records.Load() >= pc.records.Load() {
		cancel()
	}
	select {
	case <-cctx.Done():
	case <-time.After(30 * time.Second):
		c.fail(fmt.Errorf("consumers received %d of %d records within 30s of the end", c.records.Load(), pc.records.Load()))
		cancel()
	}
	err := <-consumeErr
	el := time.Since(start)
	procs := m.stop()
	if err != nil && !errors.Is(err, context.Canceled) {
		c.fail(err)
	}
	if perr != nil {
		c.fail(perr)
	}
	c.addFailures(pc) // each record that failed to produce, by code
	after := sys.stats(ctx)
	rd := roundOf(c, el, h)
	rd.TargetRate = w.Rate
	rd.RSSBytes = after.RSS
	d := after.sub(before)
	rd.setUsage(procs, el.Seconds(), rd.Bytes, d.CPU)
	if _, ok := sys.(*shSystem); ok {
		rd.S3 = s3Of(d, rd.Bytes)
		rd.setRequests(d.Requests, el.Seconds())
	} else {
		rd.Requests = float64(pc.records.Load() + pc.errors.Load())
		rd.RequestsPerSec = rd.Requests / max(el.Seconds(), 1e-9)
		rd.RequestsFrom = "client: one JetStream publish per record produced (consumers are pushed to)"
	}
	return rd, nil
}
