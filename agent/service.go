package agent

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
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
		return nil, noController(k, err)
	}
	if p := a.partition(k); p != nil {
		return p, nil
	}
	return nil, a.notHolder(k)
}

// appendOp is one entry of an Append request on its way through the WAL.
type appendOp struct {
	p         *partition
	batch     []byte
	meta      batch.Meta
	acks      v1.Acks
	base, end int64
	pend      *wal.Pending
	err       error // set once the entry failed; its result is then this error
}

// Append appends every entry of the request in one WAL group commit (the
// entries are enqueued together with WAL.AppendAll, so the writer's group
// takes them at once) and answers each entry on its own. See the package doc for which
// errors are safe to retry; a per-entry error follows the same rules.
func (s service) Append(ctx context.Context, req *connect.Request[v1.AppendRequest]) (*connect.Response[v1.AppendResponse], error) {
	a := s.a
	m := req.Msg
	entries := m.GetEntries()
	if len(entries) == 0 {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("append request has no entries"))
	}
	switch m.GetAcks() {
	case v1.Acks_ACKS_UNSPECIFIED, v1.Acks_ACKS_DURABLE, v1.Acks_ACKS_WAL:
	default:
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("unknown acks %d; use ACKS_DURABLE or ACKS_WAL", m.GetAcks()))
	}
	if len(entries) > 1 {
		seen := make(map[partKey]struct{}, len(entries))
		for _, e := range entries {
			k := partKey{e.GetTopic(), e.GetPartition()}
			if _, dup := seen[k]; dup {
				return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("partition %s appears twice in one append request", k))
			}
			seen[k] = struct{}{}
		}
	}
	if err := a.refusal(); err != nil {
		return nil, err
	}
	size := 0
	for _, e := range entries {
		size += len(e.GetBatch())
	}
	release, err := a.admit(size)
	if err != nil {
		return nil, err
	}
	defer release()

	// Entries for partitions this agent does not know yet (a topic just
	// created) cost one lease refresh for all of them, not one each.
	var refreshErr error
	for _, e := range entries {
		if a.partition(partKey{e.GetTopic(), e.GetPartition()}) == nil {
			refreshErr = a.refreshLeases(ctx)
			break
		}
	}
	ops := make([]appendOp, len(entries))
	sh := shedOnce{a: a}
	for i, e := range entries {
		ops[i] = a.prepareAppend(e, m.GetAcks(), refreshErr, &sh)
	}
	a.appendAll(ctx, ops)
	a.awaitCommits(ctx, ops)

	out := &v1.AppendResponse{Results: make([]*v1.AppendResult, len(ops))}
	for i := range ops {
		op := &ops[i]
		if op.err != nil {
			out.Results[i] = &v1.AppendResult{Error: rpcerr.ToEntry(op.err)}
			continue
		}
		out.Results[i] = &v1.AppendResult{BaseOffset: op.base, RecordCount: op.meta.NumRecords}
	}
	return connect.NewResponse(out), nil
}

// prepareAppend checks one entry before anything is written: the agent
// holds the partition under a live lease, the batch is sound and within the
// topic's limit, and the agent can take the write now (shed). Append has
// refreshed the leases once if some partition was unknown; refreshErr is
// that refresh's failure.
func (a *Agent) prepareAppend(e *v1.AppendEntry, acks v1.Acks, refreshErr error, sh *shedOnce) appendOp {
	k := partKey{e.GetTopic(), e.GetPartition()}
	p := a.partition(k)
	switch {
	case p == nil && refreshErr != nil:
		return appendOp{err: noController(k, refreshErr)}
	case p == nil:
		return appendOp{err: a.notHolder(k)}
	}
	var err error
	op := appendOp{p: p, batch: e.GetBatch()}
	op.meta, err = batch.Check(op.batch)
	if err != nil {
		op.err = connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("partition %s: bad record batch: %w", p.key, err))
		return op
	}
	p.mu.Lock()
	topic, until, perr := p.topic, p.leaseUntil, p.err
	p.mu.Unlock()
	switch {
	case perr != nil:
		op.err = a.noLongerHeld(p.key)
		return op
	case !time.Now().Before(until):
		op.err = rpcerr.NotApplied(connect.CodeUnavailable, fmt.Errorf("partition %s: lease is not renewed (controller unreachable?); retry", p.key))
		return op
	}
	if max := topic.GetMaxBatchBytes(); max > 0 && len(op.batch) > int(max) {
		op.err = connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("batch is %d bytes; topic %q's max_batch_bytes is %d", len(op.batch), p.key.topic, max))
		return op
	}
	op.acks = acks
	if acks == v1.Acks_ACKS_UNSPECIFIED {
		op.acks = v1.Acks_ACKS_DURABLE
		if topic.GetDurability() == v1.Durability_DURABILITY_WAL {
			op.acks = v1.Acks_ACKS_WAL
		}
	}
	op.err = sh.shed(op.acks)
	return op
}

