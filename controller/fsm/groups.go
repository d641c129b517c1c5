package fsm

import (
	"errors"
	"fmt"
	"slices"
	"sort"
)

// Consumer group errors returned (as values) from Apply.
var (
	// ErrGroupNotFound: the command names a group that does not exist.
	ErrGroupNotFound = errors.New("group not found")
	// ErrGroupConflict: a GroupUpdate's expected version is not the group's
	// version (another update came first); the leader recomputes and retries.
	ErrGroupConflict = errors.New("group changed concurrently")
	// ErrUnknownMember: an offset commit from a member that is not in the
	// group (it left or was evicted). The member must rejoin.
	ErrUnknownMember = errors.New("unknown member")
	// ErrStaleMemberEpoch: an offset commit whose member epoch is not the
	// member's current one (fencing). The member must rejoin.
	ErrStaleMemberEpoch = errors.New("stale member epoch")
	// ErrNotOwner: an offset commit for a partition the member does not own.
	ErrNotOwner = errors.New("partition not owned by the member")
	// ErrGroupNotEmpty: an admin change (offset reset, delete) of a group
	// that has members.
	ErrGroupNotEmpty = errors.New("group has members")
)

// HistoryLimit bounds each group's assignment history: older events are
// dropped.
const HistoryLimit = 10000

// GroupMember is one member of a consumer group, as the coordinator on the
// leader last decided. Heartbeats that change none of it stay in the
// leader's memory.
type GroupMember struct {
	ID         string `json:"id"`
	InstanceID string `json:"instance_id,omitempty"`
	// Epoch is the member epoch: the group's assignment epoch once the
	// member has released everything it was told to release.
	Epoch int32 `json:"epoch"`
	// PrevEpoch is the epoch before the last change, accepted once more
	// from a member whose previous answer was lost.
	PrevEpoch        int32    `json:"prev_epoch,omitempty"`
	Topics           []string `json:"topics,omitempty"`
	Regex            string   `json:"regex,omitempty"`
	Assignor         string   `json:"assignor,omitempty"`
	SessionTimeoutMs int64    `json:"session_timeout_ms"`
	// Assigned are the partitions the member may own now.
	Assigned []PartitionRef `json:"assigned,omitempty"`
	// Revoking are partitions the member was told to release; it owns them
	// until a heartbeat shows it released them.
	Revoking []PartitionRef `json:"revoking,omitempty"`
	// Target is the member's share of the group's target assignment.
	Target []PartitionRef `json:"target,omitempty"`
	// LeftMs is when a static member left with epoch -2 (0: active). It
	// keeps its partitions until its session timeout.
	LeftMs int64 `json:"left_ms,omitempty"`
}

// Owns reports whether the member owns p (assigned or still revoking).
func (m *GroupMember) Owns(p PartitionRef) bool {
	return slices.Contains(m.Assigned, p) || slices.Contains(m.Revoking, p)
}

// GroupMeta is the part of a group the coordinator computes: epochs,
// members and assignments. A GroupUpdate replaces it whole.
type GroupMeta struct {
	// Epoch is the group epoch; it grows when membership or the subscribed
	// metadata changes.
	Epoch int32 `json:"epoch"`
	// AssignmentEpoch is the group epoch the members' targets were computed at.
	AssignmentEpoch int32                   `json:"assignment_epoch"`
	Assignor        string                  `json:"assignor,omitempty"`
	Members         map[string]*GroupMember `json:"members,omitempty"`
	// Subscribed is the partition count of every subscribed topic the
	// target was computed for; a change bumps the epoch.
	Subscribed map[string]int32 `json:"subscribed,omitempty"`
	// Stable: every member owns exactly its target.
	Stable bool `json:"stable,omitempty"`
}

// Clone returns a deep copy of m.
func (m GroupMeta) Clone() GroupMeta {
	out := m
	out.Members = make(map[string]*GroupMember, len(m.Members))
	for id, mem := range m.Members {
		c := *mem
		c.Topics = slices.Clone(mem.Topics)
		c.Assigned = slices.Clone(mem.Assigned)
		c.Revoking = slices.Clone(mem.Revoking)
		c.Target = slices.Clone(mem.Target)
		out.Members[id] = &c
	}
	out.Subscribed = make(map[string]int32, len(m.Subscribed))
	for t, n := range m.Subscribed {
		out.Subscribed[t] = n
	}
	return out
}

