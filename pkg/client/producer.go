package client

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"connectrpc.com/connect"

	streamhousev1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/pkg/batch"
	"github.com/streamhouse/streamhouse/pkg/partition"
	"github.com/streamhouse/streamhouse/pkg/rpcerr"
)

// Record is one record to produce.
//
// The Producer keeps Key, Value and Headers (without copying them) until the
// record's callback has fired: do not modify them before.
type Record struct {
	// Key decides the partition (murmur2, as Kafka) unless Partition is set.
	// A nil key is keyless (sticky partitioning); an empty non-nil key is
	// hashed like any other key.
	Key   []byte
	Value []byte
	// Headers are Kafka record headers.
	Headers []batch.Header
	// Timestamp is the record's create time; zero means the time Produce is
	// called.
	Timestamp time.Time
	// Partition, when not nil, is the partition to write to, overriding the
	// key (for example Partition: new(int32(3))).
	Partition *int32
}

// Result is the outcome of producing one record.
type Result struct {
	// Partition the record was assigned to; -1 if it failed before being
	// assigned one.
	Partition int32
	// Offset of the record in its partition; -1 on error.
	Offset int64
	// Err is nil on success. errors.Is(Err, ErrUnknownOutcome) means the
	// record may or may not have been written; any other error means it was
	// not written.
	Err error
}

// Producer defaults. Their Kafka producer equivalents are noted with each
// option.
const (
	DefaultLinger                  = 5 * time.Millisecond
	DefaultBatchBytes              = 1 << 20
	DefaultMaxInFlightPerPartition = 1
	DefaultMaxRequestBytes         = 1 << 20
	DefaultMaxInFlightRequests     = 16
	DefaultMaxBufferedBytes        = 64 << 20
	DefaultRequestTimeout          = 30 * time.Second
	DefaultRetryBackoffBase        = 50 * time.Millisecond
	DefaultRetryBackoffMax         = 2 * time.Second
	DefaultMaxRetryDuration        = 30 * time.Second
)

type producerConfig struct {
	linger           time.Duration
	batchBytes       int
	maxInFlight      int
	maxRequestBytes  int
	maxRequests      int
	acks             streamhousev1.Acks
	codec            batch.Codec
	maxBuffered      int64
	requestTimeout   time.Duration
	backoff          backoff
	maxRetryDuration time.Duration
}

// ProducerOption configures a Producer.
type ProducerOption func(*producerConfig)

// Linger is how long a partition's batch waits at most for more records
// before it is sent (Kafka linger.ms). Default 5 ms. The producer keeps one
// linger clock for all partitions: every batch opened since the last tick is
// sent at the next one, together, so a batch waits between 0 and Linger. A batch that is full is sent at once;
// while a partition's request is in flight its next batch keeps filling
// whatever the linger.
func Linger(d time.Duration) ProducerOption {
	return func(c *producerConfig) { c.linger = max(d, 0) }
}

// BatchBytes is the largest batch, in estimated uncompressed bytes, sent in
// one request (Kafka batch.size). Default 1 MiB; it is lowered to the topic's
// max_batch_bytes when that is smaller. A single record larger than this is
// sent alone.
func BatchBytes(n int) ProducerOption {
	return func(c *producerConfig) {
		if n > 0 {
			c.batchBytes = n
		}
	}
}

// MaxInFlightPerPartition is how many requests per partition may be in
// flight at once (Kafka max.in.flight.requests.per.connection). Default 1,
// which keeps each partition's records in Produce order. With more than one,
// a batch that is retried can land after a later batch: offsets are then no
// longer in Produce order (callbacks still fire in Produce order).
func MaxInFlightPerPartition(n int) ProducerOption {
	return func(c *producerConfig) {
		if n > 0 {
			c.maxInFlight = n
		}
	}
}

// MaxRequestBytes bounds one produce request (Kafka max.request.size):
// the producer packs the ready batches of many partitions into one request
// up to this many estimated bytes. Default 1 MiB. A single batch larger than
// this is sent alone.
func MaxRequestBytes(n int) ProducerOption {
	return func(c *producerConfig) {
		if n > 0 {
			c.maxRequestBytes = n
		}
	}
}

