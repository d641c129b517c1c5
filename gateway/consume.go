package gateway

import (
	"context"
	"errors"
	"io"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/api/gen/streamhouse/v1/streamhousev1connect"
	"github.com/streamhouse/streamhouse/pkg/batch"
)

type consumeService struct{ g *Gateway }

// fetchMaxBytes validates and defaults a request's max_bytes.
func fetchMaxBytes(n int32) (int32, error) {
	switch {
	case n < 0:
		return 0, invalid("max_bytes must be 0 (the default, %d) or positive, got %d", DefaultFetchMaxBytes, n)
	case n == 0:
		return DefaultFetchMaxBytes, nil
	case n > MaxFetchMaxBytes:
		return MaxFetchMaxBytes, nil
	}
	return n, nil
}

// Fetch reads one partition from the holder of its lease.
func (s consumeService) Fetch(ctx context.Context, req *connect.Request[v1.FetchRequest]) (*connect.Response[v1.FetchResponse], error) {
	g := s.g
	m := req.Msg
	if err := validateTopic(m.GetTopic()); err != nil {
		return nil, err
	}
	// A negative offset is below every start offset: the agent answers
	// OutOfRange with the valid range, as for any offset out of range.
	maxBytes, err := fetchMaxBytes(m.GetMaxBytes())
	if err != nil {
		return nil, err
	}
	if w := m.GetMaxWaitMs(); w < 0 || w > MaxFetchWaitMs {
		return nil, invalid("max_wait_ms must be between 0 and %d, got %d", MaxFetchWaitMs, w)
	}
	rt, err := g.routes.get(ctx, m.GetTopic())
	if err != nil {
		return nil, err
	}
	if err := rt.checkPartition(m.GetPartition()); err != nil {
		return nil, err
	}
	rr, err := g.read(ctx, rt, m.GetPartition(), m.GetOffset(), maxBytes, m.GetMaxWaitMs(), m.GetLastEpoch())
	if err != nil {
		g.log.DebugContext(ctx, "fetch failed", "topic", m.GetTopic(), "partition", m.GetPartition(), "offset", m.GetOffset(), "err", err)
		return nil, err
	}
	out := &v1.FetchResponse{
		HighWatermark: rr.GetHighWatermark(),
		StartOffset:   rr.GetStartOffset(),
		NextOffset:    rr.GetNextOffset(),
	}
	if m.GetRaw() {
		out.Batches = rr.GetBatches()
	} else {
		out.Records, out.NextOffset, err = decodeRead(rr, m.GetOffset())
		if err != nil {
			return nil, err
		}
	}
	g.log.DebugContext(ctx, "fetch", "topic", m.GetTopic(), "partition", m.GetPartition(), "offset", m.GetOffset(), "next", out.NextOffset)
	return connect.NewResponse(out), nil
}

// read calls Read on the agent holding partition p.
func (g *Gateway) read(ctx context.Context, rt *topicRoutes, p int32, offset int64, maxBytes, maxWaitMs, lastEpoch int32) (*v1.ReadResponse, error) {
	var out *v1.ReadResponse
	err := g.onAgent(ctx, rt, p, func(agent streamhousev1connect.AgentServiceClient) error {
		res, err := agent.Read(ctx, connect.NewRequest(&v1.ReadRequest{
			Topic:     rt.info.GetName(),
			Partition: p,
			Offset:    offset,
			MaxBytes:  maxBytes,
			MaxWaitMs: maxWaitMs,
			LastEpoch: lastEpoch,
		}))
		if err != nil {
			return err
		}
		out = res.Msg
		return nil
	})
	return out, err
}

// decodeRead decodes the batches of a Read answer into records at or after
// from and below the high watermark, and returns the offset to read next.
// Control batches (transaction markers) are skipped. Corrupt bytes from the
// agent yield DataLoss.
func decodeRead(rr *v1.ReadResponse, from int64) ([]*v1.Record, int64, error) {
	hwm := rr.GetHighWatermark()
	next := max(rr.GetNextOffset(), from)
	past := false // some record was at or past the high watermark
	var out []*v1.Record
	b := rr.GetBatches()
	for len(b) > 0 && !past {
		meta, one, rest, err := batch.Next(b)
		if err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return nil, 0, connect.NewError(connect.CodeDataLoss, errorf("agent returned an unreadable batch after offset %d: %v", from, err))
		}
		b = rest
		if meta.IsControl() {
			continue
		}
		recs, _, err := batch.Decode(one)
		if err != nil {
			return nil, 0, connect.NewError(connect.CodeDataLoss, errorf("agent returned a corrupt batch at offset %d: %v", meta.BaseOffset, err))
		}
		for _, r := range recs {
			if r.Offset < from {
				continue
			}
			if r.Offset >= hwm {
				past = true
				break
			}
			out = append(out, toProto(r))
		}
	}
	if n := len(out); n > 0 {
		last := out[n-1].GetOffset() + 1
		if past || next < last {
			next = last
		}
	} else if past {
		next = from
	}
	return out, next, nil
}

