package gateway

import (
	"context"
	"fmt"

	"connectrpc.com/connect"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/pkg/rpcerr"
)

// Limits and defaults of FetchPartitions (each partition's max_bytes is
// defaulted and capped as Fetch's: DefaultFetchMaxBytes, MaxFetchMaxBytes).
const (
	// DefaultFetchPartitionsMaxBytes is the whole answer's soft limit when
	// the request leaves max_bytes at 0 (Kafka's fetch.max.bytes default).
	DefaultFetchPartitionsMaxBytes = 50 << 20
	// MaxFetchPartitionsMaxBytes caps a FetchPartitions request's max_bytes.
	MaxFetchPartitionsMaxBytes = 64 << 20
)

// fetchPart is one partition of a FetchPartitions request on its way: its
// routes, then the agent's answer or its error.
type fetchPart struct {
	req *v1.FetchPartition
	rt  *topicRoutes // nil when the topic could not be resolved (err is set)
	res *v1.ReadResult
	err error
}

// agentRead is the share of a FetchPartitions request one agent serves.
type agentRead struct {
	route *v1.PartitionRoute // of the first partition: the agent's id and address
	parts []*fetchPart
}

// FetchPartitions reads many partitions with one ReadPartitions per agent
// holding some of them, concurrently, and answers each partition in request
// order: its records (or raw batches) or its own error. An unknown topic
// (NotFound), a partition out of range (InvalidArgument), a partition
// without a holder or an unreachable agent (Unavailable) fails only that
// partition. A partition whose agent says it is not the lease holder is
// asked again, once, of the holder fresh routes name.
//
// The long-poll is shared: the request answers once min_bytes are ready
// over all partitions, from whichever agents, or at max_wait. When one
// agent's answer brings the total to min_bytes, the agents still waiting
// are asked again without waiting, so an idle agent does not hold the
// answer until max_wait. Each agent is given the whole max_bytes; the
// answer keeps partitions' data in request order until max_bytes are
// reached (the first partition with data always keeps its), and the rest
// are answered without data, their next_offset at the requested offset.
func (s consumeService) FetchPartitions(ctx context.Context, req *connect.Request[v1.FetchPartitionsRequest]) (*connect.Response[v1.FetchPartitionsResponse], error) {
	g := s.g
	m := req.Msg
	parts, maxBytes, err := parseFetchPartitions(m)
	if err != nil {
		return nil, err
	}
	g.resolveFetchRoutes(ctx, parts)
	g.readParts(ctx, parts, m.GetMaxWaitMs(), m.GetMinBytes(), maxBytes)
	// A partition refused as not held (or with no holder yet) is asked
	// again, once, on fresh routes, without waiting: the others' answers
	// are in hand.
	if retry := g.refreshForRetry(ctx, parts); len(retry) > 0 {
		g.readParts(ctx, retry, 0, 0, maxBytes)
	}
	if err := ctx.Err(); err != nil {
		return nil, upstream(err)
	}
	out := &v1.FetchPartitionsResponse{Partitions: make([]*v1.PartitionRecords, len(parts))}
	total := 0 // bytes of data kept in the answer
	for i, fp := range parts {
		pr := &v1.PartitionRecords{Topic: fp.req.GetTopic(), Partition: fp.req.GetPartition()}
		out.Partitions[i] = pr
		if fp.err != nil {
			pr.Error = rpcerr.ToEntry(upstream(fp.err))
			continue
		}
		rr := fp.res
		if e := rr.GetError(); e != nil {
			pr.Error = e
			continue
		}
		pr.HighWatermark, pr.StartOffset, pr.NextOffset = rr.GetHighWatermark(), rr.GetStartOffset(), rr.GetNextOffset()
		data := rr.GetBatches()
		if len(data) > 0 && total >= int(maxBytes) {
			// Another agent's partitions filled the answer: this one is
			// read again by the next fetch.
			data, pr.NextOffset = nil, fp.req.GetOffset()
		}
		total += len(data)
		if m.GetRaw() {
			pr.Batches = data
			continue
		}
		recs, next, err := decodeRead(&v1.ReadResponse{Batches: data, HighWatermark: pr.HighWatermark, StartOffset: pr.StartOffset, NextOffset: pr.NextOffset}, fp.req.GetOffset())
		if err != nil {
			*pr = v1.PartitionRecords{Topic: pr.Topic, Partition: pr.Partition, Error: rpcerr.ToEntry(err)}
			continue
		}
		pr.Records, pr.NextOffset = recs, next
	}
	g.log.DebugContext(ctx, "fetch partitions", "partitions", len(parts), "bytes", total)
	return connect.NewResponse(out), nil
}

