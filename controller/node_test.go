package controller

import (
	"context"
	"errors"
	"testing"
	"time"

	"connectrpc.com/connect"
	"go.uber.org/goleak"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func openNode(t *testing.T, dir string) *Node {
	t.Helper()
	n, err := Open(context.Background(), Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func codeOf(err error) connect.Code {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce.Code()
	}
	return connect.CodeUnknown
}

func TestTopicsLeasesCommitsSurviveRestart(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	n := openNode(t, dir)
	admin, ctl := n.Admin(), n.Controller()

	_, err := admin.CreateTopic(ctx, connect.NewRequest(&v1.CreateTopicRequest{Name: "orders", Partitions: 2}))
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []*v1.CreateTopicRequest{
		{Name: "", Partitions: 1}, {Name: "a b", Partitions: 1}, {Name: "..", Partitions: 1},
		{Name: "ok", Partitions: 0}, {Name: "ok", Partitions: -3}, {Name: "ok", Partitions: 1, RetentionMs: -5},
	} {
		if _, err := admin.CreateTopic(ctx, connect.NewRequest(bad)); codeOf(err) != connect.CodeInvalidArgument {
			t.Errorf("CreateTopic(%v) = %v, want InvalidArgument", bad, err)
		}
	}
	if _, err := admin.CreateTopic(ctx, connect.NewRequest(&v1.CreateTopicRequest{Name: "orders", Partitions: 9})); codeOf(err) != connect.CodeAlreadyExists {
		t.Fatalf("duplicate create = %v, want AlreadyExists", err)
	}

	hb, err := ctl.Heartbeat(ctx, connect.NewRequest(&v1.HeartbeatRequest{AgentId: "a1", Incarnation: "i1", Address: "127.0.0.1:7101"}))
	if err != nil {
		t.Fatal(err)
	}
	if len(hb.Msg.Leases) != 2 || hb.Msg.Leases[0].Epoch != 1 {
		t.Fatalf("leases = %v", hb.Msg.Leases)
	}
	cr, err := ctl.CommitObject(ctx, connect.NewRequest(&v1.CommitObjectRequest{AgentId: "a1", ObjectKey: "obj/1", ObjectSize: 100,
		Sections: []*v1.ObjectSection{{Topic: "orders", Partition: 1, Epoch: 1, BaseOffset: 0, EndOffset: 5, Position: 0, Length: 100}}}))
	if err != nil || !cr.Msg.Results[0].Committed {
		t.Fatalf("commit = %v, %v", cr, err)
	}
	if err := n.Snapshot(); err != nil {
		t.Fatal(err)
	}
	// One more entry after the snapshot, so restart replays log on top of it.
	if _, err := admin.CreateTopic(ctx, connect.NewRequest(&v1.CreateTopicRequest{Name: "later", Partitions: 1, Durability: v1.Durability_DURABILITY_WAL})); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}

	n = openNode(t, dir)
	defer n.Close()
	d, err := n.Admin().DescribeTopic(ctx, connect.NewRequest(&v1.DescribeTopicRequest{Name: "orders"}))
	if err != nil {
		t.Fatal(err)
	}
	if got := d.Msg.Partitions[1].CommittedEndOffset; got != 5 {
		t.Fatalf("committed end after restart = %d, want 5", got)
	}
	lt, err := n.Admin().ListTopics(ctx, connect.NewRequest(&v1.ListTopicsRequest{}))
	if err != nil || len(lt.Msg.Topics) != 2 {
		t.Fatalf("list = %v, %v", lt, err)
	}
	lk, err := n.Controller().LookupObjects(ctx, connect.NewRequest(&v1.LookupObjectsRequest{Topic: "orders", Partition: 1, Offset: 3}))
	if err != nil || len(lk.Msg.Sections) != 1 || lk.Msg.Sections[0].ObjectKey != "obj/1" {
		t.Fatalf("lookup = %v, %v", lk, err)
	}
	// The agent restarted too: same id, new incarnation, new epoch.
	hb, err = n.Controller().Heartbeat(ctx, connect.NewRequest(&v1.HeartbeatRequest{AgentId: "a1", Incarnation: "i2", Address: "x"}))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range hb.Msg.Leases {
		if l.Topic.Name == "orders" && l.Epoch != 2 {
			t.Fatalf("epoch after agent restart = %d, want 2", l.Epoch)
		}
	}
	if _, err := n.Admin().DescribeTopic(ctx, connect.NewRequest(&v1.DescribeTopicRequest{Name: "nope"})); codeOf(err) != connect.CodeNotFound {
		t.Fatalf("describe unknown = %v, want NotFound", err)
	}
	_ = time.Second
}
