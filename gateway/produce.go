package gateway

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"connectrpc.com/connect"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/api/gen/streamhouse/v1/streamhousev1connect"
	"github.com/streamhouse/streamhouse/pkg/batch"
	"github.com/streamhouse/streamhouse/pkg/partition"
	"github.com/streamhouse/streamhouse/pkg/rpcerr"
	"github.com/streamhouse/streamhouse/pkg/telemetry/spans"
)

// Topic limits assumed when the routing metadata leaves them at 0 (the
// controller's defaults).
const (
	defaultMaxRecordBytes = 1 << 20
	defaultMaxBatchBytes  = 8 << 20
)

type produceService struct{ g *Gateway }

// Produce validates the whole request, places records on partitions, then
// appends one batch per partition on the partitions' agents, concurrently.
//
// A request spanning several partitions is not atomic: when one partition's
// append fails, Produce returns that error (the lowest failing partition's),
// but the other partitions may have been written.
func (s produceService) Produce(ctx context.Context, req *connect.Request[v1.ProduceRequest]) (*connect.Response[v1.ProduceResponse], error) {
	g := s.g
	m := req.Msg
	if err := validateTopic(m.GetTopic()); err != nil {
		return nil, err
	}
	hasRecords, hasBatch := len(m.GetRecords()) > 0, len(m.GetBatch()) > 0
	switch {
	case hasRecords && hasBatch:
		return nil, invalid("a produce request carries either records or batch, not both")
	case !hasRecords && !hasBatch:
		return nil, invalid("nothing to produce: set records (at least one) or batch")
	}
	switch m.GetAcks() {
	case v1.Acks_ACKS_UNSPECIFIED, v1.Acks_ACKS_DURABLE, v1.Acks_ACKS_WAL:
	default:
		return nil, invalid("unknown acks %d; use ACKS_DURABLE, ACKS_WAL or leave it unset for the topic's durability", m.GetAcks())
	}
	// gateway.route covers routing: the topic's routes (cached or asked
	// of the controller) and placing records on partitions; the produce
	// functions end it when the appends start.
	routeCtx, route := spans.Start(ctx, tracer, "gateway.route")
	defer route.End()
	if route.IsRecording() {
		route.SetAttributes(attribute.String("streamhouse.topic", m.GetTopic()), attribute.Bool("streamhouse.batch", hasBatch))
	}
	rt, err := g.routes.get(routeCtx, m.GetTopic())
	if err != nil {
		return nil, err
	}
	if m.Partition != nil {
		if err := rt.checkPartition(m.GetPartition()); err != nil {
			return nil, err
		}
	}
	var res *v1.ProduceResponse
	if hasBatch {
		res, err = g.produceBatch(ctx, rt, m, route)
	} else {
		res, err = g.produceRecords(ctx, rt, m, route)
	}
	if err != nil {
		g.log.DebugContext(ctx, "produce failed", "topic", m.GetTopic(), "err", err)
		return nil, err
	}
	g.log.DebugContext(ctx, "produce", "topic", m.GetTopic(), "partitions", len(res.Results), "batch", hasBatch)
	return connect.NewResponse(res), nil
}

func maxBatchBytes(info *v1.TopicInfo) int {
	if n := info.GetMaxBatchBytes(); n > 0 {
		return int(n)
	}
	return defaultMaxBatchBytes
}

func maxRecordBytes(info *v1.TopicInfo) int {
	if n := info.GetMaxRecordBytes(); n > 0 {
		return int(n)
	}
	return defaultMaxRecordBytes
}

// produceBatch is the SDK's hot path: the pre-encoded batch is checked (size,
// header, CRC) and forwarded unchanged; the agent assigns its base offset.
func (g *Gateway) produceBatch(ctx context.Context, rt *topicRoutes, m *v1.ProduceRequest, route trace.Span) (*v1.ProduceResponse, error) {
	if m.Partition == nil {
		return nil, invalid("a pre-encoded batch needs partition: set partition to the partition the batch is for")
	}
	b := m.GetBatch()
	if limit := maxBatchBytes(rt.info); len(b) > limit {
		return nil, invalid("batch is %d bytes; topic's max_batch_bytes is %d", len(b), limit)
	}
	if _, err := batch.Check(b); err != nil {
		return nil, invalid("batch rejected: %v", err)
	}
	p := m.GetPartition()
	route.End()
	res, err := g.appendTo(ctx, rt, p, b, m.GetAcks())
	if err != nil {
		return nil, err
	}
	return &v1.ProduceResponse{Results: []*v1.PartitionResult{res}}, nil
}

// recordSize is the size max_record_bytes limits: key, value and every
// header's key and value.
func recordSize(r *v1.Record) int {
	n := len(r.GetKey()) + len(r.GetValue())
	for _, h := range r.GetHeaders() {
		n += len(h.GetKey()) + len(h.GetValue())
	}
	return n
}