// MaxInFlightRequests is how many produce requests may be in flight at once
// over the producer's connection (Kafka
// max.in.flight.requests.per.connection). Default 16. Each request carries
// the ready batches of many partitions, so requests per second follow load
// and linger, not the partition count. With durable acks a request waits
// for the next flush (about the agent's 250 ms flush interval), so
// throughput is bounded by MaxInFlightRequests x MaxRequestBytes per flush
// interval, and a batch that finds every request slot taken waits for one:
// that is why the default is above Kafka's 5 (whose acks take
// milliseconds). The order of each partition's records is kept by
// MaxInFlightPerPartition, not by this.
func MaxInFlightRequests(n int) ProducerOption {
	return func(c *producerConfig) {
		if n > 0 {
			c.maxRequests = n
		}
	}
}

// Acks is the durability to wait for (Kafka acks). Default
// ACKS_UNSPECIFIED: the topic's durability.
func Acks(a streamhousev1.Acks) ProducerOption {
	return func(c *producerConfig) { c.acks = a }
}

// Codec compresses batches (Kafka compression.type). Default none.
func Codec(codec batch.Codec) ProducerOption {
	return func(c *producerConfig) { c.codec = codec }
}

// MaxBufferedBytes bounds the estimated bytes of records produced but not yet
// acknowledged (Kafka buffer.memory). Default 64 MiB. When it is reached,
// Produce blocks until space frees up or its context ends (Kafka's
// max.block.ms is the context's deadline).
func MaxBufferedBytes(n int64) ProducerOption {
	return func(c *producerConfig) {
		if n > 0 {
			c.maxBuffered = n
		}
	}
}

// RequestTimeout bounds one produce request, including the server's wait for
// acks (Kafka request.timeout.ms). Default 30 s. A request that times out
// fails its records with an UnknownOutcomeError.
func RequestTimeout(d time.Duration) ProducerOption {
	return func(c *producerConfig) {
		if d > 0 {
			c.requestTimeout = d
		}
	}
}

// RetryBackoff sets the exponential backoff between retries (Kafka
// retry.backoff.ms and retry.backoff.max.ms): the n-th retry waits a random
// duration in [0, min(max, base*2^n)] (full jitter). Defaults 50 ms and 2 s.
func RetryBackoff(base, maxDelay time.Duration) ProducerOption {
	return func(c *producerConfig) {
		if base > 0 {
			c.backoff.base = base
		}
		if maxDelay > 0 {
			c.backoff.max = maxDelay
		}
	}
}

// MaxRetryDuration is how long a batch is retried, from its first attempt,
// before its records fail (Kafka delivery.timeout.ms, roughly). Default 30 s.
func MaxRetryDuration(d time.Duration) ProducerOption {
	return func(c *producerConfig) {
		if d > 0 {
			c.maxRetryDuration = d
		}
	}
}

// Producer batches records per partition (each batch one pre-encoded
// RecordBatch v2) and sends the ready batches of many partitions together,
// one request holding up to MaxRequestBytes, at most MaxInFlightRequests
// requests at once. It is safe for concurrent use.
type Producer struct {
	c          *Client
	topic      string
	nparts     int32
	cfg        producerConfig
	maxRecord  int // topic's max_record_bytes, 0 when unknown
	batchBytes int // effective batch size

	mu          sync.Mutex
	parts       []*partState
	sticky      int32 // partition of keyless records
	stickyBytes int   // estimated bytes of keyless records sent to sticky since it was chosen
	buffered    int64
	spaceCh     chan struct{} // closed and replaced when buffered bytes are released
	closed      bool
	readyParts  []*partState // partitions that may have a batch to send, in the order they became ready
	requests    int          // produce requests in flight
	lingering   []*partState // partitions whose open batch waits for the next linger tick
	tickArmed   bool         // a linger tick is scheduled

	wg sync.WaitGroup // send goroutines
}

