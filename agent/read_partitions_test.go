package agent

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/pkg/rpcerr"
)

func readParts(ctx context.Context, a *Agent, req *v1.ReadPartitionsRequest) (*v1.ReadPartitionsResponse, error) {
	resp, err := a.Handler().ReadPartitions(ctx, connect.NewRequest(req))
	if err != nil {
		return nil, err
	}
	if got, want := len(resp.Msg.GetResults()), len(req.GetPartitions()); got != want {
		return nil, fmt.Errorf("ReadPartitions answered %d results for %d partitions", got, want)
	}
	return resp.Msg, nil
}

func mustReadParts(t testing.TB, a *Agent, req *v1.ReadPartitionsRequest) *v1.ReadPartitionsResponse {
	t.Helper()
	resp, err := readParts(ctxT(t), a, req)
	if err != nil {
		t.Fatalf("ReadPartitions: %v", err)
	}
	return resp
}

// resultValues decodes one result's batches, failing on an entry error.
func resultValues(t testing.TB, what string, r *v1.ReadResult) []string {
	t.Helper()
	if r.GetError() != nil {
		t.Fatalf("%s: entry error %v", what, rpcerr.FromEntry(r.GetError()))
	}
	var out []string
	for _, b := range decodeBatches(t, r.GetBatches()) {
		out = append(out, b.values...)
	}
	return out
}

// wantEntryError checks one result's error: its code, the not-applied mark
// and a piece of its message.
func wantEntryError(t testing.TB, what string, r *v1.ReadResult, code connect.Code, notApplied bool, substr string) {
	t.Helper()
	e := r.GetError()
	if e == nil {
		t.Fatalf("%s: no entry error, want %v", what, code)
	}
	err := rpcerr.FromEntry(e)
	if got := connect.CodeOf(err); got != code {
		t.Fatalf("%s: entry error %v, want code %v", what, err, code)
	}
	if rpcerr.IsNotApplied(err) != notApplied {
		t.Fatalf("%s: entry error %v: not-applied %v, want %v", what, err, rpcerr.IsNotApplied(err), notApplied)
	}
	if !strings.Contains(e.GetMessage(), substr) {
		t.Fatalf("%s: entry error %q does not contain %q", what, e.GetMessage(), substr)
	}
	if len(r.GetBatches()) != 0 || r.GetHighWatermark() != 0 || r.GetNextOffset() != 0 {
		t.Fatalf("%s: a failed entry carries data: %v", what, r)
	}
}

// Each partition is answered on its own: out of range, not held and unknown
// partitions fail their entries while the others are served, in request
// order.
func TestReadPartitionsPerEntry(t *testing.T) {
	e := newEnv(t, walTopic("t", 4), walTopic("u", 1))
	a := e.open()
	mustAppend(t, a, "t", 0, "t0", 3, v1.Acks_ACKS_WAL)
	mustAppend(t, a, "t", 2, "t2", 2, v1.Acks_ACKS_WAL)
	mustAppend(t, a, "u", 0, "u0", 1, v1.Acks_ACKS_WAL)

	resp := mustReadParts(t, a, &v1.ReadPartitionsRequest{Partitions: []*v1.ReadPartition{
		{Topic: "t", Partition: 2, Offset: 1},
		{Topic: "t", Partition: 0, Offset: 9},
		{Topic: "nope", Partition: 0},
		{Topic: "t", Partition: 1},
		{Topic: "u", Partition: 0},
		{Topic: "t", Partition: 7},
		{Topic: "t", Partition: 3, Offset: -1},
	}})
	res := resp.GetResults()
	if got := resultValues(t, "t/2", res[0]); !slices.Equal(got, []string{"t2-0", "t2-1"}) {
		// The batch holding offset 1 is returned whole, from its base.
		t.Fatalf("t/2 at 1: %q, want the whole batch", got)
	}
	if r := res[0]; r.GetHighWatermark() != 2 || r.GetNextOffset() != 2 || r.GetStartOffset() != 0 {
		t.Fatalf("t/2: hw %d next %d start %d, want 2 2 0", r.GetHighWatermark(), r.GetNextOffset(), r.GetStartOffset())
	}
	wantEntryError(t, "t/0 at 9", res[1], connect.CodeOutOfRange, false, "valid offsets are 0 to 3")
	wantEntryError(t, "unknown topic", res[2], connect.CodeFailedPrecondition, true, "not the lease holder")
	if r := res[3]; r.GetError() != nil || len(r.GetBatches()) != 0 || r.GetHighWatermark() != 0 || r.GetNextOffset() != 0 {
		t.Fatalf("empty t/1: %v", r)
	}
	if got := resultValues(t, "u/0", res[4]); !slices.Equal(got, []string{"u0-0"}) {
		t.Fatalf("u/0: %q", got)
	}
	wantEntryError(t, "unknown partition", res[5], connect.CodeFailedPrecondition, true, "not the lease holder of partition t/7")
	wantEntryError(t, "t/3 at -1", res[6], connect.CodeOutOfRange, false, "valid offsets are 0 to 0")
}

