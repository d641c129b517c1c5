package agent

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"

	"connectrpc.com/connect"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/api/gen/streamhouse/v1/streamhousev1connect"
	"github.com/streamhouse/streamhouse/pkg/objstore"
)

// fakeController is an in-memory ControllerServiceClient with the rules of
// the real FSM (controller/fsm/fsm.go, controller/agents.go), minus Raft and
// lease expiry:
//
//   - Heartbeat grants the caller every partition of every topic that no
//     other agent holds; the same incarnation renews at the same epoch, a new
//     incarnation (or a new holder) bumps the epoch.
//   - CommitObject checks each section: holder and epoch must match (else
//     fenced), base must equal the committed end (else not contiguous); the
//     result carries the committed end after the call.
//   - LookupObjects returns the sections with EndOffset > offset.
//
// Failures can be injected: every commit failing with an error, commits
// blocking until released, and a partition stolen by another agent.
type fakeController struct {
	leaseMs int64

	mu     sync.Mutex
	topics []*fakeTopic
	// commitErr, when set, is returned by every CommitObject.
	commitErr error
	// gate, when set, blocks CommitObject until it is closed (or ctx ends).
	gate chan struct{}
	// loseReplies is how many more applied commits answer with an error
	// instead of their result (the reply was lost on the way back).
	loseReplies int

	heartbeats atomic.Int64
	commits    atomic.Int64 // CommitObject calls that reached the FSM rules
	fenced     atomic.Int64 // sections rejected as fenced
	released   atomic.Int64 // leases released by ReleaseLeases
	objects    []string     // keys of objects with at least one committed section
}

type fakeTopic struct {
	info  *v1.TopicInfo
	parts []*fakePartition
}

type fakePartition struct {
	holder, incarnation string
	epoch               int64
	start, committedEnd int64
	sections            []*v1.ObjectSection
}

var _ streamhousev1connect.ControllerServiceClient = (*fakeController)(nil)

func newFakeController(topics ...*v1.TopicInfo) *fakeController {
	f := &fakeController{leaseMs: 60_000}
	for _, ti := range topics {
		ft := &fakeTopic{info: ti}
		for range ti.GetPartitions() {
			ft.parts = append(ft.parts, &fakePartition{})
		}
		f.topics = append(f.topics, ft)
	}
	sort.Slice(f.topics, func(i, j int) bool { return f.topics[i].info.GetName() < f.topics[j].info.GetName() })
	return f
}

func (f *fakeController) partLocked(topic string, partition int32) *fakePartition {
	for _, t := range f.topics {
		if t.info.GetName() == topic {
			if partition < 0 || int(partition) >= len(t.parts) {
				return nil
			}
			return t.parts[partition]
		}
	}
	return nil
}

func (f *fakeController) Heartbeat(ctx context.Context, req *connect.Request[v1.HeartbeatRequest]) (*connect.Response[v1.HeartbeatResponse], error) {
	m := req.Msg
	if m.GetAgentId() == "" || m.GetIncarnation() == "" {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("heartbeat needs agent_id and incarnation"))
	}
	f.heartbeats.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	out := &v1.HeartbeatResponse{LeaseDurationMs: f.leaseMs}
	for _, t := range f.topics {
		for i, p := range t.parts {
			switch {
			case p.holder == m.GetAgentId() && p.incarnation == m.GetIncarnation():
				// renewal: same epoch
			case p.holder == "" || p.holder == m.GetAgentId():
				p.holder, p.incarnation = m.GetAgentId(), m.GetIncarnation()
				p.epoch++
			default:
				continue // another agent holds it
			}
			out.Leases = append(out.Leases, &v1.Lease{
				Topic: cloneTopic(t.info), Partition: int32(i), Epoch: p.epoch,
				CommittedEndOffset: p.committedEnd, StartOffset: p.start,
			})
		}
	}
	return connect.NewResponse(out), nil
}

