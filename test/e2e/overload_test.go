package e2e

import (
	"context"
	"debug/buildinfo"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/api/gen/streamhouse/v1/streamhousev1connect"
	"github.com/streamhouse/streamhouse/pkg/batch"
	"github.com/streamhouse/streamhouse/pkg/client"
	"github.com/streamhouse/streamhouse/pkg/objstore/s3test"
	"github.com/streamhouse/streamhouse/pkg/rpcerr"
	"github.com/streamhouse/streamhouse/test/checker"
	"github.com/streamhouse/streamhouse/test/devproc"
	"github.com/streamhouse/streamhouse/test/loadgen"
)

// Overload test shape.
const (
	ovLimit      = 8 << 20 // --max-inflight-bytes
	ovPartitions = 32
	ovTopic      = "ov"
	ovWindow     = 15 * time.Second // how long the server is driven past its limit
	ovPad        = 1000             // bytes of padding after each record's id: records of about 1 KiB
	ovRaw        = 16               // raw Produce drivers
	ovRawEntries = 4                // partitions per raw request
	ovRawRecords = 1024             // records per raw entry: requests of about 4 MiB
	ovProducers  = 4                // SDK producers
	ovBuffered   = 4 << 20          // bytes each SDK producer may hold unacknowledged
	ovRecover    = 5 * time.Second  // the service is back this soon after the load stops
)

var ovPadding = strings.Repeat(".", ovPad)

// padded is the value sent for a record known to the checker as id.
func padded(id string) []byte { return []byte(id + ovPadding) }

// unpad is readBack's value function for padded records.
func unpad(t *testing.T) func(int32, *batch.Record) string {
	return func(part int32, rec *batch.Record) string {
		v := string(rec.Value)
		if !strings.HasSuffix(v, ovPadding) {
			t.Errorf("partition %d offset %d: value of %d bytes does not end with the padding", part, rec.Offset, len(v))
			return v
		}
		return v[:len(v)-ovPad]
	}
}

// refusals counts the 429s (ResourceExhausted) the raw drivers were
// answered, as Connect errors, with the Retry-After hints they carried.
type refusals struct {
	mu          sync.Mutex
	requests    int            // whole requests refused with 429
	entries     int            // entries of answered requests refused with resource_exhausted
	noHint      int            // 429s without a Retry-After (header or retry_after_ms)
	applied     int            // 429s not marked not-applied
	hints       map[string]int // Retry-After values seen
	otherErrors map[string]int // other errors by code
}

func (r *refusals) add(f func(r *refusals)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.hints == nil {
		r.hints, r.otherErrors = map[string]int{}, map[string]int{}
	}
	f(r)
}

// statusCounter is an HTTP transport counting the answers with status 429
// Too Many Requests, and those of them without a Retry-After header.
type statusCounter struct {
	rt                  http.RoundTripper
	tooMany, noRetryHdr *atomic.Int64
}

func (c statusCounter) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := c.rt.RoundTrip(req)
	if err == nil && resp.StatusCode == http.StatusTooManyRequests {
		c.tooMany.Add(1)
		if resp.Header.Get("Retry-After") == "" {
			c.noRetryHdr.Add(1)
		}
	}
	return resp, err
}

