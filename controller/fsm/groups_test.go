package fsm

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"testing"
)

func groupMeta(epoch int32, members ...*GroupMember) GroupMeta {
	m := GroupMeta{Epoch: epoch, AssignmentEpoch: epoch, Members: map[string]*GroupMember{}}
	for _, mem := range members {
		m.Members[mem.ID] = mem
	}
	return m
}

func applyErr(a *applier, mt MessageType, cmd any) error {
	a.t.Helper()
	err, _ := a.apply(mt, cmd).(error)
	return err
}

func TestGroupUpdateCompareAndSet(t *testing.T) {
	a := newApplier(t)
	m1 := &GroupMember{ID: "m1", Epoch: 1, Assigned: []PartitionRef{{Topic: "x", Partition: 0}}}
	if err := applyErr(a, GroupUpdateType, GroupUpdate{Group: "g", Meta: groupMeta(1, m1), EpochEventType: 7,
		Events: []GroupEvent{{Type: 7}, {Type: 4, Member: "m1"}}}); err != nil {
		t.Fatal(err)
	}
	// A second create, or an update from a stale version, conflicts.
	if err := applyErr(a, GroupUpdateType, GroupUpdate{Group: "g", Meta: groupMeta(2)}); !errors.Is(err, ErrGroupConflict) {
		t.Fatalf("create of an existing group: %v", err)
	}
	if err := applyErr(a, GroupUpdateType, GroupUpdate{Group: "g", ExpectedVersion: 1, Meta: groupMeta(2, m1), EpochEventType: 7, Events: []GroupEvent{{Type: 7}}}); err != nil {
		t.Fatal(err)
	}
	if err := applyErr(a, GroupUpdateType, GroupUpdate{Group: "g", ExpectedVersion: 1, Meta: groupMeta(3)}); !errors.Is(err, ErrGroupConflict) {
		t.Fatalf("stale version: %v", err)
	}
	if err := applyErr(a, GroupUpdateType, GroupUpdate{Group: "nope", ExpectedVersion: 4, Meta: groupMeta(3)}); !errors.Is(err, ErrGroupConflict) {
		t.Fatalf("update of a deleted group: %v", err)
	}
	a.f.Read(func(s *State) {
		g := s.Groups["g"]
		if g.Version != 2 || g.Meta.Epoch != 2 || g.Rebalances != 2 || len(g.History) != 3 || g.History[0].Index != 1 || g.History[2].Index != 3 {
			t.Fatalf("group: %+v", g)
		}
	})
}

func TestOffsetCommitFencing(t *testing.T) {
	a := newApplier(t)
	p0, p1 := PartitionRef{Topic: "x", Partition: 0}, PartitionRef{Topic: "x", Partition: 1}
	m1 := &GroupMember{ID: "m1", Epoch: 3, Assigned: []PartitionRef{p0}, Revoking: []PartitionRef{p1}}
	if err := applyErr(a, GroupUpdateType, GroupUpdate{Group: "g", Meta: groupMeta(3, m1)}); err != nil {
		t.Fatal(err)
	}
	commit := func(member string, epoch int32, parts ...PartitionRef) error {
		c := OffsetCommit{Group: "g", MemberID: member, MemberEpoch: epoch, NowMs: 5}
		for _, p := range parts {
			c.Offsets = append(c.Offsets, CommittedOffset{Topic: p.Topic, Partition: p.Partition, Offset: 10 + int64(p.Partition)})
		}
		return applyErr(a, OffsetCommitType, c)
	}
	if err := commit("m1", 3, p0, p1); err != nil {
		t.Fatalf("owner at its epoch (one partition being revoked): %v", err)
	}
	if err := commit("m1", 2, p0); !errors.Is(err, ErrStaleMemberEpoch) {
		t.Fatalf("stale epoch: %v", err)
	}
	if err := commit("m2", 3, p0); !errors.Is(err, ErrUnknownMember) {
		t.Fatalf("unknown member: %v", err)
	}
	if err := commit("m1", 3, PartitionRef{Topic: "x", Partition: 2}); !errors.Is(err, ErrNotOwner) {
		t.Fatalf("not owner: %v", err)
	}
	if err := applyErr(a, OffsetCommitType, OffsetCommit{Group: "other", MemberID: "m1", MemberEpoch: 1}); !errors.Is(err, ErrUnknownMember) {
		t.Fatalf("group missing: %v", err)
	}
	// Admin resets and deletes need an empty group.
	if err := applyErr(a, OffsetCommitType, OffsetCommit{Group: "g", Admin: true, Offsets: []CommittedOffset{{Topic: "x", Offset: 0}}}); !errors.Is(err, ErrGroupNotEmpty) {
		t.Fatalf("reset of a group with members: %v", err)
	}
	if err := applyErr(a, DeleteGroupType, DeleteGroup{Group: "g"}); !errors.Is(err, ErrGroupNotEmpty) {
		t.Fatalf("delete of a group with members: %v", err)
	}
	a.f.Read(func(s *State) {
		if o := s.Groups["g"].Offsets["x"]; o[0].Offset != 10 || o[1].Offset != 11 || o[0].CommitMs != 5 {
			t.Fatalf("offsets: %+v", o)
		}
	})
	if err := applyErr(a, GroupUpdateType, GroupUpdate{Group: "g", ExpectedVersion: 1, Meta: groupMeta(4)}); err != nil {
		t.Fatal(err)
	}
	if err := applyErr(a, OffsetCommitType, OffsetCommit{Group: "g", Admin: true, Offsets: []CommittedOffset{{Topic: "x", Offset: 1}}}); err != nil {
		t.Fatalf("reset of an empty group: %v", err)
	}
	if err := applyErr(a, OffsetCommitType, OffsetCommit{Group: "new", Admin: true, Offsets: []CommittedOffset{{Topic: "x", Offset: 1}}}); err != nil {
		t.Fatalf("reset creates a group: %v", err)
	}
	if err := applyErr(a, DeleteGroupType, DeleteGroup{Group: "g"}); err != nil {
		t.Fatal(err)
	}
	if err := applyErr(a, DeleteGroupType, DeleteGroup{Group: "g"}); !errors.Is(err, ErrGroupNotFound) {
		t.Fatalf("second delete: %v", err)
	}
}

