package agent

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/pkg/objstore"
	"github.com/streamhouse/streamhouse/pkg/rpcerr"
)

// One request with good and bad entries: each bad one gets its own error
// (bad CRC, over max_batch_bytes, a partition the agent does not hold), the
// good ones are written with dense offsets, and one WAL group takes them.
func TestAppendEntriesMixedGoodAndBad(t *testing.T) {
	e := newEnv(t, walTopic("t", 4), &v1.TopicInfo{Name: "small", Partitions: 1, Durability: v1.Durability_DURABILITY_WAL, MaxBatchBytes: 200})
	a := e.open()
	ctx := ctxT(t)
	mustAppend(t, a, "t", 1, "before", 2, v1.Acks_ACKS_WAL)

	corrupt := mkBatch(t, "bad", 2)
	corrupt[len(corrupt)-3] ^= 0x40
	entries := []*v1.AppendEntry{
		{Topic: "t", Partition: 0, Batch: mkBatch(t, "p0", 3)},
		{Topic: "t", Partition: 1, Batch: mkBatch(t, "p1", 2)},
		{Topic: "t", Partition: 2, Batch: corrupt},
		{Topic: "small", Partition: 0, Batch: mkBatch(t, strings.Repeat("x", 300), 1)},
		{Topic: "t", Partition: 9, Batch: mkBatch(t, "nope", 1)},
		{Topic: "t", Partition: 3, Batch: mkBatch(t, "p3", 1)},
	}
	groups := a.wal.Stats().Groups
	resp, err := a.Handler().Append(ctx, connect.NewRequest(&v1.AppendRequest{Entries: entries, Acks: v1.Acks_ACKS_WAL}))
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	res := resp.Msg.GetResults()
	if len(res) != len(entries) {
		t.Fatalf("%d results for %d entries", len(res), len(entries))
	}
	for i, want := range []struct {
		base, count int64
		code        connect.Code
		notApplied  bool
	}{
		{0, 3, 0, false},
		{2, 2, 0, false},
		{0, 0, connect.CodeInvalidArgument, false},
		{0, 0, connect.CodeInvalidArgument, false},
		{0, 0, connect.CodeFailedPrecondition, true},
		{0, 1, 0, false},
	} {
		r := res[i]
		if want.code == 0 {
			if r.GetError() != nil || r.GetBaseOffset() != want.base || int64(r.GetRecordCount()) != want.count {
				t.Errorf("entry %d: %v, want base %d count %d", i, r, want.base, want.count)
			}
			continue
		}
		ce := rpcerr.FromEntry(r.GetError())
		if ce == nil || ce.Code() != want.code || rpcerr.IsNotApplied(ce) != want.notApplied {
			t.Errorf("entry %d: error %v, want %v (not applied %v)", i, r.GetError(), want.code, want.notApplied)
		}
	}
	if !strings.Contains(res[3].GetError().GetMessage(), "max_batch_bytes is 200") {
		t.Errorf("oversized entry's message %q does not name the limit", res[3].GetError().GetMessage())
	}
	if g := a.wal.Stats().Groups - groups; g != 1 {
		t.Errorf("the request's three good entries took %d WAL groups, want 1", g)
	}
	// The refused entries changed nothing.
	if base := mustAppend(t, a, "t", 2, "after", 1, v1.Acks_ACKS_WAL); base != 0 {
		t.Errorf("t/2: base %d after a refused entry, want 0", base)
	}
}

// A request is refused whole when it is malformed: no entries, a partition
// twice, unknown acks.
func TestAppendEntriesMalformed(t *testing.T) {
	e := newEnv(t, walTopic("t", 2))
	a := e.open()
	ctx := ctxT(t)
	for name, req := range map[string]*v1.AppendRequest{
		"no entries": {},
		"twice": {Entries: []*v1.AppendEntry{
			{Topic: "t", Partition: 0, Batch: mkBatch(t, "a", 1)}, {Topic: "t", Partition: 0, Batch: mkBatch(t, "b", 1)}}},
		"unknown acks": {Acks: v1.Acks(9), Entries: []*v1.AppendEntry{{Topic: "t", Partition: 0, Batch: mkBatch(t, "a", 1)}}},
	} {
		_, err := a.Handler().Append(ctx, connect.NewRequest(req))
		wantCode(t, err, connect.CodeInvalidArgument, name)
	}
	if base := mustAppend(t, a, "t", 0, "ok", 1, v1.Acks_ACKS_WAL); base != 0 {
		t.Errorf("base %d after refused requests, want 0", base)
	}
}

// Past MaxInFlightBytes a request is refused whole, not applied, with a
// Retry-After; once the held request is answered the next one is admitted.
func TestAppendInFlightLimit(t *testing.T) {
	e := newEnv(t, durableTopic("d", 1), walTopic("w", 1))
	// A long flush interval holds the durable append in flight.
	a := e.open(func(c *Config) { c.MaxInFlightBytes = 1; c.FlushInterval = time.Hour })
	ctx := ctxT(t)
	held := make(chan error, 1)
	go func() {
		_, err := appendB(ctx, a, "d", 0, mkBatch(t, "held", 1), v1.Acks_ACKS_DURABLE)
		held <- err
	}()
	waitUntil(t, "the durable append is in flight", func() bool { return a.inflight.Held() > 0 })
	_, err := appendB(ctx, a, "w", 0, mkBatch(t, "refused", 1), v1.Acks_ACKS_WAL)
	wantRefused(t, err, connect.CodeResourceExhausted, "append past the in-flight limit")
	if rpcerr.RetryAfter(err) < time.Second {
		t.Errorf("refusal %v has Retry-After %v, want at least 1s", err, rpcerr.RetryAfter(err))
	}
	a.kickUpload()
	if err := <-held; err != nil {
		t.Fatalf("held durable append: %v", err)
	}
	if base := mustAppend(t, a, "w", 0, "admitted", 1, v1.Acks_ACKS_WAL); base != 0 {
		t.Errorf("base %d, want 0", base)
	}
}

// A durable entry that cannot be committed (the store refuses every PUT) is
// answered at DurableAckTimeout, as an outcome the caller cannot know, not
// held for as long as the store is down.
func TestDurableAckTimeout(t *testing.T) {
	e := newEnv(t, durableTopic("d", 1))
	store := &failingStore{Store: e.store}
	store.failPuts.Store(true)
	a := e.open(func(c *Config) { c.Store, c.NoGuard, c.DurableAckTimeout = store, true, 300*time.Millisecond })
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := appendB(ctx, a, "d", 0, mkBatch(t, "stuck", 1), v1.Acks_ACKS_DURABLE)
	wantMaybeApplied(t, err, connect.CodeDeadlineExceeded, "durable append past its ack timeout")
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("answered after %v, want about the 300ms timeout", el)
	}
	store.failPuts.Store(false) // so Close can upload
}

// failingStore refuses every PUT while failPuts is set.
type failingStore struct {
	objstore.Store
	failPuts atomic.Bool
}

func (s *failingStore) PutIfAbsent(ctx context.Context, key string, data []byte) error {
	if s.failPuts.Load() {
		return errors.New("injected PUT failure")
	}
	return s.Store.PutIfAbsent(ctx, key, data)
}
