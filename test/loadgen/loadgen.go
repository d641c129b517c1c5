// Package loadgen runs producers through the Go SDK (pkg/client) and
// records what they were told: every acknowledged record (producer,
// sequence, value, partition, offset) in a checker.History, every failed
// record with its error, and running counts of both. The end-to-end,
// consumer-group and runbook tests drive their clusters with it, and the
// history it keeps is what the checker proves the log against (no
// acknowledged record lost, duplicated or reordered).
//
// It does not depend on package testing: Start and Load's methods return
// errors, so a benchmark or a tool can use it too. StartT is the thin
// wrapper for tests.
//
// Every goroutine a Load starts has returned when Stop (or Wait) returns,
// and so has every produce callback: a goleak check after Stop stays green.
package loadgen

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/pkg/client"
	"github.com/streamhouse/streamhouse/test/checker"
)

// DefaultTick is the pacing interval of a rate-limited load.
const DefaultTick = 10 * time.Millisecond

// maxFailures bounds the failures a Load keeps with their errors: a load
// refused for seconds fails records by the hundred thousand, and the first
// ones say what happened. Every failure is still counted, and recorded in the
// history.
const maxFailures = 1000

// Config describes a load. Topic is required; every other field has a
// usable zero value.
type Config struct {
	// Topic is the topic every producer writes to.
	Topic string
	// Producers is the number of producers (default 1). Producer i uses
	// Start's clients[i % len(clients)], so producers spread evenly over
	// gateways.
	Producers int
	// FirstID is the id of the first producer; the others follow. Ids name
	// producers in the history and in the default values, so loads that
	// share a value space (one topic, or one history) need disjoint ids.
	FirstID int
	// Value returns the value of producer id's seq-th record (seq counts
	// from 0). It must be unique across the history for the checker to
	// identify records. Default: fmt.Sprintf("p%d-%07d", id, seq).
	Value func(id, seq int) []byte
	// Pad appends Pad bytes to every value sent, after Value's: for loads
	// measured in bytes, whose history should not hold every byte sent.
	// The history (and the default key) use the value without them, so a
	// reader strips the last Pad bytes of each value before checking.
	Pad int
	// Keyless sends records without a key (sticky partitioning). Default:
	// the key is the value, so a record's partition follows from its value.
	Keyless bool
	// Key, when set (and Keyless is not), returns the key of producer id's
	// seq-th record instead of its value: for loads whose keys repeat, as
	// real keys do. Called from producer id's goroutine only.
	Key func(id, seq int) []byte
	// Rate is the records per second of each producer, sent in bursts of
	// Rate*Tick records every Tick. Zero: as fast as the producer accepts
	// them (Produce blocks while its buffer is full).
	Rate int
	// Tick is the pacing interval when Rate is set (default DefaultTick).
	Tick time.Duration
	// Records is how many records each producer sends before it stops by
	// itself (see Done and Wait). Zero: until Stop.
	Records int
	// Acks is the durability to wait for; ACKS_UNSPECIFIED leaves the
	// producer's default (the topic's durability) or Options' choice.
	Acks v1.Acks
	// Options are passed to every NewProducer, after Acks.
	Options []client.ProducerOption
	// CountOnly keeps counts and failures but no history of acknowledged
	// records: for loads too large to remember (millions of records) or
	// measured for throughput, where the bookkeeping would cost memory and
	// time. History then returns nil.
	CountOnly bool
}

// Failure is one record whose produce returned an error. Unless
// errors.Is(Err, client.ErrUnknownOutcome), it was not written; with that
// error it may have been.
type Failure struct {
	Producer int
	Seq      int
	Value    string
	Err      error
	At       time.Time // when the callback reported it
}

// Load is producers writing to one topic until Stop, or until each has sent
// Config.Records. Its methods are safe for concurrent use.
type Load struct {
	cfg  Config
	ctx  context.Context
	h    *checker.History
	stop chan struct{}
	done chan struct{} // closed when every producer goroutine has returned

	pad []byte // Config.Pad bytes appended to every value

	acked, failed atomic.Int64
	perProducer   []atomic.Int64 // acked records by producer index

	wg        sync.WaitGroup // producer goroutines
	callbacks sync.WaitGroup // produce calls whose callback has not run

	mu       sync.Mutex
	failures []Failure
	errs     []error // flush and close errors

	stopOnce sync.Once
}

