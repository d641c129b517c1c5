package client

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"connectrpc.com/connect"

	streamhousev1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/pkg/batch"
	"github.com/streamhouse/streamhouse/pkg/rpcerr"
)

// DefaultFetchMaxBytes is a MultiReader's limit of one whole fetch response
// (Kafka's fetch.max.bytes) unless FetchMaxBytes says otherwise.
const DefaultFetchMaxBytes = 50 << 20

// FetchMinBytes makes each MultiReader fetch wait (up to MaxWait) until at
// least n bytes are ready over all its partitions (Kafka's
// fetch.min.bytes). Default 1: answer as soon as any partition has data.
// A Reader ignores it.
func FetchMinBytes(n int32) ReaderOption {
	return func(c *readerConfig) {
		if n > 0 {
			c.minBytes = n
		}
	}
}

// FetchMaxBytes is the soft limit of one MultiReader fetch response over all
// its partitions (Kafka's fetch.max.bytes); MaxBytes still limits each
// partition. At least one batch is returned when there is one. Default
// DefaultFetchMaxBytes. A Reader ignores it.
func FetchMaxBytes(n int32) ReaderOption {
	return func(c *readerConfig) {
		if n > 0 {
			c.fetchMaxBytes = n
		}
	}
}

// FetchedPartition is one partition's share of a MultiReader.Next: its new
// records, in offset order, or the error its fetch got.
type FetchedPartition struct {
	Topic     string
	Partition int32
	// Records alias the fetched bytes and stay valid.
	Records []batch.Record
	// HighWatermark is the partition's high watermark as of this fetch (-1
	// when Err is set and no fetch answered yet).
	HighWatermark int64
	// Err is the partition's error: a *TruncatedError (the reader has moved
	// to its Offset), or a refusal retrying cannot fix by itself (OutOfRange,
	// NotFound, InvalidArgument, ...; match it with connect.CodeOf). The
	// other partitions are not affected.
	Err error
}

// MultiReader reads many partitions, of one or more topics, with ONE
// FetchPartitions request per Next (Kafka's Fetch): a consumer of 1,000
// partitions has one long-poll in flight, not 1,000. It is not safe for
// concurrent use.
//
// Each partition keeps its own position, as a Reader's. A partition's
// failure is its own: a transient one (Unavailable, ResourceExhausted,
// Aborted) is retried with backoff without being reported, any other is
// reported in its FetchedPartition and retried with backoff too (so a
// caller that ignores it sees it again, as a Reader's caller would); while
// a partition backs off the others are fetched. After each fetch the
// partitions that returned data move to the end of the request, so under
// FetchMaxBytes every partition gets its turn.
type MultiReader struct {
	c     *Client
	cfg   readerConfig
	order []*multiPart // the request order, rotated after each fetch
	parts map[TopicPartition]*multiPart
}

type multiPart struct {
	tp        TopicPartition
	offset    int64
	hwm       int64
	lastEpoch int32
	failures  int       // consecutive failed fetches
	retryAt   time.Time // not fetched before then
}

// NewMultiReader returns a MultiReader of the partitions of starts, each
// from its offset: an absolute offset, or OffsetStart or OffsetEnd
// (resolved by the first Next). ReaderOptions apply as to a Reader, MaxBytes
// to each partition; FetchMinBytes and FetchMaxBytes to each fetch as a
// whole.
func (c *Client) NewMultiReader(starts map[TopicPartition]int64, opts ...ReaderOption) *MultiReader {
	cfg := readerConfig{
		maxBytes:       DefaultReaderMaxBytes,
		maxWait:        DefaultReaderMaxWait,
		requestTimeout: DefaultRequestTimeout,
		minBytes:       1,
		fetchMaxBytes:  DefaultFetchMaxBytes,
		backoff:        backoff{base: DefaultRetryBackoffBase, max: DefaultRetryBackoffMax},
	}
	for _, o := range opts {
		o(&cfg)
	}
	r := &MultiReader{c: c, cfg: cfg, parts: map[TopicPartition]*multiPart{}}
	for _, tp := range sortTPs(slices.Collect(maps.Keys(starts))) {
		r.Add(tp, starts[tp])
	}
	return r
}

// Add starts reading tp from offset (absolute, OffsetStart or OffsetEnd),
// or moves tp there if it is already read (a seek).
func (r *MultiReader) Add(tp TopicPartition, offset int64) {
	if p, ok := r.parts[tp]; ok {
		p.offset, p.lastEpoch, p.failures, p.retryAt = offset, 0, 0, time.Time{}
		return
	}
	p := &multiPart{tp: tp, offset: offset, hwm: -1}
	r.parts[tp] = p
	r.order = append(r.order, p)
}

// Remove stops reading tp.
func (r *MultiReader) Remove(tp TopicPartition) {
	if _, ok := r.parts[tp]; !ok {
		return
	}
	delete(r.parts, tp)
	r.order = slices.DeleteFunc(r.order, func(p *multiPart) bool { return p.tp == tp })
}

