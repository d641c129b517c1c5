package wal

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.etcd.io/bbolt"
)

// logRecorder is a slog handler's destination that tests can search.
type logRecorder struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (r *logRecorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.buf.Write(p)
}

func (r *logRecorder) logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(r, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// records returns the logged records whose message is msg.
func (r *logRecorder) records(t *testing.T, msg string) []map[string]any {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []map[string]any
	for _, line := range bytes.Split(r.buf.Bytes(), []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

const migratedMsg = "migrated the WAL index from per-partition buckets to the position-keyed layout"

// walState is what a WAL exposes: its partitions and their entries.
type walState struct {
	parts   []PartitionState
	entries map[int32][]IndexEntry
}

func stateOf(w *WAL) walState {
	st := walState{parts: w.Partitions(), entries: make(map[int32][]IndexEntry)}
	for _, p := range st.parts {
		st.entries[p.Partition] = w.Entries(p.Topic, p.Partition, 0, 1<<40)
	}
	return st
}

func checkState(t *testing.T, w *WAL, want walState) {
	t.Helper()
	got := stateOf(w)
	if len(got.parts) != len(want.parts) {
		t.Fatalf("partitions %+v, want %+v", got.parts, want.parts)
	}
	for i := range want.parts {
		if got.parts[i] != want.parts[i] {
			t.Fatalf("partitions %+v, want %+v", got.parts, want.parts)
		}
	}
	for part, es := range want.entries {
		g := got.entries[part]
		if len(g) != len(es) {
			t.Fatalf("partition %d: %d entries, want %d", part, len(g), len(es))
		}
		for i := range es {
			if g[i] != es[i] {
				t.Fatalf("partition %d entry %d: %+v, want %+v", part, i, g[i], es[i])
			}
			if _, err := w.Read(g[i].Pos); err != nil {
				t.Fatalf("partition %d entry %d: %v", part, i, err)
			}
		}
	}
}

// migrationScenario runs a WAL through every kind of index record and
// closes it: partition 0 with a lagging index (its last entries only in the
// segments), 1 partly committed, 2 fully committed, 3 forgotten then
// appended to afresh. It returns the state the WAL had.
func migrationScenario(t *testing.T, dir string) walState {
	t.Helper()
	w := openT(t, Options{Dir: dir, SegmentBytes: 4 << 10, NoSync: true, IndexInterval: time.Hour})
	for part := int32(0); part < 4; part++ {
		appendN(t, w, part, 0, 30)
	}
	if err := w.SetCommittedMany([]CommittedMark{{testTopic, 1, 12}, {testTopic, 2, 30}}); err != nil {
		t.Fatal(err)
	}
	if err := w.Forget(testTopic, 3); err != nil {
		t.Fatal(err)
	}
	appendN(t, w, 3, 100, 5)
	if err := w.persistIndex(); err != nil {
		t.Fatal(err)
	}
	w.skipPersist.Store(true)
	appendN(t, w, 0, 30, 10)
	want := stateOf(w)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return want
}

// The per-partition layout, as its writers stored it (copied from the code
// before the position-keyed layout).

func oldPartBucket(tx *bbolt.Tx, k partKey) (*bbolt.Bucket, error) {
	parts, err := tx.CreateBucketIfNotExists(bktParts)
	if err != nil {
		return nil, err
	}
	return parts.CreateBucketIfNotExists(encodePartKey(k))
}

func oldEncodeEntryValue(e IndexEntry) []byte {
	b := make([]byte, 0, oldEntryValueLen)
	b = binary.BigEndian.AppendUint64(b, e.Pos.Segment)
	b = binary.BigEndian.AppendUint64(b, uint64(e.Pos.Offset))
	b = binary.BigEndian.AppendUint32(b, uint32(e.Pos.Length))
	b = binary.BigEndian.AppendUint64(b, uint64(e.EndOffset))
	return binary.BigEndian.AppendUint64(b, uint64(e.MaxTimestampMs))
}

// toOldLayout rewrites the closed WAL's index in the per-partition layout,
// holding what the old writers would have held: the marks, the checkpoint,
// and the entries above the committed and after the forgotten marks.
func toOldLayout(t *testing.T, dir string, extra func(tx *bbolt.Tx) error) {
	t.Helper()
	db, err := bbolt.Open(filepath.Join(dir, "index.db"), 0o644, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bbolt.Tx) error {
		ckpt, parts, err := loadIndex(tx, func(err error) { t.Errorf("unreadable record: %v", err) })
		if err != nil {
			return err
		}
		for _, name := range [][]byte{bktEntries, bktCommitted, bktForgot} {
			if err := tx.DeleteBucket(name); err != nil {
				return err
			}
		}
		mb := tx.Bucket(bktMeta)
		if err := mb.Delete(keyCheckpoint); err != nil {
			return err
		}
		if err := mb.Put(keyOldCkpt, encodePos(ckpt)); err != nil {
			return err
		}
		for _, sp := range parts {
			pb, err := oldPartBucket(tx, sp.key)
			if err != nil {
				return err
			}
			if sp.hasCommitted {
				if err := pb.Put(keyOldCommitted, u64Key(uint64(sp.committed))); err != nil {
					return err
				}
			}
			if sp.forgot != (Pos{}) {
				if err := pb.Put(keyOldForgot, encodePos(sp.forgot)); err != nil {
					return err
				}
			}
			for _, e := range sp.entries {
				if e.Pos.less(sp.forgot) || (sp.hasCommitted && e.EndOffset <= sp.committed) {
					continue
				}
				eb, err := pb.CreateBucketIfNotExists(bktOldEntries)
				if err != nil {
					return err
				}
				if err := eb.Put(u64Key(uint64(e.BaseOffset)), oldEncodeEntryValue(e)); err != nil {
					return err
				}
			}
		}
		if extra != nil {
			return extra(tx)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// viewIndex runs fn on the closed WAL's index.
func viewIndex(t *testing.T, dir string, fn func(tx *bbolt.Tx) error) {
	t.Helper()
	db, err := bbolt.Open(filepath.Join(dir, "index.db"), 0o644, &bbolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.View(fn); err != nil {
		t.Fatal(err)
	}
}

func TestMigrateFromPerPartitionBuckets(t *testing.T) {
	dir := t.TempDir()
	want := migrationScenario(t, dir)
	toOldLayout(t, dir, nil)
	var oldEntries int
	viewIndex(t, dir, func(tx *bbolt.Tx) error {
		if tx.Bucket(bktEntries) != nil || tx.Bucket(bktCommitted) != nil || tx.Bucket(bktForgot) != nil {
			t.Fatal("old layout still has current buckets")
		}
		return tx.Bucket(bktParts).ForEachBucket(func(name []byte) error {
			if eb := tx.Bucket(bktParts).Bucket(name).Bucket(bktOldEntries); eb != nil {
				oldEntries += eb.Stats().KeyN
			}
			return nil
		})
	})
	if oldEntries == 0 {
		t.Fatal("the old layout holds no entries: the test would not test their migration")
	}

	var logs logRecorder
	w := openT(t, Options{Dir: dir, SegmentBytes: 4 << 10, NoSync: true, Logger: logs.logger()})
	checkState(t, w, want)
	checkPartition(t, w, 0, 0, 40)
	checkPartition(t, w, 1, 12, 30)
	recs := logs.records(t, migratedMsg)
	if len(recs) != 1 {
		t.Fatalf("%d migration log records, want 1", len(recs))
	}
	if r := recs[0]; r["level"] != "INFO" || r["partitions"] != 4.0 || r["entries"] != float64(oldEntries) ||
		r["committed_marks"] != 2.0 || r["forgotten_marks"] != 1.0 || r["unreadable_entries"] != 0.0 {
		t.Fatalf("migration log record %v (want 4 partitions, %d entries, 2 committed, 1 forgotten)", r, oldEntries)
	}
	// The migrated marks still hold: appends continue from them.
	appendN(t, w, 1, 30, 2)
	checkPartition(t, w, 1, 12, 32)
	want = stateOf(w)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	viewIndex(t, dir, func(tx *bbolt.Tx) error {
		if tx.Bucket(bktParts) != nil {
			t.Error("parts bucket left after migration")
		}
		if tx.Bucket(bktMeta).Get(keyOldCkpt) != nil {
			t.Error("meta/ckpt left after migration")
		}
		return nil
	})

	var logs2 logRecorder
	w2 := openT(t, Options{Dir: dir, SegmentBytes: 4 << 10, NoSync: true, Logger: logs2.logger()})
	checkState(t, w2, want)
	if n := len(logs2.records(t, migratedMsg)); n != 0 {
		t.Fatalf("second Open migrated again (%d log records)", n)
	}
}

// An unreadable old entry cannot be migrated: it is dropped, and recovery
// rescans every segment, as it does for unreadable records in any layout.
// The rescan finds the frames again, and the migrated marks filter them.
func TestMigrateUnreadableEntryRescans(t *testing.T) {
	dir := t.TempDir()
	want := migrationScenario(t, dir)
	toOldLayout(t, dir, func(tx *bbolt.Tx) error {
		eb := tx.Bucket(bktParts).Bucket(encodePartKey(partKey{testTopic, 0})).Bucket(bktOldEntries)
		return eb.Put([]byte{1, 2, 3}, []byte("not an entry"))
	})
	var logs logRecorder
	w := openT(t, Options{Dir: dir, SegmentBytes: 4 << 10, NoSync: true, Logger: logs.logger()})
	checkState(t, w, want)
	recs := logs.records(t, migratedMsg)
	if len(recs) != 1 || recs[0]["unreadable_entries"] != 1.0 {
		t.Fatalf("migration log records %v, want one with 1 unreadable entry", recs)
	}
	if n := len(logs.records(t, "skipping unreadable WAL index record while migrating the index; all segments will be rescanned")); n != 1 {
		t.Fatalf("%d error records for the unreadable entry, want 1", n)
	}
}

// A parts bucket next to the current buckets was written by an older binary
// after a newer one: it is the current state, the other buckets are stale.
func TestMigrateReplacesStaleCurrentLayout(t *testing.T) {
	dir := t.TempDir()
	want := migrationScenario(t, dir)
	toOldLayout(t, dir, func(tx *bbolt.Tx) error {
		ix, err := openIndexTx(tx)
		if err != nil {
			return err
		}
		stale := IndexEntry{Topic: testTopic, Partition: 9, BaseOffset: 0, EndOffset: 1, Pos: Pos{Segment: 1, Offset: 0, Length: 60}}
		if err := ix.putEntry(stale); err != nil {
			return err
		}
		if err := ix.putCommitted(partKey{testTopic, 8}, 50); err != nil {
			return err
		}
		return tx.Bucket(bktMeta).Put(keyCheckpoint, encodePos(Pos{Segment: 1 << 40}))
	})
	w := openT(t, Options{Dir: dir, SegmentBytes: 4 << 10, NoSync: true})
	checkState(t, w, want)
}