// Start creates cfg.Producers producers on clients (round robin) and starts
// them. Records are produced with ctx: it bounds each producer's wait for
// buffer space and its final flush, and the producers stop when it ends.
// If creating any producer fails, those already created are closed and the
// error is returned.
func Start(ctx context.Context, clients []*client.Client, cfg Config) (*Load, error) {
	if cfg.Topic == "" {
		return nil, errors.New("loadgen: no topic")
	}
	if len(clients) == 0 {
		return nil, errors.New("loadgen: no client")
	}
	if cfg.Producers <= 0 {
		cfg.Producers = 1
	}
	if cfg.Tick <= 0 {
		cfg.Tick = DefaultTick
	}
	if cfg.Rate < 0 || cfg.Records < 0 || cfg.Pad < 0 {
		return nil, fmt.Errorf("loadgen: negative rate %d, record count %d or pad %d", cfg.Rate, cfg.Records, cfg.Pad)
	}
	if cfg.Value == nil {
		cfg.Value = func(id, seq int) []byte { return fmt.Appendf(nil, "p%d-%07d", id, seq) }
	}
	opts := cfg.Options
	if cfg.Acks != v1.Acks_ACKS_UNSPECIFIED {
		opts = append([]client.ProducerOption{client.Acks(cfg.Acks)}, opts...)
	}
	prods := make([]*client.Producer, 0, cfg.Producers)
	for i := range cfg.Producers {
		p, err := clients[i%len(clients)].NewProducer(cfg.Topic, opts...)
		if err != nil {
			for _, p := range prods {
				p.Close()
			}
			return nil, fmt.Errorf("loadgen: producer %d of %q: %w", cfg.FirstID+i, cfg.Topic, err)
		}
		prods = append(prods, p)
	}
	l := &Load{cfg: cfg, ctx: ctx, stop: make(chan struct{}), done: make(chan struct{}),
		perProducer: make([]atomic.Int64, cfg.Producers), pad: bytes.Repeat([]byte{'.'}, cfg.Pad)}
	if !cfg.CountOnly {
		l.h = checker.NewHistory()
	}
	for i, p := range prods {
		l.wg.Add(1)
		go l.run(i, p)
	}
	go func() {
		l.wg.Wait()
		close(l.done)
	}()
	return l, nil
}

// run is producer i's loop: produce, paced if asked, until Stop, ctx's end
// or Records; then flush and close the producer.
func (l *Load) run(i int, p *client.Producer) {
	defer l.wg.Done()
	id := l.cfg.FirstID + i
	var tick <-chan time.Time
	burst := 0
	if l.cfg.Rate > 0 {
		t := time.NewTicker(l.cfg.Tick)
		defer t.Stop()
		tick = t.C
		burst = max(1, int(float64(l.cfg.Rate)*l.cfg.Tick.Seconds()))
	}
	for seq := 0; l.cfg.Records == 0 || seq < l.cfg.Records; seq++ {
		if tick != nil && seq%burst == 0 {
			select { // the next burst, unless stopped first (checked below)
			case <-tick:
			case <-l.stop:
			case <-l.ctx.Done():
			}
		}
		select {
		case <-l.stop:
			l.finish(id, p)
			return
		case <-l.ctx.Done():
			l.finish(id, p)
			return
		default:
		}
		l.produce(i, id, seq, p)
	}
	l.finish(id, p)
}

// produce sends one record and records its outcome from the callback.
func (l *Load) produce(i, id, seq int, p *client.Producer) {
	v := l.cfg.Value(id, seq)
	rec := client.Record{Value: v}
	if l.cfg.Pad > 0 {
		rec.Value = append(append(make([]byte, 0, len(v)+l.cfg.Pad), v...), l.pad...)
	}
	switch {
	case l.cfg.Keyless:
	case l.cfg.Key != nil:
		rec.Key = l.cfg.Key(id, seq)
	default:
		rec.Key = v
	}
	l.callbacks.Add(1)
	p.Produce(l.ctx, rec, func(r client.Result) {
		defer l.callbacks.Done()
		if r.Err != nil {
			l.failed.Add(1)
			if l.h != nil {
				l.h.Failed(string(v))
			}
			l.mu.Lock()
			if len(l.failures) < maxFailures {
				l.failures = append(l.failures, Failure{Producer: id, Seq: seq, Value: string(v), Err: r.Err, At: time.Now()})
			}
			l.mu.Unlock()
			return
		}
		l.acked.Add(1)
		l.perProducer[i].Add(1)
		if l.h != nil {
			l.h.Acked(checker.Ack{Producer: id, Seq: seq, Value: string(v), Partition: r.Partition, Offset: r.Offset})
		}
	})
}

