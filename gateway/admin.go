package gateway

import (
	"context"

	"connectrpc.com/connect"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
)

// maxPartitions is the controller's limit on a topic's partition count.
const maxPartitions = 10000

// adminService validates admin requests and passes them to Config.Admin. The
// controller's errors are passed through with their code and message.
type adminService struct{ g *Gateway }

func (a adminService) CreateTopic(ctx context.Context, req *connect.Request[v1.CreateTopicRequest]) (*connect.Response[v1.CreateTopicResponse], error) {
	m := req.Msg
	if err := validateTopic(m.GetName()); err != nil {
		return nil, err
	}
	if p := m.GetPartitions(); p < 1 || p > maxPartitions {
		return nil, invalid("partitions must be between 1 and %d, got %d", maxPartitions, p)
	}
	a.g.log.DebugContext(ctx, "create topic", "topic", m.GetName(), "partitions", m.GetPartitions())
	res, err := a.g.cfg.Admin.CreateTopic(ctx, connect.NewRequest(m))
	if err != nil {
		return nil, upstream(err)
	}
	return connect.NewResponse(res.Msg), nil
}

func (a adminService) DeleteTopic(ctx context.Context, req *connect.Request[v1.DeleteTopicRequest]) (*connect.Response[v1.DeleteTopicResponse], error) {
	if err := validateTopic(req.Msg.GetName()); err != nil {
		return nil, err
	}
	a.g.log.DebugContext(ctx, "delete topic", "topic", req.Msg.GetName())
	res, err := a.g.cfg.Admin.DeleteTopic(ctx, connect.NewRequest(req.Msg))
	if err != nil {
		return nil, upstream(err)
	}
	return connect.NewResponse(res.Msg), nil
}

func (a adminService) AlterTopic(ctx context.Context, req *connect.Request[v1.AlterTopicRequest]) (*connect.Response[v1.AlterTopicResponse], error) {
	if err := validateTopic(req.Msg.GetName()); err != nil {
		return nil, err
	}
	res, err := a.g.cfg.Admin.AlterTopic(ctx, connect.NewRequest(req.Msg))
	if err != nil {
		return nil, upstream(err)
	}
	a.g.routes.invalidate(req.Msg.GetName()) // limits are part of the routes
	return connect.NewResponse(res.Msg), nil
}

func (a adminService) ListTopics(ctx context.Context, req *connect.Request[v1.ListTopicsRequest]) (*connect.Response[v1.ListTopicsResponse], error) {
	res, err := a.g.cfg.Admin.ListTopics(ctx, connect.NewRequest(req.Msg))
	if err != nil {
		return nil, upstream(err)
	}
	return connect.NewResponse(res.Msg), nil
}

func (a adminService) DescribeTopic(ctx context.Context, req *connect.Request[v1.DescribeTopicRequest]) (*connect.Response[v1.DescribeTopicResponse], error) {
	if err := validateTopic(req.Msg.GetName()); err != nil {
		return nil, err
	}
	res, err := a.g.cfg.Admin.DescribeTopic(ctx, connect.NewRequest(req.Msg))
	if err != nil {
		return nil, upstream(err)
	}
	return connect.NewResponse(res.Msg), nil
}
