package controller

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/api/gen/streamhouse/v1/streamhousev1connect"
	"github.com/streamhouse/streamhouse/controller/fsm"
	"github.com/streamhouse/streamhouse/controller/groups"
	"github.com/streamhouse/streamhouse/pkg/rpcerr"
)

// Consumer group defaults and limits.
const (
	DefaultGroupHeartbeatInterval = 3 * time.Second
	DefaultGroupSessionTimeout    = 45 * time.Second
	DefaultGroupMaxSessionTimeout = 30 * time.Minute
)

// GroupFencedHeader is set (to "1") on FailedPrecondition answers that fence
// a member: it must drop its partitions and rejoin.
const GroupFencedHeader = "Streamhouse-Group-Fenced"

// groupDefaults fills in and checks the consumer group settings.
func (c *Config) groupDefaults() error {
	if c.GroupHeartbeatInterval == 0 {
		c.GroupHeartbeatInterval = DefaultGroupHeartbeatInterval
	}
	if c.GroupSessionTimeout == 0 {
		c.GroupSessionTimeout = DefaultGroupSessionTimeout
	}
	if c.GroupMaxSessionTimeout == 0 {
		c.GroupMaxSessionTimeout = max(DefaultGroupMaxSessionTimeout, c.GroupSessionTimeout)
	}
	switch {
	case c.GroupHeartbeatInterval < 10*time.Millisecond:
		return fmt.Errorf("controller: group heartbeat interval %v is below the 10ms minimum", c.GroupHeartbeatInterval)
	case c.GroupSessionTimeout < 2*c.GroupHeartbeatInterval:
		return fmt.Errorf("controller: group session timeout %v must be at least twice the heartbeat interval %v", c.GroupSessionTimeout, c.GroupHeartbeatInterval)
	case c.GroupMaxSessionTimeout < c.GroupSessionTimeout:
		return fmt.Errorf("controller: group max session timeout %v is below the default session timeout %v", c.GroupMaxSessionTimeout, c.GroupSessionTimeout)
	}
	return nil
}

// groupCoord is the leader's consumer group coordinator: it serialises
// every group's read-compute-apply (one mutex for all groups: group
// operations are few and each is one Raft entry), keeps the members' last
// heartbeat times in memory, and evicts silent members.
//
// Lock order: groupCoord.mu, then the FSM's lock, then Node.mu.
type groupCoord struct {
	n     *Node
	logic *groups.Coordinator
	tick  time.Duration

	mu sync.Mutex
	// lastSeen is group -> member -> last heartbeat on this leader. A
	// member missing from it counts as seen when the coordinator became
	// ready (so a new leader starts every member's clock afresh).
	lastSeen   map[string]map[string]time.Time
	readySince time.Time

	// ready: this node leads, and has applied every entry of earlier terms.
	ready  atomic.Bool
	prepMu sync.Mutex // serialises prepare; guards term
	term   uint64
}

func newGroupCoord(n *Node) *groupCoord {
	cfg := groups.Config{
		HeartbeatInterval:     n.cfg.GroupHeartbeatInterval,
		DefaultSessionTimeout: n.cfg.GroupSessionTimeout,
		MinSessionTimeout:     2 * n.cfg.GroupHeartbeatInterval,
		MaxSessionTimeout:     n.cfg.GroupMaxSessionTimeout,
	}
	return &groupCoord{n: n, logic: groups.New(cfg, newMemberID), lastSeen: map[string]map[string]time.Time{},
		tick: min(max(n.cfg.GroupHeartbeatInterval/2, 10*time.Millisecond), 250*time.Millisecond)}
}

func newMemberID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// run follows leadership and evicts members whose session timed out. It
// also re-resolves every group's subscription, so a new topic a regex
// matches (or a deleted one) bumps the group epoch without waiting for a
// heartbeat.
func (g *groupCoord) run() {
	defer g.n.wg.Done()
	registerGroupMetrics(g)
	defer unregisterGroupMetrics(g)
	t := time.NewTicker(g.tick)
	defer t.Stop()
	for {
		select {
		case <-g.n.stop:
			return
		case <-t.C:
		}
		if g.prepare() {
			g.expire()
		}
	}
}