// A request that is malformed as a whole fails before anything is read.
func TestReadPartitionsBadRequest(t *testing.T) {
	e := newEnv(t, walTopic("t", 2))
	a := e.open()
	ok := func() []*v1.ReadPartition { return []*v1.ReadPartition{{Topic: "t", Partition: 0}} }
	for _, tc := range []struct {
		name, substr string
		req          *v1.ReadPartitionsRequest
	}{
		{"no partitions", "no partitions", &v1.ReadPartitionsRequest{}},
		{"twice", "asked twice", &v1.ReadPartitionsRequest{Partitions: []*v1.ReadPartition{{Topic: "t", Partition: 1}, {Topic: "t", Partition: 0}, {Topic: "t", Partition: 1, Offset: 3}}}},
		{"max_wait", "max_wait_ms", &v1.ReadPartitionsRequest{Partitions: ok(), MaxWaitMs: int32(maxWait.Milliseconds()) + 1}},
		{"negative max_wait", "max_wait_ms", &v1.ReadPartitionsRequest{Partitions: ok(), MaxWaitMs: -1}},
		{"max_bytes", "max_bytes", &v1.ReadPartitionsRequest{Partitions: ok(), MaxBytes: maxReadPartitionsBytes + 1}},
		{"negative max_bytes", "max_bytes", &v1.ReadPartitionsRequest{Partitions: ok(), MaxBytes: -1}},
		{"negative min_bytes", "min_bytes", &v1.ReadPartitionsRequest{Partitions: ok(), MinBytes: -1}},
		{"partition max_bytes", "partition t/0: max_bytes", &v1.ReadPartitionsRequest{Partitions: []*v1.ReadPartition{{Topic: "t", Partition: 0, MaxBytes: maxReadBytes + 1}}}},
	} {
		_, err := readParts(ctxT(t), a, tc.req)
		wantCode(t, err, connect.CodeInvalidArgument, tc.name)
		if !strings.Contains(err.Error(), tc.substr) {
			t.Fatalf("%s: %q does not contain %q", tc.name, err, tc.substr)
		}
	}
}

// Partitions the agent does not know cost one lease refresh for all of
// them, not one each.
func TestReadPartitionsOneRefreshForUnknown(t *testing.T) {
	e := newEnv(t, walTopic("t", 1))
	a := e.open(func(c *Config) { c.HeartbeatInterval = time.Hour })
	var ps []*v1.ReadPartition
	for i := range int32(50) {
		ps = append(ps, &v1.ReadPartition{Topic: "gone", Partition: i})
	}
	ps = append(ps, &v1.ReadPartition{Topic: "t", Partition: 0})
	before := e.ctl.heartbeats.Load()
	resp := mustReadParts(t, a, &v1.ReadPartitionsRequest{Partitions: ps})
	if n := e.ctl.heartbeats.Load() - before; n != 1 {
		t.Fatalf("%d heartbeats for 50 unknown partitions, want 1", n)
	}
	for i, r := range resp.GetResults()[:50] {
		wantEntryError(t, fmt.Sprintf("gone/%d", i), r, connect.CodeFailedPrecondition, true, "not the lease holder")
	}
	if r := resp.GetResults()[50]; r.GetError() != nil {
		t.Fatalf("t/0: %v", r.GetError())
	}
}

