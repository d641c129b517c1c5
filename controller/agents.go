package controller

import (
	"context"
	"fmt"
	"sort"
	"time"

	"connectrpc.com/connect"
	"go.opentelemetry.io/otel/attribute"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/api/gen/streamhouse/v1/streamhousev1connect"
	"github.com/streamhouse/streamhouse/controller/fsm"
	"github.com/streamhouse/streamhouse/pkg/telemetry/spans"
)

// Lock order: fsm's lock before Node.mu (DescribeTopic reads progress inside
// an FSM read). Never take the FSM lock while holding Node.mu.

func msTime(ms int64) time.Time { return time.UnixMilli(ms) }

func (n *Node) reportedWALEnd(topic string, partition int32) int64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.progress[partKey{topic, partition}]
}

// agentBeat is what this node remembers of one agent's heartbeats.
type agentBeat struct {
	// at is when this node last received a heartbeat from the agent; zero
	// when it never has (an agent that held a partition when this node
	// took over).
	at time.Time
	// term is the Raft term at was recorded in. A node leads at most one
	// term at a time, so a heartbeat of the current term is one this
	// leader received since it took over; older ones were received in an
	// earlier term of this node, when another node may have led since.
	term uint64
}

// heartbeats is the leader's memory of agent heartbeats (agent id -> last
// heartbeat): not replicated, so a new leader learns it within one
// heartbeat interval. Lease planning (live), the agent list (heardThisTerm)
// and the heartbeat-age metric (ages) all read this one map, so they never
// disagree about when an agent was last heard from. An entry is kept until
// the agent releases all its leases (a clean shutdown), so a vanished
// agent shows a growing age. Its zero value is empty and ready; Node.mu
// guards it.
type heartbeats struct {
	beats map[string]agentBeat
	// since is when this node last took over as leader: the metric counts
	// an agent it has not heard from since then from that moment, not from
	// a heartbeat of an earlier term.
	since time.Time
}

// record notes a heartbeat from agent id received at now in Raft term term.
func (h *heartbeats) record(id string, now time.Time, term uint64) {
	if h.beats == nil {
		h.beats = map[string]agentBeat{}
	}
	h.beats[id] = agentBeat{at: now, term: term}
}

// forget drops agent id (it released its leases and is leaving).
func (h *heartbeats) forget(id string) { delete(h.beats, id) }

// live returns the agents live for lease planning: those whose last
// heartbeat is less than lease old.
func (h *heartbeats) live(now time.Time, lease time.Duration) map[string]bool {
	out := map[string]bool{}
	for id, b := range h.beats {
		if !b.at.IsZero() && now.Sub(b.at) < lease {
			out[id] = true
		}
	}
	return out
}

// heardThisTerm returns when agent id's last heartbeat arrived, if it
// arrived in Raft term term (for a leader: since it took over).
func (h *heartbeats) heardThisTerm(id string, term uint64) (time.Time, bool) {
	b, ok := h.beats[id]
	if !ok || b.at.IsZero() || b.term != term {
		return time.Time{}, false
	}
	return b.at, true
}

// takeover restarts the metric's clock at now, when this node becomes
// leader, and adds the partition holders it has never heard from, so an
// agent that vanished with the old leader still shows a growing age.
func (h *heartbeats) takeover(now time.Time, holders map[string]bool) {
	if h.beats == nil {
		h.beats = map[string]agentBeat{}
	}
	h.since = now
	for id := range holders {
		if _, ok := h.beats[id]; !ok {
			h.beats[id] = agentBeat{}
		}
	}
}

