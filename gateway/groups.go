package gateway

import (
	"context"
	"errors"
	"regexp"

	"connectrpc.com/connect"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
)

// groupFencedHeader marks a FailedPrecondition that fences a group member
// (the controller sets it; the SDK rejoins on it).
const groupFencedHeader = "Streamhouse-Group-Fenced"

var groupIDRE = regexp.MustCompile(`^[a-zA-Z0-9._-]{1,249}$`)

// groupService validates consumer group requests and passes them to
// Config.Groups, the controller's GroupService.
type groupService struct{ g *Gateway }

func validateGroup(id string) error {
	if !groupIDRE.MatchString(id) {
		return invalid("group id %q must be 1 to 249 characters of [a-zA-Z0-9._-]", id)
	}
	return nil
}

func validateParts(tps []*v1.TopicPartitions) error {
	for _, tp := range tps {
		if err := validateTopic(tp.GetTopic()); err != nil {
			return err
		}
		for _, p := range tp.GetPartitions() {
			if p < 0 {
				return invalid("partition %d of topic %q is negative", p, tp.GetTopic())
			}
		}
	}
	return nil
}

// groupUpstream is upstream keeping the fencing mark.
func groupUpstream(err error) error {
	out := upstream(err)
	var ce, oe *connect.Error
	if errors.As(err, &ce) && errors.As(out, &oe) && ce.Meta().Get(groupFencedHeader) != "" {
		oe.Meta().Set(groupFencedHeader, "1")
	}
	return out
}

func (s groupService) GroupHeartbeat(ctx context.Context, req *connect.Request[v1.GroupHeartbeatRequest]) (*connect.Response[v1.GroupHeartbeatResponse], error) {
	m := req.Msg
	if err := validateGroup(m.GetGroupId()); err != nil {
		return nil, err
	}
	if m.GetMemberEpoch() < -2 {
		return nil, invalid("member epoch %d: use 0 to join, -1 to leave, -2 for a static member's temporary leave", m.GetMemberEpoch())
	}
	for _, t := range m.GetTopics() {
		if err := validateTopic(t); err != nil {
			return nil, err
		}
	}
	if re := m.GetTopicRegex(); re != "" {
		if _, err := regexp.Compile(re); err != nil {
			return nil, invalid("topic regex %q: %v", re, err)
		}
	}
	if m.GetSessionTimeoutMs() < 0 {
		return nil, invalid("session timeout %dms is negative", m.GetSessionTimeoutMs())
	}
	if err := validateParts(m.GetOwned()); err != nil {
		return nil, err
	}
	res, err := s.g.cfg.Groups.GroupHeartbeat(ctx, connect.NewRequest(m))
	if err != nil {
		return nil, groupUpstream(err)
	}
	return connect.NewResponse(res.Msg), nil
}

func (s groupService) CommitOffsets(ctx context.Context, req *connect.Request[v1.CommitOffsetsRequest]) (*connect.Response[v1.CommitOffsetsResponse], error) {
	m := req.Msg
	if err := validateGroup(m.GetGroupId()); err != nil {
		return nil, err
	}
	for _, o := range m.GetOffsets() {
		if err := validateTopic(o.GetTopic()); err != nil {
			return nil, err
		}
		if o.GetPartition() < 0 || o.GetOffset() < 0 {
			return nil, invalid("offset %d of %s/%d: partition and offset must not be negative", o.GetOffset(), o.GetTopic(), o.GetPartition())
		}
	}
	res, err := s.g.cfg.Groups.CommitOffsets(ctx, connect.NewRequest(m))
	if err != nil {
		return nil, groupUpstream(err)
	}
	return connect.NewResponse(res.Msg), nil
}

func (s groupService) FetchOffsets(ctx context.Context, req *connect.Request[v1.FetchOffsetsRequest]) (*connect.Response[v1.FetchOffsetsResponse], error) {
	if err := validateGroup(req.Msg.GetGroupId()); err != nil {
		return nil, err
	}
	if err := validateParts(req.Msg.GetPartitions()); err != nil {
		return nil, err
	}
	res, err := s.g.cfg.Groups.FetchOffsets(ctx, connect.NewRequest(req.Msg))
	if err != nil {
		return nil, groupUpstream(err)
	}
	return connect.NewResponse(res.Msg), nil
}

func (s groupService) ListGroups(ctx context.Context, req *connect.Request[v1.ListGroupsRequest]) (*connect.Response[v1.ListGroupsResponse], error) {
	res, err := s.g.cfg.Groups.ListGroups(ctx, connect.NewRequest(req.Msg))
	if err != nil {
		return nil, groupUpstream(err)
	}
	return connect.NewResponse(res.Msg), nil
}

func (s groupService) DescribeGroup(ctx context.Context, req *connect.Request[v1.DescribeGroupRequest]) (*connect.Response[v1.DescribeGroupResponse], error) {
	if err := validateGroup(req.Msg.GetGroupId()); err != nil {
		return nil, err
	}
	res, err := s.g.cfg.Groups.DescribeGroup(ctx, connect.NewRequest(req.Msg))
	if err != nil {
		return nil, groupUpstream(err)
	}
	return connect.NewResponse(res.Msg), nil
}

func (s groupService) ResetOffsets(ctx context.Context, req *connect.Request[v1.ResetOffsetsRequest]) (*connect.Response[v1.ResetOffsetsResponse], error) {
	m := req.Msg
	if err := validateGroup(m.GetGroupId()); err != nil {
		return nil, err
	}
	if err := validateTopic(m.GetTopic()); err != nil {
		return nil, err
	}
	if m.GetTo() == nil {
		return nil, invalid("say where to reset to: earliest, latest, timestamp_ms or offset")
	}
	if o, ok := m.GetTo().(*v1.ResetOffsetsRequest_Offset); ok && o.Offset < 0 {
		return nil, invalid("offset %d is negative", o.Offset)
	}
	for _, p := range m.GetPartitions() {
		if p < 0 {
			return nil, invalid("partition %d is negative", p)
		}
	}
	res, err := s.g.cfg.Groups.ResetOffsets(ctx, connect.NewRequest(m))
	if err != nil {
		return nil, groupUpstream(err)
	}
	return connect.NewResponse(res.Msg), nil
}

func (s groupService) DeleteGroup(ctx context.Context, req *connect.Request[v1.DeleteGroupRequest]) (*connect.Response[v1.DeleteGroupResponse], error) {
	if err := validateGroup(req.Msg.GetGroupId()); err != nil {
		return nil, err
	}
	res, err := s.g.cfg.Groups.DeleteGroup(ctx, connect.NewRequest(req.Msg))
	if err != nil {
		return nil, groupUpstream(err)
	}
	return connect.NewResponse(res.Msg), nil
}