// prepare makes the coordinator ready when this node leads: after a
// barrier (every entry of earlier terms is applied) it restarts every
// member's session clock. It reports whether the coordinator is ready.
func (g *groupCoord) prepare() bool {
	g.prepMu.Lock()
	defer g.prepMu.Unlock()
	if !g.n.IsLeader() {
		g.ready.Store(false)
		return false
	}
	term := g.n.raft.CurrentTerm()
	if g.ready.Load() && term == g.term {
		return true
	}
	g.ready.Store(false)
	if err := g.n.raft.Barrier(5 * time.Second).Error(); err != nil {
		g.n.log.Warn("group coordinator: barrier after election", "err", err)
		return false
	}
	g.mu.Lock()
	g.lastSeen = map[string]map[string]time.Time{}
	g.readySince = g.n.cfg.Now()
	g.term = term
	g.mu.Unlock()
	g.ready.Store(true)
	g.n.log.Info("group coordinator is ready on the new leader", "term", term)
	return true
}

// seen returns when a member was last heard of (on this leader).
func (g *groupCoord) seen(group, member string) time.Time {
	if t, ok := g.lastSeen[group][member]; ok {
		return t
	}
	return g.readySince
}

func (g *groupCoord) touch(group, member string, at time.Time) {
	m, ok := g.lastSeen[group]
	if !ok {
		m = map[string]time.Time{}
		g.lastSeen[group] = m
	}
	m[member] = at
}

func (g *groupCoord) forget(group string, members ...string) {
	for _, id := range members {
		delete(g.lastSeen[group], id)
	}
	if len(g.lastSeen[group]) == 0 {
		delete(g.lastSeen, group)
	}
}

// topicMeta is every topic's partition count.
func topicMeta(s *fsm.State) map[string]int32 {
	out := make(map[string]int32, len(s.Topics))
	for name, t := range s.Topics {
		out[name] = int32(len(t.Partitions))
	}
	return out
}

// expire evicts silent members and applies metadata changes, group by group.
func (g *groupCoord) expire() {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.n.cfg.Now()
	var ids []string
	g.n.fsm.Read(func(s *fsm.State) { ids = s.GroupIDs() })
	for _, id := range ids {
		var (
			meta    fsm.GroupMeta
			version uint64
			topics  map[string]int32
			ok      bool
		)
		g.n.fsm.Read(func(s *fsm.State) {
			var gr *fsm.Group
			if gr, ok = s.Groups[id]; ok {
				meta, version, topics = gr.Meta.Clone(), gr.Version, topicMeta(s)
			}
		})
		if !ok {
			g.forget(id)
			continue
		}
		var expired []string
		for _, mid := range meta.MemberIDs() {
			m := meta.Members[mid]
			if now.Sub(g.seen(id, mid)) > time.Duration(m.SessionTimeoutMs)*time.Millisecond {
				expired = append(expired, mid)
			}
		}
		res := g.logic.Expire(meta, expired, topics, now.UnixMilli())
		if !res.Changed {
			continue
		}
		if err := g.update(context.Background(), id, version, res, now); err != nil {
			if !errors.Is(err, fsm.ErrGroupConflict) {
				g.n.log.Warn("group coordinator: apply eviction", "group", id, "err", err)
			}
			continue
		}
		for _, mid := range expired {
			g.n.log.Warn("evicted a consumer group member after its session timeout", "group", id, "member", mid,
				"silent_for", now.Sub(g.seen(id, mid)).Round(time.Millisecond))
		}
		g.forget(id, res.Removed...)
	}
}

// update applies a computed group change through Raft.
func (g *groupCoord) update(ctx context.Context, group string, version uint64, res groups.Result, now time.Time) error {
	out, err := g.n.apply(ctx, fsm.GroupUpdateType, fsm.GroupUpdate{Group: group, ExpectedVersion: version, Meta: res.Meta,
		Events: res.Events, EpochEventType: groups.EpochEvent, NowMs: now.UnixMilli()})
	if err == nil {
		err, _ = out.(error)
	}
	return err
}

