package gateway

import (
	"bytes"
	"strings"
	"testing"

	"connectrpc.com/connect"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/pkg/batch"
	"github.com/streamhouse/streamhouse/pkg/rpcerr"
)

func encodeT(t *testing.T, values ...string) []byte {
	t.Helper()
	recs := make([]batch.Record, len(values))
	for i, v := range values {
		recs[i] = batch.Record{Value: []byte(v)}
	}
	b, err := batch.Encode(recs, batch.EncodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A batches request with good and bad entries over two agents: each bad
// entry gets its own error (unknown topic, bad topic name, partition out of
// range, corrupt CRC, over max_batch_bytes), the good ones are written, the
// results follow the request's order, and each agent gets one Append.
func TestProduceBatchesMixedEntries(t *testing.T) {
	eachProtocol(t, func(t *testing.T, e *env) {
		e.ctl.addTopic(&v1.TopicInfo{Name: "a", Partitions: 4}, agentAddr)
		e.ctl.setRoute("a", 3, staleAddr)
		e.stale.setHooks(func(*v1.AppendEntry) error { return nil }, nil) // a second good agent
		e.ctl.addTopic(&v1.TopicInfo{Name: "b", Partitions: 2}, agentAddr)
		e.ctl.addTopic(&v1.TopicInfo{Name: "small", Partitions: 1, MaxBatchBytes: 200}, agentAddr)
		corrupt := encodeT(t, "c")
		corrupt[len(corrupt)-1] ^= 0x10
		req := &v1.ProduceRequest{Batches: []*v1.ProduceBatch{
			{Topic: "a", Partition: 0, Batch: encodeT(t, "a0", "a0")},
			{Topic: "nope", Partition: 0, Batch: encodeT(t, "x")},
			{Topic: "a", Partition: 3, Batch: encodeT(t, "a3")},
			{Topic: "a", Partition: 9, Batch: encodeT(t, "x")},
			{Topic: "a", Partition: 1, Batch: corrupt},
			{Topic: "small", Partition: 0, Batch: encodeT(t, string(bytes.Repeat([]byte("x"), 300)))},
			{Topic: "bad name!", Partition: 0, Batch: encodeT(t, "x")},
			{Topic: "b", Partition: 1, Batch: encodeT(t, "b1", "b1", "b1")},
		}}
		res := e.mustProduce(t, req)
		want := []struct {
			count int32
			code  connect.Code
			match string
		}{
			{2, 0, ""},
			{0, connect.CodeNotFound, `topic "nope" does not exist`},
			{1, 0, ""},
			{0, connect.CodeInvalidArgument, "partition 9 is out of range"},
			{0, connect.CodeInvalidArgument, "CRC"},
			{0, connect.CodeInvalidArgument, `max_batch_bytes is 200`},
			{0, connect.CodeInvalidArgument, "outside [a-zA-Z0-9._-]"},
			{3, 0, ""},
		}
		if len(res.GetResults()) != len(want) {
			t.Fatalf("%d results for %d entries", len(res.GetResults()), len(want))
		}
		for i, w := range want {
			r := res.GetResults()[i]
			if r.GetTopic() != req.Batches[i].GetTopic() || r.GetPartition() != req.Batches[i].GetPartition() {
				t.Errorf("result %d is for %s/%d, want %s/%d", i, r.GetTopic(), r.GetPartition(), req.Batches[i].GetTopic(), req.Batches[i].GetPartition())
			}
			if w.code == 0 {
				if r.GetError() != nil || r.GetRecordCount() != w.count {
					t.Errorf("entry %d: %v, want %d records written", i, r, w.count)
				}
				continue
			}
			ce := rpcerr.FromEntry(r.GetError())
			if ce == nil || ce.Code() != w.code || !strings.Contains(ce.Message(), w.match) {
				t.Errorf("entry %d: error %v, want %v containing %q", i, r.GetError(), w.code, w.match)
			}
		}
		if n, m := e.agent.appendRequests.Load(), e.stale.appendRequests.Load(); n != 1 || m != 1 {
			t.Errorf("Append requests: %d and %d, want one per agent", n, m)
		}
		if n := len(e.agent.appendCalls()); n != 2 {
			t.Errorf("agent appended %d entries, want 2 (a/0 and b/1)", n)
		}
	})
}

// A batches request fails whole when it is malformed as a whole (the same
// partition twice, batches next to a topic) or when every entry failed; it
// then writes nothing.
func TestProduceBatchesWholeRequestErrors(t *testing.T) {
	e := newEnv(t, 0)
	e.ctl.addTopic(&v1.TopicInfo{Name: "a", Partitions: 2}, agentAddr)
	good := encodeT(t, "v")
	for _, c := range []struct {
		name  string
		req   *v1.ProduceRequest
		code  connect.Code
		match string
	}{
		{"twice", &v1.ProduceRequest{Batches: []*v1.ProduceBatch{{Topic: "a", Batch: good}, {Topic: "a", Batch: good}}}, connect.CodeInvalidArgument, "appears twice"},
		{"with topic", &v1.ProduceRequest{Topic: "a", Batches: []*v1.ProduceBatch{{Topic: "a", Batch: good}}}, connect.CodeInvalidArgument, "carries no topic"},
		{"all bad", &v1.ProduceRequest{Batches: []*v1.ProduceBatch{{Topic: "a", Partition: 5, Batch: good}, {Topic: "zz", Batch: good}}}, connect.CodeInvalidArgument, "partition 5 is out of range"},
		{"empty", &v1.ProduceRequest{}, connect.CodeInvalidArgument, "nothing to produce"},
	} {
		_, err := e.produce.Produce(ctxT(t), connect.NewRequest(c.req))
		wantCode(t, c.name, err, c.code, c.match)
	}
	if n := len(e.agent.appendCalls()); n != 0 {
		t.Fatalf("refused requests appended %d entries", n)
	}
}
