package gateway

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	"connectrpc.com/connect"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/api/gen/streamhouse/v1/streamhousev1connect"
	"github.com/streamhouse/streamhouse/gateway/gatewaytest"
	"github.com/streamhouse/streamhouse/pkg/batch"
	"github.com/streamhouse/streamhouse/pkg/rpcerr"
)

const (
	agent2Addr = "agent2:7101"
	downAddr   = "down:7101" // the gateway cannot build a client for it
)

// fetchEnv is a gateway in front of two good agents and a stale one (which
// refuses every partition as not its lease holder).
type fetchEnv struct {
	ctl                  *fakeController
	agent, agent2, stale *fakeAgent
	consume              streamhousev1connect.ConsumeServiceClient
}

func newFetchEnv(t *testing.T, opts ...connect.ClientOption) *fetchEnv {
	t.Helper()
	e := &fetchEnv{agent: newFakeAgent("agent"), agent2: newFakeAgent("agent2"), stale: newFakeAgent("stale")}
	e.stale.onRead = func(r *v1.ReadRequest) error {
		return rpcerr.NotApplied(connect.CodeFailedPrecondition, fmt.Errorf("not the lease holder of %s/%d", r.GetTopic(), r.GetPartition()))
	}
	e.ctl = newFakeController(e.agent)
	agents := map[string]*fakeAgent{agentAddr: e.agent, agent2Addr: e.agent2, staleAddr: e.stale}
	g, err := New(Config{
		Admin: e.ctl, Controller: e.ctl, RouteTTL: time.Minute,
		Agents: func(addr string) (streamhousev1connect.AgentServiceClient, error) {
			if a, ok := agents[addr]; ok {
				return a, nil
			}
			return nil, fmt.Errorf("unknown agent address %q", addr)
		},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := gatewaytest.Serve(t, g.Handler())
	e.consume = streamhousev1connect.NewConsumeServiceClient(srv.Client, srv.URL, opts...)
	return e
}

func eachFetchProtocol(t *testing.T, fn func(t *testing.T, e *fetchEnv)) {
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) { fn(t, newFetchEnv(t, p.opts...)) })
	}
}

func (e *fetchEnv) fetch(t *testing.T, req *v1.FetchPartitionsRequest) *v1.FetchPartitionsResponse {
	t.Helper()
	res, err := e.consume.FetchPartitions(ctxT(t), connect.NewRequest(req))
	if err != nil {
		t.Fatalf("FetchPartitions: %v", err)
	}
	if got, want := len(res.Msg.GetPartitions()), len(req.GetPartitions()); got != want {
		t.Fatalf("FetchPartitions answered %d partitions for %d", got, want)
	}
	for i, pr := range res.Msg.GetPartitions() {
		if q := req.GetPartitions()[i]; pr.GetTopic() != q.GetTopic() || pr.GetPartition() != q.GetPartition() {
			t.Fatalf("answer %d is %s/%d, asked %s/%d: not in request order", i, pr.GetTopic(), pr.GetPartition(), q.GetTopic(), q.GetPartition())
		}
	}
	return res.Msg
}

func recordValues(t *testing.T, pr *v1.PartitionRecords) []string {
	t.Helper()
	if pr.GetError() != nil {
		t.Fatalf("%s/%d: entry error %v", pr.GetTopic(), pr.GetPartition(), rpcerr.FromEntry(pr.GetError()))
	}
	var out []string
	for _, r := range pr.GetRecords() {
		out = append(out, string(r.GetValue()))
	}
	return out
}

func rawValues(t *testing.T, pr *v1.PartitionRecords) []string {
	t.Helper()
	if pr.GetError() != nil {
		t.Fatalf("%s/%d: entry error %v", pr.GetTopic(), pr.GetPartition(), rpcerr.FromEntry(pr.GetError()))
	}
	var out []string
	if err := batch.DecodeAll(pr.GetBatches(), func(r batch.Record) error {
		out = append(out, string(r.Value))
		return nil
	}); err != nil {
		t.Fatalf("%s/%d: decode: %v", pr.GetTopic(), pr.GetPartition(), err)
	}
	return out
}

func wantEntry(t *testing.T, pr *v1.PartitionRecords, code connect.Code, substr string) *connect.Error {
	t.Helper()
	if pr.GetError() == nil {
		t.Fatalf("%s/%d: no entry error, want %v", pr.GetTopic(), pr.GetPartition(), code)
	}
	err := rpcerr.FromEntry(pr.GetError())
	wantCode(t, fmt.Sprintf("%s/%d", pr.GetTopic(), pr.GetPartition()), err, code, substr)
	if len(pr.GetRecords()) != 0 || len(pr.GetBatches()) != 0 {
		t.Fatalf("%s/%d: a failed entry carries data", pr.GetTopic(), pr.GetPartition())
	}
	return err
}