// Groups returns the node's GroupService implementation.
func (n *Node) Groups() streamhousev1connect.GroupServiceHandler { return groupService{n} }

type groupService struct{ n *Node }

// ready refuses group requests until this leader has applied everything
// (Unavailable, marked not applied: clients retry).
func (s groupService) ready() error {
	if !s.n.groups.prepare() {
		return rpcerr.NotApplied(connect.CodeUnavailable, errors.New("the group coordinator is not ready on this controller (a leader change is in progress); retry"))
	}
	return nil
}

// groupError maps coordinator and FSM errors to Connect errors.
func groupError(op string, err error) error {
	fenced := func(err error) error {
		ce := connect.NewError(connect.CodeFailedPrecondition, err)
		ce.Meta().Set(GroupFencedHeader, "1")
		return ce
	}
	switch {
	case errors.Is(err, groups.ErrInvalid):
		return connect.NewError(connect.CodeInvalidArgument, err)
	case errors.Is(err, groups.ErrUnknownMember), errors.Is(err, fsm.ErrUnknownMember), errors.Is(err, fsm.ErrGroupNotFound):
		return connect.NewError(connect.CodeNotFound, err)
	case errors.Is(err, groups.ErrFenced), errors.Is(err, fsm.ErrStaleMemberEpoch), errors.Is(err, fsm.ErrNotOwner):
		return fenced(err)
	case errors.Is(err, fsm.ErrGroupNotEmpty):
		return connect.NewError(connect.CodeFailedPrecondition, err)
	case errors.Is(err, fsm.ErrGroupConflict):
		return rpcerr.NotApplied(connect.CodeUnavailable, fmt.Errorf("%s: %w; retry", op, err))
	default:
		return applyError(op, err)
	}
}

func refsOf(tps []*v1.TopicPartitions) []fsm.PartitionRef {
	var out []fsm.PartitionRef
	for _, tp := range tps {
		for _, p := range tp.GetPartitions() {
			out = append(out, fsm.PartitionRef{Topic: tp.GetTopic(), Partition: p})
		}
	}
	return out
}

// topicPartitions groups refs by topic, in order.
func topicPartitions(refs []fsm.PartitionRef) []*v1.TopicPartitions {
	sorted := slices.Clone(refs)
	sort.Slice(sorted, func(i, j int) bool {
		if sorted[i].Topic != sorted[j].Topic {
			return sorted[i].Topic < sorted[j].Topic
		}
		return sorted[i].Partition < sorted[j].Partition
	})
	var out []*v1.TopicPartitions
	for _, r := range sorted {
		if len(out) == 0 || out[len(out)-1].Topic != r.Topic {
			out = append(out, &v1.TopicPartitions{Topic: r.Topic})
		}
		last := out[len(out)-1]
		last.Partitions = append(last.Partitions, r.Partition)
	}
	return out
}

