package gateway

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/pkg/batch"
	"github.com/streamhouse/streamhouse/pkg/rpcerr"
)

// fakeAgent is an in-memory AgentServiceClient: one log of batches per
// partition, offsets assigned with batch.SetBaseOffset, Read long-polls.
type fakeAgent struct {
	name string

	mu      sync.Mutex
	logs    map[string]*fakeLog
	changed chan struct{} // closed and replaced on every append
	appends []appendCall  // every entry appended, in order

	// hooks, called before the request (for appends: each entry) is
	// served; a non-nil error is returned (for appends: as the entry's).
	onAppend func(*v1.AppendEntry) error
	onRead   func(*v1.ReadRequest) error

	reads          atomic.Int32 // Read calls
	appendRequests atomic.Int32 // Append calls (each with one or more entries)
	activeReads    atomic.Int32
}

type fakeLog struct {
	batches    [][]byte
	start, end int64
}

func newFakeAgent(name string) *fakeAgent {
	return &fakeAgent{name: name, logs: make(map[string]*fakeLog), changed: make(chan struct{})}
}

func logKey(topic string, p int32) string { return fmt.Sprintf("%s/%d", topic, p) }

// appendCall is one entry an Append request carried, with the request's acks.
type appendCall struct {
	*v1.AppendEntry
	acks v1.Acks
}

func (c appendCall) GetAcks() v1.Acks { return c.acks }

// Append serves each entry on its own, as the real agent does: the hook's
// error or a bad batch is that entry's error.
func (a *fakeAgent) Append(ctx context.Context, req *connect.Request[v1.AppendRequest]) (*connect.Response[v1.AppendResponse], error) {
	a.appendRequests.Add(1)
	a.mu.Lock()
	onAppend := a.onAppend
	a.mu.Unlock()
	out := &v1.AppendResponse{}
	for _, e := range req.Msg.GetEntries() {
		base, n, err := a.appendEntry(e, req.Msg.GetAcks(), onAppend)
		if err != nil {
			out.Results = append(out.Results, &v1.AppendResult{Error: rpcerr.ToEntry(err)})
			continue
		}
		out.Results = append(out.Results, &v1.AppendResult{BaseOffset: base, RecordCount: n})
	}
	return connect.NewResponse(out), nil
}

func (a *fakeAgent) appendEntry(e *v1.AppendEntry, acks v1.Acks, onAppend func(*v1.AppendEntry) error) (int64, int32, error) {
	if onAppend != nil {
		if err := onAppend(e); err != nil {
			return 0, 0, err
		}
	}
	m, err := batch.Check(e.GetBatch())
	if err != nil {
		return 0, 0, connect.NewError(connect.CodeInvalidArgument, err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	b := slices.Clone(e.GetBatch())
	a.appends = append(a.appends, appendCall{&v1.AppendEntry{Topic: e.GetTopic(), Partition: e.GetPartition(), Batch: b}, acks})
	k := logKey(e.GetTopic(), e.GetPartition())
	l := a.logs[k]
	if l == nil {
		l = &fakeLog{}
		a.logs[k] = l
	}
	base := l.end
	batch.SetBaseOffset(b, base)
	l.batches = append(l.batches, b)
	l.end += int64(m.LastOffsetDelta) + 1
	close(a.changed)
	a.changed = make(chan struct{})
	return base, m.NumRecords, nil
}

func (a *fakeAgent) Read(ctx context.Context, req *connect.Request[v1.ReadRequest]) (*connect.Response[v1.ReadResponse], error) {
	a.reads.Add(1)
	a.activeReads.Add(1)
	defer a.activeReads.Add(-1)
	a.mu.Lock()
	onRead := a.onRead
	a.mu.Unlock()
	if onRead != nil {
		if err := onRead(req.Msg); err != nil {
			return nil, err
		}
	}
	m := req.Msg
	k := logKey(m.GetTopic(), m.GetPartition())
	var timeout <-chan time.Time
	if m.GetMaxWaitMs() > 0 {
		t := time.NewTimer(time.Duration(m.GetMaxWaitMs()) * time.Millisecond)
		defer t.Stop()
		timeout = t.C
	}
	for {
		a.mu.Lock()
		l := a.logs[k]
		if l == nil {
			l = &fakeLog{}
		}
		if m.GetOffset() < l.start || m.GetOffset() > l.end {
			a.mu.Unlock()
			return nil, connect.NewError(connect.CodeOutOfRange,
				fmt.Errorf("offset %d is out of range: partition %s holds offsets %d to %d", m.GetOffset(), k, l.start, l.end))
		}
		if m.GetOffset() < l.end || timeout == nil {
			out := &v1.ReadResponse{HighWatermark: l.end, StartOffset: l.start, NextOffset: m.GetOffset()}
			for _, b := range l.batches {
				meta, err := batch.Check(b)
				if err != nil {
					a.mu.Unlock()
					return nil, err
				}
				if meta.EndOffset() <= m.GetOffset() {
					continue
				}
				if len(out.Batches) > 0 && len(out.Batches)+len(b) > int(m.GetMaxBytes()) {
					break
				}
				out.Batches = append(out.Batches, b...)
				out.NextOffset = meta.EndOffset()
			}
			a.mu.Unlock()
			return connect.NewResponse(out), nil
		}
		changed := a.changed
		a.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil, connect.NewError(connect.CodeCanceled, ctx.Err())
		case <-timeout:
			timeout = nil // answer with what there is (nothing)
		case <-changed:
		}
	}
}

func (a *fakeAgent) setHooks(onAppend func(*v1.AppendEntry) error, onRead func(*v1.ReadRequest) error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if onAppend != nil {
		a.onAppend = onAppend
	}
	if onRead != nil {
		a.onRead = onRead
	}
}

func (a *fakeAgent) appendCalls() []appendCall {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.appends)
}