// The long-poll waits on all partitions at once and answers as soon as one
// of them has data, well before max_wait.
func TestReadPartitionsLongPollAny(t *testing.T) {
	const n = 1000
	e := newEnv(t, walTopic("many", n))
	a := e.open()
	ps := make([]*v1.ReadPartition, n)
	for i := range ps {
		ps[i] = &v1.ReadPartition{Topic: "many", Partition: int32(i)}
	}
	type answer struct {
		resp *v1.ReadPartitionsResponse
		err  error
	}
	done := make(chan answer, 1)
	began := time.Now()
	go func() {
		resp, err := readParts(ctxT(t), a, &v1.ReadPartitionsRequest{Partitions: ps, MaxWaitMs: 20_000})
		done <- answer{resp, err}
	}()
	mustAppend(t, a, "many", 777, "late", 2, v1.Acks_ACKS_WAL)
	ans := <-done
	if ans.err != nil {
		t.Fatalf("ReadPartitions: %v", ans.err)
	}
	if d := time.Since(began); d > 10*time.Second {
		t.Fatalf("answered after %v: the append did not wake the long-poll", d)
	}
	for i, r := range ans.resp.GetResults() {
		got := resultValues(t, fmt.Sprintf("many/%d", i), r)
		switch {
		case i == 777 && !slices.Equal(got, []string{"late-0", "late-1"}):
			t.Fatalf("many/777: %q", got)
		case i != 777 && (len(got) != 0 || r.GetNextOffset() != 0):
			t.Fatalf("many/%d: %q, next %d; nothing was appended there", i, got, r.GetNextOffset())
		}
	}
}

// min_bytes counts over all partitions: the answer waits until both
// appends are readable.
func TestReadPartitionsMinBytes(t *testing.T) {
	e := newEnv(t, walTopic("t", 3))
	a := e.open()
	b0, b1 := mkBatch(t, "a", 4), mkBatch(t, "b", 4)
	done := make(chan *v1.ReadPartitionsResponse, 1)
	errc := make(chan error, 1)
	go func() {
		resp, err := readParts(ctxT(t), a, &v1.ReadPartitionsRequest{
			Partitions: []*v1.ReadPartition{{Topic: "t", Partition: 0}, {Topic: "t", Partition: 1}, {Topic: "t", Partition: 2}},
			MaxWaitMs:  20_000, MinBytes: int32(len(b0) + len(b1)),
		})
		if err != nil {
			errc <- err
			return
		}
		done <- resp
	}()
	if _, err := appendB(ctxT(t), a, "t", 0, b0, v1.Acks_ACKS_WAL); err != nil {
		t.Fatal(err)
	}
	if _, err := appendB(ctxT(t), a, "t", 2, b1, v1.Acks_ACKS_WAL); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		t.Fatalf("ReadPartitions: %v", err)
	case resp := <-done:
		r := resp.GetResults()
		if got := resultValues(t, "t/0", r[0]); len(got) != 4 {
			t.Fatalf("t/0: %q", got)
		}
		if got := resultValues(t, "t/1", r[1]); len(got) != 0 {
			t.Fatalf("t/1: %q", got)
		}
		if got := resultValues(t, "t/2", r[2]); len(got) != 4 {
			t.Fatalf("t/2: %q (the answer did not wait for min_bytes)", got)
		}
	}

	// With fewer than min_bytes ready, max_wait ends the wait with what
	// there is.
	began := time.Now()
	resp := mustReadParts(t, a, &v1.ReadPartitionsRequest{
		Partitions: []*v1.ReadPartition{{Topic: "t", Partition: 0}, {Topic: "t", Partition: 1, Offset: 0}},
		MaxWaitMs:  100, MinBytes: 1 << 20,
	})
	if d := time.Since(began); d < 100*time.Millisecond {
		t.Fatalf("answered after %v, before max_wait, with less than min_bytes", d)
	}
	if got := resultValues(t, "t/0", resp.GetResults()[0]); len(got) != 4 {
		t.Fatalf("t/0 after max_wait: %q", got)
	}
}