// partState is one partition's queue. Fields other than deliverMu and id are
// guarded by Producer.mu.
type partState struct {
	id       int32
	open     *pbatch   // accumulating
	queue    []*pbatch // full, waiting to be sent
	inflight []*pbatch // sent, in send order, until their callbacks fired
	sending  int       // batches in flight
	lastLen  int       // records in the last batch, to size the next one
	queued   bool      // in Producer.readyParts

	deliverMu sync.Mutex // serialises callback delivery
}

// pbatch is one batch of one partition.
type pbatch struct {
	part     *partState
	recs     []batch.Record
	cbs      []func(Result)
	bytes    int           // estimated encoded size
	ready    bool          // linger elapsed or flush requested
	done     chan struct{} // closed after the callbacks fired
	finished bool
	base     int64
	err      error
}

// NewProducer returns a Producer for topic. It fetches the topic's partition
// count and limits with AdminService.DescribeTopic; an unknown topic is an
// error (Connect code NotFound). The partition count is not refreshed.
func (c *Client) NewProducer(topic string, opts ...ProducerOption) (*Producer, error) {
	cfg := producerConfig{
		linger:           DefaultLinger,
		batchBytes:       DefaultBatchBytes,
		maxInFlight:      DefaultMaxInFlightPerPartition,
		maxRequestBytes:  DefaultMaxRequestBytes,
		maxRequests:      DefaultMaxInFlightRequests,
		maxBuffered:      DefaultMaxBufferedBytes,
		requestTimeout:   DefaultRequestTimeout,
		backoff:          backoff{base: DefaultRetryBackoffBase, max: DefaultRetryBackoffMax},
		maxRetryDuration: DefaultMaxRetryDuration,
	}
	for _, o := range opts {
		o(&cfg)
	}
	if !cfg.codec.Valid() {
		return nil, fmt.Errorf("client: unsupported codec %d", int8(cfg.codec))
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.requestTimeout)
	defer cancel()
	desc, err := c.describeTopic(ctx, topic)
	if err != nil {
		return nil, err
	}
	ti := desc.GetTopic()
	n := ti.GetPartitions()
	if n <= 0 {
		return nil, fmt.Errorf("client: topic %q has %d partitions", topic, n)
	}
	p := &Producer{
		c:          c,
		topic:      topic,
		nparts:     n,
		cfg:        cfg,
		maxRecord:  int(ti.GetMaxRecordBytes()),
		batchBytes: cfg.batchBytes,
		parts:      make([]*partState, n),
		sticky:     rand.Int32N(n),
		spaceCh:    make(chan struct{}),
	}
	if mb := int(ti.GetMaxBatchBytes()); mb > 0 && mb < p.batchBytes {
		p.batchBytes = mb
	}
	for i := range p.parts {
		p.parts[i] = &partState{id: int32(i)}
	}
	return p, nil
}

// Topic returns the producer's topic.
func (p *Producer) Topic() string { return p.topic }

// Partitions returns the topic's partition count as fetched by NewProducer.
func (p *Producer) Partitions() int32 { return p.nparts }