func (s groupService) GroupHeartbeat(ctx context.Context, req *connect.Request[v1.GroupHeartbeatRequest]) (*connect.Response[v1.GroupHeartbeatResponse], error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	m := req.Msg
	g := s.n.groups
	in := groups.Request{Group: m.GetGroupId(), MemberID: m.GetMemberId(), InstanceID: m.GetInstanceId(), MemberEpoch: m.GetMemberEpoch(),
		Topics: m.GetTopics(), Regex: m.GetTopicRegex(), Assignor: m.GetAssignor(), Owned: refsOf(m.GetOwned()),
		SessionTimeoutMs: int64(m.GetSessionTimeoutMs())}
	g.mu.Lock()
	defer g.mu.Unlock()
	for attempt := 0; ; attempt++ {
		now := s.n.cfg.Now()
		var (
			meta    fsm.GroupMeta
			version uint64
			topics  map[string]int32
		)
		s.n.fsm.Read(func(st *fsm.State) {
			if gr, ok := st.Groups[in.Group]; ok {
				meta, version = gr.Meta.Clone(), gr.Version
			}
			topics = topicMeta(st)
		})
		res, err := g.logic.Heartbeat(meta, in, topics, now.UnixMilli())
		if err != nil {
			return nil, groupError("group heartbeat", err)
		}
		if res.Changed {
			if err := g.update(ctx, in.Group, version, res, now); err != nil {
				if errors.Is(err, fsm.ErrGroupConflict) && attempt < 3 {
					continue
				}
				return nil, groupError("group heartbeat", err)
			}
		}
		r := res.Response
		g.forget(in.Group, res.Removed...)
		switch in.MemberEpoch {
		case groups.LeaveEpoch:
			g.forget(in.Group, r.MemberID)
			s.n.log.Info("consumer group member left", "group", in.Group, "member", r.MemberID)
		default:
			g.touch(in.Group, r.MemberID, now)
		}
		if in.MemberEpoch == groups.JoinEpoch {
			s.n.log.Info("consumer group member joined", "group", in.Group, "member", r.MemberID, "instance", in.InstanceID,
				"member_epoch", r.MemberEpoch, "group_epoch", r.GroupEpoch)
		}
		return connect.NewResponse(&v1.GroupHeartbeatResponse{
			MemberId: r.MemberID, MemberEpoch: r.MemberEpoch, HeartbeatIntervalMs: int32(s.n.cfg.GroupHeartbeatInterval.Milliseconds()),
			Assignment: topicPartitions(r.Assignment), GroupEpoch: r.GroupEpoch, PendingPartitions: int32(r.Pending),
		}), nil
	}
}

func (s groupService) CommitOffsets(ctx context.Context, req *connect.Request[v1.CommitOffsetsRequest]) (*connect.Response[v1.CommitOffsetsResponse], error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	m := req.Msg
	if err := groups.ValidateGroupID(m.GetGroupId()); err != nil {
		return nil, groupError("commit offsets", err)
	}
	if m.GetMemberId() == "" {
		return nil, invalid("commit offsets needs the member id and epoch of a group member")
	}
	cmd := fsm.OffsetCommit{Group: m.GetGroupId(), MemberID: m.GetMemberId(), MemberEpoch: m.GetMemberEpoch(), NowMs: s.n.cfg.Now().UnixMilli()}
	for _, o := range m.GetOffsets() {
		if o.GetOffset() < 0 {
			return nil, invalid("offset %d of %s/%d is negative", o.GetOffset(), o.GetTopic(), o.GetPartition())
		}
		cmd.Offsets = append(cmd.Offsets, fsm.CommittedOffset{Topic: o.GetTopic(), Partition: o.GetPartition(), Offset: o.GetOffset(), Metadata: o.GetMetadata()})
	}
	res, err := s.n.apply(ctx, fsm.OffsetCommitType, cmd)
	if err == nil {
		err, _ = res.(error)
	}
	if err != nil {
		if errors.Is(err, fsm.ErrUnknownMember) || errors.Is(err, fsm.ErrStaleMemberEpoch) || errors.Is(err, fsm.ErrNotOwner) {
			groupFencedCommits.Inc()
			s.n.log.Warn("offset commit rejected", "group", m.GetGroupId(), "member", m.GetMemberId(), "member_epoch", m.GetMemberEpoch(), "reason", err)
		}
		return nil, groupError("commit offsets", err)
	}
	return connect.NewResponse(&v1.CommitOffsetsResponse{}), nil
}