func (f *fakeController) CommitObject(ctx context.Context, req *connect.Request[v1.CommitObjectRequest]) (*connect.Response[v1.CommitObjectResponse], error) {
	f.mu.Lock()
	gate, cerr := f.gate, f.commitErr
	f.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, connect.NewError(connect.CodeCanceled, ctx.Err())
		}
	}
	if cerr != nil {
		return nil, cerr
	}
	m := req.Msg
	if m.GetAgentId() == "" || m.GetObjectKey() == "" || len(m.GetSections()) == 0 {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("commit needs agent_id, object_key and at least one section"))
	}
	for _, s := range m.GetSections() {
		if s.GetEndOffset() <= s.GetBaseOffset() || s.GetPosition() < 0 || s.GetLength() <= 0 || s.GetPosition()+s.GetLength() > m.GetObjectSize() {
			return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("section %s/%d does not fit object %s", s.GetTopic(), s.GetPartition(), m.GetObjectKey()))
		}
	}
	f.commits.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	out := &v1.CommitObjectResponse{}
	anyCommitted := false
	for _, s := range m.GetSections() {
		r := &v1.SectionResult{Topic: s.GetTopic(), Partition: s.GetPartition()}
		out.Results = append(out.Results, r)
		p := f.partLocked(s.GetTopic(), s.GetPartition())
		switch {
		case p == nil:
			r.Error = fmt.Sprintf("partition %s/%d does not exist", s.GetTopic(), s.GetPartition())
			r.Fenced = true
			f.fenced.Add(1)
			continue
		case p.holder != m.GetAgentId() || p.epoch != s.GetEpoch():
			r.Error = fmt.Sprintf("fenced: partition %s/%d is at epoch %d held by %q, commit has epoch %d from %q",
				s.GetTopic(), s.GetPartition(), p.epoch, p.holder, s.GetEpoch(), m.GetAgentId())
			r.Fenced = true
			f.fenced.Add(1)
		case s.GetBaseOffset() != p.committedEnd:
			r.Error = fmt.Sprintf("not contiguous: partition %s/%d committed end is %d, section starts at %d",
				s.GetTopic(), s.GetPartition(), p.committedEnd, s.GetBaseOffset())
		default:
			sec := cloneSection(s)
			sec.ObjectKey = m.GetObjectKey()
			p.sections = append(p.sections, sec)
			p.committedEnd = s.GetEndOffset()
			r.Committed = true
			anyCommitted = true
		}
		r.CommittedEndOffset = p.committedEnd
	}
	if anyCommitted {
		f.objects = append(f.objects, m.GetObjectKey())
	}
	if f.loseReplies > 0 {
		f.loseReplies--
		return nil, connect.NewError(connect.CodeUnavailable, errors.New("injected: reply lost after the commit was applied"))
	}
	return connect.NewResponse(out), nil
}

func (f *fakeController) LookupObjects(ctx context.Context, req *connect.Request[v1.LookupObjectsRequest]) (*connect.Response[v1.LookupObjectsResponse], error) {
	m := req.Msg
	limit := int(m.GetMaxSections())
	if limit <= 0 {
		limit = 16
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	p := f.partLocked(m.GetTopic(), m.GetPartition())
	if p == nil {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("partition %s/%d does not exist", m.GetTopic(), m.GetPartition()))
	}
	out := &v1.LookupObjectsResponse{StartOffset: p.start, CommittedEndOffset: p.committedEnd}
	i := sort.Search(len(p.sections), func(i int) bool { return p.sections[i].GetEndOffset() > m.GetOffset() })
	for ; i < len(p.sections) && len(out.Sections) < limit; i++ {
		out.Sections = append(out.Sections, cloneSection(p.sections[i]))
	}
	return connect.NewResponse(out), nil
}

func (f *fakeController) GetRoutes(context.Context, *connect.Request[v1.GetRoutesRequest]) (*connect.Response[v1.GetRoutesResponse], error) {
	return nil, connect.NewError(connect.CodeUnimplemented, errors.New("fake controller: GetRoutes"))
}

