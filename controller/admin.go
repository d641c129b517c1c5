package controller

import (
	"context"
	"errors"
	"fmt"
	"regexp"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/api/gen/streamhouse/v1/streamhousev1connect"
	"github.com/streamhouse/streamhouse/controller/fsm"
)

// Topic setting defaults and limits.
const (
	DefaultRetentionMs    = 7 * 24 * 60 * 60 * 1000
	DefaultMaxRecordBytes = 1 << 20
	DefaultMaxBatchBytes  = 8 << 20
	// MaxBatchBytesLimit bounds max_batch_bytes and max_record_bytes; the
	// servers accept messages up to this size.
	MaxBatchBytesLimit = 32 << 20
	MaxPartitions      = 10000
)

var topicNameRE = regexp.MustCompile(`^[a-zA-Z0-9._-]{1,249}$`)

// ValidateTopicName checks a topic name by Kafka's rules.
func ValidateTopicName(name string) error {
	switch {
	case name == "":
		return errors.New("topic name is empty")
	case name == "." || name == "..":
		return fmt.Errorf("topic name %q is not allowed", name)
	case len(name) > 249:
		return fmt.Errorf("topic name is %d characters long; the limit is 249", len(name))
	case !topicNameRE.MatchString(name):
		return fmt.Errorf("topic name %q has characters outside [a-zA-Z0-9._-]", name)
	}
	return nil
}

func invalid(format string, args ...any) error {
	return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf(format, args...))
}

func topicConfig(req *v1.CreateTopicRequest) (fsm.TopicConfig, error) {
	c := fsm.TopicConfig{
		Partitions:     req.GetPartitions(),
		Durability:     int32(req.GetDurability()),
		RetentionMs:    req.GetRetentionMs(),
		RetentionBytes: req.GetRetentionBytes(),
		MaxRecordBytes: req.GetMaxRecordBytes(),
		MaxBatchBytes:  req.GetMaxBatchBytes(),
	}
	if err := ValidateTopicName(req.GetName()); err != nil {
		return c, invalid("%v", err)
	}
	if c.Partitions < 1 || c.Partitions > MaxPartitions {
		return c, invalid("partitions must be between 1 and %d, got %d", MaxPartitions, c.Partitions)
	}
	switch v1.Durability(c.Durability) {
	case v1.Durability_DURABILITY_UNSPECIFIED:
		c.Durability = int32(v1.Durability_DURABILITY_DURABLE)
	case v1.Durability_DURABILITY_DURABLE, v1.Durability_DURABILITY_WAL:
	default:
		return c, invalid("unknown durability %d; use DURABILITY_DURABLE or DURABILITY_WAL", c.Durability)
	}
	switch {
	case c.RetentionMs == 0:
		c.RetentionMs = DefaultRetentionMs
	case c.RetentionMs < -1:
		return c, invalid("retention_ms must be positive, or -1 to keep records forever, got %d", c.RetentionMs)
	}
	if c.RetentionBytes == 0 || c.RetentionBytes < -1 {
		if c.RetentionBytes < -1 {
			return c, invalid("retention_bytes must be positive, or -1 for no limit, got %d", c.RetentionBytes)
		}
		c.RetentionBytes = -1
	}
	if c.MaxRecordBytes == 0 {
		c.MaxRecordBytes = DefaultMaxRecordBytes
	}
	if c.MaxBatchBytes == 0 {
		c.MaxBatchBytes = DefaultMaxBatchBytes
	}
	if c.MaxRecordBytes < 0 || c.MaxRecordBytes > MaxBatchBytesLimit {
		return c, invalid("max_record_bytes must be between 1 and %d, got %d", MaxBatchBytesLimit, c.MaxRecordBytes)
	}
	if c.MaxBatchBytes < 0 || c.MaxBatchBytes > MaxBatchBytesLimit {
		return c, invalid("max_batch_bytes must be between 1 and %d, got %d", MaxBatchBytesLimit, c.MaxBatchBytes)
	}
	return c, nil
}

