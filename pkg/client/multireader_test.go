package client

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"connectrpc.com/connect"

	streamhousev1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/pkg/rpcerr"
)

func mrCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// fetchedValues maps each partition of a Next to its record values, failing
// on a partition error.
func fetchedValues(t *testing.T, got []FetchedPartition) map[int32][]string {
	t.Helper()
	out := map[int32][]string{}
	for _, fp := range got {
		if fp.Err != nil {
			t.Fatalf("%s/%d: %v", fp.Topic, fp.Partition, fp.Err)
		}
		for i, r := range fp.Records {
			if i > 0 && r.Offset != fp.Records[i-1].Offset+1 {
				t.Fatalf("%s/%d: offsets %d then %d", fp.Topic, fp.Partition, fp.Records[i-1].Offset, r.Offset)
			}
			out[fp.Partition] = append(out[fp.Partition], string(r.Value))
		}
	}
	return out
}

func allFrom(topic string, n int32, offset int64) map[TopicPartition]int64 {
	starts := map[TopicPartition]int64{}
	for p := range n {
		starts[TopicPartition{topic, p}] = offset
	}
	return starts
}

// A MultiReader of 1,000 partitions sends one FetchPartitions per Next,
// long-polls once for all of them, and keeps each partition's position.
func TestMultiReaderManyPartitions(t *testing.T) {
	const n = 1000
	g, c := startFake(t, n)
	for _, p := range []int32{0, 17, 999} {
		appendToFake(t, g, p, fmt.Sprintf("p%d-a", p), fmt.Sprintf("p%d-b", p))
	}
	r := c.NewMultiReader(allFrom("t", n, 0), MaxWait(10*time.Second))
	got, err := r.Next(mrCtx(t))
	if err != nil {
		t.Fatalf("Next: %v", err)
	}
	vals := fetchedValues(t, got)
	if len(vals) != 3 || !slices.Equal(vals[17], []string{"p17-a", "p17-b"}) {
		t.Fatalf("first Next: %v", vals)
	}
	if off, _ := r.Offset(TopicPartition{"t", 17}); off != 2 {
		t.Fatalf("t/17 offset %d, want 2", off)
	}
	if hw := r.HighWatermark(TopicPartition{"t", 999}); hw != 2 {
		t.Fatalf("t/999 high watermark %d, want 2", hw)
	}
	f := fpFake(g)
	if calls := f.calls.Load(); calls != 1 {
		t.Fatalf("%d FetchPartitions calls, want 1", calls)
	}
	if reqs := f.requests(); len(reqs[0].GetPartitions()) != n || !reqs[0].GetRaw() {
		t.Fatalf("the request asked for %d partitions (raw %v), want %d raw", len(reqs[0].GetPartitions()), reqs[0].GetRaw(), n)
	}

	// Caught up everywhere: the next Next long-polls all 1,000 partitions
	// in one request, and a record on any of them answers it.
	type answer struct {
		got []FetchedPartition
		err error
	}
	done := make(chan answer, 1)
	go func() {
		got, err := r.Next(mrCtx(t))
		done <- answer{got, err}
	}()
	appendToFake(t, g, 500, "late")
	ans := <-done
	if ans.err != nil {
		t.Fatalf("long-poll Next: %v", ans.err)
	}
	if vals := fetchedValues(t, ans.got); len(vals) != 1 || !slices.Equal(vals[500], []string{"late"}) {
		t.Fatalf("long-poll Next: %v", vals)
	}
	// The partitions that returned data moved to the end of the request.
	reqs := f.requests()
	last := reqs[len(reqs)-1].GetPartitions()
	if tail := []int32{last[n-3].GetPartition(), last[n-2].GetPartition(), last[n-1].GetPartition()}; !slices.Equal(tail, []int32{0, 17, 999}) {
		t.Fatalf("request order ends with %v, want the partitions served last time [0 17 999]", tail)
	}
	if last[0].GetOffset() != 0 || last[n-1].GetOffset() != 2 {
		t.Fatalf("offsets asked: %d and %d", last[0].GetOffset(), last[n-1].GetOffset())
	}
}

