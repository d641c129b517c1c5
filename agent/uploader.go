package agent

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"sort"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/oklog/ulid/v2"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/streamhouse/streamhouse/agent/wal"
	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/pkg/objfile"
	"github.com/streamhouse/streamhouse/pkg/objstore"
)

// noteUnuploaded counts bytes appended since the last upload and starts an
// upload early once FlushBytes are waiting.
func (a *Agent) noteUnuploaded(n int) {
	if a.unuploaded.Add(int64(n)) >= int64(a.cfg.FlushBytes) {
		a.kickUpload()
	}
}

func (a *Agent) kickUpload() {
	select {
	case a.flushNow <- struct{}{}:
	default:
	}
}

// uploadLoop flushes every FlushInterval (or sooner when FlushBytes are
// waiting). When Close has drained the appends in flight (a.drained) it
// flushes until the WAL holds nothing uncommitted, then closes uploadDone.
func (a *Agent) uploadLoop() {
	defer a.wg.Done()
	t := time.NewTicker(a.cfg.FlushInterval)
	defer t.Stop()
	closing := a.drained
	failures := 0
	for {
		select {
		case <-a.ctx.Done():
			return
		case <-t.C:
		case <-a.flushNow:
		case <-closing:
			a.finalFlush()
			close(a.uploadDone)
			closing = nil
			<-a.ctx.Done()
			return
		}
		n, err := a.flushOnce(a.ctx)
		switch {
		case err != nil && a.ctx.Err() == nil:
			failures++
			if failures == 1 || failures%20 == 0 {
				a.log.Warn("upload failed; the data stays in the WAL and is retried", "err", err, "failures", failures)
			}
		case err == nil && failures > 0:
			a.log.Info("upload recovered", "failures", failures)
			failures = 0
		}
		if err == nil && n > 0 && a.unuploaded.Load() >= int64(a.cfg.FlushBytes) {
			a.kickUpload() // more than one object's worth is waiting
		}
	}
}

func (a *Agent) finalFlush() {
	for attempt := 0; ; attempt++ {
		n, err := a.flushOnce(a.ctx)
		if err == nil && n == 0 {
			return
		}
		if err != nil {
			a.log.Warn("final upload failed; retrying", "err", err)
			if !sleepCtx(a.ctx, backoff(attempt)) {
				return
			}
		}
	}
}

type uploadPlan struct {
	p     *partition
	epoch int64
	base  int64
	end   int64
}

