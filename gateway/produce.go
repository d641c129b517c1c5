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

// entry is one partition's share of a produce request on its way to the
// partition's agent: a batch to append, then its result or its error.
type entry struct {
	rt        *topicRoutes
	partition int32
	batch     []byte
	res       *v1.PartitionResult
	err       error
}

// Produce checks the request, turns it into one batch per partition
// (entries), appends the entries with one Append per agent, concurrently,
// and answers each entry on its own. See the ProduceService doc in
// produce.proto for the three request shapes and when the whole request
// fails.
func (s produceService) Produce(ctx context.Context, req *connect.Request[v1.ProduceRequest]) (*connect.Response[v1.ProduceResponse], error) {
	g := s.g
	m := req.Msg
	switch m.GetAcks() {
	case v1.Acks_ACKS_UNSPECIFIED, v1.Acks_ACKS_DURABLE, v1.Acks_ACKS_WAL:
	default:
		return nil, invalid("unknown acks %d; use ACKS_DURABLE, ACKS_WAL or leave it unset for the topic's durability", m.GetAcks())
	}
	release, err := g.admitDecoded(ctx, requestBytes(m))
	if err != nil {
		return nil, err
	}
	defer release()
	// gateway.route covers routing: the topics' routes (cached or asked of
	// the controller) and placing records on partitions; it ends when the
	// appends start.
	routeCtx, route := spans.Start(ctx, tracer, "gateway.route")
	defer route.End()
	var entries []*entry
	switch {
	case len(m.GetBatches()) > 0:
		if m.GetTopic() != "" || m.Partition != nil || len(m.GetRecords()) > 0 || len(m.GetBatch()) > 0 {
			return nil, invalid("a produce request with batches carries no topic, partition, records or batch of its own: put each batch's topic and partition in its entry")
		}
		entries, err = g.batchEntries(routeCtx, m.GetBatches())
	default:
		entries, err = g.topicEntries(routeCtx, m)
	}
	if err != nil {
		return nil, err
	}
	if route.IsRecording() {
		route.SetAttributes(attribute.Int("streamhouse.partitions", len(entries)), attribute.Int("streamhouse.records", len(m.GetRecords())))
	}
	route.End()

	g.appendEntries(ctx, entries, m.GetAcks())

	out := &v1.ProduceResponse{Results: make([]*v1.PartitionResult, len(entries))}
	var firstErr error
	failed := 0
	for i, e := range entries {
		if e.err != nil {
			failed++
			if firstErr == nil {
				firstErr = e.err
			}
			out.Results[i] = &v1.PartitionResult{Topic: e.topic(), Partition: e.partition, Error: rpcerr.ToEntry(e.err)}
			continue
		}
		out.Results[i] = e.res
	}
	if failed == len(entries) {
		g.log.DebugContext(ctx, "produce failed", "entries", len(entries), "err", firstErr)
		return nil, firstErr
	}
	g.log.DebugContext(ctx, "produce", "entries", len(entries), "failed", failed)
	return connect.NewResponse(out), nil
}

func (e *entry) topic() string { return e.rt.info.GetName() }