// MemberIDs returns the member ids in sorted order.
func (m GroupMeta) MemberIDs() []string {
	ids := make([]string, 0, len(m.Members))
	for id := range m.Members {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// Offset is one committed offset: the next offset the group consumes.
type Offset struct {
	Offset   int64  `json:"offset"`
	Metadata string `json:"metadata,omitempty"`
	CommitMs int64  `json:"commit_ms"`
}

// GroupEvent is one entry of a group's assignment history. Type holds a
// streamhousev1.AssignmentEventType value.
type GroupEvent struct {
	Index      uint64         `json:"index"`
	TimeMs     int64          `json:"time_ms"`
	Type       int32          `json:"type"`
	Member     string         `json:"member,omitempty"`
	Previous   string         `json:"previous,omitempty"`
	Partitions []PartitionRef `json:"partitions,omitempty"`
	Epoch      int32          `json:"epoch"`
}

// Group is one consumer group.
type Group struct {
	ID string `json:"id"`
	// Version grows with every GroupUpdate (compare-and-set).
	Version   uint64    `json:"version"`
	Meta      GroupMeta `json:"meta"`
	CreatedMs int64     `json:"created_ms"`
	// Offsets maps topic, then partition, to the committed offset.
	Offsets map[string]map[int32]Offset `json:"offsets,omitempty"`
	// History is the bounded assignment history, oldest first.
	History []GroupEvent `json:"history,omitempty"`
	// Rebalances counts group epoch bumps.
	Rebalances int64 `json:"rebalances"`
}

// PartitionOf returns the named partition, or nil when it does not exist.
func (s *State) PartitionOf(topic string, partition int32) *Partition {
	return s.partition(topic, partition)
}

// GroupIDs returns the group ids in sorted order.
func (s *State) GroupIDs() []string {
	ids := make([]string, 0, len(s.Groups))
	for id := range s.Groups {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// GroupUpdate replaces a group's coordinator state if the group is still at
// ExpectedVersion (0: the group must not exist yet, and is created), and
// appends Events (stamped with the entry's Raft index) to its history.
// Rebalances grows by the number of epoch bumps among the events.
type GroupUpdate struct {
	Group           string       `json:"group"`
	ExpectedVersion uint64       `json:"expected_version"`
	Meta            GroupMeta    `json:"meta"`
	Events          []GroupEvent `json:"events,omitempty"`
	// EpochEventType is the event type that counts as a rebalance.
	EpochEventType int32 `json:"epoch_event_type"`
	NowMs          int64 `json:"now_ms"`
}

// CommittedOffset is one partition's offset in an OffsetCommit.
type CommittedOffset struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
	Metadata  string `json:"metadata,omitempty"`
}

// OffsetCommit stores offsets of a group. A member commit (Admin false)
// must come from a member of the group at its current epoch that owns every
// partition: the decision is made here, in Apply, so it holds against any
// concurrent membership change. An admin commit (offset reset) needs a group
// without members, and creates the group if it does not exist.
type OffsetCommit struct {
	Group       string            `json:"group"`
	MemberID    string            `json:"member_id,omitempty"`
	MemberEpoch int32             `json:"member_epoch,omitempty"`
	Admin       bool              `json:"admin,omitempty"`
	Offsets     []CommittedOffset `json:"offsets"`
	NowMs       int64             `json:"now_ms"`
}

// DeleteGroup deletes a group without members, and its offsets.
type DeleteGroup struct {
	Group string `json:"group"`
}

func (s *State) groupUpdate(c GroupUpdate, index uint64) any {
	g, ok := s.Groups[c.Group]
	switch {
	case !ok && c.ExpectedVersion != 0:
		return fmt.Errorf("%w: group %q was deleted", ErrGroupConflict, c.Group)
	case ok && g.Version != c.ExpectedVersion:
		return fmt.Errorf("%w: group %q is at version %d, the update expected %d", ErrGroupConflict, c.Group, g.Version, c.ExpectedVersion)
	case !ok:
		g = &Group{ID: c.Group, CreatedMs: c.NowMs}
		s.Groups[c.Group] = g
	}
	g.Version++
	g.Meta = c.Meta
	for _, e := range c.Events {
		e.Index = index
		g.History = append(g.History, e)
		if e.Type == c.EpochEventType {
			g.Rebalances++
		}
	}
	if n := len(g.History); n > HistoryLimit {
		g.History = slices.Clone(g.History[n-HistoryLimit:])
	}
	return nil
}

func (s *State) offsetCommit(c OffsetCommit) any {
	g, ok := s.Groups[c.Group]
	if c.Admin {
		if ok && len(g.Meta.Members) > 0 {
			return fmt.Errorf("%w: group %q has %d member(s); stop its consumers first", ErrGroupNotEmpty, c.Group, len(g.Meta.Members))
		}
		if !ok {
			g = &Group{ID: c.Group, CreatedMs: c.NowMs}
			s.Groups[c.Group] = g
		}
	} else {
		if !ok {
			return fmt.Errorf("%w: group %q does not exist, so member %q is not in it; rejoin", ErrUnknownMember, c.Group, c.MemberID)
		}
		m, ok := g.Meta.Members[c.MemberID]
		if !ok {
			return fmt.Errorf("%w: member %q is not in group %q (it left or was evicted after its session timeout); rejoin the group", ErrUnknownMember, c.MemberID, c.Group)
		}
		if m.Epoch != c.MemberEpoch {
			return fmt.Errorf("%w: member %q of group %q is at epoch %d, the commit has epoch %d; the member is fenced and must rejoin", ErrStaleMemberEpoch, c.MemberID, c.Group, m.Epoch, c.MemberEpoch)
		}
		for _, o := range c.Offsets {
			if !m.Owns(PartitionRef{Topic: o.Topic, Partition: o.Partition}) {
				return fmt.Errorf("%w: member %q of group %q does not own %s/%d", ErrNotOwner, c.MemberID, c.Group, o.Topic, o.Partition)
			}
		}
	}
	if g.Offsets == nil {
		g.Offsets = map[string]map[int32]Offset{}
	}
	for _, o := range c.Offsets {
		byPart, ok := g.Offsets[o.Topic]
		if !ok {
			byPart = map[int32]Offset{}
			g.Offsets[o.Topic] = byPart
		}
		byPart[o.Partition] = Offset{Offset: o.Offset, Metadata: o.Metadata, CommitMs: c.NowMs}
	}
	return nil
}

func (s *State) deleteGroup(c DeleteGroup) any {
	g, ok := s.Groups[c.Group]
	if !ok {
		return fmt.Errorf("%w: %q", ErrGroupNotFound, c.Group)
	}
	if len(g.Meta.Members) > 0 {
		return fmt.Errorf("%w: group %q has %d member(s); stop its consumers first", ErrGroupNotEmpty, c.Group, len(g.Meta.Members))
	}
	delete(s.Groups, c.Group)
	return nil
}