// max_bytes: the answer's limit is shared by the partitions in request
// order (the first batch is always returned), each partition has its own.
func TestReadPartitionsMaxBytes(t *testing.T) {
	e := newEnv(t, walTopic("t", 3))
	a := e.open()
	var size int
	for p := range int32(3) {
		for i := range 3 {
			b := mkBatch(t, fmt.Sprintf("p%d-b%d", p, i), 2)
			size = len(b)
			if _, err := appendB(ctxT(t), a, "t", p, b, v1.Acks_ACKS_WAL); err != nil {
				t.Fatal(err)
			}
		}
	}
	all := func(maxPer int32) []*v1.ReadPartition {
		return []*v1.ReadPartition{{Topic: "t", Partition: 0, MaxBytes: maxPer}, {Topic: "t", Partition: 1, MaxBytes: maxPer}, {Topic: "t", Partition: 2, MaxBytes: maxPer}}
	}
	count := func(resp *v1.ReadPartitionsResponse) []int {
		var out []int
		for i, r := range resp.GetResults() {
			if r.GetHighWatermark() != 6 {
				t.Fatalf("t/%d: hw %d, want 6", i, r.GetHighWatermark())
			}
			if got := int64(len(resultValues(t, fmt.Sprintf("t/%d", i), r))); r.GetNextOffset() != got {
				t.Fatalf("t/%d: %d records, next offset %d", i, got, r.GetNextOffset())
			}
			out = append(out, len(decodeBatches(t, r.GetBatches())))
		}
		return out
	}
	// An answer limit below one batch still returns the first one.
	if got := count(mustReadParts(t, a, &v1.ReadPartitionsRequest{Partitions: all(0), MaxBytes: 1})); !slices.Equal(got, []int{1, 0, 0}) {
		t.Fatalf("max_bytes 1: batches per partition %v, want [1 0 0]", got)
	}
	// Four batches' worth: three from the first partition, one from the
	// second, none from the third.
	if got := count(mustReadParts(t, a, &v1.ReadPartitionsRequest{Partitions: all(0), MaxBytes: int32(4 * size)})); !slices.Equal(got, []int{3, 1, 0}) {
		t.Fatalf("max_bytes of 4 batches: batches per partition %v, want [3 1 0]", got)
	}
	// A per-partition limit below one batch serves one batch of every
	// partition.
	if got := count(mustReadParts(t, a, &v1.ReadPartitionsRequest{Partitions: all(1)})); !slices.Equal(got, []int{1, 1, 1}) {
		t.Fatalf("per-partition max_bytes 1: batches per partition %v, want [1 1 1]", got)
	}
}