// ages returns, sorted by agent id, the time since each known agent's last
// heartbeat or since this node took over, whichever is later (never
// negative).
func (h *heartbeats) ages(now time.Time) (ids []string, ages []time.Duration) {
	ids = make([]string, 0, len(h.beats))
	for id := range h.beats {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	ages = make([]time.Duration, len(ids))
	for i, id := range ids {
		from := h.beats[id].at
		if from.Before(h.since) {
			from = h.since
		}
		ages[i] = max(now.Sub(from), 0)
	}
	return ids, ages
}

// Controller returns the node's ControllerService implementation.
func (n *Node) Controller() streamhousev1connect.ControllerServiceHandler {
	return controllerService{n}
}

type controllerService struct{ n *Node }

// Heartbeat registers the agent, renews its leases and grants it free
// partitions when it is the least loaded live agent.
func (c controllerService) Heartbeat(ctx context.Context, req *connect.Request[v1.HeartbeatRequest]) (*connect.Response[v1.HeartbeatResponse], error) {
	m := req.Msg
	if m.GetAgentId() == "" || m.GetIncarnation() == "" {
		return nil, invalid("heartbeat needs agent_id and incarnation")
	}
	n := c.n
	now := n.cfg.Now()
	term := n.raft.CurrentTerm()
	n.mu.Lock()
	n.beats.record(m.GetAgentId(), now, term)
	for _, p := range m.GetProgress() {
		n.progress[partKey{p.GetTopic(), p.GetPartition()}] = p.GetWalEndOffset()
	}
	live := n.beats.live(now, n.cfg.LeaseDuration)
	n.mu.Unlock()

	grant := fsm.GrantLeases{
		AgentID: m.GetAgentId(), Incarnation: m.GetIncarnation(), Address: m.GetAddress(), Zone: m.GetZone(),
		NowMs: now.UnixMilli(), ExpiresMs: now.Add(n.cfg.LeaseDuration).UnixMilli(),
	}
	var unclean []fsm.PartitionRef
	var grants, expiries int
	n.fsm.Read(func(s *fsm.State) {
		grant.Partitions, unclean = planGrants(s, m.GetAgentId(), live, grant.NowMs, n.cfg.WALHandoffTimeout.Milliseconds())
		grants, expiries = countLeaseChanges(s, &grant)
	})
	n.reportUnclean(unclean, m.GetAgentId())
	res, err := n.apply(ctx, fsm.GrantLeasesType, grant)
	if err == nil {
		err, _ = res.(error)
	}
	if err != nil {
		return nil, applyError("grant leases", err)
	}
	leaseGrants.Add(grants)
	leaseExpiries.Add(expiries)
	out := &v1.HeartbeatResponse{LeaseDurationMs: n.cfg.LeaseDuration.Milliseconds()}
	n.fsm.Read(func(s *fsm.State) {
		if ag, ok := s.Agents[m.GetAgentId()]; ok {
			out.Drain = ag.Draining
		}
		for _, name := range s.TopicNames() {
			t := s.Topics[name]
			var info *v1.TopicInfo // one per topic, shared by its leases (read-only)
			for i, p := range t.Partitions {
				if p.Holder != m.GetAgentId() || p.Incarnation != m.GetIncarnation() {
					continue
				}
				if info == nil {
					info = topicInfo(t)
				}
				out.Leases = append(out.Leases, &v1.Lease{
					Topic: info, Partition: int32(i), Epoch: p.Epoch,
					CommittedEndOffset: p.CommittedEnd, StartOffset: p.StartOffset,
				})
			}
		}
	})
	return connect.NewResponse(out), nil
}

// reportUnclean logs and counts wal-topic partitions moved away from a
// holder that vanished: the records it acknowledged but never uploaded are
// lost, and the new epoch starts at the committed end.
func (n *Node) reportUnclean(refs []fsm.PartitionRef, to string) {
	if len(refs) == 0 {
		return
	}
	n.fsm.Read(func(s *fsm.State) { n.reportUncleanLocked(s, refs, to) })
}

// reportUncleanLocked is reportUnclean inside an FSM read.
func (n *Node) reportUncleanLocked(s *fsm.State, refs []fsm.PartitionRef, to string) {
	for _, ref := range refs {
		p := s.Topics[ref.Topic].Partitions[ref.Partition]
		lost := max(n.reportedWALEnd(ref.Topic, ref.Partition)-p.CommittedEnd, 0)
		uncleanHandoffs.Inc()
		uncleanLostRecords.Add(int(lost))
		n.log.Warn("unclean handoff: the holder of a wal partition vanished and did not come back in time; its un-uploaded tail is lost",
			"topic", ref.Topic, "partition", ref.Partition, "old_holder", p.Holder, "new_holder", to,
			"committed_end", p.CommittedEnd, "lost_records_reported", lost, "wal_handoff_timeout", n.cfg.WALHandoffTimeout)
	}
}

// assignFree grants free partitions to live agents at once (each agent
// learns of them at its next heartbeat or when asked for one of them).
func (n *Node) assignFree(ctx context.Context) error {
	now := n.cfg.Now()
	n.mu.Lock()
	live := n.beats.live(now, n.cfg.LeaseDuration)
	n.mu.Unlock()
	ids := make([]string, 0, len(live))
	for id := range live {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		var grant *fsm.GrantLeases
		var grants, expiries int
		n.fsm.Read(func(s *fsm.State) {
			ag, ok := s.Agents[id]
			if !ok {
				return
			}
			g := fsm.GrantLeases{AgentID: id, Incarnation: ag.Incarnation, Address: ag.Address, Zone: ag.Zone,
				NowMs: now.UnixMilli(), ExpiresMs: now.Add(n.cfg.LeaseDuration).UnixMilli()}
			refs, unclean := planGrants(s, id, live, g.NowMs, n.cfg.WALHandoffTimeout.Milliseconds())
			n.reportUncleanLocked(s, unclean, id)
			for _, ref := range refs {
				if s.Topics[ref.Topic].Partitions[ref.Partition].Holder != id {
					g.Partitions = append(g.Partitions, ref)
				}
			}
			if len(g.Partitions) > 0 {
				grant = &g
				grants, expiries = countLeaseChanges(s, grant)
			}
		})
		if grant == nil {
			continue
		}
		if _, err := n.apply(ctx, fsm.GrantLeasesType, *grant); err != nil {
			return err
		}
		leaseGrants.Add(grants)
		leaseExpiries.Add(expiries)
	}
	return nil
}

// zoneOf is an agent's zone ("" when it reported none).
func zoneOf(s *fsm.State, id string) string {
	if ag, ok := s.Agents[id]; ok {
		return ag.Zone
	}
	return ""
}

// planGrants lists the partitions agent should hold after this heartbeat:
// those it holds already (renewal, or re-grant after its restart), and free or
// lapsed ones when it is the least loaded live agent at that moment.
//
// A partition of a wal topic whose holder vanished (its lease lapsed without
// a release) may hold acknowledged records that never reached the object
// store. It is kept for that holder for walHandoffMs after the lease
// lapsed, so a restarted holder uploads them; only then is it moved
// (unclean: the tail is lost, and listed in unclean). Durable topics never
// wait: what consumers may see is committed.
func planGrants(s *fsm.State, agent string, live map[string]bool, nowMs, walHandoffMs int64) (refs, unclean []fsm.PartitionRef) {
	load := map[string]int{}
	for id := range live {
		if ag, ok := s.Agents[id]; !ok || !ag.Draining {
			load[id] = 0
		}
	}
	draining := false
	if ag, ok := s.Agents[agent]; ok && ag.Draining {
		draining = true
	} else {
		load[agent] = 0
	}
	for _, t := range s.Topics {
		for _, p := range t.Partitions {
			if _, counted := load[p.Holder]; counted && p.LeaseValid(nowMs) {
				load[p.Holder]++
			}
		}
	}
	ids := make([]string, 0, len(load))
	for id := range load {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, name := range s.TopicNames() {
		walTopic := v1.Durability(s.Topics[name].Config.Durability) == v1.Durability_DURABILITY_WAL
		for i, p := range s.Topics[name].Partitions {
			ref := fsm.PartitionRef{Topic: name, Partition: int32(i)}
			if p.Holder == agent {
				refs = append(refs, ref)
				continue
			}
			if p.LeaseValid(nowMs) || draining || len(ids) == 0 {
				continue
			}
			vanished := walTopic && p.Holder != ""
			if vanished && nowMs < p.ExpiresMs+walHandoffMs {
				continue // wait for the old holder to come back and upload
			}
			// The least loaded zone first (when agents report zones), then
			// the least loaded agent in it.
			zoneLoad := map[string]int{}
			for _, id := range ids {
				zoneLoad[zoneOf(s, id)] += load[id]
			}
			least := ids[0]
			for _, id := range ids[1:] {
				zi, zl := zoneLoad[zoneOf(s, id)], zoneLoad[zoneOf(s, least)]
				if zi < zl || (zi == zl && load[id] < load[least]) {
					least = id
				}
			}
			if least == agent {
				refs = append(refs, ref)
				if vanished {
					unclean = append(unclean, ref)
				}
			}
			load[least]++
		}
	}
	return refs, unclean
}

func (c controllerService) CommitObject(ctx context.Context, req *connect.Request[v1.CommitObjectRequest]) (_ *connect.Response[v1.CommitObjectResponse], err error) {
	m := req.Msg
	ctx, span := spans.Start(ctx, tracer, "controller.commit_object")
	defer func() { endSpan(span, err) }()
	if span.IsRecording() {
		span.SetAttributes(attribute.String("streamhouse.agent", m.GetAgentId()), attribute.String("objstore.key", m.GetObjectKey()),
			attribute.Int("streamhouse.sections", len(m.GetSections())))
	}
	if m.GetAgentId() == "" || m.GetObjectKey() == "" || len(m.GetSections()) == 0 {
		return nil, invalid("commit needs agent_id, object_key and at least one section")
	}
	cmd := fsm.CommitObject{AgentID: m.GetAgentId(), Key: m.GetObjectKey()}
	for _, s := range m.GetSections() {
		if s.GetEndOffset() <= s.GetBaseOffset() || s.GetPosition() < 0 || s.GetLength() <= 0 ||
			s.GetPosition()+s.GetLength() > m.GetObjectSize() {
			return nil, invalid("section %s/%d [%d, %d) at %d+%d does not fit object %s of %d bytes",
				s.GetTopic(), s.GetPartition(), s.GetBaseOffset(), s.GetEndOffset(), s.GetPosition(), s.GetLength(),
				m.GetObjectKey(), m.GetObjectSize())
		}
		cmd.Sections = append(cmd.Sections, fsm.CommitSection{Topic: s.GetTopic(), Partition: s.GetPartition(), Section: fsm.Section{
			Epoch: s.GetEpoch(), BaseOffset: s.GetBaseOffset(), EndOffset: s.GetEndOffset(),
			Position: s.GetPosition(), Length: s.GetLength(), MaxTimestampMs: s.GetMaxTimestampMs(),
		}})
	}
	res, err := c.n.apply(ctx, fsm.CommitObjectType, cmd)
	if err != nil {
		return nil, applyError("commit object", err)
	}
	results, ok := res.([]fsm.SectionResult)
	if !ok {
		return nil, connect.NewError(connect.CodeInternal, fmt.Errorf("commit object: unexpected FSM result %T", res))
	}
	out := &v1.CommitObjectResponse{}
	for i, r := range results {
		if r.Fenced {
			fencedSections.Inc()
			c.n.log.WarnContext(ctx, "commit fenced: stale lease epoch", "agent", m.GetAgentId(), "topic", m.GetSections()[i].GetTopic(),
				"partition", m.GetSections()[i].GetPartition(), "epoch", m.GetSections()[i].GetEpoch(), "reason", r.Error)
		}
		s := m.GetSections()[i]
		out.Results = append(out.Results, &v1.SectionResult{
			Topic: s.GetTopic(), Partition: s.GetPartition(), Committed: r.Committed,
			CommittedEndOffset: r.CommittedEnd, Error: r.Error, Fenced: r.Fenced,
		})
	}
	return connect.NewResponse(out), nil
}

func (c controllerService) LookupObjects(ctx context.Context, req *connect.Request[v1.LookupObjectsRequest]) (*connect.Response[v1.LookupObjectsResponse], error) {
	m := req.Msg
	limit := int(m.GetMaxSections())
	if limit <= 0 {
		limit = 16
	}
	var out *v1.LookupObjectsResponse
	var err error
	c.n.fsm.Read(func(s *fsm.State) {
		t, ok := s.Topics[m.GetTopic()]
		if !ok {
			err = connect.NewError(connect.CodeNotFound, fmt.Errorf("topic %q does not exist", m.GetTopic()))
			return
		}
		if m.GetPartition() < 0 || int(m.GetPartition()) >= len(t.Partitions) {
			err = invalid("partition %d is out of range: topic %q has partitions 0 to %d", m.GetPartition(), t.Name, len(t.Partitions)-1)
			return
		}
		p := t.Partitions[m.GetPartition()]
		out = &v1.LookupObjectsResponse{StartOffset: p.StartOffset, CommittedEndOffset: p.CommittedEnd}
		for _, sec := range p.Lookup(m.GetOffset(), limit) {
			out.Sections = append(out.Sections, &v1.ObjectSection{
				Topic: t.Name, Partition: m.GetPartition(), Epoch: sec.Epoch, BaseOffset: sec.BaseOffset,
				EndOffset: sec.EndOffset, Position: sec.Position, Length: sec.Length,
				MaxTimestampMs: sec.MaxTimestampMs, ObjectKey: sec.Key,
			})
		}
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(out), nil
}

func (c controllerService) GetRoutes(ctx context.Context, req *connect.Request[v1.GetRoutesRequest]) (*connect.Response[v1.GetRoutesResponse], error) {
	now := c.n.cfg.Now().UnixMilli()
	var out *v1.GetRoutesResponse
	c.n.fsm.Read(func(s *fsm.State) {
		if t, ok := s.Topics[req.Msg.GetTopic()]; ok {
			out = routesOf(s, t, now)
		}
	})
	if out == nil {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("topic %q does not exist", req.Msg.GetTopic()))
	}
	return connect.NewResponse(out), nil
}

// ReleaseLeases gives up an agent process's leases and hands them to other
// live agents at once.
func (c controllerService) ReleaseLeases(ctx context.Context, req *connect.Request[v1.ReleaseLeasesRequest]) (*connect.Response[v1.ReleaseLeasesResponse], error) {
	m := req.Msg
	if m.GetAgentId() == "" || m.GetIncarnation() == "" {
		return nil, invalid("release needs agent_id and incarnation")
	}
	cmd := fsm.ReleaseLeases{AgentID: m.GetAgentId(), Incarnation: m.GetIncarnation()}
	for _, p := range m.GetPartitions() {
		cmd.Partitions = append(cmd.Partitions, fsm.PartitionRef{Topic: p.GetTopic(), Partition: p.GetPartition()})
	}
	res, err := c.n.apply(ctx, fsm.ReleaseLeasesType, cmd)
	if err != nil {
		return nil, applyError("release leases", err)
	}
	released, _ := res.(int)
	c.n.mu.Lock()
	if len(m.GetPartitions()) == 0 {
		// It is leaving: give it nothing more, and do not report its
		// heartbeats missing (list and metric).
		c.n.beats.forget(m.GetAgentId())
	}
	c.n.mu.Unlock()
	c.n.log.InfoContext(ctx, "agent released its leases", "agent", m.GetAgentId(), "released", released)
	if err := c.n.assignFree(ctx); err != nil {
		c.n.log.WarnContext(ctx, "hand released partitions to other agents; they take them at their next heartbeat", "err", err)
	}
	return connect.NewResponse(&v1.ReleaseLeasesResponse{Released: int32(released)}), nil
}