// finish flushes and closes a producer, keeping any error for Stop.
func (l *Load) finish(id int, p *client.Producer) {
	var errs []error
	if err := p.Flush(l.ctx); err != nil {
		errs = append(errs, fmt.Errorf("loadgen: producer %d: %w", id, err))
	}
	// Close waits for the callbacks of everything still in flight (a flush
	// cut short by ctx leaves some).
	if err := p.Close(); err != nil && len(errs) == 0 {
		errs = append(errs, fmt.Errorf("loadgen: producer %d: close: %w", id, err))
	}
	if len(errs) > 0 {
		l.mu.Lock()
		l.errs = append(l.errs, errs...)
		l.mu.Unlock()
	}
}

// Stop stops the producers, flushes and closes them, and returns once
// every record's callback has run: the counts, history and failures are
// then final. It returns the flush and close errors (records that failed
// are Failures, not errors). Stop may be called more than once and from
// several goroutines; each call waits and returns the same errors.
func (l *Load) Stop() error {
	l.stopOnce.Do(func() { close(l.stop) })
	// done, not wg: the goroutine that closes done must be gone too.
	<-l.done
	l.callbacks.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return errors.Join(l.errs...)
}

// Done is closed when every producer has stopped: after Stop, when ctx
// ends, or when each has sent Config.Records.
func (l *Load) Done() <-chan struct{} { return l.done }

// Wait waits until every producer has stopped by itself (Config.Records
// sent, or ctx ended), then returns what Stop returns. With Records zero it
// waits for ctx's end or another goroutine's Stop.
func (l *Load) Wait() error {
	<-l.done
	return l.Stop()
}

// Acked is how many records have been acknowledged so far.
func (l *Load) Acked() int64 { return l.acked.Load() }

// Failed is how many records have failed so far.
func (l *Load) Failed() int64 { return l.failed.Load() }

// AckedBy is how many records producer id has had acknowledged so far (0 for
// an id not in this load).
func (l *Load) AckedBy(id int) int64 {
	i := id - l.cfg.FirstID
	if i < 0 || i >= len(l.perProducer) {
		return 0
	}
	return l.perProducer[i].Load()
}

// Failures returns the first failed records (at most 1000) with their
// errors, in the order their callbacks reported them.
func (l *Load) Failures() []Failure {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Failure(nil), l.failures...)
}

// History is where the load records every acknowledged and failed record,
// for checker.History.Check after Stop. Tests may add their own records to
// it (probes) with ids outside the load's. Nil with Config.CountOnly.
func (l *Load) History() *checker.History { return l.h }

// WaitAcked blocks until at least n records are acknowledged in all, and
// returns an error if ctx ends or every producer stops first.
func (l *Load) WaitAcked(ctx context.Context, n int64) error {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for l.acked.Load() < n {
		select {
		case <-ctx.Done():
			return fmt.Errorf("loadgen: %d of %d records acknowledged (%d failed): %w", l.acked.Load(), n, l.failed.Load(), ctx.Err())
		case <-l.done:
			l.callbacks.Wait()
			if l.acked.Load() >= n {
				return nil
			}
			return fmt.Errorf("loadgen: producers stopped with %d of %d records acknowledged (%d failed)", l.acked.Load(), n, l.failed.Load())
		case <-t.C:
		}
	}
	return nil
}

// ReadAll reads partitions 0..partitions-1 of topic from offset 0 up to the
// high watermark each had when its read began, for a checker to hold
// against a History.
func ReadAll(ctx context.Context, sdk *client.Client, topic string, partitions int32) ([]checker.Read, error) {
	var reads []checker.Read
	for part := range partitions {
		r := sdk.NewReader(topic, part, 0, client.MaxWait(0))
		for {
			recs, err := r.Next(ctx)
			if err != nil {
				return reads, fmt.Errorf("read %s/%d at %d: %w", topic, part, r.Offset(), err)
			}
			for _, rec := range recs {
				reads = append(reads, checker.Read{Partition: part, Offset: rec.Offset, Value: string(rec.Value)})
			}
			if r.Offset() >= r.HighWatermark() {
				break
			}
		}
	}
	return reads, nil
}
