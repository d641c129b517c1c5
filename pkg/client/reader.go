package client

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"connectrpc.com/connect"

	streamhousev1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/pkg/batch"
	"github.com/streamhouse/streamhouse/pkg/rpcerr"
)

// Special start offsets for NewReader.
const (
	// OffsetEnd starts reading at the partition's high watermark: only
	// records produced from now on.
	OffsetEnd int64 = -1
	// OffsetStart starts reading at the partition's first readable offset.
	OffsetStart int64 = -2
)

// Reader defaults.
const (
	DefaultReaderMaxBytes = 1 << 20
	DefaultReaderMaxWait  = 500 * time.Millisecond
)

type readerConfig struct {
	maxBytes       int32
	maxWait        time.Duration
	minBytes       int32 // MultiReader only (FetchMinBytes)
	fetchMaxBytes  int32 // MultiReader only (FetchMaxBytes)
	requestTimeout time.Duration
	backoff        backoff
}

// ReaderOption configures a Reader.
type ReaderOption func(*readerConfig)

// MaxBytes is the soft limit of one fetch response (Kafka
// max.partition.fetch.bytes); at least one batch is returned when there is
// one. Default 1 MiB.
func MaxBytes(n int32) ReaderOption {
	return func(c *readerConfig) {
		if n > 0 {
			c.maxBytes = n
		}
	}
}

// MaxWait is how long a fetch waits for data when the reader has caught up
// (Kafka fetch.max.wait.ms). Default 500 ms.
func MaxWait(d time.Duration) ReaderOption {
	return func(c *readerConfig) { c.maxWait = max(d, 0) }
}

// ReaderRequestTimeout bounds one fetch beyond MaxWait. Default 30 s.
func ReaderRequestTimeout(d time.Duration) ReaderOption {
	return func(c *readerConfig) {
		if d > 0 {
			c.requestTimeout = d
		}
	}
}

// Reader reads one partition sequentially. It is not safe for concurrent
// use.
type Reader struct {
	c         *Client
	topic     string
	partition int32
	cfg       readerConfig
	offset    int64
	hwm       int64
	// lastEpoch is the partition leader epoch of the last batch read from;
	// sent with each fetch so the server can report a truncation.
	lastEpoch int32
}

// TruncatedError reports that an unclean handoff of the partition (DESIGN.md,
// Unclean handoff) lost records this reader had already returned: the
// records it returned at and after Offset are gone, and those offsets now
// hold other records. The Reader has moved to Offset; the next Next reads
// from there.
type TruncatedError struct {
	Topic     string
	Partition int32
	Offset    int64
	Err       error
}

func (e *TruncatedError) Error() string {
	return fmt.Sprintf("client: %s/%d was truncated at offset %d by an unclean handoff; records read at and after it were lost: %v", e.Topic, e.Partition, e.Offset, e.Err)
}

func (e *TruncatedError) Unwrap() error { return e.Err }

// NewReader returns a Reader of topic's partition starting at offset, an
// absolute offset or OffsetStart or OffsetEnd (resolved by the first Next).
func (c *Client) NewReader(topic string, partition int32, offset int64, opts ...ReaderOption) *Reader {
	cfg := readerConfig{
		maxBytes:       DefaultReaderMaxBytes,
		maxWait:        DefaultReaderMaxWait,
		requestTimeout: DefaultRequestTimeout,
		backoff:        backoff{base: DefaultRetryBackoffBase, max: DefaultRetryBackoffMax},
	}
	for _, o := range opts {
		o(&cfg)
	}
	return &Reader{c: c, topic: topic, partition: partition, cfg: cfg, offset: offset, hwm: -1}
}

// Offset returns the offset of the next record Next returns (negative until
// an OffsetStart or OffsetEnd start is resolved).
func (r *Reader) Offset() int64 { return r.offset }

// HighWatermark returns the partition's high watermark as of the last fetch;
// -1 before the first.
func (r *Reader) HighWatermark() int64 { return r.hwm }

