package agent

import (
	"context"
	"fmt"
	"reflect"
	"time"

	"connectrpc.com/connect"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/pkg/rpcerr"
)

// Limits of ReadPartitions beyond those of Read (defaultReadBytes and
// maxReadBytes apply to each partition, maxWait to the request).
const (
	// defaultReadPartitionsBytes is the whole answer's soft limit when the
	// request leaves max_bytes at 0 (Kafka's fetch.max.bytes default).
	defaultReadPartitionsBytes = 50 << 20
	// maxReadPartitionsBytes is the largest max_bytes a request may ask for.
	maxReadPartitionsBytes = 64 << 20
)

// readMaxBytes validates and defaults one partition's max_bytes, as Read and
// each partition of ReadPartitions take it: 0 is defaultReadBytes.
func readMaxBytes(n int32) (int, error) {
	switch {
	case n == 0:
		return defaultReadBytes, nil
	case n < 0 || n > maxReadBytes:
		return 0, fmt.Errorf("max_bytes must be between 1 and %d, got %d", maxReadBytes, n)
	}
	return int(n), nil
}

// readWait validates a request's max_wait_ms.
func readWait(ms int32) (time.Duration, error) {
	wait := time.Duration(ms) * time.Millisecond
	if wait < 0 || wait > maxWait {
		return 0, fmt.Errorf("max_wait_ms must be between 0 and %d, got %d", maxWait.Milliseconds(), ms)
	}
	return wait, nil
}

// notHolder is the refusal for a partition this agent does not hold: nothing
// was done, and gateways refresh their routes on it.
func (a *Agent) notHolder(k partKey) error {
	return rpcerr.NotApplied(connect.CodeFailedPrecondition, fmt.Errorf("agent %s is not the lease holder of partition %s", a.cfg.ID, k))
}

// noLongerHeld is the refusal for a partition this agent held until it was
// dropped (lease lost, fenced, WAL failed): nothing of the write was done.
func (a *Agent) noLongerHeld(k partKey) error {
	return rpcerr.NotApplied(connect.CodeFailedPrecondition, fmt.Errorf("agent %s no longer holds partition %s", a.cfg.ID, k))
}

// noController is the refusal for a partition the agent could not look up
// because the controller did not answer its lease refresh.
func noController(k partKey, err error) error {
	return rpcerr.NotApplied(connect.CodeUnavailable, fmt.Errorf("partition %s: cannot reach the controller: %w", k, err))
}

// checkRead applies a read's rules to the partition as it is now, the same
// for Read and for each partition of ReadPartitions. A reader whose
// lastEpoch shows it read, in an earlier epoch, records past where this
// epoch began (an unclean handoff lost them and their offsets were reused)
// gets FailedPrecondition carrying rpcerr.TruncatedAtKey, the offset to
// resume from; an offset outside [start offset, high watermark] gets
// OutOfRange naming the valid range. Otherwise it returns the high
// watermark and the start offset, with offset between them.
func (p *partition) checkRead(offset int64, lastEpoch int32) (hw, start int64, err error) {
	p.mu.Lock()
	hw, start, epoch, epochStart := p.highWatermarkLocked(), p.startOffset, p.epoch, p.epochStart
	p.mu.Unlock()
	if last := int64(lastEpoch); last > 0 && last < epoch && offset > epochStart {
		ce := connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf(
			"partition %s was truncated at offset %d: records you read from epoch %d at and after it were lost when the partition moved uncleanly (epoch %d); resume from %d",
			p.key, epochStart, last, epoch, epochStart))
		ce.Meta().Set(rpcerr.TruncatedAtKey, fmt.Sprint(epochStart))
		truncationsDetected.Inc()
		return 0, 0, ce
	}
	if offset < start || offset > hw {
		return 0, 0, connect.NewError(connect.CodeOutOfRange, fmt.Errorf("offset %d is out of range for partition %s: valid offsets are %d to %d", offset, p.key, start, hw))
	}
	return hw, start, nil
}

// partRead is one partition of a ReadPartitions request on its way to its
// result: the batches read so far from offset up to next, or its error.
type partRead struct {
	key       partKey
	offset    int64
	lastEpoch int32
	maxBytes  int

	p         *partition // nil when the partition failed (err is set)
	err       error
	data      []byte
	next      int64
	hw, start int64
}

// active reports whether the partition may still be read.
func (r *partRead) active() bool { return r.p != nil && r.err == nil }

// parseReadPartitions validates a ReadPartitions request as a whole: a bad
// limit or a partition asked twice fails it before anything is read.
func parseReadPartitions(m *v1.ReadPartitionsRequest) (reads []partRead, wait time.Duration, minBytes, maxBytes int, err error) {
	bad := func(format string, args ...any) error {
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf(format, args...))
	}
	if len(m.GetPartitions()) == 0 {
		return nil, 0, 0, 0, bad("read partitions request has no partitions")
	}
	if wait, err = readWait(m.GetMaxWaitMs()); err != nil {
		return nil, 0, 0, 0, bad("%w", err)
	}
	switch n := m.GetMaxBytes(); {
	case n == 0:
		maxBytes = defaultReadPartitionsBytes
	case n < 0 || n > maxReadPartitionsBytes:
		return nil, 0, 0, 0, bad("max_bytes must be between 1 and %d (0 for %d), got %d", maxReadPartitionsBytes, defaultReadPartitionsBytes, n)
	default:
		maxBytes = int(n)
	}
	switch n := m.GetMinBytes(); {
	case n < 0:
		return nil, 0, 0, 0, bad("min_bytes must not be negative, got %d", n)
	case n == 0:
		minBytes = 1
	default:
		minBytes = int(n)
	}
	reads = make([]partRead, len(m.GetPartitions()))
	seen := make(map[partKey]int, len(reads))
	for i, rp := range m.GetPartitions() {
		k := partKey{rp.GetTopic(), rp.GetPartition()}
		if j, dup := seen[k]; dup {
			return nil, 0, 0, 0, bad("partition %s is asked twice (partitions %d and %d)", k, j, i)
		}
		seen[k] = i
		pmax, err := readMaxBytes(rp.GetMaxBytes())
		if err != nil {
			return nil, 0, 0, 0, bad("partition %s: %w", k, err)
		}
		reads[i] = partRead{key: k, offset: rp.GetOffset(), lastEpoch: rp.GetLastEpoch(), maxBytes: pmax, next: rp.GetOffset()}
	}
	return reads, wait, minBytes, maxBytes, nil
}

