package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"go.uber.org/goleak"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/api/gen/streamhouse/v1/streamhousev1connect"
	"github.com/streamhouse/streamhouse/gateway/gatewaytest"
	"github.com/streamhouse/streamhouse/pkg/batch"
	"github.com/streamhouse/streamhouse/pkg/partition"
	"github.com/streamhouse/streamhouse/pkg/rpcerr"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	agentAddr = "agent:7101"
	staleAddr = "stale:7101"
)

// syncBuffer collects log output from concurrent handlers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type env struct {
	ctl     *fakeController
	agent   *fakeAgent
	stale   *fakeAgent
	logs    *syncBuffer
	srv     *gatewaytest.Server
	admin   streamhousev1connect.AdminServiceClient
	produce streamhousev1connect.ProduceServiceClient
	consume streamhousev1connect.ConsumeServiceClient
}

type protocol struct {
	name string
	opts []connect.ClientOption
}

var protocols = []protocol{
	{"connect", nil},
	{"grpc", []connect.ClientOption{connect.WithGRPC()}},
	{"grpcweb", []connect.ClientOption{connect.WithGRPCWeb()}},
}

// eachProtocol runs fn once per client protocol, each with a fresh gateway.
func eachProtocol(t *testing.T, fn func(t *testing.T, e *env)) {
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) { fn(t, newEnv(t, time.Minute, p.opts...)) })
	}
}