func toProto(r batch.Record) *v1.Record {
	out := &v1.Record{
		Key:       r.Key,
		Value:     r.Value,
		Offset:    r.Offset,
		Timestamp: timestamppb.New(time.UnixMilli(r.Timestamp)),
	}
	if len(r.Headers) > 0 {
		out.Headers = make([]*v1.Header, len(r.Headers))
		for i, h := range r.Headers {
			out.Headers[i] = &v1.Header{Key: h.Key, Value: h.Value}
		}
	}
	return out
}

// Subscribe tails one partition: it long-polls the partition's agent and
// streams each non-empty answer, until the client goes away (which ends the
// stream without error) or a read fails (which ends it with that error).
func (s consumeService) Subscribe(ctx context.Context, req *connect.Request[v1.SubscribeRequest], stream *connect.ServerStream[v1.SubscribeResponse]) error {
	g := s.g
	m := req.Msg
	if err := validateTopic(m.GetTopic()); err != nil {
		return err
	}
	if m.GetOffset() < -2 {
		return invalid("offset must be >= 0, -1 (the high watermark) or -2 (the start offset), got %d", m.GetOffset())
	}
	maxBytes, err := fetchMaxBytes(m.GetMaxBytes())
	if err != nil {
		return err
	}
	topic, p := m.GetTopic(), m.GetPartition()
	rt, err := g.routes.get(ctx, topic)
	if err != nil {
		return err
	}
	if err := rt.checkPartition(p); err != nil {
		return err
	}
	offset := m.GetOffset()
	if offset < 0 {
		if offset, err = g.resolveOffset(ctx, topic, p, offset); err != nil {
			return err
		}
	}
	g.log.DebugContext(ctx, "subscribe", "topic", topic, "partition", p, "offset", offset)
	// Send the response headers now: clients wait for them before the
	// first record, which may be a long time coming.
	if err := stream.Send(nil); err != nil {
		return nil // the client went away
	}
	err = g.subscribe(ctx, topic, p, offset, maxBytes, stream)
	if ctx.Err() != nil {
		err = nil // the client went away: a normal end
	}
	g.log.DebugContext(ctx, "subscribe ended", "topic", topic, "partition", p, "err", err)
	return err
}

func (g *Gateway) subscribe(ctx context.Context, topic string, p int32, offset int64, maxBytes int32, stream *connect.ServerStream[v1.SubscribeResponse]) error {
	const idle = 100 * time.Millisecond
	for ctx.Err() == nil {
		rt, err := g.routes.get(ctx, topic)
		if err != nil {
			return err
		}
		began := time.Now()
		rr, err := g.read(ctx, rt, p, offset, maxBytes, SubscribeWaitMs, 0)
		if err != nil {
			return err
		}
		recs, next, err := decodeRead(rr, offset)
		if err != nil {
			return err
		}
		if len(recs) > 0 {
			if err := stream.Send(&v1.SubscribeResponse{Records: recs, HighWatermark: rr.GetHighWatermark(), NextOffset: next}); err != nil {
				return err
			}
		} else if next == offset && time.Since(began) < time.Second {
			// The agent answered early with nothing: do not spin.
			t := time.NewTimer(idle)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-t.C:
			}
		}
		offset = next
	}
	return nil
}

// resolveOffset turns -1 into the partition's high watermark and -2 into its
// start offset, as the controller reports them.
func (g *Gateway) resolveOffset(ctx context.Context, topic string, p int32, offset int64) (int64, error) {
	res, err := g.cfg.Admin.DescribeTopic(ctx, connect.NewRequest(&v1.DescribeTopicRequest{Name: topic}))
	if err != nil {
		return 0, upstream(err)
	}
	for _, pi := range res.Msg.GetPartitions() {
		if pi.GetPartition() != p {
			continue
		}
		if offset == -1 {
			return pi.GetHighWatermark(), nil
		}
		return pi.GetStartOffset(), nil
	}
	return 0, unavailable("topic %q has no state for partition %d yet; retry", topic, p)
}