// shedOnce asks Agent.shed once per acks level for one request, not once
// per entry: its answer (the WAL backlog, the store's health) is the same
// for every entry of a request, and a request may carry a thousand.
type shedOnce struct {
	a       *Agent
	asked   [3]bool
	answers [3]error
}

func (s *shedOnce) shed(acks v1.Acks) error {
	i := int(acks)
	if i < 0 || i >= len(s.asked) {
		return s.a.shed(acks)
	}
	if !s.asked[i] {
		s.asked[i], s.answers[i] = true, s.a.shed(acks)
	}
	return s.answers[i]
}

// appendAll assigns offsets to every entry that passed prepareAppend,
// enqueues them on the WAL together (one group commit, one fsync), and
// waits for the fsync.
func (a *Agent) appendAll(ctx context.Context, ops []appendOp) {
	// Close waits for appends between here and the end of their WAL wait
	// (closeMu), so none reaches the WAL after the final flush started or
	// after the WAL is closed.
	a.closeMu.RLock()
	defer a.closeMu.RUnlock()
	refused := a.refusal()
	// The span of the request (the agent's server span, or the gateway's
	// in `streamhouse dev`): a flush that carries these batches joins its
	// trace.
	reqSpan := trace.SpanContextFromContext(ctx)
	walCtx, walSpan := spans.Start(ctx, tracer, "agent.wal_append")
	// Lock every partition's appendMu (in key order, so two requests
	// cannot deadlock), assign offsets, and enqueue all entries on the WAL
	// at once: the partitions' frames reach the WAL in offset order, and
	// the writer takes the request in one group, one fsync.
	live := make([]*appendOp, 0, len(ops))
	for i := range ops {
		op := &ops[i]
		switch {
		case op.err != nil:
		case refused != nil:
			op.err = refused
		default:
			live = append(live, op)
		}
	}
	slices.SortFunc(live, func(x, y *appendOp) int {
		return cmp.Or(cmp.Compare(x.p.key.topic, y.p.key.topic), cmp.Compare(x.p.key.partition, y.p.key.partition))
	})
	entries := make([]wal.Entry, 0, len(live))
	queued := live[:0:0]
	var records, bytes int
	for _, op := range live {
		p := op.p
		p.appendMu.Lock()
		p.mu.Lock()
		perr, epoch := p.err, p.epoch
		p.mu.Unlock()
		if perr != nil {
			p.appendMu.Unlock()
			op.err = a.noLongerHeld(p.key)
			continue
		}
		op.base = p.nextOffset
		op.end = op.base + int64(op.meta.NumRecords)
		batch.SetBaseOffset(op.batch, op.base)
		batch.SetPartitionLeaderEpoch(op.batch, int32(epoch))
		if op.acks == v1.Acks_ACKS_DURABLE {
			p.addFlushWaiter(reqSpan, op.end)
		}
		entries = append(entries, wal.Entry{Topic: p.key.topic, Partition: p.key.partition, BaseOffset: op.base, EndOffset: op.end, MaxTimestampMs: op.meta.MaxTimestamp, Data: op.batch})
		queued = append(queued, op)
		records += int(op.meta.NumRecords)
		bytes += len(op.batch)
	}
	pends := a.wal.AppendAll(entries)
	for i, op := range queued {
		op.pend = pends[i]
		op.p.nextOffset = op.end
		op.p.appendMu.Unlock()
	}
	var firstErr error
	for i := range ops {
		op := &ops[i]
		if op.pend == nil {
			continue
		}
		_, err := op.pend.Wait(walCtx)
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			if ctx.Err() != nil {
				op.err = connect.NewError(connect.CodeCanceled, fmt.Errorf("partition %s: gave up waiting for the WAL fsync; the records may or may not be written: %w", op.p.key, err))
				continue
			}
			// The WAL is dead (fsync errors are not retryable): offsets from
			// base on were never made durable, so this agent must stop
			// serving the partition.
			a.log.ErrorContext(ctx, "WAL append failed; the agent cannot accept writes", "partition", op.p.key.String(), "err", err)
			op.p.fail(fmt.Errorf("WAL failed: %w", err))
			op.err = connect.NewError(connect.CodeInternal, fmt.Errorf("partition %s: WAL write failed: %w", op.p.key, err))
			continue
		}
		op.p.advanceWALEnd(op.end)
		appendRecords.Add(int(op.meta.NumRecords))
		appendBytes.Add(len(op.batch))
		a.noteUnuploaded(len(op.batch))
	}
	if walSpan.IsRecording() {
		walSpan.SetAttributes(attribute.Int("streamhouse.entries", len(ops)),
			attribute.Int("streamhouse.records", records), attribute.Int("streamhouse.bytes", bytes))
		if firstErr != nil {
			walSpan.SetStatus(codes.Error, firstErr.Error())
		}
	}
	walSpan.End()
}