func (a *fakeAgent) hwm(topic string, p int32) (start, end int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if l := a.logs[logKey(topic, p)]; l != nil {
		return l.start, l.end
	}
	return 0, 0
}

// fakeController is an in-memory AdminServiceClient and
// ControllerServiceClient.
type fakeController struct {
	agent *fakeAgent // for high watermarks in DescribeTopic

	mu     sync.Mutex
	topics map[string]*fakeTopic

	getRoutes atomic.Int32
	adminCall atomic.Int32
}

type fakeTopic struct {
	info   *v1.TopicInfo
	routes []*v1.PartitionRoute
}

func newFakeController(agent *fakeAgent) *fakeController {
	return &fakeController{agent: agent, topics: make(map[string]*fakeTopic)}
}

// addTopic adds a topic whose partitions are all held by address.
func (c *fakeController) addTopic(info *v1.TopicInfo, address string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if info.MaxRecordBytes == 0 {
		info.MaxRecordBytes = 1 << 20
	}
	if info.MaxBatchBytes == 0 {
		info.MaxBatchBytes = 8 << 20
	}
	t := &fakeTopic{info: info}
	for p := range info.GetPartitions() {
		t.routes = append(t.routes, &v1.PartitionRoute{Partition: p, AgentId: "agent-" + address, Address: address, Epoch: 1})
	}
	c.topics[info.GetName()] = t
}

// setRoute moves one partition to address ("" for no holder).
func (c *fakeController) setRoute(topic string, p int32, address string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.topics[topic].routes[p]
	c.topics[topic].routes[p] = &v1.PartitionRoute{Partition: p, AgentId: "agent-" + address, Address: address, Epoch: r.GetEpoch() + 1}
}

func notFound(name string) error {
	return connect.NewError(connect.CodeNotFound, fmt.Errorf("topic %q does not exist", name))
}

func (c *fakeController) CreateTopic(ctx context.Context, req *connect.Request[v1.CreateTopicRequest]) (*connect.Response[v1.CreateTopicResponse], error) {
	c.adminCall.Add(1)
	c.mu.Lock()
	_, exists := c.topics[req.Msg.GetName()]
	c.mu.Unlock()
	if exists {
		err := connect.NewError(connect.CodeAlreadyExists, fmt.Errorf("topic %q already exists", req.Msg.GetName()))
		err.Meta().Set("X-Controller", "yes")
		return nil, err
	}
	info := &v1.TopicInfo{Name: req.Msg.GetName(), Partitions: req.Msg.GetPartitions(), MaxRecordBytes: req.Msg.GetMaxRecordBytes(), MaxBatchBytes: req.Msg.GetMaxBatchBytes()}
	c.addTopic(info, "agent:7101")
	return connect.NewResponse(&v1.CreateTopicResponse{Topic: info}), nil
}