// rawDriver sends Produce requests of ovRawEntries batches (of ovRawRecords
// padded records each) one after another until stop is closed, recording
// every acknowledged record in h as producer id. A request refused as a
// whole without being written is sent again as it is after 50 ms, whatever
// its Retry-After says: a client that ignores the hint keeps the server past
// its limit, and resending the same bytes costs it no encoding.
func rawDriver(ctx context.Context, c streamhousev1connect.ProduceServiceClient, id int, h *checker.History,
	ref *refusals, acked *atomic.Int64, stop <-chan struct{}) {
	seq := 0
	var req *v1.ProduceRequest
	var ids [][]string
	firstSeq := 0
	for {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		default:
		}
		if req == nil {
			req, ids, firstSeq = &v1.ProduceRequest{}, nil, seq
			now := time.Now().UnixMilli()
			for e := range ovRawEntries {
				part := int32((id*ovRawEntries + e) % ovPartitions)
				recs := make([]batch.Record, ovRawRecords)
				eids := make([]string, ovRawRecords)
				for i := range recs {
					eids[i] = fmt.Sprintf("r%d-%08d", id, seq)
					recs[i] = batch.Record{Timestamp: now, Value: padded(eids[i])}
					seq++
				}
				b, err := batch.Encode(recs, batch.EncodeOptions{})
				if err != nil {
					panic(err) // records built above; cannot fail
				}
				req.Batches = append(req.Batches, &v1.ProduceBatch{Topic: ovTopic, Partition: part, Batch: b})
				ids = append(ids, eids)
			}
		}
		resp, err := c.Produce(ctx, connect.NewRequest(req))
		if err != nil {
			ref.add(func(r *refusals) {
				if connect.CodeOf(err) == connect.CodeResourceExhausted {
					r.requests++
					var ce *connect.Error
					if errors.As(err, &ce) && ce.Meta().Get(rpcerr.RetryAfterKey) != "" {
						r.hints[ce.Meta().Get(rpcerr.RetryAfterKey)]++
					} else {
						r.noHint++
					}
					if !rpcerr.IsNotApplied(err) {
						r.applied++
					}
				} else {
					r.otherErrors[connect.CodeOf(err).String()]++
				}
			})
			if !rpcerr.IsNotApplied(err) {
				for _, eids := range ids {
					for _, v := range eids {
						h.Failed(v)
					}
				}
				req = nil // its outcome is unknown: send new records
			}
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond): // load pacing, not synchronisation
			}
			continue
		}
		res := resp.Msg.GetResults()
		for e, eids := range ids {
			var r *v1.PartitionResult
			if e < len(res) && res[e].GetPartition() == req.Batches[e].GetPartition() {
				r = res[e]
			}
			switch {
			case r == nil || (r.GetError() == nil && int(r.GetRecordCount()) != len(eids)):
				ref.add(func(rf *refusals) { rf.otherErrors["bad answer"]++ })
				for _, v := range eids {
					h.Failed(v)
				}
			case r.GetError() != nil:
				ee := r.GetError()
				ref.add(func(rf *refusals) {
					if ee.GetCode() == "resource_exhausted" {
						rf.entries++
						if ee.GetRetryAfterMs() > 0 {
							rf.hints[fmt.Sprintf("%dms", ee.GetRetryAfterMs())]++
						} else {
							rf.noHint++
						}
						if !ee.GetNotApplied() {
							rf.applied++
						}
					} else {
						rf.otherErrors["entry "+ee.GetCode()]++
					}
				})
				if !ee.GetNotApplied() {
					for _, v := range eids {
						h.Failed(v)
					}
				}
			default:
				for i, v := range eids {
					h.Acked(checker.Ack{Producer: id, Seq: firstSeq + e*ovRawRecords + i, Value: v, Partition: r.GetPartition(), Offset: r.GetBaseOffset() + int64(i)})
				}
				acked.Add(int64(len(eids)))
			}
		}
		req = nil
	}
}

// probe produces one padded record (the topic's durable acks) as producer
// id's seq-th and returns its ack (Value set even on error) and how long
// the produce took.
func probe(ctx context.Context, c streamhousev1connect.ProduceServiceClient, id, seq int) (checker.Ack, time.Duration, error) {
	a := checker.Ack{Producer: id, Seq: seq, Value: fmt.Sprintf("probe%d-%d", id, seq)}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	began := time.Now()
	resp, err := c.Produce(ctx, connect.NewRequest(&v1.ProduceRequest{Topic: ovTopic, Partition: proto.Int32(0),
		Records: []*v1.Record{{Value: padded(a.Value)}}}))
	took := time.Since(began)
	if err != nil {
		return a, took, err
	}
	r := resp.Msg.GetResults()[0]
	a.Partition, a.Offset = r.GetPartition(), r.GetBaseOffset()
	return a, took, nil
}

// record adds a probe's outcome to h: acked, unknown, or nothing when the
// server refused it without writing it.
func record(h *checker.History, a checker.Ack, err error) {
	switch {
	case err == nil:
		h.Acked(a)
	case !rpcerr.IsNotApplied(err):
		h.Failed(a.Value)
	}
}

// rssSampler samples a process's RSS every 20 ms until stopped.
type rssSampler struct {
	p    *devproc.Proc
	stop chan struct{}
	once sync.Once
	done chan struct{}

	mu     sync.Mutex
	peak   int64
	peakAt time.Time
	series []int64 // the highest sample of each second
	second time.Time
}

