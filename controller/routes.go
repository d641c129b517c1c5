package controller

import (
	"context"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/api/gen/streamhouse/v1/streamhousev1connect"
	"github.com/streamhouse/streamhouse/controller/fsm"
)

// Routes returns the node's RoutesService implementation.
func (n *Node) Routes() streamhousev1connect.RoutesServiceHandler { return routesService{n} }

type routesService struct{ n *Node }

// routesOf is the routing of one topic at nowMs (what GetRoutes answers).
func routesOf(s *fsm.State, t *fsm.Topic, nowMs int64) *v1.GetRoutesResponse {
	out := &v1.GetRoutesResponse{Topic: topicInfo(t)}
	for i, p := range t.Partitions {
		r := &v1.PartitionRoute{Partition: int32(i)}
		r.AgentId, r.Address, r.Epoch = s.Leader(p, nowMs)
		out.Routes = append(out.Routes, r)
	}
	return out
}

// Watch streams every topic's routes, then each change. Leases lapse with
// time as well as with log entries, so the routes are also recomputed
// every second.
func (r routesService) Watch(ctx context.Context, req *connect.Request[v1.WatchRequest], stream *connect.ServerStream[v1.WatchResponse]) error {
	n := r.n
	sent := map[string]*v1.GetRoutesResponse{}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for first := true; ; first = false {
		changed := n.fsm.Changed()
		now := n.cfg.Now().UnixMilli()
		msg := &v1.WatchResponse{}
		seen := map[string]bool{}
		n.fsm.Read(func(s *fsm.State) {
			for _, name := range s.TopicNames() {
				seen[name] = true
				rt := routesOf(s, s.Topics[name], now)
				if prev, ok := sent[name]; !ok || !proto.Equal(prev, rt) {
					msg.Topics = append(msg.Topics, rt)
					sent[name] = rt
				}
			}
		})
		for name := range sent {
			if !seen[name] {
				msg.Deleted = append(msg.Deleted, name)
				delete(sent, name)
			}
		}
		if first || len(msg.Topics) > 0 || len(msg.Deleted) > 0 {
			if err := stream.Send(msg); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-n.stop:
			return connect.NewError(connect.CodeUnavailable, errNotLeader)
		case <-changed:
		case <-tick.C:
		}
	}
}