func (c *fakeController) DeleteTopic(ctx context.Context, req *connect.Request[v1.DeleteTopicRequest]) (*connect.Response[v1.DeleteTopicResponse], error) {
	c.adminCall.Add(1)
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.topics[req.Msg.GetName()]; !ok {
		return nil, notFound(req.Msg.GetName())
	}
	delete(c.topics, req.Msg.GetName())
	return connect.NewResponse(&v1.DeleteTopicResponse{}), nil
}

func (c *fakeController) ListTopics(ctx context.Context, req *connect.Request[v1.ListTopicsRequest]) (*connect.Response[v1.ListTopicsResponse], error) {
	c.adminCall.Add(1)
	c.mu.Lock()
	defer c.mu.Unlock()
	out := &v1.ListTopicsResponse{}
	for _, t := range c.topics {
		out.Topics = append(out.Topics, t.info)
	}
	slices.SortFunc(out.Topics, func(a, b *v1.TopicInfo) int { return compare(a.GetName(), b.GetName()) })
	return connect.NewResponse(out), nil
}

func compare(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func (c *fakeController) DescribeTopic(ctx context.Context, req *connect.Request[v1.DescribeTopicRequest]) (*connect.Response[v1.DescribeTopicResponse], error) {
	c.adminCall.Add(1)
	c.mu.Lock()
	t, ok := c.topics[req.Msg.GetName()]
	c.mu.Unlock()
	if !ok {
		return nil, notFound(req.Msg.GetName())
	}
	out := &v1.DescribeTopicResponse{Topic: t.info}
	for p := range t.info.GetPartitions() {
		start, end := c.agent.hwm(t.info.GetName(), p)
		out.Partitions = append(out.Partitions, &v1.PartitionInfo{Partition: p, StartOffset: start, HighWatermark: end, CommittedEndOffset: end})
	}
	return connect.NewResponse(out), nil
}

var errUnimplemented = errors.New("not implemented by the fake")

func (c *fakeController) Heartbeat(context.Context, *connect.Request[v1.HeartbeatRequest]) (*connect.Response[v1.HeartbeatResponse], error) {
	return nil, connect.NewError(connect.CodeUnimplemented, errUnimplemented)
}

func (c *fakeController) CommitObject(context.Context, *connect.Request[v1.CommitObjectRequest]) (*connect.Response[v1.CommitObjectResponse], error) {
	return nil, connect.NewError(connect.CodeUnimplemented, errUnimplemented)
}

func (c *fakeController) LookupObjects(context.Context, *connect.Request[v1.LookupObjectsRequest]) (*connect.Response[v1.LookupObjectsResponse], error) {
	return nil, connect.NewError(connect.CodeUnimplemented, errUnimplemented)
}

func (c *fakeController) GetRoutes(ctx context.Context, req *connect.Request[v1.GetRoutesRequest]) (*connect.Response[v1.GetRoutesResponse], error) {
	c.getRoutes.Add(1)
	c.mu.Lock()
	defer c.mu.Unlock()
	t, ok := c.topics[req.Msg.GetTopic()]
	if !ok {
		return nil, notFound(req.Msg.GetTopic())
	}
	return connect.NewResponse(&v1.GetRoutesResponse{Topic: t.info, Routes: slices.Clone(t.routes)}), nil
}

func (c *fakeController) ReleaseLeases(context.Context, *connect.Request[v1.ReleaseLeasesRequest]) (*connect.Response[v1.ReleaseLeasesResponse], error) {
	return nil, connect.NewError(connect.CodeUnimplemented, errors.New("fake controller: ReleaseLeases"))
}

func (c *fakeController) AlterTopic(ctx context.Context, req *connect.Request[v1.AlterTopicRequest]) (*connect.Response[v1.AlterTopicResponse], error) {
	return nil, connect.NewError(connect.CodeUnimplemented, errors.New("fake controller: AlterTopic"))
}
