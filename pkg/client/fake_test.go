package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	streamhousev1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/api/gen/streamhouse/v1/streamhousev1connect"
	"github.com/streamhouse/streamhouse/pkg/batch"
	"github.com/streamhouse/streamhouse/pkg/rpcerr"
)

// fakeLog is one partition's in-memory log of batches.
type fakeLog struct {
	batches [][]byte
	bases   []int64
	next    int64
	changed chan struct{} // closed and replaced on append
}

// fakeGateway implements the public services over in-memory logs.
type fakeGateway struct {
	streamhousev1connect.UnimplementedAdminServiceHandler
	streamhousev1connect.UnimplementedProduceServiceHandler
	streamhousev1connect.UnimplementedConsumeServiceHandler

	topic          string
	partitions     int32
	maxRecordBytes int32
	maxBatchBytes  int32
	discard        bool // count records but keep nothing (benchmarks)

	// beforeAppend, when set, may fail a produce request before it appends
	// (n counts produce requests from 1).
	beforeAppend func(n int64, req *streamhousev1.ProduceRequest) error
	// afterAppend, when set, runs after the append, before answering.
	afterAppend func(n int64, req *streamhousev1.ProduceRequest)
	// beforeEntry, when set, may fail one entry of a request (its error is
	// the entry's; the other entries are appended).
	beforeEntry func(n int64, e *streamhousev1.ProduceBatch) error

	produceCalls atomic.Int64
	appended     atomic.Int64 // records appended

	mu   sync.Mutex
	logs []*fakeLog
}

func newFakeGateway(topic string, partitions int32) *fakeGateway {
	g := &fakeGateway{topic: topic, partitions: partitions}
	g.logs = make([]*fakeLog, partitions)
	for i := range g.logs {
		g.logs[i] = &fakeLog{changed: make(chan struct{})}
	}
	return g
}

func (g *fakeGateway) handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle(streamhousev1connect.NewAdminServiceHandler(g))
	mux.Handle(streamhousev1connect.NewProduceServiceHandler(g))
	mux.Handle(streamhousev1connect.NewConsumeServiceHandler(g))
	return mux
}

func (g *fakeGateway) DescribeTopic(_ context.Context, req *connect.Request[streamhousev1.DescribeTopicRequest]) (*connect.Response[streamhousev1.DescribeTopicResponse], error) {
	if req.Msg.GetName() != g.topic {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("topic %q not found", req.Msg.GetName()))
	}
	resp := &streamhousev1.DescribeTopicResponse{Topic: &streamhousev1.TopicInfo{
		Name: g.topic, Partitions: g.partitions, MaxRecordBytes: g.maxRecordBytes, MaxBatchBytes: g.maxBatchBytes,
	}}
	g.mu.Lock()
	for i, l := range g.logs {
		resp.Partitions = append(resp.Partitions, &streamhousev1.PartitionInfo{Partition: int32(i), HighWatermark: l.next})
	}
	g.mu.Unlock()
	return connect.NewResponse(resp), nil
}

// Produce takes the SDK's shape (batches); the hooks see the whole request,
// beforeEntry each entry (its error is the entry's).
func (g *fakeGateway) Produce(_ context.Context, req *connect.Request[streamhousev1.ProduceRequest]) (*connect.Response[streamhousev1.ProduceResponse], error) {
	n := g.produceCalls.Add(1)
	m := req.Msg
	if len(m.GetRecords()) > 0 || len(m.GetBatch()) > 0 || len(m.GetBatches()) == 0 {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("the fake wants batches"))
	}
	if g.beforeAppend != nil {
		if err := g.beforeAppend(n, m); err != nil {
			return nil, err
		}
	}
	out := &streamhousev1.ProduceResponse{}
	failed := 0
	var firstErr error
	for _, e := range m.GetBatches() {
		res, err := g.appendEntry(n, e)
		if err != nil {
			failed++
			if firstErr == nil {
				firstErr = err
			}
			res = &streamhousev1.PartitionResult{Topic: e.GetTopic(), Partition: e.GetPartition(), Error: rpcerr.ToEntry(err)}
		}
		out.Results = append(out.Results, res)
	}
	if g.afterAppend != nil {
		g.afterAppend(n, m)
	}
	if failed == len(m.GetBatches()) {
		return nil, firstErr
	}
	return connect.NewResponse(out), nil
}