func (s groupService) FetchOffsets(ctx context.Context, req *connect.Request[v1.FetchOffsetsRequest]) (*connect.Response[v1.FetchOffsetsResponse], error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	if err := groups.ValidateGroupID(req.Msg.GetGroupId()); err != nil {
		return nil, groupError("fetch offsets", err)
	}
	if err := s.n.verifyLeader(); err != nil {
		return nil, err
	}
	want := refsOf(req.Msg.GetPartitions())
	out := &v1.FetchOffsetsResponse{}
	s.n.fsm.Read(func(st *fsm.State) {
		gr, ok := st.Groups[req.Msg.GetGroupId()]
		if !ok {
			return
		}
		add := func(topic string, p int32, o fsm.Offset) {
			out.Offsets = append(out.Offsets, &v1.PartitionOffset{Topic: topic, Partition: p, Offset: o.Offset, Metadata: o.Metadata})
		}
		if len(want) > 0 {
			for _, r := range want {
				if o, ok := gr.Offsets[r.Topic][r.Partition]; ok {
					add(r.Topic, r.Partition, o)
				}
			}
			return
		}
		for _, r := range offsetRefs(gr) {
			add(r.Topic, r.Partition, gr.Offsets[r.Topic][r.Partition])
		}
	})
	return connect.NewResponse(out), nil
}

// offsetRefs lists a group's partitions with committed offsets, in order.
func offsetRefs(gr *fsm.Group) []fsm.PartitionRef {
	var out []fsm.PartitionRef
	for topic, byPart := range gr.Offsets {
		for p := range byPart {
			out = append(out, fsm.PartitionRef{Topic: topic, Partition: p})
		}
	}
	return sortRefs(out)
}

func sortRefs(refs []fsm.PartitionRef) []fsm.PartitionRef {
	sort.Slice(refs, func(i, j int) bool {
		if refs[i].Topic != refs[j].Topic {
			return refs[i].Topic < refs[j].Topic
		}
		return refs[i].Partition < refs[j].Partition
	})
	return refs
}

// endOffset is a partition's high watermark: the committed end, or for a
// wal topic the WAL end its holder reported, whichever is larger; -1 when
// the partition does not exist. Called inside an FSM read.
func (n *Node) endOffset(s *fsm.State, topic string, partition int32) int64 {
	p := s.PartitionOf(topic, partition)
	if p == nil {
		return -1
	}
	end := p.CommittedEnd
	if v1.Durability(s.Topics[topic].Config.Durability) == v1.Durability_DURABILITY_WAL {
		end = max(end, n.reportedWALEnd(topic, partition))
	}
	return end
}

// groupLag describes the partitions of a group: committed offset, end
// offset and lag (0 where nothing is committed or the topic is gone).
// Called inside an FSM read.
func (n *Node) groupLag(s *fsm.State, gr *fsm.Group) []*v1.GroupPartition {
	owner := map[fsm.PartitionRef]string{}
	refs := offsetRefs(gr)
	for id, m := range gr.Meta.Members {
		for _, p := range append(slices.Clone(m.Assigned), m.Revoking...) {
			owner[p] = id
		}
		for _, p := range m.Target {
			if _, ok := gr.Offsets[p.Topic][p.Partition]; !ok && !slices.Contains(refs, p) {
				refs = append(refs, p)
			}
		}
	}
	var out []*v1.GroupPartition
	for _, r := range sortRefs(refs) {
		gp := &v1.GroupPartition{Topic: r.Topic, Partition: r.Partition, CommittedOffset: -1, Owner: owner[r]}
		gp.EndOffset = n.endOffset(s, r.Topic, r.Partition)
		if o, ok := gr.Offsets[r.Topic][r.Partition]; ok {
			gp.CommittedOffset, gp.Metadata = o.Offset, o.Metadata
			if gp.EndOffset >= 0 {
				gp.Lag = max(gp.EndOffset-o.Offset, 0)
			}
		}
		out = append(out, gp)
	}
	return out
}

func (s groupService) ListGroups(ctx context.Context, req *connect.Request[v1.ListGroupsRequest]) (*connect.Response[v1.ListGroupsResponse], error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	if err := s.n.verifyLeader(); err != nil {
		return nil, err
	}
	out := &v1.ListGroupsResponse{}
	s.n.fsm.Read(func(st *fsm.State) {
		for _, id := range st.GroupIDs() {
			gr := st.Groups[id]
			var lag int64
			for _, gp := range s.n.groupLag(st, gr) {
				lag += gp.Lag
			}
			out.Groups = append(out.Groups, &v1.GroupSummary{GroupId: id, State: groups.State(gr.Meta), Members: int32(len(gr.Meta.Members)),
				GroupEpoch: gr.Meta.Epoch, Assignor: gr.Meta.Assignor, Lag: lag})
		}
	})
	return connect.NewResponse(out), nil
}

