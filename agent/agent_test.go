package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/pkg/objfile"
)

// appended is one acknowledged append.
type appended struct {
	base   int64
	values []string
}

// checkDense sorts a partition's appends by base offset and checks that they
// tile [0, end) without gaps or overlaps; it returns end.
func checkDense(t *testing.T, name string, as []appended) int64 {
	t.Helper()
	sort.Slice(as, func(i, j int) bool { return as[i].base < as[j].base })
	var next int64
	for _, x := range as {
		if x.base != next {
			t.Fatalf("%s: append at base %d, want %d (offsets must be dense)", name, x.base, next)
		}
		next += int64(len(x.values))
	}
	return next
}

// checkBatches compares what Read returned with what was appended.
func checkBatches(t *testing.T, name string, got []readBatch, want []appended) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: read %d batches, appended %d", name, len(got), len(want))
	}
	for i := range want {
		if got[i].base != want[i].base || !slices.Equal(got[i].values, want[i].values) {
			t.Fatalf("%s: batch %d is %d %q, want %d %q", name, i, got[i].base, got[i].values, want[i].base, want[i].values)
		}
	}
}

// 1. Concurrent acks=WAL appends get dense offsets; Read returns exactly the
// batches in order; the high watermark follows the WAL for wal topics and
// only the committed end for durable topics.
func TestAppendReadDenseAndHighWatermark(t *testing.T) {
	const wt, dt = "wal-topic", "durable-topic"
	e := newEnv(t, walTopic(wt, 2), durableTopic(dt, 1))
	a := e.open()

	const goroutines, perG = 8, 25
	var mu sync.Mutex
	got := map[int32][]appended{}
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perG {
				part := int32((g + i) % 2)
				n := 1 + i%3
				prefix := fmt.Sprintf("g%d-i%d", g, i)
				resp, err := appendB(context.Background(), a, wt, part, mkBatch(t, prefix, n), v1.Acks_ACKS_WAL)
				if err != nil {
					errs <- fmt.Errorf("append g%d i%d: %w", g, i, err)
					return
				}
				if resp.GetRecordCount() != int32(n) {
					errs <- fmt.Errorf("append g%d i%d: count %d, want %d", g, i, resp.GetRecordCount(), n)
					return
				}
				mu.Lock()
				got[part] = append(got[part], appended{resp.GetBaseOffset(), values(prefix, n)})
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for part := range int32(2) {
		name := fmt.Sprintf("%s/%d", wt, part)
		end := checkDense(t, name, got[part])
		// Read while uploads commit and drop data from the WAL: a mix of
		// WAL and object reads.
		checkBatches(t, name, readAll(t, a, wt, part, 0, end), got[part])
		// The reads are repeatable once everything is in objects.
		waitUntil(t, name+" committed", func() bool { return e.ctl.committedEnd(wt, part) == end })
		checkBatches(t, name+" after commit", readAll(t, a, wt, part, 0, end), got[part])
	}

	// High watermarks, with commits held back.
	release := e.ctl.holdCommits()
	defer release()
	walEnd := e.ctl.committedEnd(wt, 0)
	base := mustAppend(t, a, wt, 0, "held", 2, v1.Acks_ACKS_WAL)
	if base != walEnd {
		t.Fatalf("wal topic: base %d, want %d", base, walEnd)
	}
	resp, err := read(ctxT(t), a, wt, 0, base, 0, 0)
	if err != nil {
		t.Fatalf("Read wal topic: %v", err)
	}
	if resp.GetHighWatermark() != base+2 {
		t.Fatalf("wal topic: hw %d, want the WAL end %d (commits are held)", resp.GetHighWatermark(), base+2)
	}
	if bs := decodeBatches(t, resp.GetBatches()); len(bs) != 1 || !slices.Equal(bs[0].values, values("held", 2)) {
		t.Fatalf("wal topic: read %+v, want the held batch", bs)
	}

	if b := mustAppend(t, a, dt, 0, "dur", 3, v1.Acks_ACKS_WAL); b != 0 {
		t.Fatalf("durable topic: base %d, want 0", b)
	}
	resp, err = read(ctxT(t), a, dt, 0, 0, 0, 0)
	if err != nil {
		t.Fatalf("Read durable topic: %v", err)
	}
	if resp.GetHighWatermark() != 0 || len(resp.GetBatches()) != 0 || resp.GetNextOffset() != 0 {
		t.Fatalf("durable topic before commit: hw %d, %d bytes, next %d; want hw 0 and nothing", resp.GetHighWatermark(), len(resp.GetBatches()), resp.GetNextOffset())
	}
	_, err = read(ctxT(t), a, dt, 0, 1, 0, 0)
	wantCode(t, err, connect.CodeOutOfRange, "read past the durable hw")
	// A short long-poll times out with nothing.
	resp, err = read(ctxT(t), a, dt, 0, 0, 0, 30)
	if err != nil || resp.GetHighWatermark() != 0 || len(resp.GetBatches()) != 0 {
		t.Fatalf("short long-poll: %v, %v; want empty at hw 0", resp, err)
	}
	// A long long-poll returns once the upload committed.
	type result struct {
		resp *v1.ReadResponse
		err  error
	}
	done := make(chan result, 1)
	go func() {
		r, err := read(context.Background(), a, dt, 0, 0, 0, 20_000)
		done <- result{r, err}
	}()
	release()
	r := <-done
	if r.err != nil {
		t.Fatalf("long-poll: %v", r.err)
	}
	if r.resp.GetHighWatermark() != 3 || r.resp.GetNextOffset() != 3 {
		t.Fatalf("long-poll: hw %d next %d, want 3 and 3", r.resp.GetHighWatermark(), r.resp.GetNextOffset())
	}
	if e.ctl.committedEnd(dt, 0) < 3 {
		t.Fatalf("long-poll returned data the controller has not committed")
	}
	if bs := decodeBatches(t, r.resp.GetBatches()); len(bs) != 1 || bs[0].base != 0 || !slices.Equal(bs[0].values, values("dur", 3)) {
		t.Fatalf("long-poll: read %+v", bs)
	}
}

// 2. acks=DURABLE (and the durable topic's default) returns only after the
// controller has the commit.
func TestAppendDurableWaitsForCommit(t *testing.T) {
	const topic = "orders"
	e := newEnv(t, durableTopic(topic, 2))
	a := e.open()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 5 {
				part := int32(g % 2)
				acks := v1.Acks_ACKS_DURABLE
				if i%2 == 1 {
					acks = v1.Acks_ACKS_UNSPECIFIED // the durable topic's default
				}
				resp, err := appendB(context.Background(), a, topic, part, mkBatch(t, fmt.Sprintf("g%d-%d", g, i), 2), acks)
				if err != nil {
					errs <- err
					return
				}
				end := resp.GetBaseOffset() + int64(resp.GetRecordCount())
				if c := e.ctl.committedEnd(topic, part); c < end {
					errs <- fmt.Errorf("durable append of [%d, %d) returned with the controller's committed end at %d", resp.GetBaseOffset(), end, c)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if sum := e.ctl.committedEnd(topic, 0) + e.ctl.committedEnd(topic, 1); sum != 8*5*2 {
		t.Fatalf("committed %d records, want %d", sum, 8*5*2)
	}
}

// 3. One flush uploads one object holding the sections of several partitions.
func TestOneObjectPerFlush(t *testing.T) {
	e := newEnv(t, walTopic("a", 2), durableTopic("b", 1))
	a := e.open(func(c *Config) { c.FlushInterval = time.Hour })
	parts := []partKey{{"a", 0}, {"a", 1}, {"b", 0}}
	for i, k := range parts {
		for j := range i + 1 {
			mustAppend(t, a, k.topic, k.partition, fmt.Sprintf("%s-%d", k, j), 2, v1.Acks_ACKS_WAL)
		}
	}
	if n := e.store.puts.Load(); n != 0 {
		t.Fatalf("%d PUTs before the flush", n)
	}
	a.kickUpload()
	waitUntil(t, "all partitions committed", func() bool {
		for i, k := range parts {
			if e.ctl.committedEnd(k.topic, k.partition) != int64(2*(i+1)) {
				return false
			}
		}
		return true
	})
	if n := e.store.puts.Load(); n != 1 {
		t.Fatalf("%d PUTs for one flush, want 1", n)
	}
	keys := e.store.keys()
	obj, err := e.local.Get(ctxT(t), keys[0], 0, -1)
	if err != nil {
		t.Fatalf("Get object: %v", err)
	}
	secs, err := objfile.ReadIndex(obj)
	if err != nil {
		t.Fatalf("ReadIndex: %v", err)
	}
	if len(secs) != len(parts) {
		t.Fatalf("object has %d sections, want %d: %+v", len(secs), len(parts), secs)
	}
	for i, k := range parts {
		s := secs[i]
		if s.Topic != k.topic || s.Partition != k.partition || s.BaseOffset != 0 || s.EndOffset != int64(2*(i+1)) || s.RecordCount != int64(2*(i+1)) {
			t.Fatalf("section %d: %+v, want %s [0, %d)", i, s, k, 2*(i+1))
		}
		ctlSecs := e.ctl.sections(k.topic, k.partition)
		if len(ctlSecs) != 1 || ctlSecs[0].GetObjectKey() != keys[0] || ctlSecs[0].GetPosition() != s.Position || ctlSecs[0].GetLength() != s.Length {
			t.Fatalf("controller sections of %s: %v, want one at %d+%d of %s", k, ctlSecs, s.Position, s.Length, keys[0])
		}
	}
	if !strings.HasSuffix(keys[0], ".obj") || !strings.Contains(keys[0], a.ID()+"-") {
		t.Fatalf("object key %q does not follow <shard>/<hour>/<agent>-<ulid>.obj", keys[0])
	}
}

// 4. Data the WAL dropped after commit is read from objects, through the cache.
func TestReadFromObjectsAfterWALDropped(t *testing.T) {
	const topic = "events"
	e := newEnv(t, durableTopic(topic, 1))
	a := e.open()
	var want []appended
	var end int64
	for i := range 5 {
		prefix := fmt.Sprintf("b%d", i)
		base := mustAppend(t, a, topic, 0, prefix, 3, v1.Acks_ACKS_DURABLE)
		want = append(want, appended{base, values(prefix, 3)})
		end = base + 3
	}
	waitUntil(t, "the WAL dropped the committed entries", func() bool {
		return len(a.wal.Entries(topic, 0, 0, 1<<20)) == 0
	})
	gets := e.store.gets.Load()
	checkBatches(t, "first read", readAll(t, a, topic, 0, 0, end), want)
	if e.store.gets.Load() == gets {
		t.Fatalf("no GET: the data should have come from the object store")
	}
	gets = e.store.gets.Load()
	checkBatches(t, "second read", readAll(t, a, topic, 0, 0, end), want)
	if n := e.store.gets.Load() - gets; n != 0 {
		t.Fatalf("second read made %d GETs, want 0 (cache)", n)
	}
}

// 5. Data acked to the WAL but never committed survives a restart, keeps
// its offsets, and is committed under the new epoch.
func TestRestartRecoversUncommitted(t *testing.T) {
	const topic = "orders"
	e := newEnv(t, durableTopic(topic, 2))
	a1, err := Open(ctxT(t), e.config())
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	want := map[int32][]appended{}
	committed := map[int32]int64{}
	// Some data is committed before the controller goes away...
	for part := range int32(2) {
		base := mustAppend(t, a1, topic, part, "early", 2, v1.Acks_ACKS_DURABLE)
		want[part] = append(want[part], appended{base, values("early", 2)})
		committed[part] = base + 2
	}
	// ...the rest only reaches the WAL.
	e.ctl.failCommits(connect.NewError(connect.CodeUnavailable, errors.New("injected: controller down")))
	for i := range 10 {
		part := int32(i % 2)
		prefix := fmt.Sprintf("r%d", i)
		base := mustAppend(t, a1, topic, part, prefix, 1+i%3, v1.Acks_ACKS_WAL)
		want[part] = append(want[part], appended{base, values(prefix, 1+i%3)})
	}
	ends := map[int32]int64{}
	for part := range int32(2) {
		ends[part] = checkDense(t, fmt.Sprint(part), want[part])
	}
	epochs := map[int32]int64{0: e.ctl.epoch(topic, 0), 1: e.ctl.epoch(topic, 1)}
	id := a1.ID()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	if err := a1.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	cancel()
	for part := range int32(2) {
		if c := e.ctl.committedEnd(topic, part); c != committed[part] {
			t.Fatalf("partition %d: committed end %d with all commits failing, want %d", part, c, committed[part])
		}
	}

	e.ctl.failCommits(nil)
	a2 := e.open()
	if a2.ID() != id {
		t.Fatalf("restarted agent has id %q, want %q", a2.ID(), id)
	}
	for part := range int32(2) {
		if got := e.ctl.epoch(topic, part); got != epochs[part]+1 {
			t.Fatalf("partition %d: epoch %d after restart, want %d", part, got, epochs[part]+1)
		}
	}
	for part := range int32(2) {
		waitUntil(t, fmt.Sprintf("partition %d committed", part), func() bool { return e.ctl.committedEnd(topic, part) == ends[part] })
		for _, s := range e.ctl.sections(topic, part)[1:] {
			if s.GetEpoch() != epochs[part]+1 {
				t.Fatalf("partition %d: section committed with epoch %d, want %d", part, s.GetEpoch(), epochs[part]+1)
			}
		}
		checkBatches(t, fmt.Sprintf("partition %d after restart", part), readAll(t, a2, topic, part, 0, ends[part]), want[part])
		if base := mustAppend(t, a2, topic, part, "after", 2, v1.Acks_ACKS_DURABLE); base != ends[part] {
			t.Fatalf("partition %d: new append at %d, want %d", part, base, ends[part])
		}
	}
}

// 6. A commit with a stale epoch is fenced: the agent drops the partition,
// durable waiters get Aborted, later appends FailedPrecondition.
func TestFencedCommitDropsPartition(t *testing.T) {
	const topic = "orders"
	e := newEnv(t, durableTopic(topic, 2))
	// No periodic heartbeat: the commit, not a lease renewal, must notice.
	a := e.open(func(c *Config) { c.HeartbeatInterval = time.Hour })
	mustAppend(t, a, topic, 0, "before", 2, v1.Acks_ACKS_DURABLE)
	mustAppend(t, a, topic, 1, "before", 2, v1.Acks_ACKS_DURABLE)

	e.ctl.steal(topic, 0)
	_, err := appendB(ctxT(t), a, topic, 0, mkBatch(t, "fenced", 2), v1.Acks_ACKS_DURABLE)
	wantMaybeApplied(t, err, connect.CodeAborted, "durable append on a fenced partition")
	if e.ctl.fenced.Load() == 0 {
		t.Fatalf("the controller fenced no commit")
	}
	if c := e.ctl.committedEnd(topic, 0); c != 2 {
		t.Fatalf("committed end %d after fencing, want 2", c)
	}
	if a.partition(partKey{topic, 0}) != nil {
		t.Fatalf("the agent still holds the fenced partition")
	}
	_, err = appendB(ctxT(t), a, topic, 0, mkBatch(t, "later", 1), v1.Acks_ACKS_WAL)
	wantRefused(t, err, connect.CodeFailedPrecondition, "append after fencing")
	_, err = read(ctxT(t), a, topic, 0, 0, 0, 0)
	wantCode(t, err, connect.CodeFailedPrecondition, "read after fencing")

	// The other partition is unaffected.
	if base := mustAppend(t, a, topic, 1, "still", 1, v1.Acks_ACKS_DURABLE); base != 2 {
		t.Fatalf("partition 1: base %d, want 2", base)
	}
}

// 7a. Bad requests get clear errors and change nothing.
func TestBadInput(t *testing.T) {
	e := newEnv(t, walTopic("t", 1), &v1.TopicInfo{Name: "small", Partitions: 1, Durability: v1.Durability_DURABILITY_WAL, MaxBatchBytes: 200})
	a := e.open()
	ctx := ctxT(t)
	mustAppend(t, a, "t", 0, "ok", 3, v1.Acks_ACKS_WAL)

	corrupt := mkBatch(t, "bad", 2)
	corrupt[len(corrupt)-3] ^= 0x40
	_, err := appendB(ctx, a, "t", 0, corrupt, v1.Acks_ACKS_WAL)
	wantCode(t, err, connect.CodeInvalidArgument, "corrupt batch")
	_, err = appendB(ctx, a, "t", 0, nil, v1.Acks_ACKS_WAL)
	wantCode(t, err, connect.CodeInvalidArgument, "empty batch")
	_, err = appendB(ctx, a, "t", 0, mkBatch(t, "acks", 1), v1.Acks(42))
	wantCode(t, err, connect.CodeInvalidArgument, "unknown acks")
	big := mkBatch(t, strings.Repeat("x", 300), 1)
	_, err = appendB(ctx, a, "small", 0, big, v1.Acks_ACKS_WAL)
	wantCode(t, err, connect.CodeInvalidArgument, "batch over max_batch_bytes")
	if !strings.Contains(err.Error(), "max_batch_bytes is 200") {
		t.Fatalf("message %q does not name the limit", err)
	}
	if base := mustAppend(t, a, "small", 0, "fits", 1, v1.Acks_ACKS_WAL); base != 0 {
		t.Fatalf("small: base %d after a refused batch, want 0", base)
	}
	_, err = appendB(ctx, a, "t", 7, mkBatch(t, "x", 1), v1.Acks_ACKS_WAL)
	wantRefused(t, err, connect.CodeFailedPrecondition, "unknown partition")
	_, err = appendB(ctx, a, "nope", 0, mkBatch(t, "x", 1), v1.Acks_ACKS_WAL)
	wantRefused(t, err, connect.CodeFailedPrecondition, "unknown topic")
	// Nothing above changed the partition.
	if base := mustAppend(t, a, "t", 0, "next", 1, v1.Acks_ACKS_WAL); base != 3 {
		t.Fatalf("base %d after refused appends, want 3", base)
	}

	// hw is 4 now.
	for _, off := range []int64{-1, 5} {
		_, err = read(ctx, a, "t", 0, off, 0, 0)
		wantCode(t, err, connect.CodeOutOfRange, fmt.Sprintf("read at %d", off))
		if !strings.Contains(err.Error(), "valid offsets are 0 to 4") {
			t.Fatalf("read at %d: message %q does not name the range", off, err)
		}
	}
	for _, mb := range []int32{-1, maxReadBytes + 1} {
		_, err = read(ctx, a, "t", 0, 0, mb, 0)
		wantCode(t, err, connect.CodeInvalidArgument, fmt.Sprintf("max_bytes %d", mb))
	}
	for _, mw := range []int32{-1, int32(maxWait.Milliseconds()) + 1} {
		_, err = read(ctx, a, "t", 0, 0, 0, mw)
		wantCode(t, err, connect.CodeInvalidArgument, fmt.Sprintf("max_wait_ms %d", mw))
	}
	_, err = read(ctx, a, "t", 9, 0, 0, 0)
	wantCode(t, err, connect.CodeFailedPrecondition, "read of an unknown partition")
	// A read at the hw without max_wait returns at once, empty.
	resp, err := read(ctx, a, "t", 0, 4, 0, 0)
	if err != nil || len(resp.GetBatches()) != 0 || resp.GetNextOffset() != 4 || resp.GetHighWatermark() != 4 {
		t.Fatalf("read at hw: %v, %v", resp, err)
	}
}

// flipObjectByte flips one byte, at pos, of a stored object on disk.
func flipObjectByte(t *testing.T, e *testEnv, key string, pos int64) {
	t.Helper()
	path := filepath.Join(e.local.Dir(), filepath.FromSlash(key))
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatalf("open object file: %v", err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, pos); err != nil {
		t.Fatalf("read object file: %v", err)
	}
	b[0] ^= 0x20
	if _, err := f.WriteAt(b, pos); err != nil {
		t.Fatalf("write object file: %v", err)
	}
}

func (c *sectionCache) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ll.Init()
	clear(c.items)
	c.size = 0
}

// 7b. A corrupt object gives DataLoss naming the object; other partitions
// keep working.
func TestCorruptObject(t *testing.T) {
	const topic = "orders"
	e := newEnv(t, durableTopic(topic, 2))
	a := e.open()
	for i := range 3 {
		mustAppend(t, a, topic, 0, fmt.Sprintf("p0-%d", i), 2, v1.Acks_ACKS_DURABLE)
		mustAppend(t, a, topic, 1, fmt.Sprintf("p1-%d", i), 2, v1.Acks_ACKS_DURABLE)
	}
	checkBatches(t, "before", readAll(t, a, topic, 0, 0, 6)[:1], []appended{{0, values("p0-0", 2)}})
	secs := e.ctl.sections(topic, 0)
	sec := secs[0]
	// The last byte of the section is inside the last batch's records,
	// which its CRC covers.
	flipObjectByte(t, e, sec.GetObjectKey(), sec.GetPosition()+sec.GetLength()-1)
	a.cache.clear()

	for range 2 { // a corrupt section is not cached
		_, err := read(ctxT(t), a, topic, 0, sec.GetBaseOffset(), 0, 0)
		wantCode(t, err, connect.CodeDataLoss, "read of a corrupt object")
		if !strings.Contains(err.Error(), sec.GetObjectKey()) {
			t.Fatalf("message %q does not name object %s", err, sec.GetObjectKey())
		}
	}
	// Partition 1 is still served, old data and new.
	var want []appended
	for i := range 3 {
		want = append(want, appended{int64(2 * i), values(fmt.Sprintf("p1-%d", i), 2)})
	}
	checkBatches(t, "partition 1", readAll(t, a, topic, 1, 0, 6), want)
	if base := mustAppend(t, a, topic, 1, "more", 1, v1.Acks_ACKS_DURABLE); base != 6 {
		t.Fatalf("partition 1: base %d, want 6", base)
	}
	// Partition 0 still takes writes.
	if base := mustAppend(t, a, topic, 0, "more", 1, v1.Acks_ACKS_DURABLE); base != 6 {
		t.Fatalf("partition 0: base %d, want 6", base)
	}
}

// 8. Close uploads and commits everything before it returns.
func TestCloseCommitsEverything(t *testing.T) {
	e := newEnv(t, walTopic("w", 2), durableTopic("d", 1))
	a, err := Open(ctxT(t), e.config(func(c *Config) { c.FlushInterval = time.Hour }))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	parts := []partKey{{"d", 0}, {"w", 0}, {"w", 1}}
	ends := map[partKey]int64{}
	for i := range 12 {
		k := parts[i%3]
		base := mustAppend(t, a, k.topic, k.partition, fmt.Sprint(i), 1+i%4, v1.Acks_ACKS_WAL)
		if base != ends[k] {
			t.Fatalf("%s: base %d, want %d", k, base, ends[k])
		}
		ends[k] = base + int64(1+i%4)
	}
	for _, k := range parts {
		if c := e.ctl.committedEnd(k.topic, k.partition); c != 0 {
			t.Fatalf("%s committed %d before Close (flush interval is an hour)", k, c)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for _, k := range parts {
		if c := e.ctl.committedEnd(k.topic, k.partition); c != ends[k] {
			t.Fatalf("%s: committed end %d after Close, want the WAL end %d", k, c, ends[k])
		}
	}
	if n := e.ctl.released.Load(); n != 3 {
		t.Fatalf("Close released %d leases, want all 3 (everything was committed)", n)
	}
	_, err = appendB(ctxT(t), a, "w", 0, mkBatch(t, "late", 1), v1.Acks_ACKS_WAL)
	wantRefused(t, err, connect.CodeUnavailable, "append after Close")
	if err := a.Close(ctx); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// 7c. A batch's base offset is not covered by its CRC: a flipped bit there
// must still be reported as DataLoss, not served as wrong offsets or as an
// empty read.
func TestCorruptObjectBaseOffset(t *testing.T) {
	const topic = "orders"
	e := newEnv(t, durableTopic(topic, 1))
	a := e.open()
	for i := range 3 {
		mustAppend(t, a, topic, 0, fmt.Sprintf("b%d", i), 2, v1.Acks_ACKS_DURABLE)
	}
	secs := e.ctl.sections(topic, 0)
	sec := secs[0]
	// Byte 7 is the low byte of the first batch's base offset.
	flipObjectByte(t, e, sec.GetObjectKey(), sec.GetPosition()+7)
	a.cache.clear()
	resp, err := read(ctxT(t), a, topic, 0, sec.GetBaseOffset(), 0, 0)
	if err == nil {
		t.Fatalf("read of a batch with a corrupt base offset succeeded: next %d, %d bytes", resp.GetNextOffset(), len(resp.GetBatches()))
	}
	wantCode(t, err, connect.CodeDataLoss, "read of a corrupt base offset")
	if !strings.Contains(err.Error(), sec.GetObjectKey()) {
		t.Fatalf("message %q does not name object %s", err, sec.GetObjectKey())
	}
}

// A commit that was applied but whose reply was lost is retried; the retry
// is answered "not contiguous" with the committed end past the section,
// which the agent takes as success: the durable append returns, nothing is
// committed twice, and offsets go on.
func TestCommitReplyLost(t *testing.T) {
	const topic = "orders"
	e := newEnv(t, durableTopic(topic, 1))
	a := e.open()
	e.ctl.loseNextReplies(1)
	if base := mustAppend(t, a, topic, 0, "lost", 2, v1.Acks_ACKS_DURABLE); base != 0 {
		t.Fatalf("base %d, want 0", base)
	}
	if base := mustAppend(t, a, topic, 0, "next", 3, v1.Acks_ACKS_DURABLE); base != 2 {
		t.Fatalf("base %d, want 2", base)
	}
	secs := e.ctl.sections(topic, 0)
	if len(secs) != 2 || secs[0].GetEndOffset() != 2 || secs[1].GetBaseOffset() != 2 || secs[1].GetEndOffset() != 5 {
		t.Fatalf("sections %v, want [0, 2) and [2, 5)", secs)
	}
	checkBatches(t, "read", readAll(t, a, topic, 0, 0, 5), []appended{{0, values("lost", 2)}, {2, values("next", 3)}})
}

// An agent whose lease is not renewed stops taking writes (before the
// controller could hand the partition to someone else) with a retryable
// Unavailable.
func TestLeaseNotRenewedRefusesWrites(t *testing.T) {
	const topic = "orders"
	e := newEnv(t, durableTopic(topic, 1))
	e.ctl.leaseMs = 1000 // shorter than the safety margin: never writable
	a := e.open(func(c *Config) { c.LeaseSafetyMargin = 2 * time.Second })
	_, err := appendB(ctxT(t), a, topic, 0, mkBatch(t, "x", 1), v1.Acks_ACKS_WAL)
	wantRefused(t, err, connect.CodeUnavailable, "append with a lapsed lease")
	if got := a.wal.Entries(topic, 0, 0, 1<<20); len(got) != 0 {
		t.Fatalf("a refused append reached the WAL: %v", got)
	}
}

// A WAL frame that no longer reads back (its bytes damaged on disk after the
// fsync) costs only its own partition: the others keep uploading, and the
// damaged one is released, not stuck holding every upload back.
func TestCorruptWALFrameDropsOnlyItsPartition(t *testing.T) {
	e := newEnv(t, walTopic("w", 2))
	a := e.open(func(c *Config) { c.FlushInterval = time.Hour; c.HeartbeatInterval = time.Hour })
	mustAppend(t, a, "w", 0, "doomed", 2, v1.Acks_ACKS_WAL)
	mustAppend(t, a, "w", 1, "fine", 2, v1.Acks_ACKS_WAL)

	ents := a.wal.Entries("w", 0, 0, 1<<20)
	if len(ents) != 1 {
		t.Fatalf("w/0 has %d WAL entries, want 1", len(ents))
	}
	seg := filepath.Join(e.dir, "wal", "segments", fmt.Sprintf("%020d.wal", ents[0].Pos.Segment))
	f, err := os.OpenFile(seg, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	at := ents[0].Pos.Offset + int64(ents[0].Pos.Length) - 1 // inside the frame's data
	b := []byte{0}
	if _, err := f.ReadAt(b, at); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, at); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	a.kickUpload()
	waitUntil(t, "w/1 committed and w/0 given up", func() bool {
		return e.ctl.committedEnd("w", 1) == 2 && a.partition(partKey{"w", 0}) == nil
	})
	if c := e.ctl.committedEnd("w", 0); c != 0 {
		t.Fatalf("w/0 committed end %d, want 0: its only frame is unreadable", c)
	}
	if n := e.ctl.released.Load(); n != 1 {
		t.Fatalf("%d leases released, want 1 (w/0 only)", n)
	}
	if a.partition(partKey{"w", 1}) == nil {
		t.Fatal("w/1 was dropped too")
	}
	if base := mustAppend(t, a, "w", 1, "after", 1, v1.Acks_ACKS_WAL); base != 2 {
		t.Fatalf("w/1: base %d after the drop, want 2", base)
	}
}