// Produce adds r to its partition's batch and returns; cb (which may be nil)
// is called once with the outcome. ctx only bounds the wait for buffer space
// (see MaxBufferedBytes): once Produce returns, the record is sent whatever
// happens to ctx.
//
// cb runs on a producer goroutine, or synchronously inside Produce when the
// record fails before being buffered (closed producer, ctx done, record too
// large, bad partition). Callbacks of one partition run one at a time in
// Produce order; keep them short, and do not call Flush or Close from them
// (Produce from a callback blocks while the buffer is full).
func (p *Producer) Produce(ctx context.Context, r Record, cb func(Result)) {
	if cb == nil {
		cb = func(Result) {}
	}
	fail := func(part int32, err error) { cb(Result{Partition: part, Offset: -1, Err: err}) }
	size := recordSize(&r)
	if p.maxRecord > 0 {
		if n := len(r.Key) + len(r.Value) + headersSize(r.Headers); n > p.maxRecord {
			fail(-1, fmt.Errorf("%w: %d bytes, topic %q accepts %d", ErrRecordTooLarge, n, p.topic, p.maxRecord))
			return
		}
	}
	if int64(size) > p.cfg.maxBuffered {
		fail(-1, fmt.Errorf("%w: %d bytes exceed MaxBufferedBytes %d", ErrRecordTooLarge, size, p.cfg.maxBuffered))
		return
	}
	if r.Partition != nil && (*r.Partition < 0 || *r.Partition >= p.nparts) {
		fail(*r.Partition, fmt.Errorf("%w: %d, topic %q has %d partitions", ErrBadPartition, *r.Partition, p.topic, p.nparts))
		return
	}
	var ts int64
	if r.Timestamp.IsZero() {
		ts = time.Now().UnixMilli()
	} else {
		ts = r.Timestamp.UnixMilli()
	}
	rec := batch.Record{Timestamp: ts, Key: r.Key, Value: r.Value, Headers: r.Headers}

	p.mu.Lock()
	for {
		if p.closed {
			p.mu.Unlock()
			fail(-1, ErrClosed)
			return
		}
		if p.buffered+int64(size) <= p.cfg.maxBuffered {
			break
		}
		ch := p.spaceCh
		p.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			fail(-1, fmt.Errorf("client: waiting for buffer space: %w", ctx.Err()))
			return
		}
		p.mu.Lock()
	}
	p.buffered += int64(size)

	var ps *partState
	switch {
	case r.Partition != nil:
		ps = p.parts[*r.Partition]
	case r.Key != nil:
		ps = p.parts[partition.ForKey(r.Key, p.nparts)]
	default:
		ps = p.parts[p.sticky]
		p.stickyBytes += size
		if p.stickyBytes >= p.batchBytes {
			p.moveStickyLocked()
		}
	}
	b := ps.open
	if b != nil && b.bytes+size > p.batchBytes {
		p.sealLocked(ps)
		b = nil
	}
	if b == nil {
		// Size the batch like the partition's previous one: growing slices
		// of thousands of records record by record costs more than encoding.
		hint := min(max(ps.lastLen, 16), 1<<16)
		b = &pbatch{part: ps, bytes: batch.HeaderSize, done: make(chan struct{}),
			recs: make([]batch.Record, 0, hint), cbs: make([]func(Result), 0, hint)}
		ps.open = b
		if p.cfg.linger == 0 {
			b.ready = true
		} else {
			p.lingering = append(p.lingering, ps)
			if !p.tickArmed {
				p.tickArmed = true
				time.AfterFunc(p.cfg.linger, p.lingerTick)
			}
		}
	}
	b.recs = append(b.recs, rec)
	b.cbs = append(b.cbs, cb)
	b.bytes += size
	if b.bytes >= p.batchBytes {
		p.sealLocked(ps)
	}
	p.pumpLocked(ps)
	p.mu.Unlock()
}

// ProduceSync produces r and waits for its outcome or for ctx to end. It
// waits for the linger like any record; use Produce for throughput.
func (p *Producer) ProduceSync(ctx context.Context, r Record) Result {
	ch := make(chan Result, 1)
	p.Produce(ctx, r, func(res Result) { ch <- res })
	select {
	case res := <-ch:
		return res
	case <-ctx.Done():
		return Result{Partition: -1, Offset: -1, Err: fmt.Errorf("client: waiting for produce result: %w", ctx.Err())}
	}
}

// Flush sends every buffered record now and waits until the callbacks of all
// records produced before the call have fired, or until ctx ends.
func (p *Producer) Flush(ctx context.Context) error {
	var waits []chan struct{}
	p.mu.Lock()
	for _, ps := range p.parts {
		if ps.open != nil {
			ps.open.ready = true
			waits = append(waits, ps.open.done)
		}
		for _, b := range ps.queue {
			waits = append(waits, b.done)
		}
		for _, b := range ps.inflight {
			waits = append(waits, b.done)
		}
		p.queueLocked(ps)
	}
	p.dispatchLocked() // once all are queued, so requests carry many partitions
	p.mu.Unlock()
	for _, ch := range waits {
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("client: flush: %w", ctx.Err())
		}
	}
	return nil
}

// Close flushes, waits for every callback and stops the producer. Records
// produced after Close starts fail with ErrClosed. It waits as long as the
// outstanding requests take: at most about RequestTimeout plus
// MaxRetryDuration.
func (p *Producer) Close() error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	err := p.Flush(context.Background())
	p.wg.Wait()
	return err
}

