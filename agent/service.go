package agent

import (
	"context"
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/streamhouse/streamhouse/agent/wal"
	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/api/gen/streamhouse/v1/streamhousev1connect"
	"github.com/streamhouse/streamhouse/pkg/batch"
	"github.com/streamhouse/streamhouse/pkg/rpcerr"
	"github.com/streamhouse/streamhouse/pkg/telemetry/spans"
)

// Handler returns the agent's AgentService implementation. Its unary methods
// match streamhousev1connect.AgentServiceClient, so an in-process gateway can
// call it directly.
func (a *Agent) Handler() streamhousev1connect.AgentServiceHandler { return service{a} }

type service struct{ a *Agent }

var _ streamhousev1connect.AgentServiceClient = service{}

const (
	defaultReadBytes = 1 << 20
	maxReadBytes     = 32 << 20
	maxWait          = 30 * time.Second
)

// lookup returns the partition or a FailedPrecondition error that says this
// agent does not hold it (gateways refresh their routes on that code).
func (a *Agent) lookup(ctx context.Context, topic string, partition int32) (*partition, error) {
	k := partKey{topic, partition}
	if p := a.partition(k); p != nil {
		return p, nil
	}
	if err := a.refreshLeases(ctx); err != nil {
		return nil, rpcerr.NotApplied(connect.CodeUnavailable, fmt.Errorf("partition %s: cannot reach the controller: %w", k, err))
	}
	if p := a.partition(k); p != nil {
		return p, nil
	}
	return nil, rpcerr.NotApplied(connect.CodeFailedPrecondition, fmt.Errorf("agent %s is not the lease holder of partition %s", a.cfg.ID, k))
}

// Append appends one batch; see the package doc for which errors are safe
// to retry.
func (s service) Append(ctx context.Context, req *connect.Request[v1.AppendRequest]) (*connect.Response[v1.AppendResponse], error) {
	a := s.a
	m := req.Msg
	if err := a.refusal(); err != nil {
		return nil, err
	}
	p, err := a.lookup(ctx, m.GetTopic(), m.GetPartition())
	if err != nil {
		return nil, err
	}
	b := m.GetBatch()
	meta, err := batch.Check(b)
	if err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("partition %s: bad record batch: %w", p.key, err))
	}
	p.mu.Lock()
	topic, epoch, until, perr := p.topic, p.epoch, p.leaseUntil, p.err
	p.mu.Unlock()
	if perr != nil {
		return nil, rpcerr.NotApplied(connect.CodeFailedPrecondition, fmt.Errorf("agent %s no longer holds partition %s", a.cfg.ID, p.key))
	}
	if !time.Now().Before(until) {
		return nil, rpcerr.NotApplied(connect.CodeUnavailable, fmt.Errorf("partition %s: lease is not renewed (controller unreachable?); retry", p.key))
	}
	if max := topic.GetMaxBatchBytes(); max > 0 && len(b) > int(max) {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("batch is %d bytes; topic %q's max_batch_bytes is %d", len(b), p.key.topic, max))
	}
	acks := m.GetAcks()
	switch acks {
	case v1.Acks_ACKS_UNSPECIFIED:
		acks = v1.Acks_ACKS_DURABLE
		if topic.GetDurability() == v1.Durability_DURABILITY_WAL {
			acks = v1.Acks_ACKS_WAL
		}
	case v1.Acks_ACKS_DURABLE, v1.Acks_ACKS_WAL:
	default:
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("unknown acks %d; use ACKS_DURABLE or ACKS_WAL", acks))
	}
	if err := a.shed(acks); err != nil {
		return nil, err
	}

	// Close waits for appends between here and the end of their WAL wait
	// (closeMu), so none reaches the WAL after the final flush started or
	// after the WAL is closed.
	a.closeMu.RLock()
	if err := a.refusal(); err != nil {
		a.closeMu.RUnlock()
		return nil, err
	}
	// The span of the request (the agent's server span, or the gateway's
	// in `streamhouse dev`): a flush that carries this batch joins its trace.
	reqSpan := trace.SpanContextFromContext(ctx)
	walCtx, walSpan := spans.Start(ctx, tracer, "agent.wal_append")
	// Assign offsets and enqueue under appendMu: the partition's frames
	// reach the WAL in offset order.
	p.appendMu.Lock()
	p.mu.Lock()
	perr = p.err
	p.mu.Unlock()
	if perr != nil {
		p.appendMu.Unlock()
		a.closeMu.RUnlock()
		walSpan.End()
		return nil, rpcerr.NotApplied(connect.CodeFailedPrecondition, fmt.Errorf("agent %s no longer holds partition %s", a.cfg.ID, p.key))
	}
	base := p.nextOffset
	end := base + int64(meta.NumRecords)
	batch.SetBaseOffset(b, base)
	batch.SetPartitionLeaderEpoch(b, int32(epoch))
	if acks == v1.Acks_ACKS_DURABLE {
		p.addFlushWaiter(reqSpan, end)
	}
	pend := a.wal.Append(wal.Entry{Topic: p.key.topic, Partition: p.key.partition, BaseOffset: base, EndOffset: end, MaxTimestampMs: meta.MaxTimestamp, Data: b})
	p.nextOffset = end
	p.appendMu.Unlock()

	_, err = pend.Wait(walCtx)
	a.closeMu.RUnlock()
	if walSpan.IsRecording() {
		walSpan.SetAttributes(attribute.String("streamhouse.partition", p.key.String()),
			attribute.Int64("streamhouse.base_offset", base), attribute.Int("streamhouse.records", int(meta.NumRecords)),
			attribute.Int("streamhouse.bytes", len(b)))
		if err != nil {
			walSpan.SetStatus(codes.Error, err.Error())
		}
	}
	walSpan.End()
	if err != nil {
		if ctx.Err() != nil {
			return nil, connect.NewError(connect.CodeCanceled, fmt.Errorf("partition %s: gave up waiting for the WAL fsync; the records may or may not be written: %w", p.key, err))
		}
		// The WAL is dead (fsync errors are not retryable): offsets from
		// base on were never made durable, so this agent must stop serving.
		a.log.ErrorContext(ctx, "WAL append failed; the agent cannot accept writes", "partition", p.key.String(), "err", err)
		p.fail(fmt.Errorf("WAL failed: %w", err))
		return nil, connect.NewError(connect.CodeInternal, fmt.Errorf("partition %s: WAL write failed: %w", p.key, err))
	}
	p.advanceWALEnd(end)
	appendRecords.Add(int(meta.NumRecords))
	appendBytes.Add(len(b))
	a.noteUnuploaded(len(b))

	if acks == v1.Acks_ACKS_DURABLE {
		// Waits for the uploader's flush (agent.flush, in this trace when
		// this request's span was the one the flush picked as parent).
		wctx, waitSpan := spans.Start(ctx, tracer, "agent.commit_wait")
		err := p.waitFor(wctx, func() bool { return p.committedEnd >= end })
		if err != nil && waitSpan.IsRecording() {
			waitSpan.SetStatus(codes.Error, err.Error())
		}
		waitSpan.End()
		if err != nil {
			code := connect.CodeAborted
			if ctx.Err() != nil {
				code = connect.CodeDeadlineExceeded
			}
			return nil, connect.NewError(code, fmt.Errorf("partition %s: records at [%d, %d) are in the WAL but not yet committed: %w", p.key, base, end, err))
		}
	}
	return connect.NewResponse(&v1.AppendResponse{BaseOffset: base, RecordCount: meta.NumRecords}), nil
}

