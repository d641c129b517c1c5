package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	streamhousev1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/pkg/partition"

	"github.com/streamhouse/streamhouse/pkg/rpcerr"
)

// collector gathers callback results.
type collector struct {
	mu  sync.Mutex
	res []Result
	seq []int
}

func (c *collector) cb(seq int) func(Result) {
	return func(r Result) {
		c.mu.Lock()
		c.res = append(c.res, r)
		c.seq = append(c.seq, seq)
		c.mu.Unlock()
	}
}

func (c *collector) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.res)
}

func (c *collector) errs() []error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []error
	for _, r := range c.res {
		if r.Err != nil {
			out = append(out, r.Err)
		}
	}
	return out
}

func value(i int) []byte { return []byte(fmt.Sprintf("value-%06d", i)) }

func newProducer(t *testing.T, c *Client, opts ...ProducerOption) *Producer {
	t.Helper()
	p, err := c.NewProducer("t", opts...)
	if err != nil {
		t.Fatalf("NewProducer: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func TestNewProducerUnknownTopic(t *testing.T) {
	_, c := startFake(t, 1)
	_, err := c.NewProducer("nope")
	if connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("NewProducer(nope) = %v, want NotFound", err)
	}
}

func TestBatching(t *testing.T) {
	g, c := startFake(t, 4)
	p := newProducer(t, c, Linger(time.Hour))
	var col collector
	const n = 20000
	for i := range n {
		p.Produce(context.Background(), Record{Key: []byte{byte(i % 16)}, Value: value(i)}, col.cb(i))
	}
	if err := p.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if col.len() != n || len(col.errs()) != 0 {
		t.Fatalf("%d results, errors %v", col.len(), col.errs())
	}
	calls := g.produceCalls.Load()
	// 20000 records of ~35 bytes are ~700 KB: one batch per partition, all
	// four in one request (MaxRequestBytes is 1 MiB).
	if calls != 1 {
		t.Fatalf("%d produce requests for %d records, want few", calls, n)
	}
	if got := g.appended.Load(); got != n {
		t.Fatalf("appended %d records, want %d", got, n)
	}
	t.Logf("%d records in %d requests", n, calls)
}

func TestLingerSendsWithoutFlush(t *testing.T) {
	g, c := startFake(t, 1)
	p := newProducer(t, c, Linger(30*time.Millisecond))
	start := time.Now()
	var wg sync.WaitGroup
	var col collector
	for i := range 10 {
		wg.Add(1)
		cb := col.cb(i)
		p.Produce(context.Background(), Record{Value: value(i)}, func(r Result) { cb(r); wg.Done() })
	}
	wg.Wait()
	el := time.Since(start)
	if el < 25*time.Millisecond || el > 2*time.Second {
		t.Fatalf("linger batch sent after %v, want about 30ms", el)
	}
	if calls := g.produceCalls.Load(); calls != 1 {
		t.Fatalf("%d requests, want 1", calls)
	}
	if errs := col.errs(); len(errs) > 0 {
		t.Fatal(errs)
	}
	// ProduceSync waits for the linger too and reports the offset.
	res := p.ProduceSync(context.Background(), Record{Value: []byte("x")})
	if res.Err != nil || res.Offset != 10 || res.Partition != 0 {
		t.Fatalf("ProduceSync = %+v", res)
	}
}

func TestBatchBytesSplit(t *testing.T) {
	g, c := startFake(t, 1)
	const batchBytes = 8 << 10
	p := newProducer(t, c, Linger(time.Hour), BatchBytes(batchBytes))
	var col collector
	const n = 1000
	val := bytes.Repeat([]byte("v"), 100)
	for i := range n {
		p.Produce(context.Background(), Record{Value: val}, col.cb(i))
	}
	// Full batches go without waiting for the (hour-long) linger.
	deadline := time.Now().Add(5 * time.Second)
	for g.batchCount(0) < 10 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if err := p.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	nb := g.batchCount(0)
	// ~120 estimated bytes per record: ~68 records per 8 KiB batch.
	if nb < 13 || nb > 20 {
		t.Fatalf("%d batches, want about 15", nb)
	}
	g.mu.Lock()
	for i, b := range g.logs[0].batches {
		if len(b) > batchBytes {
			t.Errorf("batch %d is %d bytes, over %d", i, len(b), batchBytes)
		}
	}
	g.mu.Unlock()
	if len(g.records(t, 0)) != n || len(col.errs()) != 0 {
		t.Fatalf("stored %d records, errors %v", len(g.records(t, 0)), col.errs())
	}
}

func TestTopicMaxBatchBytesLowersBatchBytes(t *testing.T) {
	g := newFakeGateway("t", 1)
	g.maxBatchBytes = 4 << 10
	srv := serveFake(t, g, "127.0.0.1:0")
	c := newTestClient(t, srv.URL)
	p := newProducer(t, c, Linger(time.Hour))
	var col collector
	for i := range 500 {
		p.Produce(context.Background(), Record{Value: bytes.Repeat([]byte("v"), 100)}, col.cb(i))
	}
	if err := p.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if errs := col.errs(); len(errs) > 0 {
		t.Fatal(errs[0])
	}
	if g.batchCount(0) < 10 {
		t.Fatalf("%d batches", g.batchCount(0))
	}
}

func TestKeyPartitioning(t *testing.T) {
	const parts = 8
	g, c := startFake(t, parts)
	p := newProducer(t, c, Linger(time.Millisecond))
	const n = 2000
	got := make([]Result, n)
	var wg sync.WaitGroup
	wg.Add(n)
	for i := range n {
		key := []byte(fmt.Sprintf("key-%d", i))
		p.Produce(context.Background(), Record{Key: key, Value: value(i)}, func(r Result) { got[i] = r; wg.Done() })
	}
	wg.Wait()
	for i, r := range got {
		key := []byte(fmt.Sprintf("key-%d", i))
		if r.Err != nil {
			t.Fatal(r.Err)
		}
		if want := partition.ForKey(key, parts); r.Partition != want {
			t.Fatalf("record %d went to partition %d, want %d", i, r.Partition, want)
		}
	}
	for part := range int32(parts) {
		for _, rec := range g.records(t, part) {
			if partition.ForKey(rec.Key, parts) != part {
				t.Fatalf("key %q stored in partition %d", rec.Key, part)
			}
		}
	}
	// An explicit partition wins over the key.
	res := p.ProduceSync(context.Background(), Record{Key: []byte("key-0"), Value: []byte("x"), Partition: new(int32(5))})
	if res.Err != nil || res.Partition != 5 {
		t.Fatalf("explicit partition: %+v", res)
	}
	res = p.ProduceSync(context.Background(), Record{Value: []byte("x"), Partition: new(int32(parts))})
	if !errors.Is(res.Err, ErrBadPartition) {
		t.Fatalf("out-of-range partition: %+v", res)
	}
}

// produceKeyless produces n keyless records (value(0) to value(n-1)),
// flushes, and returns the partition each went to, by index; any failed
// record fails the test.
func produceKeyless(t *testing.T, p *Producer, n int) []int32 {
	t.Helper()
	var col collector
	for i := range n {
		p.Produce(context.Background(), Record{Value: value(i)}, col.cb(i))
	}
	if err := p.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	col.mu.Lock()
	defer col.mu.Unlock()
	byseq := make([]int32, n)
	for i, r := range col.res {
		if r.Err != nil {
			t.Fatalf("record %d: %v", col.seq[i], r.Err)
		}
		byseq[col.seq[i]] = r.Partition
	}
	return byseq
}

func TestStickyKeyless(t *testing.T) {
	const parts = 4
	const perRun = 10 // records in a batch's worth of bytes
	size := recordSize(&Record{Value: value(0)})
	_, c := startFake(t, parts)
	p := newProducer(t, c, Linger(time.Hour), BatchBytes(perRun*size))
	const n = 10 * perRun
	byseq := produceKeyless(t, p, n)
	// Records stick to a partition for exactly a batch's worth of bytes,
	// then move to another partition.
	for run := 0; run < n/perRun; run++ {
		first := byseq[run*perRun]
		for i := run * perRun; i < (run+1)*perRun; i++ {
			if byseq[i] != first {
				t.Fatalf("record %d went to partition %d, the rest of its run to %d: %v", i, byseq[i], first, byseq)
			}
		}
		if run > 0 && byseq[(run-1)*perRun] == first {
			t.Fatalf("run %d stayed on partition %d: %v", run, first, byseq)
		}
	}
}

// TestStickyKeylessNoLinger checks that without a linger, keyless records do
// not spray one-record requests over idle partitions: they stay on one
// partition and batch up behind its request in flight.
func TestStickyKeylessNoLinger(t *testing.T) {
	g, c := startFake(t, 8)
	p := newProducer(t, c, Linger(0))
	const n = 500
	before := g.produceCalls.Load()
	byseq := produceKeyless(t, p, n)
	for i, part := range byseq {
		if part != byseq[0] {
			t.Fatalf("keyless records spread over partitions: record %d went to %d, record 0 to %d", i, part, byseq[0])
		}
	}
	// With one request in flight per partition, n records need at most n
	// requests; the old partitioner sent about one per record.
	t.Logf("%d records in %d requests", n, g.produceCalls.Load()-before)
}

func TestOrderPerPartition(t *testing.T) {
	const parts = 3
	g, c := startFake(t, parts)
	// Small batches and a short linger give many requests per partition.
	p := newProducer(t, c, Linger(200*time.Microsecond), BatchBytes(1<<10))
	var col collector
	const n = 6000
	keys := make([][]byte, 12)
	for i := range keys {
		keys[i] = []byte(fmt.Sprintf("k%d", i))
	}
	for i := range n {
		p.Produce(context.Background(), Record{Key: keys[i%len(keys)], Value: value(i)}, col.cb(i))
	}
	if err := p.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if g.produceCalls.Load() < 50 {
		t.Fatalf("only %d requests; the test wants many", g.produceCalls.Load())
	}
	// Callback order per partition: Produce order, with consecutive offsets.
	lastSeq := map[int32]int{}
	nextOff := map[int32]int64{}
	for i, r := range col.res {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
		seq := col.seq[i]
		if s, ok := lastSeq[r.Partition]; ok && seq <= s {
			t.Fatalf("partition %d: callback of record %d after record %d", r.Partition, seq, s)
		}
		lastSeq[r.Partition] = seq
		if r.Offset != nextOff[r.Partition] {
			t.Fatalf("partition %d: record %d got offset %d, want %d", r.Partition, seq, r.Offset, nextOff[r.Partition])
		}
		nextOff[r.Partition]++
	}
	// Stored order: Produce order.
	for part := range int32(parts) {
		last := -1
		for _, rec := range g.records(t, part) {
			var seq int
			fmt.Sscanf(string(rec.Value), "value-%d", &seq)
			if seq <= last {
				t.Fatalf("partition %d stores record %d after %d", part, seq, last)
			}
			last = seq
		}
	}
}

func TestFlushAndCloseWait(t *testing.T) {
	g, c := startFake(t, 2)
	p, err := c.NewProducer("t", Linger(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	var col collector
	for i := range 500 {
		p.Produce(context.Background(), Record{Value: value(i)}, col.cb(i))
	}
	if col.len() != 0 {
		t.Fatal("callbacks before the linger or a flush")
	}
	if err := p.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if col.len() != 500 {
		t.Fatalf("after Flush: %d callbacks, want 500", col.len())
	}
	for i := range 500 {
		p.Produce(context.Background(), Record{Key: []byte{byte(i)}, Value: value(i)}, col.cb(500+i))
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if col.len() != 1000 || len(col.errs()) != 0 {
		t.Fatalf("after Close: %d callbacks, errors %v", col.len(), col.errs())
	}
	if g.appended.Load() != 1000 {
		t.Fatalf("appended %d", g.appended.Load())
	}
	res := p.ProduceSync(context.Background(), Record{Value: []byte("late")})
	if !errors.Is(res.Err, ErrClosed) {
		t.Fatalf("Produce after Close: %v", res.Err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestMaxBufferedBytesBlocks(t *testing.T) {
	g := newFakeGateway("t", 1)
	gate := make(chan struct{})
	var gateOnce sync.Once
	openGate := func() { gateOnce.Do(func() { close(gate) }) }
	g.beforeAppend = func(int64, *streamhousev1.ProduceRequest) error { <-gate; return nil }
	srv := serveFake(t, g, "127.0.0.1:0")
	c := newTestClient(t, srv.URL)
	p := newProducer(t, c, Linger(0), MaxBufferedBytes(4000))
	t.Cleanup(openGate) // runs before the producer closes
	// ~120 estimated bytes per record.
	val := bytes.Repeat([]byte("v"), 100)
	var col collector
	// 33 records fit in 4000 bytes; the first request is stuck at the gate.
	for i := range 33 {
		p.Produce(context.Background(), Record{Value: val}, col.cb(i))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	start := time.Now()
	var blockedErr error
	p.Produce(ctx, Record{Value: val}, func(r Result) { blockedErr = r.Err })
	cancel()
	if !errors.Is(blockedErr, context.DeadlineExceeded) || time.Since(start) < 90*time.Millisecond {
		t.Fatalf("Produce over MaxBufferedBytes returned after %v with %v, want a block until the deadline", time.Since(start), blockedErr)
	}
	// A blocked Produce resumes when the buffered records are acknowledged.
	done := make(chan Result, 1)
	go p.Produce(context.Background(), Record{Value: val}, func(r Result) { done <- r })
	select {
	case <-done:
		t.Fatal("Produce did not block")
	case <-time.After(50 * time.Millisecond):
	}
	openGate()
	select {
	case r := <-done:
		if r.Err != nil {
			t.Fatal(r.Err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Produce still blocked after the buffer drained")
	}
	if err := p.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if col.len() != 33 || len(col.errs()) > 0 || g.appended.Load() != 34 {
		t.Fatalf("%d callbacks, errors %v, %d appended", col.len(), col.errs(), g.appended.Load())
	}
}

func TestRetryResourceExhausted(t *testing.T) {
	g := newFakeGateway("t", 1)
	g.beforeAppend = func(n int64, _ *streamhousev1.ProduceRequest) error {
		if n <= 2 {
			err := connect.NewError(connect.CodeResourceExhausted, errors.New("shedding load"))
			err.Meta().Set("Retry-After", "0.15")
			return err
		}
		return nil
	}
	srv := serveFake(t, g, "127.0.0.1:0")
	c := newTestClient(t, srv.URL)
	p := newProducer(t, c, Linger(time.Millisecond))
	start := time.Now()
	var col collector
	for i := range 100 {
		p.Produce(context.Background(), Record{Value: value(i)}, col.cb(i))
	}
	if err := p.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el < 300*time.Millisecond {
		t.Fatalf("done after %v: Retry-After (2 x 150ms) not honoured", el)
	}
	if errs := col.errs(); len(errs) > 0 {
		t.Fatal(errs[0])
	}
	if calls, app := g.produceCalls.Load(), g.appended.Load(); calls != 3 || app != 100 {
		t.Fatalf("%d requests, %d records appended; want 3 and 100 (written once)", calls, app)
	}
	for i, r := range col.res {
		if r.Offset != int64(i) {
			t.Fatalf("record %d at offset %d", i, r.Offset)
		}
	}
}

func TestRetryUnavailableGivesUp(t *testing.T) {
	g := newFakeGateway("t", 1)
	g.beforeAppend = func(int64, *streamhousev1.ProduceRequest) error {
		return rpcerr.NotApplied(connect.CodeUnavailable, errors.New("no agent holds the partition"))
	}
	srv := serveFake(t, g, "127.0.0.1:0")
	c := newTestClient(t, srv.URL)
	p := newProducer(t, c, Linger(0), RetryBackoff(5*time.Millisecond, 20*time.Millisecond), MaxRetryDuration(300*time.Millisecond))
	res := p.ProduceSync(context.Background(), Record{Value: []byte("x")})
	if res.Err == nil || errors.Is(res.Err, ErrUnknownOutcome) || connect.CodeOf(res.Err) != connect.CodeUnavailable {
		t.Fatalf("got %v, want a known-not-written Unavailable error", res.Err)
	}
	if calls := g.produceCalls.Load(); calls < 3 {
		t.Fatalf("%d attempts, want several", calls)
	}
	if g.appended.Load() != 0 {
		t.Fatal("appended")
	}
}

func TestNoRetryOnAmbiguousError(t *testing.T) {
	g := newFakeGateway("t", 1)
	g.afterAppend = func(n int64, _ *streamhousev1.ProduceRequest) {
		if n == 1 {
			// The records are in the log; the client only sees the stream
			// reset (a transport error, no server answer).
			panic(http.ErrAbortHandler)
		}
	}
	srv := serveFake(t, g, "127.0.0.1:0")
	c := newTestClient(t, srv.URL)
	p := newProducer(t, c, Linger(5*time.Millisecond))
	var col collector
	for i := range 10 {
		p.Produce(context.Background(), Record{Value: value(i)}, col.cb(i))
	}
	if err := p.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	errs := col.errs()
	if len(errs) != 10 {
		t.Fatalf("%d failed records, want 10: %v", len(errs), col.res)
	}
	for _, err := range errs {
		var uo *UnknownOutcomeError
		if !errors.Is(err, ErrUnknownOutcome) || !errors.As(err, &uo) || uo.Records != 10 {
			t.Fatalf("error %v (%T), want an UnknownOutcomeError", err, err)
		}
	}
	if calls, app := g.produceCalls.Load(), g.appended.Load(); calls != 1 || app != 10 {
		t.Fatalf("%d requests, %d appended: want 1 and 10 (no retry)", calls, app)
	}
	t.Logf("reported: %v", errs[0])
	// The producer keeps working.
	if res := p.ProduceSync(context.Background(), Record{Value: []byte("x")}); res.Err != nil || res.Offset != 10 {
		t.Fatalf("next produce: %+v", res)
	}
}

func TestNoRetryOnServerInternal(t *testing.T) {
	g := newFakeGateway("t", 1)
	g.beforeAppend = func(int64, *streamhousev1.ProduceRequest) error {
		return connect.NewError(connect.CodeDeadlineExceeded, errors.New("acks wait timed out"))
	}
	srv := serveFake(t, g, "127.0.0.1:0")
	c := newTestClient(t, srv.URL)
	p := newProducer(t, c, Linger(0))
	res := p.ProduceSync(context.Background(), Record{Value: []byte("x")})
	if !errors.Is(res.Err, ErrUnknownOutcome) || g.produceCalls.Load() != 1 {
		t.Fatalf("got %v after %d requests, want unknown outcome after 1", res.Err, g.produceCalls.Load())
	}
}

func TestRequestTimeoutIsUnknownOutcome(t *testing.T) {
	g := newFakeGateway("t", 1)
	release := make(chan struct{})
	g.afterAppend = func(int64, *streamhousev1.ProduceRequest) { <-release }
	srv := serveFake(t, g, "127.0.0.1:0")
	t.Cleanup(func() { close(release) })
	c := newTestClient(t, srv.URL)
	p := newProducer(t, c, Linger(0), RequestTimeout(100*time.Millisecond))
	res := p.ProduceSync(context.Background(), Record{Value: []byte("x")})
	if !errors.Is(res.Err, ErrUnknownOutcome) || g.produceCalls.Load() != 1 {
		t.Fatalf("got %v after %d requests, want unknown outcome after 1", res.Err, g.produceCalls.Load())
	}
}

func TestRetryConnectionRefused(t *testing.T) {
	g := newFakeGateway("t", 2)
	srv := serveFake(t, g, "127.0.0.1:0")
	addr := srv.Listener.Addr().String()
	c := newTestClient(t, srv.URL)
	p := newProducer(t, c, Linger(time.Millisecond), RetryBackoff(20*time.Millisecond, 100*time.Millisecond))
	// The gateway goes away: the next requests cannot connect.
	srv.Close()
	time.Sleep(20 * time.Millisecond)
	c.Close() // drop the dead connection
	var col collector
	for i := range 50 {
		p.Produce(context.Background(), Record{Key: []byte{byte(i)}, Value: value(i)}, col.cb(i))
	}
	time.Sleep(200 * time.Millisecond)
	if col.len() != 0 {
		t.Fatalf("records completed while the gateway was down: %v", col.res)
	}
	if g.produceCalls.Load() != 0 {
		t.Fatal("requests reached the closed gateway")
	}
	// It comes back on the same address.
	serveFake(t, g, addr)
	if err := p.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if errs := col.errs(); len(errs) > 0 {
		t.Fatal(errs[0])
	}
	if app := g.appended.Load(); app != 50 || col.len() != 50 {
		t.Fatalf("appended %d, %d callbacks; want 50 each", app, col.len())
	}
}

func TestInvalidArgumentFailsAtOnce(t *testing.T) {
	g := newFakeGateway("t", 1)
	g.beforeAppend = func(int64, *streamhousev1.ProduceRequest) error {
		return connect.NewError(connect.CodeInvalidArgument, errors.New("bad batch"))
	}
	srv := serveFake(t, g, "127.0.0.1:0")
	c := newTestClient(t, srv.URL)
	p := newProducer(t, c, Linger(0))
	start := time.Now()
	res := p.ProduceSync(context.Background(), Record{Value: []byte("x")})
	if connect.CodeOf(res.Err) != connect.CodeInvalidArgument || errors.Is(res.Err, ErrUnknownOutcome) {
		t.Fatalf("got %v, want InvalidArgument", res.Err)
	}
	if g.produceCalls.Load() != 1 || time.Since(start) > time.Second {
		t.Fatalf("%d requests in %v, want 1 at once", g.produceCalls.Load(), time.Since(start))
	}
	if res.Offset != -1 || res.Partition != 0 {
		t.Fatalf("result %+v", res)
	}
}

func TestRecordTooLarge(t *testing.T) {
	g := newFakeGateway("t", 1)
	g.maxRecordBytes = 100
	srv := serveFake(t, g, "127.0.0.1:0")
	c := newTestClient(t, srv.URL)
	p := newProducer(t, c)
	res := p.ProduceSync(context.Background(), Record{Value: make([]byte, 101)})
	if !errors.Is(res.Err, ErrRecordTooLarge) {
		t.Fatalf("got %v", res.Err)
	}
	if g.produceCalls.Load() != 0 {
		t.Fatal("sent")
	}
}

func TestClassifyProduceError(t *testing.T) {
	wire := func(c connect.Code) error { return connect.NewWireError(c, errors.New("x")) }
	marked := func(c connect.Code) error {
		e := connect.NewWireError(c, errors.New("x"))
		e.Meta().Set(rpcerr.NotAppliedKey, "true")
		return e
	}
	refused := connect.NewError(connect.CodeUnavailable, fmt.Errorf("dial: %w", &refusedErr{}))
	for _, tc := range []struct {
		name string
		err  error
		want outcome
	}{
		{"wire ResourceExhausted", wire(connect.CodeResourceExhausted), outcomeRetry},
		{"wire Unavailable, not applied", marked(connect.CodeUnavailable), outcomeRetry},
		{"wire FailedPrecondition, not applied", marked(connect.CodeFailedPrecondition), outcomeRetry},
		{"wire Unavailable (a proxy's 503)", wire(connect.CodeUnavailable), outcomeUnknown},
		{"wire FailedPrecondition, unmarked", wire(connect.CodeFailedPrecondition), outcomeUnknown},
		{"client Unavailable", connect.NewError(connect.CodeUnavailable, errors.New("reset")), outcomeUnknown},
		{"client ResourceExhausted", connect.NewError(connect.CodeResourceExhausted, errors.New("ENHANCE_YOUR_CALM")), outcomeUnknown},
		{"connection refused", refused, outcomeRetry},
		{"wire InvalidArgument", wire(connect.CodeInvalidArgument), outcomeRejected},
		{"wire NotFound", wire(connect.CodeNotFound), outcomeRejected},
		{"wire Internal", wire(connect.CodeInternal), outcomeUnknown},
		{"wire DeadlineExceeded", wire(connect.CodeDeadlineExceeded), outcomeUnknown},
		{"client DeadlineExceeded", connect.NewError(connect.CodeDeadlineExceeded, context.DeadlineExceeded), outcomeUnknown},
		{"plain error", errors.New("?"), outcomeUnknown},
	} {
		if got, _ := classifyProduceError(tc.err); got != tc.want {
			t.Errorf("%s: got %d, want %d", tc.name, got, tc.want)
		}
	}
	ce := connect.NewWireError(connect.CodeResourceExhausted, errors.New("x"))
	for v, want := range map[string]time.Duration{"": 0, "2": 2 * time.Second, "0.25": 250 * time.Millisecond, "junk": 0, "-1": 0} {
		ce.Meta().Set("Retry-After", v)
		if got := retryAfter(ce); got != want {
			t.Errorf("Retry-After %q: %v, want %v", v, got, want)
		}
	}
	ce.Meta().Set("Retry-After", time.Now().Add(10*time.Second).UTC().Format(http.TimeFormat))
	if got := retryAfter(ce); got < 8*time.Second || got > 10*time.Second {
		t.Errorf("Retry-After date: %v", got)
	}
	b := backoff{base: 50 * time.Millisecond, max: 2 * time.Second}
	for attempt := range 40 {
		if d := b.delay(attempt); d < 0 || d > 2*time.Second || (attempt == 0 && d > 50*time.Millisecond) {
			t.Fatalf("delay(%d) = %v", attempt, d)
		}
	}
}

// refusedErr unwraps to ECONNREFUSED like a real dial error.
type refusedErr struct{}

func (*refusedErr) Error() string { return "connect: connection refused" }
func (*refusedErr) Unwrap() error { return syscall.ECONNREFUSED }

func TestUnknownOutcomeErrorMessage(t *testing.T) {
	err := &UnknownOutcomeError{Topic: "t", Partition: 3, Records: 7, Err: errors.New("boom")}
	if !strings.Contains(err.Error(), "may or may not have been written") || !errors.Is(err, ErrUnknownOutcome) {
		t.Fatal(err)
	}
}

// Concurrent producers share one Producer safely.
func TestConcurrentProduce(t *testing.T) {
	g, c := startFake(t, 4)
	p := newProducer(t, c, Linger(2*time.Millisecond), BatchBytes(16<<10))
	var ok atomic.Int64
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 2000 {
				var key []byte
				if i%2 == 0 {
					key = []byte{byte(w), byte(i)}
				}
				p.Produce(context.Background(), Record{Key: key, Value: value(i)}, func(r Result) {
					if r.Err == nil {
						ok.Add(1)
					}
				})
			}
		}()
	}
	wg.Wait()
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if ok.Load() != 16000 || g.appended.Load() != 16000 {
		t.Fatalf("%d ok, %d appended", ok.Load(), g.appended.Load())
	}
}