// One request, one ReadPartitions per agent; every partition answered in
// request order with its records or its own error.
func TestFetchPartitions(t *testing.T) {
	eachFetchProtocol(t, func(t *testing.T, e *fetchEnv) {
		e.ctl.addTopic(&v1.TopicInfo{Name: "t", Partitions: 3}, agentAddr)
		e.ctl.addTopic(&v1.TopicInfo{Name: "u", Partitions: 2}, agent2Addr)
		e.ctl.addTopic(&v1.TopicInfo{Name: "w", Partitions: 1}, downAddr)
		putRecords(t, e.agent, "t", 0, "t0-a", "t0-b")
		putRecords(t, e.agent, "t", 0, "t0-c")
		putRecords(t, e.agent2, "u", 1, "u1-a")
		req := &v1.FetchPartitionsRequest{Partitions: []*v1.FetchPartition{
			{Topic: "t", Partition: 0, Offset: 1},
			{Topic: "u", Partition: 1},
			{Topic: "t", Partition: 9},
			{Topic: "nope", Partition: 0},
			{Topic: "t", Partition: 1, Offset: 100},
			{Topic: "u", Partition: 0},
			{Topic: "", Partition: 0},
			{Topic: "w", Partition: 0},
			{Topic: "t", Partition: 2},
		}}
		res := e.fetch(t, req).GetPartitions()
		if got := recordValues(t, res[0]); !slices.Equal(got, []string{"t0-b", "t0-c"}) {
			t.Fatalf("t/0 from 1: %q (records below the offset are skipped)", got)
		}
		if pr := res[0]; pr.GetHighWatermark() != 3 || pr.GetNextOffset() != 3 || pr.GetRecords()[0].GetOffset() != 1 {
			t.Fatalf("t/0: hw %d next %d", pr.GetHighWatermark(), pr.GetNextOffset())
		}
		if got := recordValues(t, res[1]); !slices.Equal(got, []string{"u1-a"}) {
			t.Fatalf("u/1: %q", got)
		}
		wantEntry(t, res[2], connect.CodeInvalidArgument, `topic "t" has partitions 0 to 2`)
		wantEntry(t, res[3], connect.CodeNotFound, `topic "nope" does not exist`)
		wantEntry(t, res[4], connect.CodeOutOfRange, "offset 100 is out of range: partition t/1 holds offsets 0 to 0")
		if pr := res[5]; pr.GetError() != nil || len(pr.GetRecords()) != 0 || pr.GetNextOffset() != 0 {
			t.Fatalf("empty u/0: %v", pr)
		}
		wantEntry(t, res[6], connect.CodeInvalidArgument, "topic is required")
		if err := wantEntry(t, res[7], connect.CodeUnavailable, "down:7101"); !rpcerr.IsNotApplied(err) {
			t.Fatalf("unreachable agent: %v is not marked not-applied", err)
		}
		if pr := res[8]; pr.GetError() != nil || len(pr.GetRecords()) != 0 {
			t.Fatalf("empty t/2: %v", pr)
		}
		// One call per agent, each with its partitions only.
		for _, a := range []*fakeAgent{e.agent, e.agent2} {
			reqs := rpStats(a).requests()
			if len(reqs) != 1 {
				t.Fatalf("%s got %d ReadPartitions calls, want 1", a.name, len(reqs))
			}
			for _, p := range reqs[0].GetPartitions() {
				if (a == e.agent) != (p.GetTopic() == "t") {
					t.Fatalf("%s was asked for %s/%d", a.name, p.GetTopic(), p.GetPartition())
				}
			}
		}
		if n := e.agent.reads.Load() + e.agent2.reads.Load(); n != 0 {
			t.Fatalf("%d single-partition Reads, want 0", n)
		}

		// Raw: the stored batches, whole.
		req.Raw = true
		raw := e.fetch(t, req).GetPartitions()
		if got := rawValues(t, raw[0]); !slices.Equal(got, []string{"t0-a", "t0-b", "t0-c"}) {
			t.Fatalf("raw t/0: %q (whole batches, from the one holding offset 1)", got)
		}
		if len(raw[0].GetRecords()) != 0 || raw[0].GetNextOffset() != 3 {
			t.Fatalf("raw t/0: %d records, next %d", len(raw[0].GetRecords()), raw[0].GetNextOffset())
		}
	})
}

