package agent

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"connectrpc.com/connect"
	"go.uber.org/goleak"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/pkg/batch"
	"github.com/streamhouse/streamhouse/pkg/objstore"
	"github.com/streamhouse/streamhouse/pkg/rpcerr"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func quietLogger() *slog.Logger {
	if os.Getenv("AGENT_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func walTopic(name string, partitions int32) *v1.TopicInfo {
	return &v1.TopicInfo{Name: name, Partitions: partitions, Durability: v1.Durability_DURABILITY_WAL}
}

func durableTopic(name string, partitions int32) *v1.TopicInfo {
	return &v1.TopicInfo{Name: name, Partitions: partitions, Durability: v1.Durability_DURABILITY_DURABLE}
}

// testEnv is one fake controller, one local object store (wrapped to count
// requests) and one data dir; open starts agents on them.
type testEnv struct {
	t     *testing.T
	ctl   *fakeController
	local *objstore.Local
	store *countingStore
	dir   string
}

func newEnv(t *testing.T, topics ...*v1.TopicInfo) *testEnv {
	t.Helper()
	local, err := objstore.NewLocal(t.TempDir())
	if err != nil {
		t.Fatalf("NewLocal: %v", err)
	}
	return &testEnv{t: t, ctl: newFakeController(topics...), local: local, store: &countingStore{Store: local}, dir: t.TempDir()}
}

// config returns the fast test configuration; mods adjust it.
func (e *testEnv) config(mods ...func(*Config)) Config {
	cfg := Config{
		DataDir: e.dir, Controller: e.ctl, Store: e.store, NoSync: true,
		FlushInterval: 20 * time.Millisecond, HeartbeatInterval: 100 * time.Millisecond,
		Logger: quietLogger(),
	}
	for _, m := range mods {
		m(&cfg)
	}
	return cfg
}

// open starts an agent and closes it at the end of the test.
func (e *testEnv) open(mods ...func(*Config)) *Agent {
	e.t.Helper()
	a, err := Open(ctxT(e.t), e.config(mods...))
	if err != nil {
		e.t.Fatalf("Open: %v", err)
	}
	e.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = a.Close(ctx)
	})
	return a
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// waitUntil polls cond until it holds or the deadline passes.
func waitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// mkBatch encodes n records with values "<prefix>-<i>".
func mkBatch(t testing.TB, prefix string, n int) []byte {
	t.Helper()
	recs := make([]batch.Record, n)
	for i := range recs {
		recs[i] = batch.Record{Value: fmt.Appendf(nil, "%s-%d", prefix, i), Timestamp: time.Now().UnixMilli()}
	}
	b, err := batch.Encode(recs, batch.EncodeOptions{})
	if err != nil {
		t.Fatalf("Encode: %v", err)
	}
	return b
}

func values(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%d", prefix, i)
	}
	return out
}

// appendB appends one batch as a one-entry request; the entry's error is
// returned as the error a whole request with that outcome would have had.
func appendB(ctx context.Context, a *Agent, topic string, part int32, b []byte, acks v1.Acks) (*v1.AppendResult, error) {
	resp, err := a.Handler().Append(ctx, connect.NewRequest(&v1.AppendRequest{
		Entries: []*v1.AppendEntry{{Topic: topic, Partition: part, Batch: b}}, Acks: acks}))
	if err != nil {
		return nil, err
	}
	if n := len(resp.Msg.GetResults()); n != 1 {
		return nil, fmt.Errorf("append answered %d results for one entry", n)
	}
	r := resp.Msg.GetResults()[0]
	if e := r.GetError(); e != nil {
		return nil, rpcerr.FromEntry(e)
	}
	return r, nil
}

// mustAppend appends a batch of n records and returns its base offset.
func mustAppend(t testing.TB, a *Agent, topic string, part int32, prefix string, n int, acks v1.Acks) int64 {
	t.Helper()
	resp, err := appendB(ctxT(t), a, topic, part, mkBatch(t, prefix, n), acks)
	if err != nil {
		t.Fatalf("Append %s/%d: %v", topic, part, err)
	}
	if resp.GetRecordCount() != int32(n) {
		t.Fatalf("Append %s/%d: record count %d, want %d", topic, part, resp.GetRecordCount(), n)
	}
	return resp.GetBaseOffset()
}

