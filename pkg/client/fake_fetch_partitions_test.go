package client

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	streamhousev1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/pkg/batch"
	"github.com/streamhouse/streamhouse/pkg/rpcerr"
)

// fetchPartitionsFake is the fake gateway's FetchPartitions state, kept
// beside fakeGateway (which fake_test.go owns).
type fetchPartitionsFake struct {
	calls  atomic.Int64
	active atomic.Int32

	mu sync.Mutex
	// onCall, when set, may fail a whole call (n counts calls from 1).
	onCall func(n int64, req *streamhousev1.FetchPartitionsRequest) error
	// onPartition, when set, may fail one partition of a call.
	onPartition func(n int64, p *streamhousev1.FetchPartition) error
	reqs        []*streamhousev1.FetchPartitionsRequest
}

var fetchPartitionsFakes = struct {
	mu sync.Mutex
	m  map[*fakeGateway]*fetchPartitionsFake
}{m: map[*fakeGateway]*fetchPartitionsFake{}}

func fpFake(g *fakeGateway) *fetchPartitionsFake {
	fetchPartitionsFakes.mu.Lock()
	defer fetchPartitionsFakes.mu.Unlock()
	f := fetchPartitionsFakes.m[g]
	if f == nil {
		f = &fetchPartitionsFake{}
		fetchPartitionsFakes.m[g] = f
	}
	return f
}

func (f *fetchPartitionsFake) set(onCall func(int64, *streamhousev1.FetchPartitionsRequest) error, onPartition func(int64, *streamhousev1.FetchPartition) error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.onCall, f.onPartition = onCall, onPartition
}

func (f *fetchPartitionsFake) requests() []*streamhousev1.FetchPartitionsRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.reqs)
}

// FetchPartitions serves raw fetches of the fake's one topic, as the real
// gateway does: each partition answered on its own, the first batch always
// returned, then batches while the partition's and the request's max_bytes
// allow, long-polling on every partition until min_bytes are ready.
func (g *fakeGateway) FetchPartitions(ctx context.Context, req *connect.Request[streamhousev1.FetchPartitionsRequest]) (*connect.Response[streamhousev1.FetchPartitionsResponse], error) {
	f := fpFake(g)
	n := f.calls.Add(1)
	f.active.Add(1)
	defer f.active.Add(-1)
	m := req.Msg
	f.mu.Lock()
	f.reqs = append(f.reqs, m)
	onCall, onPartition := f.onCall, f.onPartition
	f.mu.Unlock()
	if onCall != nil {
		if err := onCall(n, m); err != nil {
			return nil, err
		}
	}
	if !m.GetRaw() {
		return nil, connect.NewError(connect.CodeUnimplemented, errors.New("the fake serves raw only"))
	}
	failed := make([]error, len(m.GetPartitions()))
	for i, p := range m.GetPartitions() {
		switch {
		case p.GetTopic() != g.topic:
			failed[i] = connect.NewError(connect.CodeNotFound, fmt.Errorf("topic %q does not exist", p.GetTopic()))
		case p.GetPartition() < 0 || p.GetPartition() >= g.partitions:
			failed[i] = connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("partition %d is out of range", p.GetPartition()))
		case onPartition != nil:
			failed[i] = onPartition(n, p)
		}
	}
	maxTotal := int(m.GetMaxBytes())
	if maxTotal == 0 {
		maxTotal = 50 << 20
	}
	deadline := time.NewTimer(time.Duration(m.GetMaxWaitMs()) * time.Millisecond)
	defer deadline.Stop()
	for {
		out := &streamhousev1.FetchPartitionsResponse{Partitions: make([]*streamhousev1.PartitionRecords, len(m.GetPartitions()))}
		cases := []reflect.SelectCase{
			{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(ctx.Done())},
			{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(deadline.C)},
		}
		total := 0
		g.mu.Lock()
		for i, p := range m.GetPartitions() {
			pr := &streamhousev1.PartitionRecords{Topic: p.GetTopic(), Partition: p.GetPartition()}
			out.Partitions[i] = pr
			if failed[i] != nil {
				pr.Error = rpcerr.ToEntry(failed[i])
				continue
			}
			l := g.logs[p.GetPartition()]
			off := p.GetOffset()
			if off < 0 || off > l.next {
				pr.Error = rpcerr.ToEntry(connect.NewError(connect.CodeOutOfRange, fmt.Errorf("offset %d is out of range: valid offsets are 0 to %d", off, l.next)))
				continue
			}
			pr.HighWatermark, pr.NextOffset = l.next, off
			maxPart := int(p.GetMaxBytes())
			if maxPart == 0 {
				maxPart = 1 << 20
			}
			for j, b := range l.batches {
				meta, _, _, _ := batch.Next(b)
				end := l.bases[j] + int64(meta.LastOffsetDelta) + 1
				if end <= off {
					continue
				}
				if total >= maxTotal || (len(pr.Batches) > 0 && len(pr.Batches)+len(b) > maxPart) {
					break
				}
				pr.Batches = append(pr.Batches, b...)
				pr.NextOffset = end
				total += len(b)
			}
			cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(l.changed)})
		}
		g.mu.Unlock()
		if total >= max(int(m.GetMinBytes()), 1) || m.GetMaxWaitMs() == 0 {
			return connect.NewResponse(out), nil
		}
		switch chosen, _, _ := reflect.Select(cases); chosen {
		case 0:
			return nil, connect.NewError(connect.CodeCanceled, ctx.Err())
		case 1:
			return connect.NewResponse(out), nil
		}
	}
}

// appendToFake appends one batch of values to a partition of the fake, as its
// Produce does, and returns the batch's base offset.
func appendToFake(t testing.TB, g *fakeGateway, part int32, values ...string) int64 {
	t.Helper()
	recs := make([]batch.Record, len(values))
	for i, v := range values {
		recs[i] = batch.Record{Value: []byte(v), Timestamp: time.Now().UnixMilli()}
	}
	b, err := batch.Encode(recs, batch.EncodeOptions{})
	if err != nil {
		t.Fatalf("encode: %v", err)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	l := g.logs[part]
	base := l.next
	batch.SetBaseOffset(b, base)
	l.batches = append(l.batches, b)
	l.bases = append(l.bases, base)
	l.next += int64(len(values))
	close(l.changed)
	l.changed = make(chan struct{})
	return base
}