func sampleRSS(p *devproc.Proc) *rssSampler {
	s := &rssSampler{p: p, stop: make(chan struct{}), done: make(chan struct{}), second: time.Now()}
	go func() {
		defer close(s.done)
		tk := time.NewTicker(20 * time.Millisecond)
		defer tk.Stop()
		cur := int64(0)
		for {
			select {
			case <-s.stop:
				s.mu.Lock()
				s.series = append(s.series, cur)
				s.mu.Unlock()
				return
			case <-tk.C:
			}
			rss := p.RSS()
			s.mu.Lock()
			if rss > s.peak {
				s.peak, s.peakAt = rss, time.Now()
			}
			if time.Since(s.second) >= time.Second {
				s.series = append(s.series, cur)
				cur, s.second = 0, time.Now()
			}
			cur = max(cur, rss)
			s.mu.Unlock()
		}
	}()
	return s
}

// Stop stops the sampling (once; later calls return the same) and returns
// the highest sample, when it was taken, and the highest of each second.
func (s *rssSampler) Stop() (peak int64, at time.Time, series []int64) {
	s.once.Do(func() { close(s.stop) })
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peak, s.peakAt, s.series
}

// mHeapInuse is the Go heap in use, as /metrics reports it.
const mHeapInuse = "go_memstats_heap_inuse_bytes"

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// raceBuilt reports whether the binary at path was built with the race
// detector (its build settings say -race=true).
func raceBuilt(t *testing.T, path string) bool {
	t.Helper()
	info, err := buildinfo.ReadFile(path)
	if err != nil {
		t.Fatalf("build info of %s: %v", path, err)
	}
	for _, s := range info.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}