// lingerTick marks every batch opened since the last tick ready and sends
// them. One tick per Linger for the whole producer, rather than a timer per
// batch, makes the batches of many partitions ready at the same moment, so
// they leave in one request: with per-batch timers, 1,000 partitions'
// batches each became ready at their own instant and went out in as many
// small requests as there were free request slots. A batch still waits at
// most Linger (Kafka linger.ms is an upper bound too).
func (p *Producer) lingerTick() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.tickArmed = false
	for _, ps := range p.lingering {
		if ps.open != nil {
			ps.open.ready = true
			p.queueLocked(ps)
		}
	}
	clear(p.lingering)
	p.lingering = p.lingering[:0]
	p.dispatchLocked()
}

// sealLocked moves ps's open batch to its send queue.
func (p *Producer) sealLocked(ps *partState) {
	b := ps.open
	if b == nil {
		return
	}
	ps.open = nil
	ps.queue = append(ps.queue, b)
}

// moveStickyLocked moves keyless records on to another partition, chosen at
// random. It is called once a batch's worth of bytes (BatchBytes) went to
// the current one, whatever the batches were: Kafka's uniform sticky
// partitioner (KIP-794). Moving whenever a batch is sent instead (KIP-480)
// sprays one-record requests over idle partitions when the linger is short,
// which costs a request's CPU per record on both sides.
func (p *Producer) moveStickyLocked() {
	p.stickyBytes = 0
	if p.nparts == 1 {
		return
	}
	next := rand.Int32N(p.nparts - 1)
	if next >= p.sticky {
		next++
	}
	p.sticky = next
}

// pumpLocked notes that ps may have a batch to send and starts requests.
func (p *Producer) pumpLocked(ps *partState) {
	p.queueLocked(ps)
	p.dispatchLocked()
}

// queueLocked adds ps to the partitions with a batch to send, if it has
// one and may send it.
func (p *Producer) queueLocked(ps *partState) {
	if !ps.queued && ps.sending < p.cfg.maxInFlight && (len(ps.queue) > 0 || (ps.open != nil && ps.open.ready)) {
		ps.queued = true
		p.readyParts = append(p.readyParts, ps)
	}
}

// takeLocked removes and returns ps's next batch to send, or nil.
func (p *Producer) takeLocked(ps *partState) *pbatch {
	if ps.sending >= p.cfg.maxInFlight {
		return nil
	}
	var b *pbatch
	switch {
	case len(ps.queue) > 0:
		b = ps.queue[0]
		ps.queue[0] = nil
		ps.queue = ps.queue[1:]
	case ps.open != nil && ps.open.ready:
		b = ps.open
		ps.open = nil
	default:
		return nil
	}
	ps.sending++
	ps.lastLen = len(b.recs)
	ps.inflight = append(ps.inflight, b)
	return b
}

// dispatchLocked starts requests while fewer than MaxInFlightRequests are
// in flight and some partition has a batch ready: each request takes one
// batch from each ready partition, in the order they became ready, up to
// MaxRequestBytes (as Kafka's sender drains every ready partition of a
// broker into one request).
func (p *Producer) dispatchLocked() {
	for p.requests < p.cfg.maxRequests && len(p.readyParts) > 0 {
		var batches []*pbatch
		size := 0
		rest := p.readyParts[:0]
		for i, ps := range p.readyParts {
			if size >= p.cfg.maxRequestBytes {
				rest = append(rest, p.readyParts[i:]...)
				break
			}
			if len(batches) > 0 && ps.sending < p.cfg.maxInFlight && size+p.nextBytesLocked(ps) > p.cfg.maxRequestBytes {
				rest = append(rest, ps) // next request
				continue
			}
			b := p.takeLocked(ps)
			ps.queued = false
			if b == nil {
				continue
			}
			batches = append(batches, b)
			size += b.bytes
			if ps.sending < p.cfg.maxInFlight && (len(ps.queue) > 0 || (ps.open != nil && ps.open.ready)) {
				ps.queued = true
				rest = append(rest, ps)
			}
		}
		clear(p.readyParts[len(rest):])
		p.readyParts = rest
		if len(batches) == 0 {
			return
		}
		p.requests++
		p.wg.Add(1)
		go p.send(batches)
	}
}