func (s groupService) DescribeGroup(ctx context.Context, req *connect.Request[v1.DescribeGroupRequest]) (*connect.Response[v1.DescribeGroupResponse], error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	id := req.Msg.GetGroupId()
	if err := groups.ValidateGroupID(id); err != nil {
		return nil, groupError("describe group", err)
	}
	if err := s.n.verifyLeader(); err != nil {
		return nil, err
	}
	g := s.n.groups
	g.mu.Lock() // for lastSeen
	defer g.mu.Unlock()
	now := s.n.cfg.Now()
	var out *v1.DescribeGroupResponse
	s.n.fsm.Read(func(st *fsm.State) {
		gr, ok := st.Groups[id]
		if !ok {
			return
		}
		out = &v1.DescribeGroupResponse{GroupId: id, State: groups.State(gr.Meta), GroupEpoch: gr.Meta.Epoch, AssignmentEpoch: gr.Meta.AssignmentEpoch,
			Assignor: gr.Meta.Assignor, Rebalances: gr.Rebalances}
		out.Partitions = s.n.groupLag(st, gr)
		lagOf := map[fsm.PartitionRef]int64{}
		for _, gp := range out.Partitions {
			lagOf[fsm.PartitionRef{Topic: gp.Topic, Partition: gp.Partition}] = gp.Lag
			out.TotalLag += gp.Lag
		}
		for _, mid := range gr.Meta.MemberIDs() {
			m := gr.Meta.Members[mid]
			gm := &v1.GroupMember{MemberId: mid, InstanceId: m.InstanceID, MemberEpoch: m.Epoch, Topics: m.Topics, TopicRegex: m.Regex,
				Assigned: topicPartitions(m.Assigned), Revoking: topicPartitions(m.Revoking), Target: topicPartitions(m.Target),
				LastHeartbeatMsAgo: now.Sub(g.seen(id, mid)).Milliseconds(), Left: m.LeftMs != 0, SessionTimeoutMs: int32(m.SessionTimeoutMs)}
			for _, p := range m.Assigned {
				gm.Lag += lagOf[p]
			}
			out.Members = append(out.Members, gm)
		}
		if req.Msg.GetIncludeHistory() {
			for _, e := range gr.History {
				out.History = append(out.History, &v1.AssignmentEvent{Index: e.Index, TimeMs: e.TimeMs, Type: v1.AssignmentEventType(e.Type),
					MemberId: e.Member, PreviousMemberId: e.Previous, Partitions: topicPartitions(e.Partitions), GroupEpoch: e.Epoch})
			}
		}
	})
	if out == nil {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("group %q does not exist", id))
	}
	return connect.NewResponse(out), nil
}

// resetTarget computes one partition's new offset for ResetOffsets.
func (n *Node) resetTarget(s *fsm.State, m *v1.ResetOffsetsRequest, topic string, partition int32) int64 {
	p := s.PartitionOf(topic, partition)
	end := n.endOffset(s, topic, partition)
	switch to := m.GetTo().(type) {
	case *v1.ResetOffsetsRequest_Earliest:
		return p.StartOffset
	case *v1.ResetOffsetsRequest_Latest:
		return end
	case *v1.ResetOffsetsRequest_TimestampMs:
		// The object index knows each section's newest timestamp: the first
		// section holding a record at or after the time starts there.
		for _, sec := range p.Sections {
			if sec.EndOffset > p.StartOffset && sec.MaxTimestampMs >= to.TimestampMs {
				return max(sec.BaseOffset, p.StartOffset)
			}
		}
		return end
	case *v1.ResetOffsetsRequest_Offset:
		return min(max(to.Offset, p.StartOffset), end)
	}
	return end
}