func TestGroupHistoryIsBounded(t *testing.T) {
	a := newApplier(t)
	var events []GroupEvent
	for i := range HistoryLimit + 5 {
		events = append(events, GroupEvent{Type: 4, TimeMs: int64(i)})
	}
	if err := applyErr(a, GroupUpdateType, GroupUpdate{Group: "g", Meta: groupMeta(1), Events: events}); err != nil {
		t.Fatal(err)
	}
	a.f.Read(func(s *State) {
		h := s.Groups["g"].History
		if len(h) != HistoryLimit || h[0].TimeMs != 5 {
			t.Fatalf("history: %d events from %d", len(h), h[0].TimeMs)
		}
	})
}

func TestGroupSnapshotRestore(t *testing.T) {
	a := newApplier(t)
	m1 := &GroupMember{ID: "m1", InstanceID: "i", Epoch: 2, PrevEpoch: 1, Topics: []string{"x"}, SessionTimeoutMs: 3000,
		Assigned: []PartitionRef{{Topic: "x", Partition: 0}}, Target: []PartitionRef{{Topic: "x", Partition: 0}}}
	meta := groupMeta(2, m1)
	meta.Subscribed = map[string]int32{"x": 1}
	meta.Assignor, meta.Stable = "uniform", true
	a.apply(GroupUpdateType, GroupUpdate{Group: "g", Meta: meta, NowMs: 9, EpochEventType: 7, Events: []GroupEvent{{Type: 7, Epoch: 2}}})
	a.apply(OffsetCommitType, OffsetCommit{Group: "g", MemberID: "m1", MemberEpoch: 2, Offsets: []CommittedOffset{{Topic: "x", Offset: 4, Metadata: "m"}}})
	snap, err := a.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var s sink
	if err := snap.Persist(&s); err != nil {
		t.Fatal(err)
	}
	restored := New()
	if err := restored.Restore(io.NopCloser(bytes.NewReader(s.Bytes()))); err != nil {
		t.Fatal(err)
	}
	var want, got *Group
	a.f.Read(func(st *State) { want = st.Groups["g"] })
	restored.Read(func(st *State) { got = st.Groups["g"] })
	if !reflect.DeepEqual(want, got) {
		t.Fatalf("restored group differs:\nwant %+v\ngot  %+v", want, got)
	}
	// An old snapshot without groups restores to an empty map.
	if err := restored.Restore(io.NopCloser(bytes.NewReader([]byte(`{"topics":{},"agents":{}}`)))); err != nil {
		t.Fatal(err)
	}
	restored.Read(func(st *State) {
		if st.Groups == nil {
			t.Fatal("Groups is nil after restoring a snapshot without groups")
		}
	})
}