// nextBytesLocked is the estimated size of ps's next batch to send.
func (p *Producer) nextBytesLocked(ps *partState) int {
	if len(ps.queue) > 0 {
		return ps.queue[0].bytes
	}
	if ps.open != nil {
		return ps.open.bytes
	}
	return 0
}

// send encodes batches, sends them in one request (retrying the entries
// that provably were not appended) and delivers each batch's outcome.
func (p *Producer) send(batches []*pbatch) {
	defer p.wg.Done()
	entries := make([]*streamhousev1.ProduceBatch, 0, len(batches))
	pending := make([]*pbatch, 0, len(batches))
	var failed []batchOutcome
	for _, b := range batches {
		payload, err := batch.Encode(b.recs, batch.EncodeOptions{Codec: p.cfg.codec})
		if err != nil {
			failed = append(failed, batchOutcome{b, -1, fmt.Errorf("client: encode batch: %w", err)})
			continue
		}
		entries = append(entries, &streamhousev1.ProduceBatch{Topic: p.topic, Partition: b.part.id, Batch: payload})
		pending = append(pending, b)
	}
	p.finishAll(failed)
	p.produceEntries(pending, entries)
	p.mu.Lock()
	p.requests--
	p.dispatchLocked()
	p.mu.Unlock()
}

// batchOutcome is one batch's result, for finishAll.
type batchOutcome struct {
	b    *pbatch
	base int64
	err  error
}

// produceEntries sends entries (the encoded batches) in one request and
// retries, in a new request after a backoff, only the entries the server
// refused without writing them, until MaxRetryDuration. Every batch ends
// finished.
func (p *Producer) produceEntries(batches []*pbatch, entries []*streamhousev1.ProduceBatch) {
	start := time.Now()
	for attempt := 0; len(batches) > 0; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), p.cfg.requestTimeout)
		resp, err := p.c.produce.Produce(ctx, connect.NewRequest(&streamhousev1.ProduceRequest{Batches: entries, Acks: p.cfg.acks}))
		cancel()
		var retryB []*pbatch
		var retryE []*streamhousev1.ProduceBatch
		var hint time.Duration
		var lastErr error
		done := make([]batchOutcome, 0, len(batches))
		for i, b := range batches {
			entryErr := err
			var res *streamhousev1.PartitionResult
			if err == nil {
				res, entryErr = resultFor(resp.Msg, i, b.part.id)
			}
			if entryErr == nil {
				base, cerr := p.checkCount(res, b)
				done = append(done, batchOutcome{b, base, cerr})
				continue
			}
			var kind outcome
			var h time.Duration
			switch {
			case err != nil:
				kind, h = classifyProduceError(err)
			case res == nil: // the answer does not match the request
				kind = outcomeUnknown
			default:
				kind, h = classifyRefusal(rpcerr.FromEntry(res.GetError()))
			}
			switch kind {
			case outcomeRejected:
				done = append(done, batchOutcome{b, -1, fmt.Errorf("client: produce to %s/%d: %w", p.topic, b.part.id, entryErr)})
			case outcomeUnknown:
				done = append(done, batchOutcome{b, -1, &UnknownOutcomeError{Topic: p.topic, Partition: b.part.id, Records: len(b.recs), Err: entryErr}})
			default:
				retryB, retryE = append(retryB, b), append(retryE, entries[i])
				hint, lastErr = max(hint, h), entryErr
			}
		}
		p.finishAll(done)
		if len(retryB) == 0 {
			return
		}
		wait := max(p.cfg.backoff.delay(attempt), hint)
		if time.Since(start)+wait > p.cfg.maxRetryDuration {
			done = done[:0]
			for _, b := range retryB {
				done = append(done, batchOutcome{b, -1, fmt.Errorf("client: produce to %s/%d: giving up after %d attempts in %v: %w",
					p.topic, b.part.id, attempt+1, time.Since(start).Round(time.Millisecond), lastErr)})
			}
			p.finishAll(done)
			return
		}
		time.Sleep(wait)
		batches, entries = retryB, retryE
	}
}