// A reader that read records an unclean handoff lost gets its partition's
// truncation error, with the offset to resume from; the others are served.
func TestReadPartitionsTruncated(t *testing.T) {
	e := newEnv(t, walTopic("t", 2))
	a := e.open()
	mustAppend(t, a, "t", 0, "a", 5, v1.Acks_ACKS_WAL)
	mustAppend(t, a, "t", 1, "b", 1, v1.Acks_ACKS_WAL)
	// As after an unclean handoff: this holder's epoch began at offset 2,
	// and the reader read epoch 1 up to 4.
	p := a.partition(partKey{"t", 0})
	p.mu.Lock()
	epoch := p.epoch
	p.epoch, p.epochStart = epoch+1, 2
	p.mu.Unlock()

	resp := mustReadParts(t, a, &v1.ReadPartitionsRequest{Partitions: []*v1.ReadPartition{
		{Topic: "t", Partition: 0, Offset: 4, LastEpoch: int32(epoch)},
		{Topic: "t", Partition: 1, LastEpoch: int32(epoch)},
	}})
	r := resp.GetResults()[0]
	wantEntryError(t, "t/0", r, connect.CodeFailedPrecondition, false, "truncated at offset 2")
	if r.GetError().TruncatedAt == nil || r.GetError().GetTruncatedAt() != 2 {
		t.Fatalf("t/0: truncated_at %v, want 2", r.GetError().TruncatedAt)
	}
	if at := rpcerr.FromEntry(r.GetError()).Meta().Get(rpcerr.TruncatedAtKey); at != "2" {
		t.Fatalf("t/0: FromEntry gives %s %q, want 2", rpcerr.TruncatedAtKey, at)
	}
	if got := resultValues(t, "t/1", resp.GetResults()[1]); !slices.Equal(got, []string{"b-0"}) {
		t.Fatalf("t/1: %q", got)
	}
	// Read, the single-partition path, applies the same check.
	_, err := a.Handler().Read(ctxT(t), connect.NewRequest(&v1.ReadRequest{Topic: "t", Partition: 0, Offset: 4, LastEpoch: int32(epoch)}))
	wantCode(t, err, connect.CodeFailedPrecondition, "Read of a truncated partition")
	var ce *connect.Error
	if !errors.As(err, &ce) || ce.Meta().Get(rpcerr.TruncatedAtKey) != "2" {
		t.Fatalf("Read: %v has no %s 2", err, rpcerr.TruncatedAtKey)
	}
}

// A caller that goes away ends the long-poll with Canceled.
func TestReadPartitionsCanceled(t *testing.T) {
	e := newEnv(t, walTopic("t", 2))
	a := e.open()
	ctx, cancel := context.WithCancel(ctxT(t))
	errc := make(chan error, 1)
	go func() {
		_, err := readParts(ctx, a, &v1.ReadPartitionsRequest{
			Partitions: []*v1.ReadPartition{{Topic: "t", Partition: 0}, {Topic: "t", Partition: 1}}, MaxWaitMs: 20_000,
		})
		errc <- err
	}()
	cancel()
	wantCode(t, <-errc, connect.CodeCanceled, "canceled long-poll")
}

// Data committed to objects (and gone from the WAL) is read from them, for
// many partitions in one call, as Read does.
func TestReadPartitionsFromObjects(t *testing.T) {
	e := newEnv(t, durableTopic("d", 3))
	a := e.open()
	for p := range int32(3) {
		mustAppend(t, a, "d", p, fmt.Sprintf("d%d", p), 3, v1.Acks_ACKS_DURABLE)
	}
	for p := range int32(3) {
		waitUntil(t, "the WAL dropped the committed entries", func() bool { return len(a.wal.Entries("d", p, 0, 1<<20)) == 0 })
	}
	a.cache.clear()
	gets := e.store.gets.Load()
	resp := mustReadParts(t, a, &v1.ReadPartitionsRequest{Partitions: []*v1.ReadPartition{
		{Topic: "d", Partition: 2}, {Topic: "d", Partition: 0, Offset: 1}, {Topic: "d", Partition: 1},
	}})
	for i, want := range []string{"d2", "d0", "d1"} {
		if got := resultValues(t, want, resp.GetResults()[i]); !slices.Equal(got, values(want, 3)) {
			t.Fatalf("%s: %q", want, got)
		}
	}
	if e.store.gets.Load() == gets {
		t.Fatal("no GET: the data should have come from the object store")
	}
}