// produceRecords places, validates and encodes every record before anything
// is sent, then appends one batch per partition concurrently.
func (g *Gateway) produceRecords(ctx context.Context, rt *topicRoutes, m *v1.ProduceRequest, route trace.Span) (*v1.ProduceResponse, error) {
	parts := rt.info.GetPartitions()
	maxRec, maxBatch := maxRecordBytes(rt.info), maxBatchBytes(rt.info)
	now := time.Now().UnixMilli()
	keyless := int32(-1)
	groups := make(map[int32][]batch.Record)
	for i, r := range m.GetRecords() {
		if r == nil {
			return nil, invalid("record %d is null", i)
		}
		if n := recordSize(r); n > maxRec {
			return nil, invalid("record %d is %d bytes; topic's max_record_bytes is %d", i, n, maxRec)
		}
		ts := now
		if r.GetTimestamp() != nil {
			if err := r.GetTimestamp().CheckValid(); err != nil {
				return nil, invalid("record %d has an invalid timestamp: %v", i, err)
			}
			ts = r.GetTimestamp().AsTime().UnixMilli()
		}
		var p int32
		switch {
		case m.Partition != nil:
			p = m.GetPartition()
		case len(r.GetKey()) > 0:
			p = partition.ForKey(r.GetKey(), parts)
		default:
			if keyless < 0 {
				keyless = int32((g.rr.Add(1) - 1) % uint64(parts))
			}
			p = keyless
		}
		br := batch.Record{Timestamp: ts, Key: r.GetKey(), Value: r.GetValue()}
		if len(r.GetHeaders()) > 0 {
			br.Headers = make([]batch.Header, len(r.GetHeaders()))
			for j, h := range r.GetHeaders() {
				br.Headers[j] = batch.Header{Key: h.GetKey(), Value: h.GetValue()}
			}
		}
		groups[p] = append(groups[p], br)
	}

	order := make([]int32, 0, len(groups))
	for p := range groups {
		order = append(order, p)
	}
	slices.Sort(order)
	encoded := make([][]byte, len(order))
	for i, p := range order {
		b, err := batch.Encode(groups[p], batch.EncodeOptions{Codec: batch.CodecNone})
		if err != nil {
			return nil, connect.NewError(connect.CodeInternal, errorf("encoding the records for partition %d: %v", p, err))
		}
		if len(b) > maxBatch {
			return nil, invalid("the %d records for partition %d encode to a %d-byte batch; topic's max_batch_bytes is %d: send fewer records per request",
				len(groups[p]), p, len(b), maxBatch)
		}
		encoded[i] = b
	}

	if route.IsRecording() {
		route.SetAttributes(attribute.Int("streamhouse.partitions", len(order)), attribute.Int("streamhouse.records", len(m.GetRecords())))
	}
	route.End()
	results := make([]*v1.PartitionResult, len(order))
	errs := make([]error, len(order))
	if len(order) == 1 {
		results[0], errs[0] = g.appendTo(ctx, rt, order[0], encoded[0], m.GetAcks())
	} else {
		var wg sync.WaitGroup
		for i, p := range order {
			wg.Go(func() { results[i], errs[i] = g.appendTo(ctx, rt, p, encoded[i], m.GetAcks()) })
		}
		wg.Wait()
	}
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return &v1.ProduceResponse{Results: results}, nil
}

// appendTo appends one batch to partition p on its agent.
func (g *Gateway) appendTo(ctx context.Context, rt *topicRoutes, p int32, b []byte, acks v1.Acks) (_ *v1.PartitionResult, err error) {
	ctx, span := spans.Start(ctx, tracer, "gateway.append")
	defer func() {
		if span.IsRecording() {
			span.SetAttributes(attribute.Int("streamhouse.partition", int(p)), attribute.Int("streamhouse.bytes", len(b)))
			if err != nil {
				span.SetStatus(codes.Error, err.Error())
			}
		}
		span.End()
	}()
	var out *v1.PartitionResult
	err = g.onAgent(ctx, rt, p, func(agent streamhousev1connect.AgentServiceClient) error {
		res, err := agent.Append(ctx, connect.NewRequest(&v1.AppendRequest{
			Topic:     rt.info.GetName(),
			Partition: p,
			Batch:     b,
			Acks:      acks,
		}))
		if err != nil {
			return err
		}
		out = &v1.PartitionResult{Partition: p, BaseOffset: res.Msg.GetBaseOffset(), RecordCount: res.Msg.GetRecordCount()}
		return nil
	})
	if err != nil && connect.CodeOf(err) == connect.CodeUnavailable && !rpcerr.IsNotApplied(err) {
		// The agent may have appended before the connection broke: tell the
		// client the outcome is unknown rather than "retry".
		return nil, connect.NewError(connect.CodeUnknown, fmt.Errorf("partition %s/%d: the agent became unreachable during the append; the records may or may not be written: %v", rt.info.GetName(), p, err))
	}
	return out, err
}