func (s groupService) ResetOffsets(ctx context.Context, req *connect.Request[v1.ResetOffsetsRequest]) (*connect.Response[v1.ResetOffsetsResponse], error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	m := req.Msg
	if err := groups.ValidateGroupID(m.GetGroupId()); err != nil {
		return nil, groupError("reset offsets", err)
	}
	if err := ValidateTopicName(m.GetTopic()); err != nil {
		return nil, invalid("%v", err)
	}
	if m.GetTo() == nil {
		return nil, invalid("say where to reset to: earliest, latest, timestamp_ms or offset")
	}
	g := s.n.groups
	g.mu.Lock()
	defer g.mu.Unlock()
	if err := s.n.verifyLeader(); err != nil {
		return nil, err
	}
	var (
		errOut error
		cmd    = fsm.OffsetCommit{Group: m.GetGroupId(), Admin: true, NowMs: s.n.cfg.Now().UnixMilli()}
		out    = &v1.ResetOffsetsResponse{}
	)
	s.n.fsm.Read(func(st *fsm.State) {
		if gr, ok := st.Groups[m.GetGroupId()]; ok && len(gr.Meta.Members) > 0 {
			errOut = connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("group %q has %d live member(s); offsets can only be reset while the group has no members: stop its consumers first", m.GetGroupId(), len(gr.Meta.Members)))
			return
		}
		t, ok := st.Topics[m.GetTopic()]
		if !ok {
			errOut = connect.NewError(connect.CodeNotFound, fmt.Errorf("topic %q does not exist", m.GetTopic()))
			return
		}
		parts := m.GetPartitions()
		if len(parts) == 0 {
			for i := range t.Partitions {
				parts = append(parts, int32(i))
			}
		}
		for _, p := range parts {
			if p < 0 || int(p) >= len(t.Partitions) {
				errOut = invalid("partition %d is out of range: topic %q has partitions 0 to %d", p, t.Name, len(t.Partitions)-1)
				return
			}
			prev := int64(-1)
			if gr, ok := st.Groups[m.GetGroupId()]; ok {
				if o, ok := gr.Offsets[t.Name][p]; ok {
					prev = o.Offset
				}
			}
			next := s.n.resetTarget(st, m, t.Name, p)
			out.Offsets = append(out.Offsets, &v1.PartitionOffsetChange{Topic: t.Name, Partition: p, PreviousOffset: prev, NewOffset: next})
			cmd.Offsets = append(cmd.Offsets, fsm.CommittedOffset{Topic: t.Name, Partition: p, Offset: next})
		}
	})
	if errOut != nil {
		return nil, errOut
	}
	if m.GetDryRun() {
		return connect.NewResponse(out), nil
	}
	res, err := s.n.apply(ctx, fsm.OffsetCommitType, cmd)
	if err == nil {
		err, _ = res.(error)
	}
	if err != nil {
		return nil, groupError("reset offsets", err)
	}
	s.n.log.Info("reset consumer group offsets", "group", m.GetGroupId(), "topic", m.GetTopic(), "partitions", len(cmd.Offsets))
	return connect.NewResponse(out), nil
}

func (s groupService) DeleteGroup(ctx context.Context, req *connect.Request[v1.DeleteGroupRequest]) (*connect.Response[v1.DeleteGroupResponse], error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	id := req.Msg.GetGroupId()
	if err := groups.ValidateGroupID(id); err != nil {
		return nil, groupError("delete group", err)
	}
	g := s.n.groups
	g.mu.Lock()
	defer g.mu.Unlock()
	res, err := s.n.apply(ctx, fsm.DeleteGroupType, fsm.DeleteGroup{Group: id})
	if err == nil {
		err, _ = res.(error)
	}
	if err != nil {
		if errors.Is(err, fsm.ErrGroupNotFound) {
			return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("group %q does not exist", id))
		}
		if errors.Is(err, fsm.ErrGroupNotEmpty) {
			return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("%v; a group can only be deleted while it has no members", err))
		}
		return nil, groupError("delete group", err)
	}
	g.forget(id)
	s.n.log.Info("deleted consumer group", "group", id)
	return connect.NewResponse(&v1.DeleteGroupResponse{}), nil
}
