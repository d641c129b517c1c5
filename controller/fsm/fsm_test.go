package fsm

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"testing"

	"github.com/hashicorp/raft"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type applier struct {
	t     *testing.T
	f     *FSM
	index uint64
}

func (a *applier) apply(mt MessageType, cmd any) any {
	a.t.Helper()
	data, err := Encode(mt, cmd)
	if err != nil {
		a.t.Fatal(err)
	}
	a.index++
	return a.f.Apply(&raft.Log{Index: a.index, Type: raft.LogCommand, Data: data})
}

func newApplier(t *testing.T) *applier { return &applier{t: t, f: New()} }

func (a *applier) partition(topic string, p int32) Partition {
	var out Partition
	a.f.Read(func(s *State) { out = *s.partition(topic, p) })
	return out
}

func TestCreateDeleteTopic(t *testing.T) {
	a := newApplier(t)
	if r := a.apply(CreateTopicType, CreateTopic{Name: "orders", Config: TopicConfig{Partitions: 3}}); r != nil {
		t.Fatalf("create: %v", r)
	}
	r := a.apply(CreateTopicType, CreateTopic{Name: "orders", Config: TopicConfig{Partitions: 5}})
	if err, _ := r.(error); !errors.Is(err, ErrTopicExists) {
		t.Fatalf("second create = %v, want ErrTopicExists", r)
	}
	a.f.Read(func(s *State) {
		if n := len(s.Topics["orders"].Partitions); n != 3 {
			t.Fatalf("partitions = %d, want 3 (the failed create must change nothing)", n)
		}
	})
	if r := a.apply(DeleteTopicType, DeleteTopic{Name: "orders"}); r != nil {
		t.Fatalf("delete: %v", r)
	}
	if err, _ := a.apply(DeleteTopicType, DeleteTopic{Name: "orders"}).(error); !errors.Is(err, ErrTopicNotFound) {
		t.Fatalf("second delete = %v, want ErrTopicNotFound", err)
	}
}

func TestLeaseEpochsAndFencing(t *testing.T) {
	a := newApplier(t)
	a.apply(CreateTopicType, CreateTopic{Name: "t", Config: TopicConfig{Partitions: 1}})
	ref := []PartitionRef{{Topic: "t", Partition: 0}}
	grant := func(agent, inc string, now int64) {
		a.apply(GrantLeasesType, GrantLeases{AgentID: agent, Incarnation: inc, NowMs: now, ExpiresMs: now + 10_000, Partitions: ref})
	}
	grant("a", "1", 0)
	if p := a.partition("t", 0); p.Holder != "a" || p.Epoch != 1 {
		t.Fatalf("after first grant: %+v", p)
	}
	grant("a", "1", 5_000) // renewal keeps the epoch
	if p := a.partition("t", 0); p.Epoch != 1 || p.ExpiresMs != 15_000 {
		t.Fatalf("after renewal: %+v", p)
	}
	grant("b", "9", 6_000) // a's lease is valid: b gets nothing
	if p := a.partition("t", 0); p.Holder != "a" {
		t.Fatalf("b stole a valid lease: %+v", p)
	}
	commit := func(agent string, epoch, base, end int64) SectionResult {
		r := a.apply(CommitObjectType, CommitObject{AgentID: agent, Key: "k", Sections: []CommitSection{{
			Topic: "t", Partition: 0, Section: Section{Epoch: epoch, BaseOffset: base, EndOffset: end}}}})
		return r.([]SectionResult)[0]
	}
	if r := commit("a", 1, 0, 10); !r.Committed || r.CommittedEnd != 10 {
		t.Fatalf("commit: %+v", r)
	}
	if r := commit("a", 1, 5, 20); r.Committed || r.Fenced || r.CommittedEnd != 10 {
		t.Fatalf("non-contiguous commit accepted: %+v", r)
	}
	grant("a", "2", 7_000) // the holder restarted: new epoch
	if p := a.partition("t", 0); p.Epoch != 2 {
		t.Fatalf("restart did not bump the epoch: %+v", p)
	}
	if r := commit("a", 1, 10, 20); r.Committed || !r.Fenced {
		t.Fatalf("stale-epoch commit accepted: %+v", r)
	}
	grant("b", "9", 100_000) // a's lease lapsed: b takes over
	if p := a.partition("t", 0); p.Holder != "b" || p.Epoch != 3 {
		t.Fatalf("takeover: %+v", p)
	}
	if r := commit("a", 2, 10, 20); !r.Fenced {
		t.Fatalf("old holder's commit accepted: %+v", r)
	}
	if r := commit("b", 3, 10, 20); !r.Committed || r.CommittedEnd != 20 {
		t.Fatalf("new holder's commit: %+v", r)
	}
	a.apply(ReleaseLeasesType, ReleaseLeases{AgentID: "b", Incarnation: "9", Partitions: ref})
	if p := a.partition("t", 0); p.Holder != "" {
		t.Fatalf("release: %+v", p)
	}
	p := a.partition("t", 0)
	if got := p.Lookup(12, 10); len(got) != 1 || got[0].BaseOffset != 10 {
		t.Fatalf("lookup(12) = %+v", got)
	}
	if got := p.Lookup(20, 10); len(got) != 0 {
		t.Fatalf("lookup(20) = %+v", got)
	}
}

type sink struct {
	bytes.Buffer
	cancelled bool
}

func (s *sink) ID() string    { return "test" }
func (s *sink) Cancel() error { s.cancelled = true; return nil }
func (s *sink) Close() error  { return nil }

func TestSnapshotRestoreRoundTrip(t *testing.T) {
	a := newApplier(t)
	a.apply(CreateTopicType, CreateTopic{Name: "x", Config: TopicConfig{Partitions: 2, Durability: 2, MaxRecordBytes: 100}, NowMs: 42})
	a.apply(GrantLeasesType, GrantLeases{AgentID: "a", Incarnation: "1", Address: "127.0.0.1:1", ExpiresMs: 99,
		Partitions: []PartitionRef{{Topic: "x", Partition: 0}, {Topic: "x", Partition: 1}}})
	a.apply(CommitObjectType, CommitObject{AgentID: "a", Key: "obj1", Sections: []CommitSection{
		{Topic: "x", Partition: 1, Section: Section{Epoch: 1, BaseOffset: 0, EndOffset: 7, Position: 10, Length: 300, MaxTimestampMs: 5}}}})

	snap, err := a.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var s sink
	if err := snap.Persist(&s); err != nil {
		t.Fatal(err)
	}
	snap.Release()

	restored := New()
	if err := restored.Restore(io.NopCloser(bytes.NewReader(s.Bytes()))); err != nil {
		t.Fatal(err)
	}
	var want, got *State
	a.f.Read(func(st *State) { want = st })
	restored.Read(func(st *State) { got = st })
	if !reflect.DeepEqual(want, got) {
		t.Fatalf("restored state differs:\nwant %+v\ngot  %+v", want, got)
	}
	if err := restored.Restore(io.NopCloser(bytes.NewReader([]byte("{not json")))); err == nil {
		t.Fatal("restore of garbage succeeded")
	}
}

func TestUnknownTypePanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("unknown message type did not panic")
		}
	}()
	New().Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: []byte{200, '{', '}'}})
}