// TestOverload (issue 13): `streamhouse dev` over a real S3 server with a
// small in-flight limit (--max-inflight-bytes 8 MiB, one limit for its agent
// and its gateway) is driven an order of magnitude past it for 15 s on a
// durable topic (a durable produce holds its bytes until the next flush is
// committed): four SDK producers (4 MiB buffered each, 429s retried after
// their Retry-After) and sixteen raw Connect clients sending 4 MiB requests
// back to back, each on its own connection, that resend a refused request
// after 50 ms whatever its Retry-After says. 80 MiB are offered at once
// against the 8 MiB limit. The server must answer 429 with a Retry-After
// and write nothing of a refused request, lose no lease, keep its memory
// under the bounds derived below, keep every acknowledged record readable
// exactly once where it was acknowledged, and serve a single produce at its
// normal latency within 5 s of the load stopping.
func TestOverload(t *testing.T) {
	if testing.Short() {
		t.Skip("15 s of overload; not in -short")
	}
	s3 := s3test.Start(t)
	p := devproc.Start(t, bin, t.TempDir(), append(s3Args(s3, s3.Endpoint), "--max-inflight-bytes", fmt.Sprint(ovLimit))...)
	cl := newClients(t, p.URL)
	createTopic(t, cl, ovTopic, ovPartitions, v1.Durability_DURABILITY_DURABLE)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	sdk, err := client.New(p.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer sdk.Close()

	// Normal latency and memory, before the load: a first produce (it
	// warms up the lease and the connections), five probes one after the
	// other, then RSS sampled for a second and the Go heap read.
	var before []checker.Ack // recorded in the load's history once it exists
	var normal []time.Duration
	for i := range 6 {
		a, d, err := probe(ctx, cl.produce, 1000, i)
		if err != nil {
			t.Fatalf("probe before the load: %v", err)
		}
		before = append(before, a)
		if i > 0 {
			normal = append(normal, d)
		}
	}
	slices.Sort(normal)
	idle := sampleRSS(p)
	measurementWindow(time.Second) // samples the idle RSS
	baseline, _, _ := idle.Stop()
	idleHeap := scrape(t, p.URL)[mHeapInuse]
	// Normal latency: the slowest of the five probes, with the slack of one
	// more flush interval (250 ms) a durable ack may wait for on a busy
	// 2-core machine.
	normalBound := normal[len(normal)-1] + 250*time.Millisecond
	t.Logf("before the load: probe latency %v (normal: at most %v), RSS %s, Go heap in use %s",
		normal, normalBound.Round(time.Millisecond), mib(baseline), mib(int64(idleHeap)))

	var sdks []*client.Client
	for range ovProducers {
		c, err := client.New(p.URL) // each its own connection
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		sdks = append(sdks, c)
	}
	rss := sampleRSS(p)
	defer rss.Stop()
	started := time.Now()
	// The SDK load's history holds every record: the raw drivers write as
	// producers 100+, the probes as 1000 (before the load) and 1001 (after).
	load := loadgen.StartT(t, ctx, sdks, loadgen.Config{Topic: ovTopic, Producers: ovProducers, Pad: ovPad,
		Options: []client.ProducerOption{client.MaxInFlightRequests(32), client.MaxBufferedBytes(ovBuffered),
			client.BatchBytes(256 << 10), client.MaxRetryDuration(3 * time.Minute)}})
	h := load.History()
	for _, a := range before {
		h.Acked(a)
	}
	var ref refusals
	var rawAcked atomic.Int64
	stopRaw := make(chan struct{})
	var stopOnce sync.Once
	var raw sync.WaitGroup
	stopDrivers := func() { stopOnce.Do(func() { close(stopRaw) }); raw.Wait() }
	defer stopDrivers()
	var tooMany, noRetryHdr atomic.Int64
	for i := range ovRaw {
		// Its own HTTP/1.1 connection, Connect protocol: a refusal is an
		// HTTP 429, counted as it comes off the wire.
		tr := &http.Transport{}
		t.Cleanup(tr.CloseIdleConnections)
		c := streamhousev1connect.NewProduceServiceClient(&http.Client{Transport: statusCounter{tr, &tooMany, &noRetryHdr}}, p.URL)
		raw.Add(1)
		go func() {
			defer raw.Done()
			rawDriver(ctx, c, 100+i, h, &ref, &rawAcked, stopRaw)
		}()
	}

	// Drive the server for the window, watching its in-flight and heap
	// gauges.
	var gwHeld, agHeld, heap float64
	for time.Since(started) < ovWindow {
		m := scrape(t, p.URL)
		gwHeld = max(gwHeld, m["streamhouse_gateway_inflight_bytes"])
		agHeld = max(agHeld, m["streamhouse_agent_inflight_bytes"])
		heap = max(heap, m[mHeapInuse])
		measurementWindow(250 * time.Millisecond) // the gauges' sampling period
	}
	// Stop the load: the raw drivers send nothing more (their requests in
	// flight are answered), the SDK producers produce nothing more and
	// deliver what they hold.
	stopOnce.Do(func() { close(stopRaw) })
	stopped := time.Now()
	loadStopped := make(chan error, 1)
	go func() { loadStopped <- load.Stop() }()

	// The service is back when a single produce succeeds at its normal
	// latency: probe, one produce after the other (every 50 ms after a
	// failure), until one does.
	var recovered, lat time.Duration
	var probes []string
	for i := 0; ; i++ {
		a, d, err := probe(ctx, cl.produce, 1001, i)
		record(h, a, err)
		at := time.Since(stopped)
		if err == nil && d <= normalBound {
			recovered, lat = at, d
			break
		}
		if len(probes) < 10 {
			outcome := "ok"
			if err != nil {
				outcome = err.Error()
			}
			probes = append(probes, fmt.Sprintf("done %v after the stop, took %v: %s", at.Round(time.Millisecond), d.Round(time.Millisecond), outcome))
		}
		if at > time.Minute {
			t.Fatalf("no produce at normal latency within a minute of the load stopping: %s", strings.Join(probes, "; "))
		}
		if err != nil {
			select {
			case <-ctx.Done():
				t.Fatal(ctx.Err())
			case <-time.After(50 * time.Millisecond): // the polling period
			}
		}
	}
	t.Logf("after the load stopped: a produce took %v, done %v after the stop; probes before it: %q",
		lat.Round(time.Millisecond), recovered.Round(time.Millisecond), probes)
	if recovered > ovRecover {
		t.Errorf("service back %v after the load stopped, want within %v", recovered.Round(time.Millisecond), ovRecover)
	}

	stopDrivers()
	if err := <-loadStopped; err != nil {
		t.Errorf("stop SDK producers: %v", err)
	}
	drained := time.Since(stopped)
	peak, peakAt, series := rss.Stop()

	m := scrape(t, p.URL)
	ref.mu.Lock()
	defer ref.mu.Unlock()
	t.Logf("raw drivers: %d records acked; HTTP 429 answers %d (%d without a Retry-After header); refused with ResourceExhausted: "+
		"%d whole requests, %d entries, Retry-After values %v; %d without a hint, %d not marked not-applied; other errors %v",
		rawAcked.Load(), tooMany.Load(), noRetryHdr.Load(), ref.requests, ref.entries, ref.hints, ref.noHint, ref.applied, ref.otherErrors)
	t.Logf("SDK producers: %d records acked, %d failed; every producer done %v after the load stopped",
		load.Acked(), load.Failed(), drained.Round(time.Millisecond))
	t.Logf("server: requests refused past the in-flight limit: gateway %.0f, agent %.0f; durable ack timeouts %.0f; "+
		"Produce answers by code %v; peaks sampled every 250 ms: in-flight bytes gateway %s, agent %s (limit %s), Go heap in use %s",
		m["streamhouse_gateway_inflight_refused_total"], m["streamhouse_agent_inflight_refused_total"],
		m["streamhouse_agent_durable_ack_timeouts_total"], produceCodes(t, p.URL), mib(int64(gwHeld)), mib(int64(agHeld)), mib(ovLimit), mib(int64(heap)))

	// 429s with a Retry-After were answered, only for requests left
	// unwritten (the checker below finds any refused record that was
	// written after all: its values were never acknowledged nor failed).
	if ref.requests+ref.entries == 0 || tooMany.Load() == 0 {
		t.Errorf("raw drivers saw %d HTTP 429s, %d requests and %d entries refused: the server was not driven past its limit",
			tooMany.Load(), ref.requests, ref.entries)
	}
	if n := noRetryHdr.Load(); n > 0 {
		t.Errorf("%d HTTP 429 answers had no Retry-After header", n)
	}
	if m["streamhouse_gateway_inflight_refused_total"]+m["streamhouse_agent_inflight_refused_total"] == 0 {
		t.Errorf("the server counted no in-flight refusal")
	}
	if ref.noHint > 0 {
		t.Errorf("%d 429s carried no Retry-After", ref.noHint)
	}
	if ref.applied > 0 {
		t.Errorf("%d 429s were not marked not-applied", ref.applied)
	}
	if gwHeld > ovLimit || agHeld > ovLimit {
		t.Errorf("in-flight bytes reached gateway %s, agent %s: past the limit %s", mib(int64(gwHeld)), mib(int64(agHeld)), mib(ovLimit))
	}

	// Memory follows the limit, not the offered load. What the server
	// may hold live because of the load: the admitted requests (at most
	// the limit; in dev the agent holds the same bytes as the gateway),
	// the object the agent builds of them for its next flush (durable
	// acks wait for it: at most the limit again), and what it reads of
	// requests before refusing them, which admission should keep to the
	// limit too: 3 x limit. The collector lets the heap grow to twice
	// the live data (GOGC=100), and 16 MiB go to everything else
	// (connection buffers, the S3 client, the runtime): the Go heap may
	// grow by 2 x 3 x limit + 16 MiB over its idle size. RSS may grow by
	// that (x 1.25 for freed pages not yet returned to the OS), or by 4
	// times that when the server runs under the race detector, whose
	// shadow memory costs several bytes per byte of heap (measured here:
	// about 3x).
	heapBudget := float64(2*3*ovLimit + 16<<20)
	factor := 1.25
	if raceBuilt(t, bin) {
		factor = 4
	}
	rssBound := baseline + int64(factor*heapBudget)
	var per []string
	for _, v := range series {
		per = append(per, fmt.Sprintf("%.0f", float64(v)/(1<<20)))
	}
	t.Logf("RSS: idle %s, peak %s at %v after the load started, bound %s (idle + %.2f x %s); per-second peaks (MiB): %s",
		mib(baseline), mib(peak), peakAt.Sub(started).Round(time.Millisecond), mib(rssBound), factor, mib(int64(heapBudget)), strings.Join(per, " "))
	if heap > idleHeap+heapBudget {
		t.Errorf("Go heap in use reached %s, over the bound %s (idle %s + 2 x 3 x %s + 16 MiB): memory follows the offered load, not the limit",
			mib(int64(heap)), mib(int64(idleHeap+heapBudget)), mib(int64(idleHeap)), mib(ovLimit))
	}
	if peak > rssBound {
		t.Errorf("RSS peaked at %s, over the bound %s", mib(peak), mib(rssBound))
	}

	// Every acknowledged record is readable, once, where it was acked.
	readStart := time.Now()
	res := h.Check(readBack(t, ctx, sdk, ovTopic, ovPartitions, 4, 4<<20, unpad(t)))
	t.Logf("read back in %v: %d acked, %d failed with an unknown outcome (%d of them written), %d read",
		time.Since(readStart).Round(time.Millisecond), res.Acked, res.Failed, res.FailedPresent, res.Read)
	if err := res.Err(); err != nil {
		t.Error(err)
	}
	if load.Acked() == 0 || rawAcked.Load() == 0 {
		t.Errorf("acked: SDK %d, raw %d; both kinds of producer should get records through", load.Acked(), rawAcked.Load())
	}
	checkLeaseLog(t, p.Stderr())
}