// Next returns the next records of the partition, in offset order, and
// advances past them. It long-polls up to MaxWait when the reader has caught
// up, and returns an empty slice when nothing arrived meanwhile. Transient
// errors (Unavailable, ResourceExhausted, connection failures) are retried
// with backoff until ctx ends; other errors (OutOfRange, NotFound, ...) are
// returned. Record slices alias the fetched bytes and stay valid.
func (r *Reader) Next(ctx context.Context) ([]batch.Record, error) {
	if r.offset < 0 {
		if err := r.resolveStart(ctx); err != nil {
			return nil, err
		}
	}
	for {
		resp, err := r.fetch(ctx)
		if err != nil {
			if at, ok := truncatedAt(err); ok {
				r.offset, r.lastEpoch = at, 0
				return nil, &TruncatedError{Topic: r.topic, Partition: r.partition, Offset: at, Err: err}
			}
			return nil, err
		}
		r.hwm = resp.GetHighWatermark()
		// Size the slice once: growing it by append from a small
		// capacity copied every record several times per 4 MiB fetch.
		recs := make([]batch.Record, 0, batch.CountRecords(resp.GetBatches()))
		next := r.offset
		err = batch.DecodeAll(resp.GetBatches(), func(rec batch.Record) error {
			if rec.Offset >= r.offset {
				recs = append(recs, rec)
				next = rec.Offset + 1
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("client: fetch %s/%d at %d: %w", r.topic, r.partition, r.offset, err)
		}
		if e, ok := batch.LastLeaderEpoch(resp.GetBatches()); ok && len(recs) > 0 {
			r.lastEpoch = e
		}
		advanced := next > r.offset || resp.GetNextOffset() > r.offset
		r.offset = max(next, resp.GetNextOffset())
		if len(recs) > 0 || !advanced || len(resp.GetBatches()) == 0 {
			return recs, nil
		}
		// Only records below the start offset (or gaps): fetch on.
	}
}

// fetch performs one Fetch, retrying transient errors until ctx ends.
func (r *Reader) fetch(ctx context.Context) (*streamhousev1.FetchResponse, error) {
	req := &streamhousev1.FetchRequest{
		Topic:     r.topic,
		Partition: r.partition,
		Offset:    r.offset,
		MaxBytes:  r.cfg.maxBytes,
		MaxWaitMs: int32(r.cfg.maxWait / time.Millisecond),
		Raw:       true,
		LastEpoch: r.lastEpoch,
	}
	for attempt := 0; ; attempt++ {
		rctx, cancel := context.WithTimeout(ctx, r.cfg.maxWait+r.cfg.requestTimeout)
		resp, err := r.c.consume.Fetch(rctx, connect.NewRequest(req))
		cancel()
		if err == nil {
			return resp.Msg, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("client: fetch %s/%d at %d: %w", r.topic, r.partition, r.offset, ctx.Err())
		}
		if !transientReadError(err) {
			return nil, fmt.Errorf("client: fetch %s/%d at %d: %w", r.topic, r.partition, r.offset, err)
		}
		d := r.cfg.backoff.delay(attempt)
		if ce, ok := errorsAsConnect(err); ok && connect.IsWireError(err) {
			d = max(d, retryAfter(ce))
		}
		if serr := sleepCtx(ctx, d); serr != nil {
			return nil, fmt.Errorf("client: fetch %s/%d at %d: %w (last error: %v)", r.topic, r.partition, r.offset, serr, err)
		}
	}
}

// resolveStart turns OffsetStart or OffsetEnd into an absolute offset.
func (r *Reader) resolveStart(ctx context.Context) error {
	if r.offset != OffsetStart && r.offset != OffsetEnd {
		return fmt.Errorf("client: reader of %s/%d: invalid start offset %d", r.topic, r.partition, r.offset)
	}
	for attempt := 0; ; attempt++ {
		desc, err := r.c.describeTopic(ctx, r.topic)
		if err == nil {
			for _, pi := range desc.GetPartitions() {
				if pi.GetPartition() != r.partition {
					continue
				}
				r.hwm = pi.GetHighWatermark()
				if r.offset == OffsetStart {
					r.offset = pi.GetStartOffset()
				} else {
					r.offset = pi.GetHighWatermark()
				}
				return nil
			}
			return fmt.Errorf("client: topic %q has no partition %d", r.topic, r.partition)
		}
		if ctx.Err() != nil || !transientReadError(err) {
			return err
		}
		if err := sleepCtx(ctx, r.cfg.backoff.delay(attempt)); err != nil {
			return err
		}
	}
}

// truncatedAt extracts the resume offset from a truncation error.
func truncatedAt(err error) (int64, bool) {
	ce, ok := errorsAsConnect(err)
	if !ok {
		return 0, false
	}
	v := ce.Meta().Get(rpcerr.TruncatedAtKey)
	if v == "" {
		return 0, false
	}
	at, perr := strconv.ParseInt(v, 10, 64)
	return at, perr == nil
}