// parseFetchPartitions validates a FetchPartitions request as a whole: no
// partitions, a limit out of range or a partition asked twice fails it.
// Limits are defaulted and capped as Fetch's are; a bad topic name fails
// only its partitions.
func parseFetchPartitions(m *v1.FetchPartitionsRequest) ([]*fetchPart, int32, error) {
	if len(m.GetPartitions()) == 0 {
		return nil, 0, invalid("fetch partitions request has no partitions")
	}
	if w := m.GetMaxWaitMs(); w < 0 || w > MaxFetchWaitMs {
		return nil, 0, invalid("max_wait_ms must be between 0 and %d, got %d", MaxFetchWaitMs, w)
	}
	if n := m.GetMinBytes(); n < 0 {
		return nil, 0, invalid("min_bytes must be 0 (the default: any data) or positive, got %d", n)
	}
	maxBytes := m.GetMaxBytes()
	switch {
	case maxBytes < 0:
		return nil, 0, invalid("max_bytes must be 0 (the default, %d) or positive, got %d", DefaultFetchPartitionsMaxBytes, maxBytes)
	case maxBytes == 0:
		maxBytes = DefaultFetchPartitionsMaxBytes
	case maxBytes > MaxFetchPartitionsMaxBytes:
		maxBytes = MaxFetchPartitionsMaxBytes
	}
	type key struct {
		topic     string
		partition int32
	}
	seen := make(map[key]int, len(m.GetPartitions()))
	parts := make([]*fetchPart, len(m.GetPartitions()))
	for i, p := range m.GetPartitions() {
		k := key{p.GetTopic(), p.GetPartition()}
		if j, dup := seen[k]; dup {
			return nil, 0, invalid("partition %s/%d is asked twice (partitions %d and %d)", k.topic, k.partition, j, i)
		}
		seen[k] = i
		pmax, err := fetchMaxBytes(p.GetMaxBytes())
		if err != nil {
			return nil, 0, invalid("partition %s/%d: max_bytes must be 0 (the default, %d) or positive, got %d", k.topic, k.partition, DefaultFetchMaxBytes, p.GetMaxBytes())
		}
		// A negative offset is below every start offset: the agent answers
		// OutOfRange with the valid range, as Fetch does.
		parts[i] = &fetchPart{req: &v1.FetchPartition{
			Topic: p.GetTopic(), Partition: p.GetPartition(), Offset: p.GetOffset(), MaxBytes: pmax, LastEpoch: p.GetLastEpoch(),
		}}
	}
	return parts, maxBytes, nil
}

// resolveFetchRoutes looks up the routes of every topic of parts once and
// checks each partition against its topic; failures are the partitions' own.
func (g *Gateway) resolveFetchRoutes(ctx context.Context, parts []*fetchPart) {
	lookup := g.newTopicLookup()
	for _, fp := range parts {
		rt, err := lookup.partition(ctx, fp.req.GetTopic(), fp.req.GetPartition())
		if err != nil {
			fp.err = err
			continue
		}
		fp.rt = rt
	}
}

// byAgent groups the partitions of parts that have routes by the address of
// their lease holder; a partition without one gets Unavailable.
func byAgent(parts []*fetchPart) []*agentRead {
	var out []*agentRead
	index := map[string]*agentRead{}
	for _, fp := range parts {
		if fp.err != nil || fp.rt == nil {
			continue
		}
		r := fp.rt.route(fp.req.GetPartition())
		if r.GetAddress() == "" {
			fp.err = unavailable("partition %s/%d has no agent yet; retry", fp.req.GetTopic(), fp.req.GetPartition())
			continue
		}
		ar := index[r.GetAddress()]
		if ar == nil {
			ar = &agentRead{route: r}
			index[r.GetAddress()] = ar
			out = append(out, ar)
		}
		ar.parts = append(ar.parts, fp)
	}
	return out
}