// resultFor returns entry i's result (for partition part) from resp, or
// the entry's error: its own error, or an unknown outcome when the answer
// does not match the request.
func resultFor(resp *streamhousev1.ProduceResponse, i int, part int32) (*streamhousev1.PartitionResult, error) {
	res := resp.GetResults()
	if i >= len(res) || res[i].GetPartition() != part {
		return nil, errors.New("response has no result for the partition")
	}
	if e := res[i].GetError(); e != nil {
		return res[i], rpcerr.FromEntry(e)
	}
	return res[i], nil
}

// checkCount returns the batch's base offset, or an unknown outcome when
// the server reports another record count than was sent.
func (p *Producer) checkCount(r *streamhousev1.PartitionResult, b *pbatch) (int64, error) {
	if int(r.GetRecordCount()) != len(b.recs) {
		return -1, &UnknownOutcomeError{Topic: p.topic, Partition: b.part.id, Records: len(b.recs),
			Err: fmt.Errorf("server reports %d records written, sent %d", r.GetRecordCount(), len(b.recs))}
	}
	return r.GetBaseOffset(), nil
}

// finishAll records the outcomes, frees their buffer space and their
// partitions' in-flight slots under one lock (a request may carry a
// thousand batches: one lock and one wake-up of blocked Produce calls for
// all), then delivers the callbacks of each partition's finished prefix of
// in-flight batches.
func (p *Producer) finishAll(outs []batchOutcome) {
	if len(outs) == 0 {
		return
	}
	p.mu.Lock()
	for _, o := range outs {
		o.b.finished, o.b.base, o.b.err = true, o.base, o.err
		o.b.part.sending--
		p.buffered -= int64(o.b.bytes - batch.HeaderSize)
		p.queueLocked(o.b.part)
	}
	close(p.spaceCh)
	p.spaceCh = make(chan struct{})
	p.dispatchLocked()
	p.mu.Unlock()
	for _, o := range outs {
		p.deliver(o.b.part)
	}
}

// deliver runs the callbacks of ps's finished prefix of in-flight batches,
// so that callbacks fire in send order even when requests complete out of
// order.
func (p *Producer) deliver(ps *partState) {
	ps.deliverMu.Lock()
	defer ps.deliverMu.Unlock()
	p.mu.Lock()
	n := 0
	for n < len(ps.inflight) && ps.inflight[n].finished {
		n++
	}
	if n == 0 {
		p.mu.Unlock()
		return
	}
	ready := make([]*pbatch, n)
	copy(ready, ps.inflight[:n])
	clear(ps.inflight[:n])
	ps.inflight = ps.inflight[n:]
	p.mu.Unlock()
	for _, d := range ready {
		for i, cb := range d.cbs {
			res := Result{Partition: ps.id, Offset: -1, Err: d.err}
			if d.err == nil {
				res.Offset = d.base + int64(i)
			}
			cb(res)
		}
		d.recs, d.cbs = nil, nil
		close(d.done)
	}
}

// recordSize estimates the encoded size of a record in a batch, erring high.
func recordSize(r *Record) int {
	n := 5 + 1 + 5 + 5 // length, attributes, timestamp delta, offset delta
	n += bytesSize(r.Key) + bytesSize(r.Value) + varintSize(len(r.Headers))
	for i := range r.Headers {
		n += varintSize(len(r.Headers[i].Key)) + len(r.Headers[i].Key) + bytesSize(r.Headers[i].Value)
	}
	return n
}

func bytesSize(b []byte) int { return varintSize(len(b)) + len(b) }

func varintSize(n int) int {
	u := uint64(n) << 1 // zigzag of a non-negative value
	s := 1
	for u >= 0x80 {
		u >>= 7
		s++
	}
	return s
}

func headersSize(hs []batch.Header) int {
	n := 0
	for i := range hs {
		n += len(hs[i].Key) + len(hs[i].Value)
	}
	return n
}