// awaitCommits waits, for every durable entry that reached the WAL, until
// the uploader committed it, or for at most DurableAckTimeout in all.
func (a *Agent) awaitCommits(ctx context.Context, ops []appendOp) {
	durable := false
	for i := range ops {
		durable = durable || (ops[i].err == nil && ops[i].acks == v1.Acks_ACKS_DURABLE)
	}
	if !durable {
		return
	}
	// Waits for the uploader's flush (agent.flush, in this trace when this
	// request's span was the one the flush picked as parent).
	wctx, waitSpan := spans.Start(ctx, tracer, "agent.commit_wait")
	defer waitSpan.End()
	wctx, cancel := context.WithTimeout(wctx, a.cfg.DurableAckTimeout)
	defer cancel()
	for i := range ops {
		op := &ops[i]
		if op.err != nil || op.acks != v1.Acks_ACKS_DURABLE {
			continue
		}
		p := op.p
		err := p.waitFor(wctx, func() bool { return p.committedEnd >= op.end })
		if err == nil {
			continue
		}
		if waitSpan.IsRecording() {
			waitSpan.SetStatus(codes.Error, err.Error())
		}
		switch {
		case ctx.Err() != nil:
			op.err = connect.NewError(connect.CodeDeadlineExceeded, fmt.Errorf("partition %s: records at [%d, %d) are in the WAL but not yet committed: %w", p.key, op.base, op.end, ctx.Err()))
		case wctx.Err() != nil:
			durableAckTimeouts.Inc()
			op.err = connect.NewError(connect.CodeDeadlineExceeded, fmt.Errorf(
				"partition %s: records at [%d, %d) are in the WAL but were not committed within the durable ack timeout (%v; is the object store failing?); they may or may not become visible",
				p.key, op.base, op.end, a.cfg.DurableAckTimeout))
		default:
			op.err = connect.NewError(connect.CodeAborted, fmt.Errorf("partition %s: records at [%d, %d) are in the WAL but not yet committed: %w", p.key, op.base, op.end, err))
		}
	}
}

// Read serves whole batches from offset up to the high watermark.
func (s service) Read(ctx context.Context, req *connect.Request[v1.ReadRequest]) (*connect.Response[v1.ReadResponse], error) {
	a := s.a
	m := req.Msg
	p, err := a.lookup(ctx, m.GetTopic(), m.GetPartition())
	if err != nil {
		return nil, err
	}
	maxBytes, err := readMaxBytes(m.GetMaxBytes())
	if err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	wait, err := readWait(m.GetMaxWaitMs())
	if err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	offset := m.GetOffset()
	hw, start, err := p.checkRead(offset, m.GetLastEpoch())
	if err != nil {
		return nil, err
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
