package controller

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
)

// groupClock is a settable clock for Config.Now.
type groupClock struct{ ns atomic.Int64 }

func (c *groupClock) now() time.Time      { return time.Unix(0, c.ns.Load()) }
func (c *groupClock) add(d time.Duration) { c.ns.Add(int64(d)) }
func newGroupClock() *groupClock          { c := &groupClock{}; c.ns.Store(time.Now().UnixNano()); return c }

func openGroupNode(t *testing.T, dir string, clock *groupClock) *Node {
	t.Helper()
	n, err := Open(context.Background(), Config{DataDir: dir, Now: clock.now, GroupHeartbeatInterval: 20 * time.Millisecond, GroupSessionTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the group coordinator", n.groups.ready.Load)
	return n
}

// TestGroupServiceFencingEvictionRestart drives the GroupService of a real
// (single-voter) controller: joins, fenced and unknown-member commits,
// eviction on the controller's clock, and a restart that keeps epochs,
// assignments and offsets.
func TestGroupServiceFencingEvictionRestart(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	clock := newGroupClock()
	n := openGroupNode(t, dir, clock)
	if _, err := n.Admin().CreateTopic(ctx, connect.NewRequest(&v1.CreateTopicRequest{Name: "orders", Partitions: 4})); err != nil {
		t.Fatal(err)
	}
	gs := n.Groups()
	hb := func(req *v1.GroupHeartbeatRequest) *v1.GroupHeartbeatResponse {
		t.Helper()
		req.GroupId = "g"
		res, err := gs.GroupHeartbeat(ctx, connect.NewRequest(req))
		if err != nil {
			t.Fatalf("heartbeat %v: %v", req, err)
		}
		return res.Msg
	}
	a := hb(&v1.GroupHeartbeatRequest{MemberId: "a", Topics: []string{"orders"}})
	if a.MemberEpoch != 1 || len(a.Assignment) != 1 || len(a.Assignment[0].Partitions) != 4 || a.HeartbeatIntervalMs != 20 {
		t.Fatalf("join: %v", a)
	}
	b := hb(&v1.GroupHeartbeatRequest{MemberId: "b", Topics: []string{"orders"}})
	if b.PendingPartitions != 2 {
		t.Fatalf("b waits for a's release: %v", b)
	}
	a = hb(&v1.GroupHeartbeatRequest{MemberId: "a", MemberEpoch: 1, Owned: a.Assignment})
	a = hb(&v1.GroupHeartbeatRequest{MemberId: "a", MemberEpoch: a.MemberEpoch, Owned: a.Assignment})
	b = hb(&v1.GroupHeartbeatRequest{MemberId: "b", MemberEpoch: b.MemberEpoch})
	if a.MemberEpoch != 2 || b.MemberEpoch != 2 || len(b.Assignment[0].Partitions) != 2 {
		t.Fatalf("converged: a %v b %v", a, b)
	}

	commit := func(member string, epoch int32, partition int32) error {
		_, err := gs.CommitOffsets(ctx, connect.NewRequest(&v1.CommitOffsetsRequest{GroupId: "g", MemberId: member, MemberEpoch: epoch,
			Offsets: []*v1.PartitionOffset{{Topic: "orders", Partition: partition, Offset: 7}}}))
		return err
	}
	pa := a.Assignment[0].Partitions[0]
	if err := commit("a", 2, pa); err != nil {
		t.Fatal(err)
	}
	err := commit("a", 1, pa)
	var ce *connect.Error
	if codeOf(err) != connect.CodeFailedPrecondition || !asConnect(err, &ce) || ce.Meta().Get(GroupFencedHeader) != "1" {
		t.Fatalf("stale epoch commit: %v", err)
	}
	if err := commit("zz", 2, pa); codeOf(err) != connect.CodeNotFound {
		t.Fatalf("unknown member commit: %v", err)
	}
	if _, err := gs.GroupHeartbeat(ctx, connect.NewRequest(&v1.GroupHeartbeatRequest{GroupId: "g", MemberId: "a", MemberEpoch: 9})); codeOf(err) != connect.CodeFailedPrecondition {
		t.Fatalf("fenced heartbeat: %v", err)
	}
	if _, err := gs.GroupHeartbeat(ctx, connect.NewRequest(&v1.GroupHeartbeatRequest{GroupId: "g", MemberId: "x", Topics: []string{"orders"}, TopicRegex: "o.*"})); codeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("topics and regex: %v", err)
	}

	// a goes silent past its session timeout; b keeps heartbeating.
	clock.add(1500 * time.Millisecond)
	hb(&v1.GroupHeartbeatRequest{MemberId: "b", MemberEpoch: b.MemberEpoch, Owned: b.Assignment})
	waitFor(t, 20*time.Second, "a's eviction", func() bool {
		d, err := gs.DescribeGroup(ctx, connect.NewRequest(&v1.DescribeGroupRequest{GroupId: "g"}))
		return err == nil && len(d.Msg.Members) == 1 && d.Msg.Members[0].MemberId == "b"
	})
	if err := commit("a", 2, pa); codeOf(err) != connect.CodeNotFound {
		t.Fatalf("evicted member's commit: %v", err)
	}
	b = hb(&v1.GroupHeartbeatRequest{MemberId: "b", MemberEpoch: b.MemberEpoch, Owned: b.Assignment})
	if len(b.Assignment[0].Partitions) != 4 {
		t.Fatalf("b takes a's partitions: %v", b)
	}

	// Restart: epochs, assignment and offsets come back; every member's
	// session clock starts afresh on the new leader.
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	n = openGroupNode(t, dir, clock)
	defer n.Close()
	gs = n.Groups()
	d, err := gs.DescribeGroup(ctx, connect.NewRequest(&v1.DescribeGroupRequest{GroupId: "g", IncludeHistory: true}))
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Msg.Members) != 1 || d.Msg.Members[0].MemberEpoch != b.MemberEpoch || d.Msg.State != v1.GroupState_GROUP_STATE_STABLE || len(d.Msg.History) == 0 {
		t.Fatalf("after restart: %v", d.Msg)
	}
	off, err := gs.FetchOffsets(ctx, connect.NewRequest(&v1.FetchOffsetsRequest{GroupId: "g"}))
	if err != nil || len(off.Msg.Offsets) != 1 || off.Msg.Offsets[0].Offset != 7 {
		t.Fatalf("offsets after restart: %v %v", off, err)
	}
	hb(&v1.GroupHeartbeatRequest{MemberId: "b", MemberEpoch: b.MemberEpoch, Owned: b.Assignment})
	if _, err := gs.DeleteGroup(ctx, connect.NewRequest(&v1.DeleteGroupRequest{GroupId: "g"})); codeOf(err) != connect.CodeFailedPrecondition {
		t.Fatalf("delete with a member: %v", err)
	}
	hb(&v1.GroupHeartbeatRequest{MemberId: "b", MemberEpoch: -1})
	if _, err := gs.DeleteGroup(ctx, connect.NewRequest(&v1.DeleteGroupRequest{GroupId: "g"})); err != nil {
		t.Fatal(err)
	}
}

func asConnect(err error, out **connect.Error) bool {
	ce, ok := err.(*connect.Error)
	if ok {
		*out = ce
	}
	return ok
}