// Partitions returns the partitions read, sorted.
func (r *MultiReader) Partitions() []TopicPartition {
	return sortTPs(slices.Collect(maps.Keys(r.parts)))
}

// Offset returns the offset of the next record Next returns for tp
// (negative until an OffsetStart or OffsetEnd start is resolved); false
// when tp is not read.
func (r *MultiReader) Offset(tp TopicPartition) (int64, bool) {
	p, ok := r.parts[tp]
	if !ok {
		return 0, false
	}
	return p.offset, true
}

// HighWatermark returns tp's high watermark as of the last fetch that
// answered it; -1 before that or when tp is not read.
func (r *MultiReader) HighWatermark(tp TopicPartition) int64 {
	if p, ok := r.parts[tp]; ok {
		return p.hwm
	}
	return -1
}

// Next fetches the partitions with one FetchPartitions request and returns,
// for each partition that has new records or an error, its share; the
// positions advance past the records returned. It long-polls up to MaxWait
// when every partition has caught up and returns an empty slice when
// nothing arrived meanwhile. Transient errors of the whole request
// (Unavailable, ResourceExhausted, connection failures) are retried with
// backoff until ctx ends; other errors of the whole request are returned,
// and positions do not move. Next with no partitions returns an error.
func (r *MultiReader) Next(ctx context.Context) ([]FetchedPartition, error) {
	if len(r.order) == 0 {
		return nil, fmt.Errorf("client: multi-reader has no partitions to read")
	}
	var out []FetchedPartition
	r.resolveStarts(ctx, &out)
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("client: multi-reader: %w", err)
	}
	for {
		asked, wake := r.ready(time.Now())
		if len(asked) == 0 {
			if len(out) > 0 {
				return out, nil
			}
			if err := sleepCtx(ctx, time.Until(wake)); err != nil {
				return nil, fmt.Errorf("client: multi-reader: %w", err)
			}
			r.resolveStarts(ctx, &out)
			continue
		}
		resp, err := r.fetch(ctx, asked)
		if err != nil {
			return nil, err
		}
		got, advanced := r.apply(asked, resp.GetPartitions())
		out = append(out, got...)
		if len(out) > 0 || !advanced {
			return out, nil
		}
		// Only records below the positions (or gaps): fetch on.
	}
}

// ready returns the partitions to fetch now, in request order, or when the
// first partition backing off may be fetched again.
func (r *MultiReader) ready(now time.Time) ([]*multiPart, time.Time) {
	var asked []*multiPart
	var wake time.Time
	for _, p := range r.order {
		switch {
		case p.offset < 0:
			// Not resolved yet (its resolution is backing off).
			if wake.IsZero() || p.retryAt.Before(wake) {
				wake = p.retryAt
			}
		case p.retryAt.After(now):
			if wake.IsZero() || p.retryAt.Before(wake) {
				wake = p.retryAt
			}
		default:
			asked = append(asked, p)
		}
	}
	return asked, wake
}

// fail records a failed fetch of p: it backs off, and errors that are not
// transient are reported in out.
func (r *MultiReader) fail(p *multiPart, err error, out *[]FetchedPartition) {
	p.retryAt = time.Now().Add((backoff{base: 200 * time.Millisecond, max: 5 * time.Second}).delay(p.failures))
	p.failures++
	if ce, ok := errorsAsConnect(err); ok {
		switch ce.Code() {
		case connect.CodeUnavailable, connect.CodeResourceExhausted, connect.CodeAborted:
			if d := retryAfter(ce); d > 0 {
				p.retryAt = time.Now().Add(d)
			}
			return
		}
	}
	*out = append(*out, FetchedPartition{Topic: p.tp.Topic, Partition: p.tp.Partition, HighWatermark: p.hwm, Err: err})
}

// resolveStarts turns OffsetStart and OffsetEnd into absolute offsets, one
// DescribeTopic per topic; a partition that cannot be resolved fails (see
// fail) and is tried again after its backoff.
func (r *MultiReader) resolveStarts(ctx context.Context, out *[]FetchedPartition) {
	now := time.Now()
	byTopic := map[string][]*multiPart{}
	var topics []string
	for _, p := range r.order {
		if p.offset >= 0 || p.retryAt.After(now) {
			continue
		}
		if _, ok := byTopic[p.tp.Topic]; !ok {
			topics = append(topics, p.tp.Topic)
		}
		byTopic[p.tp.Topic] = append(byTopic[p.tp.Topic], p)
	}
	for _, topic := range topics {
		parts := byTopic[topic]
		desc, err := r.c.describeTopic(ctx, topic)
		if ctx.Err() != nil {
			return
		}
		info := map[int32]*streamhousev1.PartitionInfo{}
		for _, pi := range desc.GetPartitions() {
			info[pi.GetPartition()] = pi
		}
		for _, p := range parts {
			pi := info[p.tp.Partition]
			switch {
			case p.offset != OffsetStart && p.offset != OffsetEnd:
				r.fail(p, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("client: multi-reader of %s: invalid start offset %d", p.tp, p.offset)), out)
			case err != nil:
				r.fail(p, err, out)
			case pi == nil:
				r.fail(p, connect.NewError(connect.CodeNotFound, fmt.Errorf("client: topic %q has no partition %d", topic, p.tp.Partition)), out)
			default:
				p.hwm, p.failures = pi.GetHighWatermark(), 0
				if p.offset == OffsetStart {
					p.offset = pi.GetStartOffset()
				} else {
					p.offset = pi.GetHighWatermark()
				}
			}
		}
	}
}