// A partition's error is its own: OutOfRange and NotFound are reported
// while the other partitions are served, and the failed partition backs
// off; a transient error is retried without being reported.
func TestMultiReaderPartitionErrors(t *testing.T) {
	g, c := startFake(t, 4)
	appendToFake(t, g, 0, "a")
	appendToFake(t, g, 3, "d")
	f := fpFake(g)
	f.set(nil, func(n int64, p *streamhousev1.FetchPartition) error {
		if p.GetPartition() == 3 && n == 1 {
			return rpcerr.NotApplied(connect.CodeUnavailable, errors.New("agent is draining"))
		}
		return nil
	})
	r := c.NewMultiReader(map[TopicPartition]int64{
		{"t", 0}: 0, {"t", 1}: 5, {"nope", 0}: 0, {"t", 3}: 0,
	}, MaxWait(0))
	got, err := r.Next(mrCtx(t))
	if err != nil {
		t.Fatalf("Next: %v", err)
	}
	errs := map[TopicPartition]error{}
	var served []string
	for _, fp := range got {
		if fp.Err != nil {
			errs[TopicPartition{fp.Topic, fp.Partition}] = fp.Err
			continue
		}
		for _, rec := range fp.Records {
			served = append(served, string(rec.Value))
		}
	}
	if !slices.Equal(served, []string{"a"}) {
		t.Fatalf("served %q, want [a]", served)
	}
	if len(errs) != 2 || connect.CodeOf(errs[TopicPartition{"t", 1}]) != connect.CodeOutOfRange || connect.CodeOf(errs[TopicPartition{"nope", 0}]) != connect.CodeNotFound {
		t.Fatalf("errors %v, want OutOfRange for t/1 and NotFound for nope/0 (and nothing for the transient t/3)", errs)
	}
	// t/3 is fetched again after its backoff, and served; the partitions
	// that failed are left out of the requests while they back off.
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := r.Next(mrCtx(t))
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		if vals := fetchedValues(t, slices.DeleteFunc(got, func(fp FetchedPartition) bool { return fp.Err != nil })); len(vals[3]) > 0 {
			if !slices.Equal(vals[3], []string{"d"}) {
				t.Fatalf("t/3: %q", vals[3])
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("t/3 was not fetched again after its transient error")
		}
	}
	if reqs := f.requests(); len(reqs[1].GetPartitions()) >= 4 {
		t.Fatalf("the second request asked %d partitions: the failed ones did not back off", len(reqs[1].GetPartitions()))
	}
}

// A truncation moves the partition to where it was truncated and is
// reported as a *TruncatedError; reading goes on from there.
func TestMultiReaderTruncated(t *testing.T) {
	g, c := startFake(t, 2)
	appendToFake(t, g, 0, "a", "b", "c")
	appendToFake(t, g, 1, "x")
	f := fpFake(g)
	f.set(nil, func(n int64, p *streamhousev1.FetchPartition) error {
		if p.GetPartition() == 0 && n == 1 {
			ce := connect.NewError(connect.CodeFailedPrecondition, errors.New("partition t/0 was truncated at offset 1"))
			ce.Meta().Set(rpcerr.TruncatedAtKey, "1")
			return ce
		}
		return nil
	})
	r := c.NewMultiReader(map[TopicPartition]int64{{"t", 0}: 3, {"t", 1}: 0}, MaxWait(0))
	got, err := r.Next(mrCtx(t))
	if err != nil {
		t.Fatalf("Next: %v", err)
	}
	var te *TruncatedError
	for _, fp := range got {
		if fp.Partition == 0 && !errors.As(fp.Err, &te) {
			t.Fatalf("t/0: %v, want a *TruncatedError", fp.Err)
		}
	}
	if te == nil || te.Offset != 1 {
		t.Fatalf("truncation %v, want at offset 1", te)
	}
	if off, _ := r.Offset(TopicPartition{"t", 0}); off != 1 {
		t.Fatalf("t/0 offset %d after the truncation, want 1", off)
	}
	got, err = r.Next(mrCtx(t))
	if err != nil {
		t.Fatalf("Next: %v", err)
	}
	if vals := fetchedValues(t, got); !slices.Equal(vals[0], []string{"b", "c"}) {
		t.Fatalf("after the truncation: %v", vals)
	}
}