func (g *fakeGateway) appendEntry(n int64, e *streamhousev1.ProduceBatch) (*streamhousev1.PartitionResult, error) {
	if e.GetTopic() != g.topic {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("topic %q not found", e.GetTopic()))
	}
	if e.GetPartition() < 0 || e.GetPartition() >= g.partitions {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("bad partition"))
	}
	if g.beforeEntry != nil {
		if err := g.beforeEntry(n, e); err != nil {
			return nil, err
		}
	}
	b := e.GetBatch()
	meta, err := batch.Check(b)
	if err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	if g.maxBatchBytes > 0 && len(b) > int(g.maxBatchBytes) {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("batch of %d bytes exceeds %d", len(b), g.maxBatchBytes))
	}
	g.mu.Lock()
	l := g.logs[e.GetPartition()]
	base := l.next
	batch.SetBaseOffset(b, base)
	if !g.discard {
		l.batches = append(l.batches, b)
		l.bases = append(l.bases, base)
	}
	l.next += int64(meta.NumRecords)
	close(l.changed)
	l.changed = make(chan struct{})
	g.mu.Unlock()
	g.appended.Add(int64(meta.NumRecords))
	return &streamhousev1.PartitionResult{Topic: e.GetTopic(), Partition: e.GetPartition(), BaseOffset: base, RecordCount: meta.NumRecords}, nil
}

func (g *fakeGateway) Fetch(ctx context.Context, req *connect.Request[streamhousev1.FetchRequest]) (*connect.Response[streamhousev1.FetchResponse], error) {
	m := req.Msg
	if m.GetTopic() != g.topic {
		return nil, connect.NewError(connect.CodeNotFound, errors.New("no such topic"))
	}
	if m.GetPartition() < 0 || m.GetPartition() >= g.partitions {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("bad partition"))
	}
	if !m.GetRaw() {
		return nil, connect.NewError(connect.CodeUnimplemented, errors.New("the fake serves raw only"))
	}
	maxBytes := int(m.GetMaxBytes())
	if maxBytes == 0 {
		maxBytes = 1 << 20
	}
	deadline := time.NewTimer(time.Duration(m.GetMaxWaitMs()) * time.Millisecond)
	defer deadline.Stop()
	for {
		g.mu.Lock()
		l := g.logs[m.GetPartition()]
		hwm, off := l.next, m.GetOffset()
		if off < 0 || off > hwm {
			g.mu.Unlock()
			return nil, connect.NewError(connect.CodeOutOfRange, fmt.Errorf("offset %d not in [0, %d]", off, hwm))
		}
		resp := &streamhousev1.FetchResponse{HighWatermark: hwm, NextOffset: off}
		for i, b := range l.batches {
			meta, _, _, _ := batch.Next(b)
			end := l.bases[i] + int64(meta.LastOffsetDelta) + 1
			if end <= off {
				continue
			}
			if len(resp.Batches) > 0 && len(resp.Batches)+len(b) > maxBytes {
				break
			}
			resp.Batches = append(resp.Batches, b...)
			resp.NextOffset = end
		}
		changed := l.changed
		g.mu.Unlock()
		if len(resp.Batches) > 0 {
			return connect.NewResponse(resp), nil
		}
		select {
		case <-changed:
		case <-deadline.C:
			return connect.NewResponse(resp), nil
		case <-ctx.Done():
			return nil, connect.NewError(connect.CodeCanceled, ctx.Err())
		}
	}
}

// records returns every record of a partition, decoded.
func (g *fakeGateway) records(t testing.TB, part int32) []batch.Record {
	t.Helper()
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []batch.Record
	for _, b := range g.logs[part].batches {
		recs, _, err := batch.Decode(b)
		if err != nil {
			t.Fatalf("decode stored batch: %v", err)
		}
		out = append(out, recs...)
	}
	return out
}

// batchCount returns the number of batches stored for a partition.
func (g *fakeGateway) batchCount(part int32) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.logs[part].batches)
}

// serveFake starts g on a loopback h2c server on addr ("127.0.0.1:0" for any
// port) and returns the server; it is closed at the end of the test.
func serveFake(t testing.TB, g *fakeGateway, addr string) *httptest.Server {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	srv := &httptest.Server{Listener: l, Config: &http.Server{Handler: g.handler()}}
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	srv.Config.Protocols = &protos
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

// newTestClient returns a Client for srv, closed at the end of the test.
func newTestClient(t testing.TB, url string, opts ...Option) *Client {
	t.Helper()
	c, err := New(url, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// startFake is serveFake + newTestClient.
func startFake(t testing.TB, partitions int32) (*fakeGateway, *Client) {
	t.Helper()
	g := newFakeGateway("t", partitions)
	srv := serveFake(t, g, "127.0.0.1:0")
	return g, newTestClient(t, srv.URL)
}