func TestFetchPartitionsBadRequest(t *testing.T) {
	e := newFetchEnv(t)
	e.ctl.addTopic(&v1.TopicInfo{Name: "t", Partitions: 2}, agentAddr)
	one := func() []*v1.FetchPartition { return []*v1.FetchPartition{{Topic: "t"}} }
	for _, c := range []struct {
		name, match string
		req         *v1.FetchPartitionsRequest
	}{
		{"no partitions", "no partitions", &v1.FetchPartitionsRequest{}},
		{"twice", "partition t/1 is asked twice (partitions 0 and 2)", &v1.FetchPartitionsRequest{Partitions: []*v1.FetchPartition{{Topic: "t", Partition: 1}, {Topic: "t"}, {Topic: "t", Partition: 1, Offset: 4}}}},
		{"max_wait", "max_wait_ms must be between 0 and 30000", &v1.FetchPartitionsRequest{Partitions: one(), MaxWaitMs: 30001}},
		{"negative max_wait", "max_wait_ms", &v1.FetchPartitionsRequest{Partitions: one(), MaxWaitMs: -1}},
		{"negative min_bytes", "min_bytes", &v1.FetchPartitionsRequest{Partitions: one(), MinBytes: -1}},
		{"negative max_bytes", "max_bytes", &v1.FetchPartitionsRequest{Partitions: one(), MaxBytes: -1}},
		{"negative partition max_bytes", "partition t/0: max_bytes", &v1.FetchPartitionsRequest{Partitions: []*v1.FetchPartition{{Topic: "t", MaxBytes: -1}}}},
	} {
		_, err := e.consume.FetchPartitions(ctxT(t), connect.NewRequest(c.req))
		wantCode(t, c.name, err, connect.CodeInvalidArgument, c.match)
	}
	if n := rpStats(e.agent).calls.Load(); n != 0 {
		t.Fatalf("bad requests reached the agent %d times", n)
	}
}

// The long-poll spans agents: data arriving on one answers the request at
// once, and the other agent, cut short, is asked again without waiting.
func TestFetchPartitionsLongPollAcrossAgents(t *testing.T) {
	eachFetchProtocol(t, func(t *testing.T, e *fetchEnv) {
		e.ctl.addTopic(&v1.TopicInfo{Name: "t", Partitions: 2}, agentAddr)
		e.ctl.addTopic(&v1.TopicInfo{Name: "u", Partitions: 2}, agent2Addr)
		putRecords(t, e.agent, "t", 1, "old")
		type answer struct {
			res *v1.FetchPartitionsResponse
			err error
		}
		done := make(chan answer, 1)
		began := time.Now()
		go func() {
			res, err := e.consume.FetchPartitions(ctxT(t), connect.NewRequest(&v1.FetchPartitionsRequest{
				Partitions: []*v1.FetchPartition{{Topic: "t", Partition: 0}, {Topic: "t", Partition: 1, Offset: 1}, {Topic: "u", Partition: 0}, {Topic: "u", Partition: 1}},
				MaxWaitMs:  20_000,
			}))
			if err != nil {
				done <- answer{nil, err}
				return
			}
			done <- answer{res.Msg, nil}
		}()
		waitFor(t, "both agents to long-poll", func() bool {
			return rpStats(e.agent).active.Load() == 1 && rpStats(e.agent2).active.Load() == 1
		})
		putRecords(t, e.agent2, "u", 1, "new")
		ans := <-done
		if ans.err != nil {
			t.Fatalf("FetchPartitions: %v", ans.err)
		}
		if d := time.Since(began); d > 10*time.Second {
			t.Fatalf("answered after %v: data on one agent did not end the other's long-poll", d)
		}
		res := ans.res.GetPartitions()
		if got := recordValues(t, res[3]); !slices.Equal(got, []string{"new"}) {
			t.Fatalf("u/1: %q", got)
		}
		// The cut-short agent's partitions still have their high watermarks.
		if pr := res[1]; len(recordValues(t, pr)) != 0 || pr.GetHighWatermark() != 1 || pr.GetNextOffset() != 1 {
			t.Fatalf("t/1 at its end: %v", pr)
		}
		reqs := rpStats(e.agent).requests()
		if len(reqs) != 2 || reqs[0].GetMaxWaitMs() != 20_000 || reqs[1].GetMaxWaitMs() != 0 {
			t.Fatalf("agent asked %d times (%v), want a long-poll then one read without wait", len(reqs), reqs)
		}
	})
}