// requestBytes is what a produce request holds in memory while in flight:
// its batches and records.
func requestBytes(m *v1.ProduceRequest) int {
	n := len(m.GetBatch())
	for _, b := range m.GetBatches() {
		n += len(b.GetBatch())
	}
	for _, r := range m.GetRecords() {
		n += recordSize(r)
	}
	return n
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

// topicEntries handles the two one-topic shapes (records, or one batch):
// everything is checked before anything is sent, so a bad record fails the
// whole request and writes nothing.
func (g *Gateway) topicEntries(ctx context.Context, m *v1.ProduceRequest) ([]*entry, error) {
	hasRecords, hasBatch := len(m.GetRecords()) > 0, len(m.GetBatch()) > 0
	switch {
	case hasRecords && hasBatch:
		return nil, invalid("a produce request carries either records or batch, not both")
	case !hasRecords && !hasBatch:
		return nil, invalid("nothing to produce: set records (at least one), batch, or batches")
	}
	if err := validateTopic(m.GetTopic()); err != nil {
		return nil, err
	}
	rt, err := g.routes.get(ctx, m.GetTopic())
	if err != nil {
		return nil, err
	}
	if m.Partition != nil {
		if err := rt.checkPartition(m.GetPartition()); err != nil {
			return nil, err
		}
	}
	if hasBatch {
		if m.Partition == nil {
			return nil, invalid("a pre-encoded batch needs partition: set partition to the partition the batch is for")
		}
		if err := checkBatch(rt, m.GetBatch()); err != nil {
			return nil, err
		}
		return []*entry{{rt: rt, partition: m.GetPartition(), batch: m.GetBatch()}}, nil
	}
	return g.recordEntries(rt, m)
}

// checkBatch checks a pre-encoded batch (size, header, CRC); the agent
// assigns its base offset and forwards nothing else of it.
func checkBatch(rt *topicRoutes, b []byte) error {
	if limit := maxBatchBytes(rt.info); len(b) > limit {
		return invalid("batch is %d bytes; topic %q's max_batch_bytes is %d", len(b), rt.info.GetName(), limit)
	}
	if _, err := batch.Check(b); err != nil {
		return invalid("batch rejected: %v", err)
	}
	return nil
}

// batchEntries handles the SDK's shape: each entry is checked on its own
// and a bad one becomes that entry's error, not the request's. Only a
// request that is malformed as a whole (a partition twice) fails whole.
func (g *Gateway) batchEntries(ctx context.Context, batches []*v1.ProduceBatch) ([]*entry, error) {
	type key struct {
		topic string
		part  int32
	}
	seen := make(map[key]struct{}, len(batches))
	lookup := g.newTopicLookup()
	entries := make([]*entry, len(batches))
	for i, b := range batches {
		if b == nil {
			return nil, invalid("batches[%d] is null", i)
		}
		k := key{b.GetTopic(), b.GetPartition()}
		if _, dup := seen[k]; dup {
			return nil, invalid("partition %s/%d appears twice in one produce request: send one batch per partition", k.topic, k.part)
		}
		seen[k] = struct{}{}
		e := &entry{partition: b.GetPartition(), batch: b.GetBatch()}
		entries[i] = e
		rt, err := lookup.partition(ctx, k.topic, k.part)
		if rt == nil {
			// Routes that only name the topic, for the entry's result.
			e.rt, e.err = &topicRoutes{info: &v1.TopicInfo{Name: k.topic}}, err
			continue
		}
		e.rt = rt
		if err != nil {
			e.err = err
			continue
		}
		if len(e.batch) == 0 {
			e.err = invalid("batch for partition %s/%d is empty", k.topic, k.part)
			continue
		}
		e.err = checkBatch(rt, e.batch)
	}
	return entries, nil
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

// recordEntries places, validates and encodes every record before anything
// is sent: one entry (batch) per partition, sorted by partition.
func (g *Gateway) recordEntries(rt *topicRoutes, m *v1.ProduceRequest) ([]*entry, error) {
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
	entries := make([]*entry, len(order))
	for i, p := range order {
		b, err := batch.Encode(groups[p], batch.EncodeOptions{Codec: batch.CodecNone})
		if err != nil {
			return nil, connect.NewError(connect.CodeInternal, errorf("encoding the records for partition %d: %v", p, err))
		}
		if len(b) > maxBatch {
			return nil, invalid("the %d records for partition %d encode to a %d-byte batch; topic's max_batch_bytes is %d: send fewer records per request",
				len(groups[p]), p, len(b), maxBatch)
		}
		entries[i] = &entry{rt: rt, partition: p, batch: b}
	}
	return entries, nil
}

// appendEntries sends every entry that has no error yet to its partition's
// agent: one Append per agent, all agents at once. Entries an agent refused
// because the routes were stale (not the lease holder, no holder yet:
// refusals marked not-applied) are sent once more after their topic's
// routes are refreshed, so a moved partition costs one retry, not a failed
// write. Only refusals marked by rpcerr.NotApplied are retried, so a retried
// entry never writes twice.
func (g *Gateway) appendEntries(ctx context.Context, entries []*entry, acks v1.Acks) {
	todo := make([]*entry, 0, len(entries))
	for _, e := range entries {
		if e.err == nil {
			todo = append(todo, e)
		}
	}
	for attempt := 0; len(todo) > 0; attempt++ {
		byAgent := map[string][]*entry{}
		var addrs []string
		for _, e := range todo {
			r := e.rt.route(e.partition)
			if r.GetAddress() == "" {
				e.err = unavailable("partition %s/%d has no agent yet; retry", e.topic(), e.partition)
				continue
			}
			if _, ok := byAgent[r.GetAddress()]; !ok {
				addrs = append(addrs, r.GetAddress())
			}
			byAgent[r.GetAddress()] = append(byAgent[r.GetAddress()], e)
		}
		if len(addrs) == 1 {
			g.appendOn(ctx, addrs[0], byAgent[addrs[0]], acks)
		} else {
			var wg sync.WaitGroup
			for _, addr := range addrs {
				wg.Go(func() { g.appendOn(ctx, addr, byAgent[addr], acks) })
			}
			wg.Wait()
		}
		if attempt > 0 || ctx.Err() != nil {
			return
		}
		// Refresh each stale topic once and retry its refused entries.
		sent := todo
		todo = nil
		refresher := g.newRouteRefresher()
		for _, e := range sent {
			if e.err == nil || !retryable(e.err) {
				continue
			}
			rt := refresher.refresh(ctx, e.rt, e.partition, e.err)
			if rt == nil {
				continue // keep the refusal: the client retries
			}
			e.rt, e.err = rt, nil
			todo = append(todo, e)
		}
	}
}

// appendOn sends entries, all held by the agent at addr, in one Append and
// sets each entry's result or error.
func (g *Gateway) appendOn(ctx context.Context, addr string, entries []*entry, acks v1.Acks) {
	ctx, span := spans.Start(ctx, tracer, "gateway.append")
	req := &v1.AppendRequest{Acks: acks, Entries: make([]*v1.AppendEntry, len(entries))}
	size := 0
	for i, e := range entries {
		req.Entries[i] = &v1.AppendEntry{Topic: e.topic(), Partition: e.partition, Batch: e.batch}
		size += len(e.batch)
	}
	res, err := g.callAppend(ctx, addr, req)
	if err == nil && len(res.GetResults()) != len(entries) {
		err = connect.NewError(connect.CodeUnknown, fmt.Errorf("agent at %s answered %d results for %d entries; the records may or may not be written", addr, len(res.GetResults()), len(entries)))
	}
	failed := 0
	for i, e := range entries {
		if err != nil {
			e.err = requestError(err, addr, e)
			failed++
			continue
		}
		r := res.GetResults()[i]
		if ee := r.GetError(); ee != nil {
			e.err = upstream(rpcerr.FromEntry(ee))
			failed++
			continue
		}
		e.res = &v1.PartitionResult{Topic: e.topic(), Partition: e.partition, BaseOffset: r.GetBaseOffset(), RecordCount: r.GetRecordCount()}
	}
	if span.IsRecording() {
		span.SetAttributes(attribute.String("streamhouse.agent", addr), attribute.Int("streamhouse.entries", len(entries)),
			attribute.Int("streamhouse.bytes", size), attribute.Int("streamhouse.failed_entries", failed))
		if err != nil {
			span.SetStatus(codes.Error, err.Error())
		}
	}
	span.End()
}

// callAppend calls Append on the agent at addr.
func (g *Gateway) callAppend(ctx context.Context, addr string, req *v1.AppendRequest) (*v1.AppendResponse, error) {
	var client streamhousev1connect.AgentServiceClient
	client, err := g.cfg.Agents(addr)
	if err != nil {
		return nil, unavailable("agent at %s: %v", addr, err)
	}
	res, err := client.Append(ctx, connect.NewRequest(req))
	if err != nil {
		return nil, err
	}
	return res.Msg, nil
}

// requestError is what a whole Append's failure means for one of its
// entries: a connection that never opened wrote nothing (retry); one that
// broke mid-request may have written (the outcome is unknown); an agent's
// refusal of the whole request is the entry's refusal.
func requestError(err error, addr string, e *entry) error {
	if rpcerr.NeverSent(err) {
		return rpcerr.NotApplied(connect.CodeUnavailable, fmt.Errorf("agent at %s for partition %s/%d is unreachable; retry", addr, e.topic(), e.partition))
	}
	if connect.CodeOf(err) == connect.CodeUnavailable && !rpcerr.IsNotApplied(err) {
		return connect.NewError(connect.CodeUnknown, fmt.Errorf("partition %s/%d: the agent became unreachable during the append; the records may or may not be written: %v", e.topic(), e.partition, err))
	}
	return upstream(err)
}