// ReleaseLeases frees the listed partitions the agent process holds, or all
// of them when none are listed.
func (f *fakeController) ReleaseLeases(_ context.Context, req *connect.Request[v1.ReleaseLeasesRequest]) (*connect.Response[v1.ReleaseLeasesResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	only := map[partKey]bool{}
	for _, r := range req.Msg.GetPartitions() {
		only[partKey{r.GetTopic(), r.GetPartition()}] = true
	}
	n := int32(0)
	for _, t := range f.topics {
		for i, p := range t.parts {
			if len(only) > 0 && !only[partKey{t.info.GetName(), int32(i)}] {
				continue
			}
			if p.holder == req.Msg.GetAgentId() && p.incarnation == req.Msg.GetIncarnation() {
				p.holder, p.incarnation = "", ""
				n++
			}
		}
	}
	f.released.Add(int64(n))
	return connect.NewResponse(&v1.ReleaseLeasesResponse{Released: n}), nil
}

// --- inspection and fault injection ---

func (f *fakeController) committedEnd(topic string, partition int32) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.partLocked(topic, partition).committedEnd
}

func (f *fakeController) epoch(topic string, partition int32) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.partLocked(topic, partition).epoch
}

func (f *fakeController) sections(topic string, partition int32) []*v1.ObjectSection {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*v1.ObjectSection
	for _, s := range f.partLocked(topic, partition).sections {
		out = append(out, cloneSection(s))
	}
	return out
}

// failCommits makes every CommitObject fail with err (nil: succeed again).
func (f *fakeController) failCommits(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.commitErr = err
}

// holdCommits makes CommitObject block until the returned func is called.
func (f *fakeController) holdCommits() (release func()) {
	gate := make(chan struct{})
	f.mu.Lock()
	f.gate = gate
	f.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			f.mu.Lock()
			f.gate = nil
			f.mu.Unlock()
			close(gate)
		})
	}
}

// steal hands the partition to another agent with a new epoch, as the
// controller does after the holder's lease lapsed.
func (f *fakeController) steal(topic string, partition int32) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := f.partLocked(topic, partition)
	p.holder, p.incarnation = "other-agent", "other-incarnation"
	p.epoch++
}

// countingStore wraps a Store and counts PUTs and GETs.
type countingStore struct {
	objstore.Store
	puts, gets atomic.Int64
	mu         sync.Mutex
	putKeys    []string
}

func (s *countingStore) PutIfAbsent(ctx context.Context, key string, data []byte) error {
	s.puts.Add(1)
	err := s.Store.PutIfAbsent(ctx, key, data)
	if err == nil {
		s.mu.Lock()
		s.putKeys = append(s.putKeys, key)
		s.mu.Unlock()
	}
	return err
}

func (s *countingStore) Get(ctx context.Context, key string, offset, length int64) ([]byte, error) {
	s.gets.Add(1)
	return s.Store.Get(ctx, key, offset, length)
}

func (s *countingStore) keys() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.putKeys...)
}

func cloneTopic(t *v1.TopicInfo) *v1.TopicInfo {
	return &v1.TopicInfo{
		Name: t.GetName(), Partitions: t.GetPartitions(), Durability: t.GetDurability(),
		RetentionMs: t.GetRetentionMs(), RetentionBytes: t.GetRetentionBytes(),
		MaxRecordBytes: t.GetMaxRecordBytes(), MaxBatchBytes: t.GetMaxBatchBytes(),
	}
}

func cloneSection(s *v1.ObjectSection) *v1.ObjectSection {
	return &v1.ObjectSection{
		Topic: s.GetTopic(), Partition: s.GetPartition(), Epoch: s.GetEpoch(),
		BaseOffset: s.GetBaseOffset(), EndOffset: s.GetEndOffset(), Position: s.GetPosition(),
		Length: s.GetLength(), MaxTimestampMs: s.GetMaxTimestampMs(), ObjectKey: s.GetObjectKey(),
	}
}

// loseNextReplies makes the next n commits apply and then fail.
func (f *fakeController) loseNextReplies(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.loseReplies = n
}