// readParts sends one ReadPartitions per agent holding some of parts,
// concurrently, and stores each partition's answer or error in it. Once
// the answers so far hold min bytes, the agents still long-polling are cut
// short and asked again without waiting.
func (g *Gateway) readParts(ctx context.Context, parts []*fetchPart, maxWaitMs, minBytes, maxBytes int32) {
	agents := byAgent(parts)
	if len(agents) == 0 {
		return
	}
	// waitCtx ends every long-poll once min bytes are in hand.
	waitCtx, enough := context.WithCancel(ctx)
	defer enough()
	done := make(chan *agentRead, len(agents))
	for _, ar := range agents {
		go func() {
			g.readAgent(ctx, waitCtx, ar, maxWaitMs, minBytes, maxBytes)
			done <- ar
		}()
	}
	got := 0
	for range agents {
		ar := <-done
		for _, fp := range ar.parts {
			got += len(fp.res.GetBatches())
		}
		if got >= max(int(minBytes), 1) {
			enough()
		}
	}
}

// readAgent sends one agent its share of the partitions. A long-poll cut
// short by waitCtx (not by ctx) is sent again with no wait, so its
// partitions still get their high watermarks and whatever is ready.
func (g *Gateway) readAgent(ctx, waitCtx context.Context, ar *agentRead, maxWaitMs, minBytes, maxBytes int32) {
	fail := func(err error) {
		for _, fp := range ar.parts {
			fp.err = err
		}
	}
	r := ar.route
	agent, err := g.cfg.Agents(r.GetAddress())
	if err != nil {
		fail(unavailable("agent %s (%s) for %d partitions: %v", r.GetAgentId(), r.GetAddress(), len(ar.parts), err))
		return
	}
	req := &v1.ReadPartitionsRequest{
		Partitions: make([]*v1.ReadPartition, len(ar.parts)),
		MaxWaitMs:  maxWaitMs, MinBytes: minBytes, MaxBytes: maxBytes,
	}
	for i, fp := range ar.parts {
		req.Partitions[i] = &v1.ReadPartition{
			Topic: fp.req.GetTopic(), Partition: fp.req.GetPartition(), Offset: fp.req.GetOffset(),
			MaxBytes: fp.req.GetMaxBytes(), LastEpoch: fp.req.GetLastEpoch(),
		}
	}
	res, err := agent.ReadPartitions(waitCtx, connect.NewRequest(req))
	if err != nil && waitCtx.Err() != nil && ctx.Err() == nil {
		again := &v1.ReadPartitionsRequest{Partitions: req.Partitions, MaxBytes: maxBytes}
		res, err = agent.ReadPartitions(ctx, connect.NewRequest(again))
	}
	switch {
	case err != nil && rpcerr.NeverSent(err):
		// Nothing reached the agent: safe to ask again elsewhere.
		fail(rpcerr.NotApplied(connect.CodeUnavailable, fmt.Errorf("agent %s at %s is unreachable; retry", r.GetAgentId(), r.GetAddress())))
		return
	case err != nil:
		fail(upstream(err))
		return
	case len(res.Msg.GetResults()) != len(ar.parts):
		fail(connect.NewError(connect.CodeInternal, fmt.Errorf("agent %s answered %d results for %d partitions", r.GetAgentId(), len(res.Msg.GetResults()), len(ar.parts))))
		return
	}
	for i, fp := range ar.parts {
		fp.res = res.Msg.GetResults()[i]
	}
}

// refreshForRetry returns the partitions whose read was refused in a way
// that means the routes were stale (see retryable), with fresh routes (one
// refresh per topic). A partition whose topic cannot be refreshed keeps its
// error.
func (g *Gateway) refreshForRetry(ctx context.Context, parts []*fetchPart) []*fetchPart {
	var retry []*fetchPart
	refresher := g.newRouteRefresher()
	for _, fp := range parts {
		err := fp.err
		if e := fp.res.GetError(); err == nil && e != nil {
			err = rpcerr.FromEntry(e)
		}
		if err == nil || fp.rt == nil || !retryable(err) {
			continue
		}
		rt := refresher.refresh(ctx, fp.rt, fp.req.GetPartition(), err)
		if rt == nil || rt.checkPartition(fp.req.GetPartition()) != nil {
			continue // keep the first error
		}
		fp.rt, fp.err, fp.res = rt, nil, nil
		retry = append(retry, fp)
	}
	return retry
}