// A partition whose agent refuses it as not the lease holder is asked again
// on fresh routes; a holder that still refuses after the refresh is that
// partition's error, not retried again.
func TestFetchPartitionsRouteRefresh(t *testing.T) {
	e := newFetchEnv(t)
	e.ctl.addTopic(&v1.TopicInfo{Name: "t", Partitions: 3}, agentAddr)
	e.ctl.addTopic(&v1.TopicInfo{Name: "s", Partitions: 1}, staleAddr)
	e.ctl.setRoute("t", 2, staleAddr)
	putRecords(t, e.agent, "t", 0, "a")
	putRecords(t, e.agent, "t", 2, "moved")
	// The stale agent's refusal is when the lease moves back to the agent.
	rpStats(e.stale).onCall = func(m *v1.ReadPartitionsRequest) error {
		for _, p := range m.GetPartitions() {
			if p.GetTopic() == "t" {
				e.ctl.setRoute("t", p.GetPartition(), agentAddr)
			}
		}
		return nil
	}
	routes := e.ctl.getRoutes.Load()
	res := e.fetch(t, &v1.FetchPartitionsRequest{Partitions: []*v1.FetchPartition{
		{Topic: "t", Partition: 0}, {Topic: "s", Partition: 0}, {Topic: "t", Partition: 2},
	}}).GetPartitions()
	if got := recordValues(t, res[0]); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("t/0: %q", got)
	}
	if got := recordValues(t, res[2]); !slices.Equal(got, []string{"moved"}) {
		t.Fatalf("t/2 after the refresh: %q", got)
	}
	err := wantEntry(t, res[1], connect.CodeFailedPrecondition, "not the lease holder of s/0")
	if !rpcerr.IsNotApplied(err) {
		t.Fatalf("s/0: %v lost its not-applied mark", err)
	}
	// Two topics fetched, each refreshed once.
	if n := e.ctl.getRoutes.Load() - routes; n != 4 {
		t.Fatalf("GetRoutes called %d times, want 4 (two topics, one refresh each)", n)
	}
	if n := rpStats(e.stale).calls.Load(); n != 2 {
		t.Fatalf("stale agent asked %d times, want 2 (s/0 and t/2, then s/0 again)", n)
	}
}

// A truncation is the partition's own error, with the offset to resume
// from, and is not retried; the other partitions are served.
func TestFetchPartitionsTruncated(t *testing.T) {
	e := newFetchEnv(t)
	e.ctl.addTopic(&v1.TopicInfo{Name: "t", Partitions: 2}, agentAddr)
	putRecords(t, e.agent, "t", 0, "a", "b", "c")
	putRecords(t, e.agent, "t", 1, "x")
	e.agent.onRead = func(r *v1.ReadRequest) error {
		if r.GetPartition() != 0 || r.GetLastEpoch() == 0 {
			return nil
		}
		ce := connect.NewError(connect.CodeFailedPrecondition, errors.New("partition t/0 was truncated at offset 1"))
		ce.Meta().Set(rpcerr.TruncatedAtKey, "1")
		return ce
	}
	res := e.fetch(t, &v1.FetchPartitionsRequest{Partitions: []*v1.FetchPartition{
		{Topic: "t", Partition: 0, Offset: 3, LastEpoch: 1}, {Topic: "t", Partition: 1, LastEpoch: 1},
	}}).GetPartitions()
	err := wantEntry(t, res[0], connect.CodeFailedPrecondition, "truncated at offset 1")
	if res[0].GetError().TruncatedAt == nil || res[0].GetError().GetTruncatedAt() != 1 || err.Meta().Get(rpcerr.TruncatedAtKey) != "1" {
		t.Fatalf("t/0: truncated_at %v", res[0].GetError().TruncatedAt)
	}
	if got := recordValues(t, res[1]); !slices.Equal(got, []string{"x"}) {
		t.Fatalf("t/1: %q", got)
	}
	if n := rpStats(e.agent).calls.Load(); n != 1 {
		t.Fatalf("agent asked %d times, want 1 (a truncation is not retried)", n)
	}
}

// max_bytes bounds the whole answer across agents: partitions keep their
// data in request order until it is reached (the first always keeps its);
// the rest answer empty at their requested offset.
func TestFetchPartitionsMaxBytesAcrossAgents(t *testing.T) {
	e := newFetchEnv(t)
	e.ctl.addTopic(&v1.TopicInfo{Name: "t", Partitions: 1}, agentAddr)
	e.ctl.addTopic(&v1.TopicInfo{Name: "u", Partitions: 1}, agent2Addr)
	putRecords(t, e.agent, "t", 0, "t-a")
	putRecords(t, e.agent2, "u", 0, "u-a")
	putRecords(t, e.agent2, "u", 0, "u-b")
	res := e.fetch(t, &v1.FetchPartitionsRequest{MaxBytes: 1, Partitions: []*v1.FetchPartition{
		{Topic: "u", Partition: 0}, {Topic: "t", Partition: 0},
	}}).GetPartitions()
	if got := recordValues(t, res[0]); !slices.Equal(got, []string{"u-a"}) {
		t.Fatalf("u/0: %q, want its first batch", got)
	}
	if got := recordValues(t, res[1]); len(got) != 0 || res[1].GetNextOffset() != 0 || res[1].GetHighWatermark() != 1 {
		t.Fatalf("t/0 past max_bytes: %q next %d hw %d, want nothing at 0 with hw 1", got, res[1].GetNextOffset(), res[1].GetHighWatermark())
	}
}
