package gateway

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/pkg/batch"
	"github.com/streamhouse/streamhouse/pkg/rpcerr"
)

// readPartitionsStats is what the tests observe of one fake agent's
// ReadPartitions calls (kept beside fakeAgent, which fakes_test.go owns).
type readPartitionsStats struct {
	calls  atomic.Int32 // ReadPartitions calls
	active atomic.Int32 // calls being served now

	mu sync.Mutex
	// onCall, when set, may fail a whole call before it is served.
	onCall func(*v1.ReadPartitionsRequest) error
	reqs   []*v1.ReadPartitionsRequest
}

var fakeReadPartitions = struct {
	mu sync.Mutex
	m  map[*fakeAgent]*readPartitionsStats
}{m: map[*fakeAgent]*readPartitionsStats{}}

func rpStats(a *fakeAgent) *readPartitionsStats {
	fakeReadPartitions.mu.Lock()
	defer fakeReadPartitions.mu.Unlock()
	st := fakeReadPartitions.m[a]
	if st == nil {
		st = &readPartitionsStats{}
		fakeReadPartitions.m[a] = st
	}
	return st
}

func (st *readPartitionsStats) requests() []*v1.ReadPartitionsRequest {
	st.mu.Lock()
	defer st.mu.Unlock()
	return slices.Clone(st.reqs)
}

// ReadPartitions serves each partition as Read does (the onRead hook, given
// the partition as a ReadRequest, fails only that partition), long-polling
// on the agent's change channel until min_bytes are ready over all of them.
// Limits: the first batch of a partition is always returned; after it, a
// batch is added while it fits the partition's max_bytes and the request's.
func (a *fakeAgent) ReadPartitions(ctx context.Context, req *connect.Request[v1.ReadPartitionsRequest]) (*connect.Response[v1.ReadPartitionsResponse], error) {
	st := rpStats(a)
	st.calls.Add(1)
	st.active.Add(1)
	defer st.active.Add(-1)
	m := req.Msg
	st.mu.Lock()
	st.reqs = append(st.reqs, m)
	onCall := st.onCall
	st.mu.Unlock()
	if onCall != nil {
		if err := onCall(m); err != nil {
			return nil, err
		}
	}
	a.mu.Lock()
	onRead := a.onRead
	a.mu.Unlock()
	refused := make([]error, len(m.GetPartitions()))
	if onRead != nil {
		for i, p := range m.GetPartitions() {
			refused[i] = onRead(&v1.ReadRequest{Topic: p.GetTopic(), Partition: p.GetPartition(), Offset: p.GetOffset(), MaxBytes: p.GetMaxBytes(), MaxWaitMs: m.GetMaxWaitMs(), LastEpoch: p.GetLastEpoch()})
		}
	}
	var timeout <-chan time.Time
	if m.GetMaxWaitMs() > 0 {
		t := time.NewTimer(time.Duration(m.GetMaxWaitMs()) * time.Millisecond)
		defer t.Stop()
		timeout = t.C
	}
	maxTotal := int(m.GetMaxBytes())
	if maxTotal == 0 {
		maxTotal = 50 << 20
	}
	for {
		out := &v1.ReadPartitionsResponse{Results: make([]*v1.ReadResult, len(m.GetPartitions()))}
		total := 0
		a.mu.Lock()
		for i, p := range m.GetPartitions() {
			if refused[i] != nil {
				out.Results[i] = &v1.ReadResult{Error: rpcerr.ToEntry(refused[i])}
				continue
			}
			k := logKey(p.GetTopic(), p.GetPartition())
			l := a.logs[k]
			if l == nil {
				l = &fakeLog{}
			}
			if p.GetOffset() < l.start || p.GetOffset() > l.end {
				out.Results[i] = &v1.ReadResult{Error: rpcerr.ToEntry(connect.NewError(connect.CodeOutOfRange,
					fmt.Errorf("offset %d is out of range: partition %s holds offsets %d to %d", p.GetOffset(), k, l.start, l.end)))}
				continue
			}
			r := &v1.ReadResult{HighWatermark: l.end, StartOffset: l.start, NextOffset: p.GetOffset()}
			for _, b := range l.batches {
				meta, err := batch.Check(b)
				if err != nil {
					a.mu.Unlock()
					return nil, err
				}
				if meta.EndOffset() <= p.GetOffset() {
					continue
				}
				if total >= maxTotal || (len(r.Batches) > 0 && (len(r.Batches)+len(b) > int(p.GetMaxBytes()) || total+len(b) > maxTotal)) {
					break
				}
				r.Batches = append(r.Batches, b...)
				r.NextOffset = meta.EndOffset()
				total += len(b)
			}
			out.Results[i] = r
		}
		changed := a.changed
		a.mu.Unlock()
		if total >= max(int(m.GetMinBytes()), 1) || timeout == nil {
			return connect.NewResponse(out), nil
		}
		select {
		case <-ctx.Done():
			return nil, connect.NewError(connect.CodeCanceled, ctx.Err())
		case <-timeout:
			timeout = nil // answer with what there is
		case <-changed:
		}
	}
}

// putRecords appends a batch of values to a fake agent's partition, as its Append
// does, and wakes its long-polls.
func putRecords(t *testing.T, a *fakeAgent, topic string, p int32, values ...string) {
	t.Helper()
	recs := make([]batch.Record, len(values))
	for i, v := range values {
		recs[i] = batch.Record{Value: []byte(v), Timestamp: time.Now().UnixMilli()}
	}
	b, err := batch.Encode(recs, batch.EncodeOptions{})
	if err != nil {
		t.Fatalf("encode: %v", err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	k := logKey(topic, p)
	l := a.logs[k]
	if l == nil {
		l = &fakeLog{}
		a.logs[k] = l
	}
	batch.SetBaseOffset(b, l.end)
	l.batches = append(l.batches, b)
	l.end += int64(len(values))
	close(a.changed)
	a.changed = make(chan struct{})
}