// fetch performs one FetchPartitions of asked, retrying transient errors
// of the whole request until ctx ends.
func (r *MultiReader) fetch(ctx context.Context, asked []*multiPart) (*streamhousev1.FetchPartitionsResponse, error) {
	req := &streamhousev1.FetchPartitionsRequest{
		Partitions: make([]*streamhousev1.FetchPartition, len(asked)),
		MaxWaitMs:  int32(r.cfg.maxWait / time.Millisecond),
		MinBytes:   r.cfg.minBytes,
		MaxBytes:   r.cfg.fetchMaxBytes,
		Raw:        true,
	}
	for i, p := range asked {
		req.Partitions[i] = &streamhousev1.FetchPartition{
			Topic: p.tp.Topic, Partition: p.tp.Partition, Offset: p.offset, MaxBytes: r.cfg.maxBytes, LastEpoch: p.lastEpoch,
		}
	}
	for attempt := 0; ; attempt++ {
		rctx, cancel := context.WithTimeout(ctx, r.cfg.maxWait+r.cfg.requestTimeout)
		resp, err := r.c.consume.FetchPartitions(rctx, connect.NewRequest(req))
		cancel()
		if err == nil {
			if got := len(resp.Msg.GetPartitions()); got != len(asked) {
				return nil, fmt.Errorf("client: fetch of %d partitions: the server answered %d", len(asked), got)
			}
			return resp.Msg, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("client: fetch of %d partitions: %w", len(asked), ctx.Err())
		}
		if !transientReadError(err) {
			return nil, fmt.Errorf("client: fetch of %d partitions: %w", len(asked), err)
		}
		d := r.cfg.backoff.delay(attempt)
		if ce, ok := errorsAsConnect(err); ok && connect.IsWireError(err) {
			d = max(d, retryAfter(ce))
		}
		if serr := sleepCtx(ctx, d); serr != nil {
			return nil, fmt.Errorf("client: fetch of %d partitions: %w (last error: %v)", len(asked), serr, err)
		}
	}
}

// apply takes a fetch's answers (res[i] is asked[i]'s): it decodes the
// records, advances the positions and rotates the partitions that returned
// data to the end of the request order. advanced reports whether any
// position moved.
func (r *MultiReader) apply(asked []*multiPart, res []*streamhousev1.PartitionRecords) (out []FetchedPartition, advanced bool) {
	served := map[*multiPart]bool{}
	for i, p := range asked {
		pr := res[i]
		if e := pr.GetError(); e != nil {
			err := error(rpcerr.FromEntry(e))
			if at, ok := truncatedAt(err); ok {
				p.offset, p.lastEpoch, p.failures = at, 0, 0
				out = append(out, FetchedPartition{Topic: p.tp.Topic, Partition: p.tp.Partition, HighWatermark: p.hwm,
					Err: &TruncatedError{Topic: p.tp.Topic, Partition: p.tp.Partition, Offset: at, Err: err}})
				continue
			}
			r.fail(p, fmt.Errorf("client: fetch %s at %d: %w", p.tp, p.offset, err), &out)
			continue
		}
		data := pr.GetBatches()
		recs := make([]batch.Record, 0, batch.CountRecords(data))
		next := p.offset
		err := batch.DecodeAll(data, func(rec batch.Record) error {
			if rec.Offset >= p.offset {
				recs = append(recs, rec)
				next = rec.Offset + 1
			}
			return nil
		})
		if err != nil {
			r.fail(p, connect.NewError(connect.CodeDataLoss, fmt.Errorf("client: fetch %s at %d: %w", p.tp, p.offset, err)), &out)
			continue
		}
		p.hwm, p.failures = pr.GetHighWatermark(), 0
		if e, ok := batch.LastLeaderEpoch(data); ok && len(recs) > 0 {
			p.lastEpoch = e
		}
		if n := max(next, pr.GetNextOffset()); n > p.offset {
			p.offset, advanced = n, true
		}
		if len(data) > 0 {
			served[p] = true
		}
		if len(recs) > 0 {
			out = append(out, FetchedPartition{Topic: p.tp.Topic, Partition: p.tp.Partition, Records: recs, HighWatermark: p.hwm})
		}
	}
	if len(served) > 0 {
		rest := make([]*multiPart, 0, len(r.order))
		for _, p := range r.order {
			if !served[p] {
				rest = append(rest, p)
			}
		}
		for _, p := range r.order {
			if served[p] {
				rest = append(rest, p)
			}
		}
		r.order = rest
	}
	return out, advanced
}