// TopicInfo converts an FSM topic to its API form.
func topicInfo(t *fsm.Topic) *v1.TopicInfo {
	return &v1.TopicInfo{
		Name:           t.Name,
		Partitions:     t.Config.Partitions,
		Durability:     v1.Durability(t.Config.Durability),
		RetentionMs:    t.Config.RetentionMs,
		RetentionBytes: t.Config.RetentionBytes,
		MaxRecordBytes: t.Config.MaxRecordBytes,
		MaxBatchBytes:  t.Config.MaxBatchBytes,
		CreatedAt:      timestamppb.New(msTime(t.CreatedMs)),
	}
}

// applyError maps an apply failure or business error to a Connect error.
func applyError(op string, err error) error {
	switch {
	case errors.Is(err, fsm.ErrTopicExists):
		return connect.NewError(connect.CodeAlreadyExists, err)
	case errors.Is(err, fsm.ErrTopicNotFound), errors.Is(err, fsm.ErrPartitionNotFound), errors.Is(err, fsm.ErrAgentNotFound):
		return connect.NewError(connect.CodeNotFound, err)
	case errors.Is(err, errNotLeader):
		return connect.NewError(connect.CodeUnavailable, fmt.Errorf("%s: %w", op, err))
	default:
		return connect.NewError(connect.CodeInternal, fmt.Errorf("%s: %w", op, err))
	}
}

// Admin returns the node's AdminService implementation.
func (n *Node) Admin() streamhousev1connect.AdminServiceHandler { return adminService{n} }

type adminService struct{ n *Node }

func (a adminService) CreateTopic(ctx context.Context, req *connect.Request[v1.CreateTopicRequest]) (*connect.Response[v1.CreateTopicResponse], error) {
	cfg, err := topicConfig(req.Msg)
	if err != nil {
		return nil, err
	}
	res, err := a.n.apply(ctx, fsm.CreateTopicType, fsm.CreateTopic{Name: req.Msg.GetName(), Config: cfg, NowMs: a.n.cfg.Now().UnixMilli()})
	if err == nil {
		err, _ = res.(error)
	}
	if err != nil {
		return nil, applyError("create topic", err)
	}
	var info *v1.TopicInfo
	a.n.fsm.Read(func(s *fsm.State) {
		if t, ok := s.Topics[req.Msg.GetName()]; ok {
			info = topicInfo(t)
		}
	})
	if info == nil {
		return nil, connect.NewError(connect.CodeAborted, fmt.Errorf("topic %q was deleted while it was being created", req.Msg.GetName()))
	}
	a.n.log.InfoContext(ctx, "created topic", "topic", info.Name, "partitions", info.Partitions, "durability", info.Durability.String())
	// Hand the new partitions to live agents now rather than at their next
	// heartbeat, so a produce right after CreateTopic finds a holder.
	if err := a.n.assignFree(ctx); err != nil {
		a.n.log.WarnContext(ctx, "assign new partitions; agents pick them up at their next heartbeat", "err", err)
	}
	return connect.NewResponse(&v1.CreateTopicResponse{Topic: info}), nil
}

func (a adminService) DeleteTopic(ctx context.Context, req *connect.Request[v1.DeleteTopicRequest]) (*connect.Response[v1.DeleteTopicResponse], error) {
	if err := ValidateTopicName(req.Msg.GetName()); err != nil {
		return nil, invalid("%v", err)
	}
	res, err := a.n.apply(ctx, fsm.DeleteTopicType, fsm.DeleteTopic{Name: req.Msg.GetName()})
	if err == nil {
		err, _ = res.(error)
	}
	if err != nil {
		return nil, applyError("delete topic", err)
	}
	a.n.log.InfoContext(ctx, "deleted topic", "topic", req.Msg.GetName())
	return connect.NewResponse(&v1.DeleteTopicResponse{}), nil
}

