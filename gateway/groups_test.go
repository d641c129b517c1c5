package gateway

import (
	"context"
	"errors"
	"testing"

	"connectrpc.com/connect"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/api/gen/streamhouse/v1/streamhousev1connect"
)

// fakeGroups records the requests that reach the controller and answers
// every heartbeat with a fencing error.
type fakeGroups struct {
	streamhousev1connect.UnimplementedGroupServiceHandler
	calls int
}

func (f *fakeGroups) GroupHeartbeat(context.Context, *connect.Request[v1.GroupHeartbeatRequest]) (*connect.Response[v1.GroupHeartbeatResponse], error) {
	f.calls++
	ce := connect.NewError(connect.CodeFailedPrecondition, errors.New("fenced: rejoin"))
	ce.Meta().Set(groupFencedHeader, "1")
	ce.Meta().Set("X-Internal", "leak")
	return nil, ce
}

func TestGroupServiceValidatesAndPassesFencing(t *testing.T) {
	fg := &fakeGroups{}
	g := &Gateway{cfg: Config{Groups: fg}}
	s := groupService{g}
	ctx := context.Background()
	for _, req := range []*v1.GroupHeartbeatRequest{
		{GroupId: ""}, {GroupId: "a b"}, {GroupId: "g", MemberEpoch: -3}, {GroupId: "g", Topics: []string{"bad topic"}},
		{GroupId: "g", TopicRegex: "("}, {GroupId: "g", SessionTimeoutMs: -1},
		{GroupId: "g", Owned: []*v1.TopicPartitions{{Topic: "t", Partitions: []int32{-1}}}},
	} {
		if _, err := s.GroupHeartbeat(ctx, connect.NewRequest(req)); connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Errorf("%v: %v, want InvalidArgument", req, err)
		}
	}
	if _, err := s.CommitOffsets(ctx, connect.NewRequest(&v1.CommitOffsetsRequest{GroupId: "g", Offsets: []*v1.PartitionOffset{{Topic: "t", Offset: -1}}})); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Errorf("negative offset: %v", err)
	}
	if _, err := s.ResetOffsets(ctx, connect.NewRequest(&v1.ResetOffsetsRequest{GroupId: "g", Topic: "t"})); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Errorf("reset without a target: %v", err)
	}
	if fg.calls != 0 {
		t.Fatalf("invalid requests reached the controller: %d", fg.calls)
	}
	_, err := s.GroupHeartbeat(ctx, connect.NewRequest(&v1.GroupHeartbeatRequest{GroupId: "g", MemberId: "m", MemberEpoch: 3}))
	var ce *connect.Error
	if !errors.As(err, &ce) || ce.Code() != connect.CodeFailedPrecondition || ce.Meta().Get(groupFencedHeader) != "1" || ce.Meta().Get("X-Internal") != "" {
		t.Fatalf("fencing error through the gateway: %v (meta %v)", err, ce.Meta())
	}
}