// lookupReads finds the partitions of reads, as lookup does for one but
// refreshing the leases at most once for all of those it does not know.
func (a *Agent) lookupReads(ctx context.Context, reads []partRead) {
	missing := false
	for i := range reads {
		reads[i].p = a.partition(reads[i].key)
		missing = missing || reads[i].p == nil
	}
	if !missing {
		return
	}
	rerr := a.refreshLeases(ctx)
	for i := range reads {
		r := &reads[i]
		if r.p != nil {
			continue
		}
		if rerr != nil {
			r.err = noController(r.key, rerr)
			continue
		}
		if r.p = a.partition(r.key); r.p == nil {
			r.err = a.notHolder(r.key)
		}
	}
}

// ReadPartitions serves many partitions in one call: each partition is
// checked as Read checks it (its failure is its own result), then the
// partitions are read in request order, at most each one's max_bytes and
// together about the request's max_bytes (one batch more at most; the first
// batch available is always returned), waiting up to max_wait_ms until
// min_bytes are ready over all of them. Only a malformed request fails as a
// whole (InvalidArgument), or one whose caller went away (Canceled).
//
// Partitions later in the request get what the earlier ones leave of
// max_bytes: callers that ask for more than fits rotate the order so every
// partition gets its turn (Kafka's consumers do the same).
func (s service) ReadPartitions(ctx context.Context, req *connect.Request[v1.ReadPartitionsRequest]) (*connect.Response[v1.ReadPartitionsResponse], error) {
	a := s.a
	reads, wait, minBytes, maxBytes, err := parseReadPartitions(req.Msg)
	if err != nil {
		return nil, err
	}
	a.lookupReads(ctx, reads)
	for i := range reads {
		if r := &reads[i]; r.active() {
			if r.hw, r.start, r.err = r.p.checkRead(r.offset, r.lastEpoch); r.err != nil {
				r.p = nil
			}
		}
	}
	a.serveReads(ctx, reads, time.Now().Add(wait), minBytes, maxBytes)
	if err := ctx.Err(); err != nil {
		return nil, connect.NewError(connect.CodeCanceled, fmt.Errorf("read of %d partitions: %w", len(reads), err))
	}
	out := &v1.ReadPartitionsResponse{Results: make([]*v1.ReadResult, len(reads))}
	for i := range reads {
		r := &reads[i]
		if r.err != nil {
			out.Results[i] = &v1.ReadResult{Error: rpcerr.ToEntry(r.err)}
			continue
		}
		out.Results[i] = &v1.ReadResult{Batches: r.data, HighWatermark: r.hw, StartOffset: r.start, NextOffset: r.next}
	}
	return connect.NewResponse(out), nil
}

// serveReads reads the active partitions of reads until min bytes are read
// over all of them, maxBytes are, the deadline passes or ctx ends. Between
// rounds it waits on every partition it could still read at once (one
// select over their change channels, no goroutine per partition) and reads
// again those whose high watermark moved.
func (a *Agent) serveReads(ctx context.Context, reads []partRead, deadline time.Time, minBytes, maxBytes int) {
	total := 0
	var cases []reflect.SelectCase
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		cases = cases[:0]
		for i := range reads {
			r := &reads[i]
			if !r.active() {
				continue
			}
			p := r.p
			p.mu.Lock()
			// The channel is taken with the state it describes: a change
			// after this point closes it, so the select below sees it.
			hw, start, lost, changed := p.highWatermarkLocked(), p.startOffset, p.err != nil, p.changed
			p.mu.Unlock()
			r.hw, r.start = max(r.hw, hw), start
			room := min(r.maxBytes-len(r.data), maxBytes-total)
			if room <= 0 {
				continue // full, or the answer is: nothing to wait for
			}
			if r.next < hw {
				data, next, err := a.readRange(ctx, p, r.next, hw, room)
				switch {
				case err != nil && len(r.data) == 0:
					r.err, r.p = err, nil
					continue
				case err != nil:
					// Serve what was read; the next request reports the error.
					r.p = nil
					continue
				}
				if r.data == nil {
					r.data = data
				} else {
					r.data = append(r.data, data...)
				}
				r.next = next
				total += len(data)
				if next < hw {
					continue // stopped by its limits: more is ready, not awaited
				}
			}
			if !lost { // a lost partition's state no longer changes
				cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(changed)})
			}
		}
		left := time.Until(deadline)
		if total >= minBytes || total >= maxBytes || len(cases) == 0 || left <= 0 || ctx.Err() != nil {
			return
		}
		if timer == nil {
			timer = time.NewTimer(left)
		}
		cases = append(cases,
			reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(ctx.Done())},
			reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(timer.C)})
		if chosen, _, _ := reflect.Select(cases); chosen >= len(cases)-2 {
			return // ctx ended or the deadline passed
		}
	}
}