// Read serves whole batches from offset up to the high watermark.
func (s service) Read(ctx context.Context, req *connect.Request[v1.ReadRequest]) (*connect.Response[v1.ReadResponse], error) {
	a := s.a
	m := req.Msg
	p, err := a.lookup(ctx, m.GetTopic(), m.GetPartition())
	if err != nil {
		return nil, err
	}
	maxBytes := int(m.GetMaxBytes())
	switch {
	case maxBytes == 0:
		maxBytes = defaultReadBytes
	case maxBytes < 0 || maxBytes > maxReadBytes:
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("max_bytes must be between 1 and %d, got %d", maxReadBytes, maxBytes))
	}
	wait := time.Duration(m.GetMaxWaitMs()) * time.Millisecond
	if wait < 0 || wait > maxWait {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("max_wait_ms must be between 0 and %d, got %d", maxWait.Milliseconds(), m.GetMaxWaitMs()))
	}
	offset := m.GetOffset()

	p.mu.Lock()
	hw, start, epoch, epochStart := p.highWatermarkLocked(), p.startOffset, p.epoch, p.epochStart
	p.mu.Unlock()
	if last := int64(m.GetLastEpoch()); last > 0 && last < epoch && offset > epochStart {
		// The consumer read an earlier epoch past where this one began: an
		// unclean handoff lost those records and reused their offsets.
		ce := connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf(
			"partition %s was truncated at offset %d: records you read from epoch %d at and after it were lost when the partition moved uncleanly (epoch %d); resume from %d",
			p.key, epochStart, last, epoch, epochStart))
		ce.Meta().Set(rpcerr.TruncatedAtKey, fmt.Sprint(epochStart))
		truncationsDetected.Inc()
		return nil, ce
	}
	if offset < start || offset > hw {
		return nil, connect.NewError(connect.CodeOutOfRange, fmt.Errorf("offset %d is out of range for partition %s: valid offsets are %d to %d", offset, p.key, start, hw))
	}
	if offset == hw && wait > 0 {
		wctx, cancel := context.WithTimeout(ctx, wait)
		err := p.waitFor(wctx, func() bool { return p.highWatermarkLocked() > offset })
		cancel()
		if err != nil && ctx.Err() != nil {
			return nil, connect.NewError(connect.CodeCanceled, ctx.Err())
		}
		p.mu.Lock()
		hw = p.highWatermarkLocked()
		p.mu.Unlock()
	}
	out := &v1.ReadResponse{HighWatermark: hw, StartOffset: start, NextOffset: offset}
	if offset == hw {
		return connect.NewResponse(out), nil
	}
	data, next, err := a.readRange(ctx, p, offset, hw, maxBytes)
	if err != nil {
		return nil, err
	}
	out.Batches, out.NextOffset = data, next
	return connect.NewResponse(out), nil
}

// refusal is the error appends get while the agent shuts down or drains.
func (a *Agent) refusal() error {
	switch {
	case a.isClosing():
		return rpcerr.NotApplied(connect.CodeUnavailable, errors.New("agent is shutting down; retry on the partition's next holder"))
	case a.draining.Load():
		return rpcerr.NotApplied(connect.CodeUnavailable, errors.New("agent is draining; retry on the partition's next holder"))
	}
	return nil
}