// AlterTopic changes the settings that may change after creation.
func (a adminService) AlterTopic(ctx context.Context, req *connect.Request[v1.AlterTopicRequest]) (*connect.Response[v1.AlterTopicResponse], error) {
	m := req.Msg
	if err := ValidateTopicName(m.GetName()); err != nil {
		return nil, invalid("%v", err)
	}
	cmd := fsm.AlterTopic{Name: m.GetName(), RetentionMs: m.RetentionMs, RetentionBytes: m.RetentionBytes,
		MaxRecordBytes: m.MaxRecordBytes, MaxBatchBytes: m.MaxBatchBytes}
	switch {
	case cmd.RetentionMs == nil && cmd.RetentionBytes == nil && cmd.MaxRecordBytes == nil && cmd.MaxBatchBytes == nil:
		return nil, invalid("nothing to change: set retention_ms, retention_bytes, max_record_bytes or max_batch_bytes")
	case cmd.RetentionMs != nil && (*cmd.RetentionMs == 0 || *cmd.RetentionMs < -1):
		return nil, invalid("retention_ms must be positive, or -1 to keep records forever, got %d", *cmd.RetentionMs)
	case cmd.RetentionBytes != nil && (*cmd.RetentionBytes == 0 || *cmd.RetentionBytes < -1):
		return nil, invalid("retention_bytes must be positive, or -1 for no limit, got %d", *cmd.RetentionBytes)
	case cmd.MaxRecordBytes != nil && (*cmd.MaxRecordBytes < 1 || *cmd.MaxRecordBytes > MaxBatchBytesLimit):
		return nil, invalid("max_record_bytes must be between 1 and %d, got %d", MaxBatchBytesLimit, *cmd.MaxRecordBytes)
	case cmd.MaxBatchBytes != nil && (*cmd.MaxBatchBytes < 1 || *cmd.MaxBatchBytes > MaxBatchBytesLimit):
		return nil, invalid("max_batch_bytes must be between 1 and %d, got %d", MaxBatchBytesLimit, *cmd.MaxBatchBytes)
	}
	res, err := a.n.apply(ctx, fsm.AlterTopicType, cmd)
	if err == nil {
		err, _ = res.(error)
	}
	if err != nil {
		return nil, applyError("alter topic", err)
	}
	var info *v1.TopicInfo
	a.n.fsm.Read(func(s *fsm.State) {
		if t, ok := s.Topics[m.GetName()]; ok {
			info = topicInfo(t)
		}
	})
	if info == nil {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("topic %q was deleted", m.GetName()))
	}
	a.n.log.InfoContext(ctx, "altered topic", "topic", m.GetName())
	return connect.NewResponse(&v1.AlterTopicResponse{Topic: info}), nil
}

func (a adminService) ListTopics(ctx context.Context, req *connect.Request[v1.ListTopicsRequest]) (*connect.Response[v1.ListTopicsResponse], error) {
	if err := a.n.verifyLeader(); err != nil {
		return nil, err
	}
	out := &v1.ListTopicsResponse{}
	a.n.fsm.Read(func(s *fsm.State) {
		for _, name := range s.TopicNames() {
			out.Topics = append(out.Topics, topicInfo(s.Topics[name]))
		}
	})
	return connect.NewResponse(out), nil
}

func (a adminService) DescribeTopic(ctx context.Context, req *connect.Request[v1.DescribeTopicRequest]) (*connect.Response[v1.DescribeTopicResponse], error) {
	if err := ValidateTopicName(req.Msg.GetName()); err != nil {
		return nil, invalid("%v", err)
	}
	if err := a.n.verifyLeader(); err != nil {
		return nil, err
	}
	now := a.n.cfg.Now().UnixMilli()
	var out *v1.DescribeTopicResponse
	a.n.fsm.Read(func(s *fsm.State) {
		t, ok := s.Topics[req.Msg.GetName()]
		if !ok {
			return
		}
		out = &v1.DescribeTopicResponse{Topic: topicInfo(t)}
		for i, p := range t.Partitions {
			pi := &v1.PartitionInfo{
				Partition:          int32(i),
				StartOffset:        p.StartOffset,
				CommittedEndOffset: p.CommittedEnd,
				HighWatermark:      p.CommittedEnd,
			}
			pi.LeaderAgentId, pi.LeaderAddress, pi.LeaderEpoch = s.Leader(p, now)
			if v1.Durability(t.Config.Durability) == v1.Durability_DURABILITY_WAL {
				pi.HighWatermark = max(pi.HighWatermark, a.n.reportedWALEnd(t.Name, int32(i)))
			}
			out.Partitions = append(out.Partitions, pi)
		}
	})
	if out == nil {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("topic %q does not exist", req.Msg.GetName()))
	}
	return connect.NewResponse(out), nil
}