func read(ctx context.Context, a *Agent, topic string, part int32, offset int64, maxBytes, maxWaitMs int32) (*v1.ReadResponse, error) {
	resp, err := a.Handler().Read(ctx, connect.NewRequest(&v1.ReadRequest{Topic: topic, Partition: part, Offset: offset, MaxBytes: maxBytes, MaxWaitMs: maxWaitMs}))
	if err != nil {
		return nil, err
	}
	return resp.Msg, nil
}

// readBatch is one batch as returned by Read, decoded.
type readBatch struct {
	base   int64
	values []string
}

// decodeBatches splits and decodes concatenated batches.
func decodeBatches(t testing.TB, data []byte) []readBatch {
	t.Helper()
	var out []readBatch
	for len(data) > 0 {
		meta, raw, rest, err := batch.Next(data)
		if err != nil {
			t.Fatalf("batch.Next: %v", err)
		}
		recs, _, err := batch.Decode(raw)
		if err != nil {
			t.Fatalf("batch.Decode: %v", err)
		}
		rb := readBatch{base: meta.BaseOffset}
		for i, r := range recs {
			if r.Offset != meta.BaseOffset+int64(i) {
				t.Fatalf("record %d of batch at %d has offset %d", i, meta.BaseOffset, r.Offset)
			}
			rb.values = append(rb.values, string(r.Value))
		}
		out = append(out, rb)
		data = rest
	}
	return out
}

// readAll reads [from, to) with small max_bytes (several round trips) and
// returns the batches; it fails on any gap or overlap.
func readAll(t testing.TB, a *Agent, topic string, part int32, from, to int64) []readBatch {
	t.Helper()
	var out []readBatch
	next := from
	for next < to {
		resp, err := read(ctxT(t), a, topic, part, next, 300, 0)
		if err != nil {
			t.Fatalf("Read %s/%d at %d: %v", topic, part, next, err)
		}
		if resp.GetNextOffset() <= next {
			t.Fatalf("Read %s/%d at %d made no progress (hw %d)", topic, part, next, resp.GetHighWatermark())
		}
		bs := decodeBatches(t, resp.GetBatches())
		for _, b := range bs {
			if b.base != next {
				t.Fatalf("Read %s/%d: batch at %d, want %d", topic, part, b.base, next)
			}
			next = b.base + int64(len(b.values))
		}
		if next != resp.GetNextOffset() {
			t.Fatalf("Read %s/%d: batches end at %d, next_offset is %d", topic, part, next, resp.GetNextOffset())
		}
		out = append(out, bs...)
	}
	if next != to {
		t.Fatalf("Read %s/%d: read to %d, want %d", topic, part, next, to)
	}
	return out
}

func wantCode(t testing.TB, err error, code connect.Code, what string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: no error, want %v", what, code)
	}
	if got := connect.CodeOf(err); got != code {
		t.Fatalf("%s: code %v (%v), want %v", what, got, err, code)
	}
}

// wantRefused checks a write refusal that guarantees nothing was written:
// the code, and the rpcerr "not applied" mark that makes it safe to retry.
func wantRefused(t testing.TB, err error, code connect.Code, what string) {
	t.Helper()
	wantCode(t, err, code, what)
	if !rpcerr.IsNotApplied(err) {
		t.Fatalf("%s: %v is not marked not-applied", what, err)
	}
}

// wantMaybeApplied checks an error after the batch may have reached the
// WAL: the code, and no "not applied" mark (a retry could duplicate).
func wantMaybeApplied(t testing.TB, err error, code connect.Code, what string) {
	t.Helper()
	wantCode(t, err, code, what)
	if rpcerr.IsNotApplied(err) {
		t.Fatalf("%s: %v is marked not-applied, but the records are in the WAL", what, err)
	}
}