// FetchMaxBytes smaller than a batch: one partition per fetch, and the
// rotation gives every partition its turn.
func TestMultiReaderRotation(t *testing.T) {
	g, c := startFake(t, 3)
	for p := range int32(3) {
		appendToFake(t, g, p, fmt.Sprintf("p%d", p))
	}
	r := c.NewMultiReader(allFrom("t", 3, 0), MaxWait(0), FetchMaxBytes(1), FetchMinBytes(1))
	seen := map[int32]bool{}
	for range 3 {
		got, err := r.Next(mrCtx(t))
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		vals := fetchedValues(t, got)
		if len(vals) != 1 {
			t.Fatalf("a fetch of max 1 byte served %v", vals)
		}
		for p := range vals {
			seen[p] = true
		}
	}
	if len(seen) != 3 {
		t.Fatalf("three fetches served partitions %v, want all three", seen)
	}
	if req := fpFake(g).requests()[0]; req.GetMaxBytes() != 1 || req.GetMinBytes() != 1 {
		t.Fatalf("request limits max %d min %d", req.GetMaxBytes(), req.GetMinBytes())
	}
}

// OffsetStart and OffsetEnd are resolved with one DescribeTopic per topic;
// an unknown partition is reported.
func TestMultiReaderResolveStarts(t *testing.T) {
	g, c := startFake(t, 2)
	appendToFake(t, g, 0, "old")
	appendToFake(t, g, 1, "old")
	r := c.NewMultiReader(map[TopicPartition]int64{{"t", 0}: OffsetStart, {"t", 1}: OffsetEnd, {"t", 5}: OffsetStart}, MaxWait(0))
	got, err := r.Next(mrCtx(t))
	if err != nil {
		t.Fatalf("Next: %v", err)
	}
	var missing error
	var vals []string
	for _, fp := range got {
		if fp.Err != nil {
			if fp.Partition != 5 {
				t.Fatalf("%s/%d: %v", fp.Topic, fp.Partition, fp.Err)
			}
			missing = fp.Err
			continue
		}
		for _, rec := range fp.Records {
			vals = append(vals, fmt.Sprintf("%d:%s", fp.Partition, rec.Value))
		}
	}
	if connect.CodeOf(missing) != connect.CodeNotFound {
		t.Fatalf("t/5: %v, want NotFound", missing)
	}
	if !slices.Equal(vals, []string{"0:old"}) {
		t.Fatalf("records %q: want t/0 from the start and nothing old of t/1", vals)
	}
	if off, _ := r.Offset(TopicPartition{"t", 1}); off != 1 {
		t.Fatalf("t/1 resolved to %d, want its high watermark 1", off)
	}
	r.Remove(TopicPartition{"t", 5})
	if ps := r.Partitions(); !slices.Equal(ps, []TopicPartition{{"t", 0}, {"t", 1}}) {
		t.Fatalf("partitions %v", ps)
	}
}

// An error of the whole request that retrying cannot fix is returned, and
// the positions stay; a transient one is retried.
func TestMultiReaderRequestErrors(t *testing.T) {
	g, c := startFake(t, 1)
	appendToFake(t, g, 0, "a")
	f := fpFake(g)
	f.set(func(n int64, _ *streamhousev1.FetchPartitionsRequest) error {
		switch n {
		case 1:
			return connect.NewError(connect.CodeResourceExhausted, errors.New("slow down"))
		case 2:
			return connect.NewError(connect.CodePermissionDenied, errors.New("no"))
		}
		return nil
	}, nil)
	r := c.NewMultiReader(allFrom("t", 1, 0), MaxWait(0))
	_, err := r.Next(mrCtx(t))
	if connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Fatalf("Next: %v, want PermissionDenied after retrying ResourceExhausted", err)
	}
	if off, _ := r.Offset(TopicPartition{"t", 0}); off != 0 {
		t.Fatalf("offset %d after a failed fetch, want 0", off)
	}
	got, err := r.Next(mrCtx(t))
	if err != nil {
		t.Fatalf("Next: %v", err)
	}
	if vals := fetchedValues(t, got); !slices.Equal(vals[0], []string{"a"}) {
		t.Fatalf("Next: %v", vals)
	}
	if _, err := c.NewMultiReader(nil).Next(mrCtx(t)); err == nil {
		t.Fatal("Next with no partitions: no error")
	}
}