// flushOnce uploads one object holding the new batches of every partition
// (up to FlushBytes), commits its sections, and returns how many partitions
// it carried.
func (a *Agent) flushOnce(ctx context.Context) (int, error) {
	a.mu.RLock()
	parts := make([]*partition, 0, len(a.parts))
	for _, p := range a.parts {
		parts = append(parts, p)
	}
	a.mu.RUnlock()
	sort.Slice(parts, func(i, j int) bool {
		if parts[i].key.topic != parts[j].key.topic {
			return parts[i].key.topic < parts[j].key.topic
		}
		return parts[i].key.partition < parts[j].key.partition
	})

	b := a.builder
	b.Reset() // an earlier flush may have failed half-way
	var plans []uploadPlan
	var corrupt []*partition // partitions whose next frame to upload is unreadable
	budget := a.cfg.FlushBytes
	// When more than FlushBytes wait, a flush takes partitions from where
	// the last full one stopped, not always from the first: otherwise the
	// partitions late in the order wait flush after flush, and a produce
	// request, which carries many partitions and is acknowledged when all
	// are committed, waits for the slowest.
	start := 0
	if n := len(parts); n > 0 {
		start = a.flushStart % n
	}
	for k := range parts {
		p := parts[(start+k)%len(parts)]
		if budget <= 0 {
			a.flushStart = (start + k) % len(parts) // the first one left out goes first
			break
		}
		p.mu.Lock()
		from, epoch, dead := p.uploadedEnd, p.epoch, p.err != nil
		p.mu.Unlock()
		if dead {
			if p.corrupt() {
				corrupt = append(corrupt, p) // its release failed before: try again
			}
			continue
		}
		end := from
		for _, e := range a.wal.Entries(p.key.topic, p.key.partition, from, budget) {
			if e.BaseOffset != end {
				break
			}
			data, err := a.wal.ReadInto(&a.walScratch, e.Pos) // copied by b.Add
			if errors.Is(err, wal.ErrCorrupt) {
				// Upload what precedes the bad frame now; once the bad frame
				// is the first left to upload, give the partition up (below).
				// One partition's damaged frame must not stop every other
				// partition's uploads, which share the object.
				if end == from {
					corrupt = append(corrupt, p)
				}
				a.log.ErrorContext(ctx, "unreadable WAL frame", "partition", p.key.String(), "offset", e.BaseOffset, "err", err)
				break
			}
			if err != nil {
				return 0, fmt.Errorf("read WAL for %s at %d: %w", p.key, e.BaseOffset, err)
			}
			if err := b.Add(p.key.topic, p.key.partition, data); err != nil {
				return 0, fmt.Errorf("build object: %s at %d: %w", p.key, e.BaseOffset, err)
			}
			end = e.EndOffset
			budget -= len(data)
		}
		if end > from {
			plans = append(plans, uploadPlan{p: p, epoch: epoch, base: from, end: end})
		}
	}
	for _, p := range corrupt {
		a.dropCorrupt(ctx, p)
	}
	if len(plans) == 0 {
		return 0, nil
	}
	ctx, span := a.startFlushSpan(ctx, plans)
	n, err := a.upload(ctx, b, plans)
	if err != nil && span.IsRecording() {
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
	return n, err
}

// dropCorrupt gives up a partition whose next frame to upload cannot be read
// back from the WAL (a CRC mismatch: the disk damaged it after the fsync).
// Everything before the frame is committed; the frame and what follows it
// in this WAL are lost. The partition first refuses appends and uploads,
// then its lease is released, and only then is it dropped: a partition the
// agent no longer has but still holds would be adopted again at the same
// epoch, and a wal topic's consumers could not tell the lost tail from the
// offsets given anew (KIP-320 truncation detection needs a new epoch). If
// the release fails, the next flush tries again.
func (a *Agent) dropCorrupt(ctx context.Context, p *partition) {
	p.fail(fmt.Errorf("partition %s: the WAL frame at its upload position is unreadable: %w", p.key, wal.ErrCorrupt))
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err := a.cfg.Controller.ReleaseLeases(ctx, connect.NewRequest(&v1.ReleaseLeasesRequest{
		AgentId: a.cfg.ID, Incarnation: a.incarnation,
		Partitions: []*v1.PartitionRef{{Topic: p.key.topic, Partition: p.key.partition}},
	}))
	if err != nil {
		a.log.ErrorContext(ctx, "release the lease of a partition with a corrupt WAL frame; retrying at the next flush", "partition", p.key.String(), "err", err)
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.parts[p.key] == p {
		a.dropLocked(p.key, p, p.failure())
	}
}

// startFlushSpan starts the agent.flush span. A flush is shared by many
// appends, so it cannot be a child of all of them: its parent is the first
// sampled acks=durable append it carries, and the others (up to
// maxFlushLinks) are span links. A flush carrying no sampled durable append
// is a new trace, sampled at the process's ratio.
func (a *Agent) startFlushSpan(ctx context.Context, plans []uploadPlan) (context.Context, trace.Span) {
	var waiters []trace.SpanContext
	for _, pl := range plans {
		waiters = pl.p.takeFlushWaiters(pl.end, waiters)
	}
	var opts []trace.SpanStartOption
	if len(waiters) > 0 {
		ctx = trace.ContextWithSpanContext(ctx, waiters[0])
		links := make([]trace.Link, 0, min(len(waiters)-1, maxFlushLinks))
		for _, sc := range waiters[1:min(len(waiters), maxFlushLinks+1)] {
			links = append(links, trace.Link{SpanContext: sc})
		}
		opts = append(opts, trace.WithLinks(links...))
	}
	ctx, span := tracer.Start(ctx, "agent.flush", opts...)
	if span.IsRecording() {
		span.SetAttributes(attribute.Int("streamhouse.partitions", len(plans)), attribute.Int("streamhouse.waiters", len(waiters)))
	}
	return ctx, span
}

// upload builds the object of the planned sections, PUTs it, commits it to
// the controller, and applies the commit's answer per partition.
func (a *Agent) upload(ctx context.Context, b *objfile.Builder, plans []uploadPlan) (int, error) {
	obj, sections, err := b.Finish()
	if err != nil {
		return 0, fmt.Errorf("build object: %w", err)
	}
	key := a.objectKey(time.Now())
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.SetAttributes(attribute.String("objstore.key", key), attribute.Int("streamhouse.bytes", len(obj)))
	}
	start := time.Now()
	if err := a.put(ctx, key, obj); err != nil {
		return 0, err
	}
	req := &v1.CommitObjectRequest{AgentId: a.cfg.ID, ObjectKey: key, ObjectSize: int64(len(obj))}
	for i, s := range sections {
		pl := plans[i]
		if s.Topic != pl.p.key.topic || s.Partition != pl.p.key.partition || s.BaseOffset != pl.base || s.EndOffset != pl.end {
			return 0, fmt.Errorf("object %s: section %d is %s/%d [%d, %d), planned %s [%d, %d)", key, i, s.Topic, s.Partition, s.BaseOffset, s.EndOffset, pl.p.key, pl.base, pl.end)
		}
		req.Sections = append(req.Sections, &v1.ObjectSection{
			Topic: s.Topic, Partition: s.Partition, Epoch: pl.epoch, BaseOffset: s.BaseOffset, EndOffset: s.EndOffset,
			Position: s.Position, Length: s.Length, MaxTimestampMs: s.MaxTimestampMs,
		})
	}
	resp, err := a.commit(ctx, req)
	if err != nil {
		return 0, err
	}
	uploaded := 0
	var marks []wal.CommittedMark
	for i, r := range resp.GetResults() {
		pl := plans[i]
		switch {
		case r.GetCommitted() || (!r.GetFenced() && r.GetCommittedEndOffset() >= pl.end):
			// Committed now, or by an earlier attempt of this same commit.
			pl.p.mu.Lock()
			pl.p.uploadedEnd = max(pl.p.uploadedEnd, pl.end)
			pl.p.mu.Unlock()
			pl.p.advanceCommitted(r.GetCommittedEndOffset())
			marks = append(marks, wal.CommittedMark{Topic: pl.p.key.topic, Partition: pl.p.key.partition, End: pl.end})
			uploaded += int(sections[i].Length)
		case r.GetFenced():
			a.mu.Lock()
			if a.parts[pl.p.key] == pl.p {
				a.dropLocked(pl.p.key, pl.p, fmt.Errorf("fenced by the controller: %s", r.GetError()))
			}
			a.mu.Unlock()
		default:
			a.log.ErrorContext(ctx, "commit rejected", "partition", pl.p.key.String(), "object", key, "reason", r.GetError())
			pl.p.mu.Lock()
			if r.GetCommittedEndOffset() < pl.p.uploadedEnd {
				pl.p.uploadedEnd = r.GetCommittedEndOffset() // upload again from the committed end
			}
			pl.p.mu.Unlock()
		}
	}
	// One index transaction for every partition of the object: the WAL may
	// then drop what is committed.
	if err := a.wal.SetCommittedMany(marks); err != nil {
		a.log.ErrorContext(ctx, "mark committed in WAL", "object", key, "partitions", len(marks), "err", err)
	}
	flushesTotal.Inc()
	flushBytes.Update(float64(len(obj)))
	flushDuration.UpdateDuration(start)
	flushPartitions.Update(float64(len(plans)))
	a.unuploaded.Add(-int64(uploaded))
	if a.unuploaded.Load() < 0 {
		a.unuploaded.Store(0)
	}
	return len(plans), nil
}

// put writes the object, retrying with backoff until ctx ends. ErrExists on
// a retry means an earlier attempt succeeded (keys are unique per object).
func (a *Agent) put(ctx context.Context, key string, obj []byte) error {
	for attempt := 0; ; attempt++ {
		err := a.cfg.Store.PutIfAbsent(ctx, key, obj)
		if err == nil || (attempt > 0 && errors.Is(err, objstore.ErrExists)) {
			return nil
		}
		if attempt >= 5 || !sleepCtx(ctx, backoff(attempt)) {
			return fmt.Errorf("put object %s: %w", key, err)
		}
	}
}

// commit sends the commit, retrying errors where the controller may not
// have seen it. A retry of a commit that did land is answered as "not
// contiguous" with a committed end at or past ours, which flushOnce treats
// as success.
func (a *Agent) commit(ctx context.Context, req *v1.CommitObjectRequest) (*v1.CommitObjectResponse, error) {
	for attempt := 0; ; attempt++ {
		resp, err := a.cfg.Controller.CommitObject(ctx, connect.NewRequest(req))
		if err == nil {
			return resp.Msg, nil
		}
		code := connect.CodeOf(err)
		if code == connect.CodeInvalidArgument || attempt >= 8 || !sleepCtx(ctx, backoff(attempt)) {
			return nil, fmt.Errorf("commit object %s: %w", req.GetObjectKey(), err)
		}
	}
}

// objectKey names a new object: <root>/<shard>/<yyyymmddhh>/<agent>-<ulid>.obj,
// with the shard a hash of the object id so keys spread over PrefixCount
// prefixes (DESIGN.md, Object keys).
func (a *Agent) objectKey(now time.Time) string {
	id := ulid.Make().String()
	h := fnv.New32a()
	h.Write([]byte(id))
	shard := h.Sum32() % uint32(a.cfg.PrefixCount)
	width := 2
	if a.cfg.PrefixCount > 256 {
		width = 4
	}
	var sb strings.Builder
	if a.cfg.KeyRoot != "" {
		sb.WriteString(a.cfg.KeyRoot)
		sb.WriteByte('/')
	}
	fmt.Fprintf(&sb, "%0*x/%s/%s-%s.obj", width, shard, now.UTC().Format("2006010215"), a.cfg.ID, id)
	return sb.String()
}

// backoff is exponential with full jitter: a random wait in [0, min(2s, 50ms·2^attempt)).
func backoff(attempt int) time.Duration {
	ceil := 50 * time.Millisecond << min(attempt, 6)
	ceil = min(ceil, 2*time.Second)
	return time.Duration(rand.Int64N(int64(ceil)) + 1)
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