func newEnv(t *testing.T, ttl time.Duration, opts ...connect.ClientOption) *env {
	t.Helper()
	e := &env{agent: newFakeAgent("agent"), stale: newFakeAgent("stale"), logs: &syncBuffer{}}
	e.stale.onAppend = func(r *v1.AppendEntry) error {
		return rpcerr.NotApplied(connect.CodeFailedPrecondition, fmt.Errorf("not the lease holder of %s/%d", r.GetTopic(), r.GetPartition()))
	}
	e.stale.onRead = func(r *v1.ReadRequest) error {
		return rpcerr.NotApplied(connect.CodeFailedPrecondition, fmt.Errorf("not the lease holder of %s/%d", r.GetTopic(), r.GetPartition()))
	}
	e.ctl = newFakeController(e.agent)
	g, err := New(Config{
		Admin:      e.ctl,
		Controller: e.ctl,
		Agents: func(addr string) (streamhousev1connect.AgentServiceClient, error) {
			switch addr {
			case agentAddr:
				return e.agent, nil
			case staleAddr:
				return e.stale, nil
			}
			return nil, fmt.Errorf("unknown agent address %q", addr)
		},
		RouteTTL: ttl,
		Logger:   slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	e.srv = gatewaytest.Serve(t, g.Handler())
	e.admin = streamhousev1connect.NewAdminServiceClient(e.srv.Client, e.srv.URL, opts...)
	e.produce = streamhousev1connect.NewProduceServiceClient(e.srv.Client, e.srv.URL, opts...)
	e.consume = streamhousev1connect.NewConsumeServiceClient(e.srv.Client, e.srv.URL, opts...)
	return e
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func ptr[T any](v T) *T { return &v }

func recs(kvs ...string) []*v1.Record {
	var out []*v1.Record
	for i := 0; i+1 < len(kvs); i += 2 {
		r := &v1.Record{Value: []byte(kvs[i+1])}
		if kvs[i] != "" {
			r.Key = []byte(kvs[i])
		}
		out = append(out, r)
	}
	return out
}

func (e *env) mustProduce(t *testing.T, req *v1.ProduceRequest) *v1.ProduceResponse {
	t.Helper()
	res, err := e.produce.Produce(ctxT(t), connect.NewRequest(req))
	if err != nil {
		t.Fatalf("produce: %v", err)
	}
	return res.Msg
}

func (e *env) mustFetch(t *testing.T, req *v1.FetchRequest) *v1.FetchResponse {
	t.Helper()
	res, err := e.consume.Fetch(ctxT(t), connect.NewRequest(req))
	if err != nil {
		t.Fatalf("fetch %v: %v", req, err)
	}
	return res.Msg
}

func wantCode(t *testing.T, what string, err error, code connect.Code, substr string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: no error, want %v", what, code)
	}
	if got := connect.CodeOf(err); got != code {
		t.Fatalf("%s: code %v (%v), want %v", what, got, err, code)
	}
	var ce *connect.Error
	if substr != "" && (!errorsAs(err, &ce) || !strings.Contains(ce.Message(), substr)) {
		t.Fatalf("%s: message %q does not contain %q", what, err, substr)
	}
}

func errorsAs(err error, ce **connect.Error) bool {
	c, ok := err.(*connect.Error)
	*ce = c
	return ok
}

func TestProduceByKey(t *testing.T) {
	eachProtocol(t, func(t *testing.T, e *env) {
		e.ctl.addTopic(&v1.TopicInfo{Name: "t", Partitions: 8}, agentAddr)
		var in []string
		for i := range 40 {
			in = append(in, fmt.Sprintf("key-%d", i%10), fmt.Sprintf("v%d", i))
		}
		res := e.mustProduce(t, &v1.ProduceRequest{Topic: "t", Records: recs(in...)})
		total := int32(0)
		for i, r := range res.GetResults() {
			if i > 0 && res.Results[i-1].GetPartition() >= r.GetPartition() {
				t.Fatalf("results not sorted by partition: %v", res.Results)
			}
			total += r.GetRecordCount()
		}
		if total != 40 {
			t.Fatalf("record counts add up to %d, want 40", total)
		}
		// Every record is where Kafka's partitioner puts its key, in order.
		seen := 0
		for p := range int32(8) {
			f := e.mustFetch(t, &v1.FetchRequest{Topic: "t", Partition: p})
			for i, r := range f.GetRecords() {
				if want := partition.ForKey(r.GetKey(), 8); want != p {
					t.Fatalf("key %q in partition %d, want %d", r.GetKey(), p, want)
				}
				if r.GetOffset() != int64(i) || r.GetTimestamp() == nil || r.GetTimestamp().AsTime().IsZero() {
					t.Fatalf("record %d of partition %d: offset %d timestamp %v", i, p, r.GetOffset(), r.GetTimestamp())
				}
				seen++
			}
		}
		if seen != 40 {
			t.Fatalf("fetched %d records, want 40", seen)
		}
		// The same key goes to the same partition in a later request.
		again := e.mustProduce(t, &v1.ProduceRequest{Topic: "t", Records: recs("key-3", "x")})
		if got, want := again.Results[0].GetPartition(), partition.ForKey([]byte("key-3"), 8); got != want {
			t.Fatalf("key-3 went to %d, want %d", got, want)
		}
	})
}

func TestProduceExplicitPartitionAndHeaders(t *testing.T) {
	eachProtocol(t, func(t *testing.T, e *env) {
		e.ctl.addTopic(&v1.TopicInfo{Name: "t", Partitions: 8}, agentAddr)
		rs := recs("a", "1", "b", "2", "", "3")
		rs[0].Headers = []*v1.Header{{Key: "h", Value: []byte("hv")}}
		ts := time.UnixMilli(1_700_000_000_123)
		rs[1].Timestamp = timestampOf(ts)
		res := e.mustProduce(t, &v1.ProduceRequest{Topic: "t", Partition: ptr[int32](5), Records: rs, Acks: v1.Acks_ACKS_WAL})
		if len(res.Results) != 1 || res.Results[0].GetPartition() != 5 || res.Results[0].GetRecordCount() != 3 || res.Results[0].GetBaseOffset() != 0 {
			t.Fatalf("results = %v", res.Results)
		}
		calls := e.agent.appendCalls()
		if len(calls) != 1 || calls[0].GetAcks() != v1.Acks_ACKS_WAL {
			t.Fatalf("append calls = %v", calls)
		}
		f := e.mustFetch(t, &v1.FetchRequest{Topic: "t", Partition: 5})
		if len(f.Records) != 3 || f.GetNextOffset() != 3 || f.GetHighWatermark() != 3 {
			t.Fatalf("fetch = %v", f)
		}
		if h := f.Records[0].GetHeaders(); len(h) != 1 || h[0].GetKey() != "h" || string(h[0].GetValue()) != "hv" {
			t.Fatalf("headers = %v", h)
		}
		if got := f.Records[1].GetTimestamp().AsTime(); !got.Equal(ts) {
			t.Fatalf("timestamp = %v, want %v", got, ts)
		}
	})
}

func TestProduceKeylessRoundRobin(t *testing.T) {
	eachProtocol(t, func(t *testing.T, e *env) {
		e.ctl.addTopic(&v1.TopicInfo{Name: "t", Partitions: 4}, agentAddr)
		var prev int32 = -1
		counts := map[int32]int{}
		for range 8 {
			res := e.mustProduce(t, &v1.ProduceRequest{Topic: "t", Records: recs("", "a", "", "b", "", "c")})
			if len(res.Results) != 1 || res.Results[0].GetRecordCount() != 3 {
				t.Fatalf("keyless request split: %v", res.Results)
			}
			p := res.Results[0].GetPartition()
			if prev >= 0 && p != (prev+1)%4 {
				t.Fatalf("partition %d after %d, want round robin", p, prev)
			}
			prev = p
			counts[p]++
		}
		for p := range int32(4) {
			if counts[p] != 2 {
				t.Fatalf("partition counts = %v, want 2 each", counts)
			}
		}
	})
}

func TestProduceBatchPassthrough(t *testing.T) {
	eachProtocol(t, func(t *testing.T, e *env) {
		e.ctl.addTopic(&v1.TopicInfo{Name: "t", Partitions: 3}, agentAddr)
		b, err := batch.Encode([]batch.Record{
			{Timestamp: 1, Key: []byte("k"), Value: []byte("v1")},
			{Timestamp: 2, Value: []byte("v2")},
		}, batch.EncodeOptions{Codec: batch.CodecGzip, ProducerID: 7, ProducerEpoch: 1, BaseSequence: 10})
		if err != nil {
			t.Fatal(err)
		}
		for i := range 2 {
			res := e.mustProduce(t, &v1.ProduceRequest{Topic: "t", Partition: ptr[int32](2), Batch: b})
			if len(res.Results) != 1 || res.Results[0].GetPartition() != 2 || res.Results[0].GetBaseOffset() != int64(2*i) || res.Results[0].GetRecordCount() != 2 {
				t.Fatalf("result %d = %v", i, res.Results)
			}
		}
		calls := e.agent.appendCalls()
		if len(calls) != 2 || !bytes.Equal(calls[0].GetBatch(), b) || calls[0].GetPartition() != 2 || calls[0].GetTopic() != "t" {
			t.Fatalf("the agent did not receive the batch bytes unchanged")
		}
		raw := e.mustFetch(t, &v1.FetchRequest{Topic: "t", Partition: 2, Raw: true})
		if len(raw.GetBatches()) != 2*len(b) || len(raw.GetRecords()) != 0 || raw.GetNextOffset() != 4 {
			t.Fatalf("raw fetch: %d bytes, %d records, next %d", len(raw.GetBatches()), len(raw.GetRecords()), raw.GetNextOffset())
		}
	})
}

func TestProduceBadInput(t *testing.T) {
	eachProtocol(t, func(t *testing.T, e *env) {
		e.ctl.addTopic(&v1.TopicInfo{Name: "t", Partitions: 8, MaxRecordBytes: 100, MaxBatchBytes: 1000}, agentAddr)
		e.ctl.addTopic(&v1.TopicInfo{Name: "homeless", Partitions: 2}, "")
		good, err := batch.Encode([]batch.Record{{Value: []byte("v")}}, batch.EncodeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		corrupt := bytes.Clone(good)
		corrupt[len(corrupt)-1] ^= 0xff
		big, err := batch.Encode([]batch.Record{{Value: bytes.Repeat([]byte("x"), 2000)}}, batch.EncodeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		many := make([]*v1.Record, 30)
		for i := range many {
			many[i] = &v1.Record{Value: bytes.Repeat([]byte("y"), 90)}
		}
		cases := []struct {
			name  string
			req   *v1.ProduceRequest
			code  connect.Code
			match string
		}{
			{"empty topic", &v1.ProduceRequest{Records: recs("", "v")}, connect.CodeInvalidArgument, "topic is required"},
			{"bad topic name", &v1.ProduceRequest{Topic: "a b", Records: recs("", "v")}, connect.CodeInvalidArgument, "characters outside"},
			{"unknown topic", &v1.ProduceRequest{Topic: "nope", Records: recs("", "v")}, connect.CodeNotFound, `topic "nope" does not exist`},
			{"records and batch", &v1.ProduceRequest{Topic: "t", Partition: ptr[int32](0), Records: recs("", "v"), Batch: good}, connect.CodeInvalidArgument, "not both"},
			{"neither", &v1.ProduceRequest{Topic: "t"}, connect.CodeInvalidArgument, "nothing to produce"},
			{"partition too big", &v1.ProduceRequest{Topic: "t", Partition: ptr[int32](8), Records: recs("", "v")}, connect.CodeInvalidArgument, "partition 8 is out of range: topic \"t\" has partitions 0 to 7"},
			{"negative partition", &v1.ProduceRequest{Topic: "t", Partition: ptr[int32](-1), Records: recs("", "v")}, connect.CodeInvalidArgument, "0 to 7"},
			{"bad acks", &v1.ProduceRequest{Topic: "t", Records: recs("", "v"), Acks: 9}, connect.CodeInvalidArgument, "acks"},
			{"oversize record", &v1.ProduceRequest{Topic: "t", Records: []*v1.Record{{Value: []byte("ok")}, {Key: []byte("k"), Value: bytes.Repeat([]byte("x"), 98), Headers: []*v1.Header{{Key: "h", Value: []byte("v")}}}}}, connect.CodeInvalidArgument, "record 1 is 101 bytes; topic's max_record_bytes is 100"},
			{"records over max batch", &v1.ProduceRequest{Topic: "t", Partition: ptr[int32](1), Records: many}, connect.CodeInvalidArgument, "max_batch_bytes is 1000"},
			{"batch without partition", &v1.ProduceRequest{Topic: "t", Batch: good}, connect.CodeInvalidArgument, "needs partition"},
			{"batch partition out of range", &v1.ProduceRequest{Topic: "t", Partition: ptr[int32](99), Batch: good}, connect.CodeInvalidArgument, "out of range"},
			{"oversize batch", &v1.ProduceRequest{Topic: "t", Partition: ptr[int32](0), Batch: big}, connect.CodeInvalidArgument, fmt.Sprintf("batch is %d bytes; topic \"t\"'s max_batch_bytes is 1000", len(big))},
			{"corrupt batch", &v1.ProduceRequest{Topic: "t", Partition: ptr[int32](0), Batch: corrupt}, connect.CodeInvalidArgument, "CRC mismatch"},
			{"garbage batch", &v1.ProduceRequest{Topic: "t", Partition: ptr[int32](0), Batch: []byte("hello")}, connect.CodeInvalidArgument, "batch rejected"},
			{"partition without agent", &v1.ProduceRequest{Topic: "homeless", Records: recs("k", "v")}, connect.CodeUnavailable, "has no agent yet; retry"},
		}
		for _, c := range cases {
			_, err := e.produce.Produce(ctxT(t), connect.NewRequest(c.req))
			wantCode(t, c.name, err, c.code, c.match)
		}
		if calls := e.agent.appendCalls(); len(calls) != 0 {
			t.Fatalf("bad input reached the agent: %d appends", len(calls))
		}
	})
}

func TestFetch(t *testing.T) {
	eachProtocol(t, func(t *testing.T, e *env) {
		e.ctl.addTopic(&v1.TopicInfo{Name: "t", Partitions: 2}, agentAddr)
		e.mustProduce(t, &v1.ProduceRequest{Topic: "t", Partition: ptr[int32](1), Records: recs("", "r0", "", "r1", "", "r2", "", "r3", "", "r4")})
		e.mustProduce(t, &v1.ProduceRequest{Topic: "t", Partition: ptr[int32](1), Records: recs("", "r5")})

		// The first batch starts at 0; records below 2 are skipped.
		f := e.mustFetch(t, &v1.FetchRequest{Topic: "t", Partition: 1, Offset: 2})
		var got []string
		for i, r := range f.GetRecords() {
			if r.GetOffset() != int64(2+i) {
				t.Fatalf("record %d has offset %d", i, r.GetOffset())
			}
			got = append(got, string(r.GetValue()))
		}
		if strings.Join(got, ",") != "r2,r3,r4,r5" || f.GetNextOffset() != 6 || f.GetHighWatermark() != 6 || f.GetStartOffset() != 0 || len(f.GetBatches()) != 0 {
			t.Fatalf("fetch = %v (values %v)", f, got)
		}

		// Raw returns whole batches, the first starting below the offset.
		raw := e.mustFetch(t, &v1.FetchRequest{Topic: "t", Partition: 1, Offset: 2, Raw: true})
		meta, _, _, err := batch.Next(raw.GetBatches())
		if err != nil || meta.BaseOffset != 0 || len(raw.GetRecords()) != 0 || raw.GetNextOffset() != 6 {
			t.Fatalf("raw fetch: meta %+v err %v next %d", meta, err, raw.GetNextOffset())
		}
		var n int
		if err := batch.DecodeAll(raw.GetBatches(), func(batch.Record) error { n++; return nil }); err != nil || n != 6 {
			t.Fatalf("raw batches hold %d records (%v), want 6", n, err)
		}

		// At the high watermark with no wait: nothing, next stays.
		end := e.mustFetch(t, &v1.FetchRequest{Topic: "t", Partition: 1, Offset: 6})
		if len(end.GetRecords()) != 0 || end.GetNextOffset() != 6 {
			t.Fatalf("fetch at end = %v", end)
		}

		cases := []struct {
			name  string
			req   *v1.FetchRequest
			code  connect.Code
			match string
		}{
			{"empty topic", &v1.FetchRequest{}, connect.CodeInvalidArgument, "topic is required"},
			{"unknown topic", &v1.FetchRequest{Topic: "nope"}, connect.CodeNotFound, `topic "nope" does not exist`},
			{"partition out of range", &v1.FetchRequest{Topic: "t", Partition: 2}, connect.CodeInvalidArgument, "0 to 1"},
			{"negative offset", &v1.FetchRequest{Topic: "t", Offset: -1}, connect.CodeOutOfRange, "offset -1 is out of range"},
			{"negative max_bytes", &v1.FetchRequest{Topic: "t", MaxBytes: -1}, connect.CodeInvalidArgument, "max_bytes"},
			{"max_wait too long", &v1.FetchRequest{Topic: "t", MaxWaitMs: 30001}, connect.CodeInvalidArgument, "max_wait_ms must be between 0 and 30000"},
			{"negative max_wait", &v1.FetchRequest{Topic: "t", MaxWaitMs: -1}, connect.CodeInvalidArgument, "max_wait_ms"},
			{"out of range", &v1.FetchRequest{Topic: "t", Partition: 1, Offset: 100}, connect.CodeOutOfRange, "offset 100 is out of range: partition t/1 holds offsets 0 to 6"},
		}
		for _, c := range cases {
			_, err := e.consume.Fetch(ctxT(t), connect.NewRequest(c.req))
			wantCode(t, c.name, err, c.code, c.match)
		}
	})
}

func TestFetchLongPoll(t *testing.T) {
	eachProtocol(t, func(t *testing.T, e *env) {
		e.ctl.addTopic(&v1.TopicInfo{Name: "t", Partitions: 1}, agentAddr)
		done := make(chan *v1.FetchResponse, 1)
		go func() {
			res, err := e.consume.Fetch(ctxT(t), connect.NewRequest(&v1.FetchRequest{Topic: "t", MaxWaitMs: 10000}))
			if err != nil {
				t.Errorf("fetch: %v", err)
			}
			done <- res.Msg
		}()
		waitFor(t, "the fetch to wait on the agent", func() bool { return e.agent.activeReads.Load() == 1 })
		e.mustProduce(t, &v1.ProduceRequest{Topic: "t", Records: recs("", "late")})
		select {
		case f := <-done:
			if len(f.GetRecords()) != 1 || string(f.Records[0].GetValue()) != "late" {
				t.Fatalf("long poll = %v", f)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("long poll did not return after a produce")
		}
	})
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestSubscribe(t *testing.T) {
	eachProtocol(t, func(t *testing.T, e *env) {
		e.ctl.addTopic(&v1.TopicInfo{Name: "t", Partitions: 2}, agentAddr)
		e.mustProduce(t, &v1.ProduceRequest{Topic: "t", Partition: ptr[int32](0), Records: recs("", "old0", "", "old1", "", "old2")})

		ctx, cancel := context.WithCancel(ctxT(t))
		defer cancel()
		stream, err := e.consume.Subscribe(ctx, connect.NewRequest(&v1.SubscribeRequest{Topic: "t", Partition: 0, Offset: -1}))
		if err != nil {
			t.Fatal(err)
		}
		// Wait until the subscription waits at the high watermark.
		waitFor(t, "the subscription to read", func() bool { return e.agent.activeReads.Load() == 1 })
		e.mustProduce(t, &v1.ProduceRequest{Topic: "t", Partition: ptr[int32](0), Records: recs("", "new3", "", "new4")})
		e.mustProduce(t, &v1.ProduceRequest{Topic: "t", Partition: ptr[int32](1), Records: recs("", "other")})
		e.mustProduce(t, &v1.ProduceRequest{Topic: "t", Partition: ptr[int32](0), Records: recs("", "new5")})
		var got []string
		for len(got) < 3 && stream.Receive() {
			msg := stream.Msg()
			for _, r := range msg.GetRecords() {
				if r.GetOffset() != int64(3+len(got)) {
					t.Fatalf("record %q has offset %d", r.GetValue(), r.GetOffset())
				}
				got = append(got, string(r.GetValue()))
			}
			if msg.GetNextOffset() != int64(3+len(got)) {
				t.Fatalf("next offset %d after %d records", msg.GetNextOffset(), len(got))
			}
		}
		if strings.Join(got, ",") != "new3,new4,new5" {
			t.Fatalf("subscription got %v (err %v)", got, stream.Err())
		}
		cancel()
		for stream.Receive() {
		}
		_ = stream.Close()
		waitFor(t, "the subscription to end cleanly", func() bool {
			return strings.Contains(e.logs.String(), `msg="subscribe ended" topic=t partition=0 err=<nil>`)
		})
		waitFor(t, "the agent read to end", func() bool { return e.agent.activeReads.Load() == 0 })

		// -2 starts at the start offset.
		ctx2, cancel2 := context.WithCancel(ctxT(t))
		defer cancel2()
		s2, err := e.consume.Subscribe(ctx2, connect.NewRequest(&v1.SubscribeRequest{Topic: "t", Partition: 0, Offset: -2}))
		if err != nil {
			t.Fatal(err)
		}
		if !s2.Receive() || len(s2.Msg().GetRecords()) != 6 || s2.Msg().Records[0].GetOffset() != 0 {
			t.Fatalf("subscribe -2: %v %v", s2.Msg(), s2.Err())
		}
		cancel2()
		_ = s2.Close()

		// Bad input ends the stream with an error.
		for _, c := range []struct {
			req  *v1.SubscribeRequest
			code connect.Code
		}{
			{&v1.SubscribeRequest{Topic: ""}, connect.CodeInvalidArgument},
			{&v1.SubscribeRequest{Topic: "t", Offset: -3}, connect.CodeInvalidArgument},
			{&v1.SubscribeRequest{Topic: "t", Partition: 2}, connect.CodeInvalidArgument},
			{&v1.SubscribeRequest{Topic: "nope"}, connect.CodeNotFound},
			{&v1.SubscribeRequest{Topic: "t", Offset: 50}, connect.CodeOutOfRange},
		} {
			s, err := e.consume.Subscribe(ctxT(t), connect.NewRequest(c.req))
			if err == nil {
				for s.Receive() {
				}
				err = s.Err()
				_ = s.Close()
			}
			wantCode(t, fmt.Sprintf("subscribe %v", c.req), err, c.code, "")
		}
	})
}

func TestRouteRefreshAndRetry(t *testing.T) {
	eachProtocol(t, func(t *testing.T, e *env) {
		e.ctl.addTopic(&v1.TopicInfo{Name: "t", Partitions: 2}, staleAddr)
		// The lease moves to the good agent as soon as the stale one is asked.
		e.stale.setHooks(func(r *v1.AppendEntry) error {
			e.ctl.setRoute(r.GetTopic(), r.GetPartition(), agentAddr)
			return rpcerr.NotApplied(connect.CodeFailedPrecondition, fmt.Errorf("not the lease holder of %s/%d", r.GetTopic(), r.GetPartition()))
		}, nil)
		res := e.mustProduce(t, &v1.ProduceRequest{Topic: "t", Partition: ptr[int32](0), Records: recs("", "v")})
		if res.Results[0].GetRecordCount() != 1 {
			t.Fatalf("results = %v", res.Results)
		}
		if n := e.ctl.getRoutes.Load(); n != 2 {
			t.Fatalf("GetRoutes called %d times, want 2 (initial and one refresh)", n)
		}
		if n := len(e.agent.appendCalls()); n != 1 {
			t.Fatalf("good agent got %d appends", n)
		}
		// The refreshed routes are cached: no more GetRoutes.
		e.mustFetch(t, &v1.FetchRequest{Topic: "t", Partition: 0})
		if n := e.ctl.getRoutes.Load(); n != 2 {
			t.Fatalf("GetRoutes called %d times after a cached fetch, want 2", n)
		}

		// Partition 1 stays on the stale agent for reads: one retry, then the
		// agent's error comes through unchanged.
		before := e.stale.reads.Load()
		_, err := e.consume.Fetch(ctxT(t), connect.NewRequest(&v1.FetchRequest{Topic: "t", Partition: 1}))
		wantCode(t, "fetch from a stale holder", err, connect.CodeFailedPrecondition, "not the lease holder of t/1")
		if n := e.stale.reads.Load() - before; n != 2 {
			t.Fatalf("stale agent read %d times, want 2", n)
		}

		// A partition that has lost its holder is Unavailable after a refresh.
		e.ctl.setRoute("t", 0, "")
		e.mustFetch(t, &v1.FetchRequest{Topic: "t", Partition: 0}) // cached route still works
		e.agent.setHooks(nil, func(r *v1.ReadRequest) error {
			return rpcerr.NotApplied(connect.CodeUnavailable, fmt.Errorf("agent is shutting down"))
		})
		_, err = e.consume.Fetch(ctxT(t), connect.NewRequest(&v1.FetchRequest{Topic: "t", Partition: 0}))
		wantCode(t, "fetch after the holder left", err, connect.CodeUnavailable, "partition t/0 has no agent yet; retry")
	})
}

// TestProducePartialFailure: a records request spanning partitions reports
// the failing partition's error in its result; the other partitions are
// written and have their offsets.
func TestProducePartialFailure(t *testing.T) {
	eachProtocol(t, func(t *testing.T, e *env) {
		e.ctl.addTopic(&v1.TopicInfo{Name: "t", Partitions: 4}, agentAddr)
		e.ctl.setRoute("t", 2, staleAddr) // always refuses: not the lease holder
		var in []string
		for i := range 40 {
			in = append(in, fmt.Sprintf("k%d", i), "v")
		}
		res := e.mustProduce(t, &v1.ProduceRequest{Topic: "t", Records: recs(in...)})
		if len(res.GetResults()) != 4 {
			t.Fatalf("results %v, want one per partition", res.GetResults())
		}
		for i, r := range res.GetResults() {
			if r.GetPartition() != int32(i) || r.GetTopic() != "t" {
				t.Fatalf("result %d is for %s/%d", i, r.GetTopic(), r.GetPartition())
			}
			ce := rpcerr.FromEntry(r.GetError())
			switch {
			case i == 2 && (ce.Code() != connect.CodeFailedPrecondition || !rpcerr.IsNotApplied(ce) || !strings.Contains(ce.Message(), "not the lease holder of t/2")):
				t.Fatalf("partition 2: error %v, want a not-applied failed_precondition", r.GetError())
			case i != 2 && (ce != nil || r.GetRecordCount() == 0):
				t.Fatalf("partition %d: %v, want written", i, r)
			}
		}
		written := map[int32]bool{}
		for _, c := range e.agent.appendCalls() {
			written[c.GetPartition()] = true
		}
		if len(written) != 3 || written[2] {
			t.Fatalf("partitions written: %v, want 0, 1 and 3", written)
		}
	})
}

func TestRouteTTL(t *testing.T) {
	e := newEnv(t, 50*time.Millisecond)
	e.ctl.addTopic(&v1.TopicInfo{Name: "t", Partitions: 1}, agentAddr)
	e.mustFetch(t, &v1.FetchRequest{Topic: "t"})
	e.mustFetch(t, &v1.FetchRequest{Topic: "t"})
	if n := e.ctl.getRoutes.Load(); n != 1 {
		t.Fatalf("GetRoutes called %d times within the TTL, want 1", n)
	}
	time.Sleep(60 * time.Millisecond)
	e.mustFetch(t, &v1.FetchRequest{Topic: "t"})
	if n := e.ctl.getRoutes.Load(); n != 2 {
		t.Fatalf("GetRoutes called %d times after the TTL, want 2", n)
	}
	// A deleted topic is NotFound once its routes expire.
	if _, err := e.admin.DeleteTopic(ctxT(t), connect.NewRequest(&v1.DeleteTopicRequest{Name: "t"})); err != nil {
		t.Fatal(err)
	}
	time.Sleep(60 * time.Millisecond)
	_, err := e.consume.Fetch(ctxT(t), connect.NewRequest(&v1.FetchRequest{Topic: "t"}))
	wantCode(t, "fetch deleted topic", err, connect.CodeNotFound, `topic "t" does not exist`)
}

func TestAdmin(t *testing.T) {
	eachProtocol(t, func(t *testing.T, e *env) {
		ctx := ctxT(t)
		res, err := e.admin.CreateTopic(ctx, connect.NewRequest(&v1.CreateTopicRequest{Name: "orders", Partitions: 3}))
		if err != nil || res.Msg.GetTopic().GetName() != "orders" || res.Msg.GetTopic().GetPartitions() != 3 {
			t.Fatalf("create = %v, %v", res, err)
		}
		_, err = e.admin.CreateTopic(ctx, connect.NewRequest(&v1.CreateTopicRequest{Name: "orders", Partitions: 3}))
		wantCode(t, "create twice", err, connect.CodeAlreadyExists, `topic "orders" already exists`)
		if ce, ok := err.(*connect.Error); ok && ce.Meta().Get("X-Controller") != "" {
			// Upstream metadata is not forwarded; only code, message, details.
			t.Fatalf("controller error metadata leaked: %v", ce.Meta())
		}

		calls := e.ctl.adminCall.Load()
		_, err = e.admin.CreateTopic(ctx, connect.NewRequest(&v1.CreateTopicRequest{Name: "", Partitions: 3}))
		wantCode(t, "create empty name", err, connect.CodeInvalidArgument, "topic is required")
		_, err = e.admin.CreateTopic(ctx, connect.NewRequest(&v1.CreateTopicRequest{Name: "x", Partitions: 0}))
		wantCode(t, "create 0 partitions", err, connect.CodeInvalidArgument, "partitions must be between 1 and 10000")
		_, err = e.admin.DeleteTopic(ctx, connect.NewRequest(&v1.DeleteTopicRequest{Name: ".."}))
		wantCode(t, "delete ..", err, connect.CodeInvalidArgument, "not allowed")
		_, err = e.admin.DescribeTopic(ctx, connect.NewRequest(&v1.DescribeTopicRequest{}))
		wantCode(t, "describe empty", err, connect.CodeInvalidArgument, "topic is required")
		if n := e.ctl.adminCall.Load(); n != calls {
			t.Fatalf("invalid admin requests reached the controller (%d calls)", n-calls)
		}

		d, err := e.admin.DescribeTopic(ctx, connect.NewRequest(&v1.DescribeTopicRequest{Name: "orders"}))
		if err != nil || len(d.Msg.GetPartitions()) != 3 {
			t.Fatalf("describe = %v, %v", d, err)
		}
		_, err = e.admin.DescribeTopic(ctx, connect.NewRequest(&v1.DescribeTopicRequest{Name: "nope"}))
		wantCode(t, "describe unknown", err, connect.CodeNotFound, `topic "nope" does not exist`)
		l, err := e.admin.ListTopics(ctx, connect.NewRequest(&v1.ListTopicsRequest{}))
		if err != nil || len(l.Msg.GetTopics()) != 1 {
			t.Fatalf("list = %v, %v", l, err)
		}
		if _, err := e.admin.DeleteTopic(ctx, connect.NewRequest(&v1.DeleteTopicRequest{Name: "orders"})); err != nil {
			t.Fatal(err)
		}
		_, err = e.admin.DeleteTopic(ctx, connect.NewRequest(&v1.DeleteTopicRequest{Name: "orders"}))
		wantCode(t, "delete twice", err, connect.CodeNotFound, `topic "orders" does not exist`)
	})
}

// TestHTTP1JSON is the README tour: curl with JSON over HTTP/1.1.
func TestHTTP1JSON(t *testing.T) {
	e := newEnv(t, time.Minute)
	e.ctl.addTopic(&v1.TopicInfo{Name: "t", Partitions: 1}, agentAddr)
	post := func(path, body string) (*http.Response, []byte) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctxT(t), http.MethodPost, e.srv.URL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		res, err := e.srv.HTTP1Client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		if err != nil {
			t.Fatal(err)
		}
		if res.ProtoMajor != 1 {
			t.Fatalf("got HTTP/%d, want HTTP/1.1", res.ProtoMajor)
		}
		return res, b
	}
	res, body := post("/streamhouse.v1.ProduceService/Produce", `{"topic":"t","records":[{"value":"aGVsbG8="}]}`)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("produce: %s %s", res.Status, body)
	}
	var pr struct {
		Results []struct {
			Partition   int32  `json:"partition"`
			BaseOffset  string `json:"baseOffset"`
			RecordCount int32  `json:"recordCount"`
		} `json:"results"`
	}
	if err := json.Unmarshal(body, &pr); err != nil || len(pr.Results) != 1 || pr.Results[0].RecordCount != 1 {
		t.Fatalf("produce answer %s (%v)", body, err)
	}
	res, body = post("/streamhouse.v1.ConsumeService/Fetch", `{"topic":"t","partition":0,"offset":"0"}`)
	if res.StatusCode != http.StatusOK || !strings.Contains(string(body), `"value":"aGVsbG8="`) {
		t.Fatalf("fetch: %s %s", res.Status, body)
	}
	res, body = post("/streamhouse.v1.ProduceService/Produce", `{"topic":"t"}`)
	if res.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), `"code":"invalid_argument"`) {
		t.Fatalf("bad produce: %s %s", res.Status, body)
	}

	req, err := http.NewRequestWithContext(ctxT(t), http.MethodGet, e.srv.URL+"/healthz", nil)
	if err != nil {
		t.Fatal(err)
	}
	hres, err := e.srv.HTTP1Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(hres.Body)
	hres.Body.Close()
	if hres.StatusCode != http.StatusOK || string(b) != "ok" {
		t.Fatalf("healthz: %s %q", hres.Status, b)
	}
}

func TestNewRequiresClients(t *testing.T) {
	if _, err := New(Config{}); err == nil {
		t.Fatal("New with an empty Config succeeded")
	}
}
