package wal

import (
	"encoding/binary"
	"path/filepath"
	"testing"
	"time"

	"go.etcd.io/bbolt"
)

// pagesWritten returns how many pages bbolt has allocated for dirty pages
// since the WAL opened.
func pagesWritten(w *WAL) int64 {
	st := w.db.Stats()
	return st.TxStats.GetPageCount()
}

// An index transaction writes pages in proportion to the records it
// changes: one entry in each of 2,000 partitions, or a committed mark for
// each, fits in a few dozen pages. A bucket per partition wrote a page or
// more per partition (2,000+).
func TestIndexWritesFollowRecordsNotPartitions(t *testing.T) {
	const parts, retained = 2000, 8
	w := openT(t, Options{Dir: t.TempDir(), NoSync: true, IndexInterval: time.Hour})
	var next int64
	appendAll := func() {
		es := make([]Entry, parts)
		for i := range es {
			es[i] = Entry{Topic: testTopic, Partition: int32(i), BaseOffset: next, EndOffset: next + 1, Data: []byte("x")}
		}
		for _, p := range w.AppendAll(es) {
			if _, err := p.Wait(ctxT(t)); err != nil {
				t.Fatal(err)
			}
		}
		next++
	}
	for range retained {
		appendAll()
		if err := w.persistIndex(); err != nil {
			t.Fatal(err)
		}
	}
	// 2,000 entries of about 60 bytes each fill some 30 pages.
	const maxPages = 100
	appendAll()
	before := pagesWritten(w)
	if err := w.persistIndex(); err != nil {
		t.Fatal(err)
	}
	if n := pagesWritten(w) - before; n > maxPages {
		t.Errorf("persistIndex of one entry in each of %d partitions wrote %d pages, want at most %d", parts, n, maxPages)
	}
	marks := make([]CommittedMark, parts)
	for i := range marks {
		marks[i] = CommittedMark{Topic: testTopic, Partition: int32(i), End: next - retained}
	}
	before = pagesWritten(w)
	if err := w.SetCommittedMany(marks); err != nil {
		t.Fatal(err)
	}
	if n := pagesWritten(w) - before; n > maxPages {
		t.Errorf("SetCommittedMany of %d partitions wrote %d pages, want at most %d", parts, n, maxPages)
	}
	for _, i := range []int32{0, parts / 2, parts - 1} {
		if es := w.Entries(testTopic, i, 0, 1<<40); len(es) != retained || es[0].BaseOffset != next-retained {
			t.Fatalf("partition %d: entries %+v", i, es)
		}
	}
}

// segmentBuckets returns the segments that have an entries bucket in the
// closed WAL's index.
func segmentBuckets(t *testing.T, dir string) []uint64 {
	t.Helper()
	var out []uint64
	viewIndex(t, dir, func(tx *bbolt.Tx) error {
		eb := tx.Bucket(bktEntries)
		if eb == nil {
			return nil
		}
		return eb.ForEachBucket(func(name []byte) error {
			out = append(out, binary.BigEndian.Uint64(name))
			return nil
		})
	})
	return out
}

// Committed entries stay in the index until their segment is deleted, and
// then leave with it; a crash in between is not a lost frame.
func TestCommittedEntriesLeaveWithTheirSegment(t *testing.T) {
	const droppedMsg = "dropped WAL index entries whose frames no longer exist"
	for _, crash := range []bool{false, true} {
		dir := t.TempDir()
		w := openT(t, Options{Dir: dir, SegmentBytes: 4 << 10, NoSync: true, IndexInterval: time.Hour})
		pos := appendN(t, w, 0, 0, 40)
		appendN(t, w, 1, 0, 1) // keeps the active segment alive
		if err := w.persistIndex(); err != nil {
			t.Fatal(err)
		}
		if crash {
			// The index misses the deletion of the committed segments'
			// entries, as after a crash right after SetCommitted.
			w.skipPersist.Store(true)
		}
		if err := w.SetCommitted(testTopic, 0, 40); err != nil {
			t.Fatal(err)
		}
		if fileExists(segPath(dir, pos[0])) {
			t.Fatal("committed sealed segment not deleted")
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		for _, seq := range segmentBuckets(t, dir) {
			if !crash && !fileExists(segPath(dir, Pos{Segment: seq})) {
				t.Errorf("index holds entries of deleted segment %d", seq)
			}
		}
		var logs logRecorder
		w2 := openT(t, Options{Dir: dir, SegmentBytes: 4 << 10, NoSync: true, Logger: logs.logger()})
		ps := w2.Partitions()
		if len(ps) != 2 || ps[0] != (PartitionState{Topic: testTopic, Partition: 0, FirstOffset: 40, EndOffset: 40, CommittedEnd: 40}) {
			t.Fatalf("crash=%v: partitions %+v", crash, ps)
		}
		checkPartition(t, w2, 1, 0, 1)
		if n := len(logs.records(t, droppedMsg)); n != 0 {
			t.Errorf("crash=%v: recovery reported committed entries of deleted segments as lost", crash)
		}
		if err := w2.Close(); err != nil {
			t.Fatal(err)
		}
		for _, seq := range segmentBuckets(t, dir) {
			if !fileExists(segPath(dir, Pos{Segment: seq})) {
				t.Errorf("crash=%v: index holds entries of deleted segment %d after recovery", crash, seq)
			}
		}
	}
}

// A frame superseded by a shorter one stays superseded after the shorter
// one is committed: its entry, whose end is above the committed mark, must
// not come back on recovery.
func TestSupersededEntryStaysDeletedAfterCommit(t *testing.T) {
	for _, lag := range []bool{false, true} {
		dir := t.TempDir()
		w := openT(t, Options{Dir: dir, NoSync: true, IndexInterval: time.Hour})
		wait := func(e Entry) {
			if _, err := w.Append(e).Wait(ctxT(t)); err != nil {
				t.Fatal(err)
			}
		}
		wait(Entry{Topic: testTopic, Partition: 0, BaseOffset: 0, EndOffset: 10, Data: []byte("first write of 0-9")})
		if err := w.persistIndex(); err != nil {
			t.Fatal(err)
		}
		if lag {
			w.skipPersist.Store(true)
		}
		wait(Entry{Topic: testTopic, Partition: 0, BaseOffset: 0, EndOffset: 6, Data: []byte("second write of 0-5")})
		if err := w.persistIndex(); err != nil {
			t.Fatal(err)
		}
		if err := w.SetCommitted(testTopic, 0, 6); err != nil {
			t.Fatal(err)
		}
		want := PartitionState{Topic: testTopic, Partition: 0, FirstOffset: 6, EndOffset: 6, CommittedEnd: 6}
		check := func(w *WAL) {
			t.Helper()
			if ps := w.Partitions(); len(ps) != 1 || ps[0] != want {
				t.Fatalf("lag=%v: partitions %+v, want %+v", lag, ps, want)
			}
			if es := w.Entries(testTopic, 0, 0, 1<<40); len(es) != 0 {
				t.Fatalf("lag=%v: entries %+v", lag, es)
			}
		}
		check(w)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		w2 := openT(t, Options{Dir: dir, NoSync: true})
		check(w2)
		if err := w2.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// Entries of a forgotten partition stay in the index until their segment is
// deleted; recovery ignores them even when it rescans every segment.
func TestForgottenEntriesIgnoredOnRescan(t *testing.T) {
	dir := t.TempDir()
	w := openT(t, Options{Dir: dir, NoSync: true, IndexInterval: time.Hour})
	appendN(t, w, 0, 0, 10)
	appendN(t, w, 1, 0, 10)
	if err := w.persistIndex(); err != nil {
		t.Fatal(err)
	}
	if err := w.Forget(testTopic, 0); err != nil {
		t.Fatal(err)
	}
	appendN(t, w, 0, 50, 3)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	for _, rescan := range []bool{false, true} {
		if rescan {
			// An unreadable checkpoint makes recovery rescan every segment.
			db, err := bbolt.Open(filepath.Join(dir, "index.db"), 0o644, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := db.Update(func(tx *bbolt.Tx) error { return tx.Bucket(bktMeta).Put(keyCheckpoint, []byte("bad")) }); err != nil {
				t.Fatal(err)
			}
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
		}
		w := openT(t, Options{Dir: dir, NoSync: true})
		checkPartition(t, w, 0, 50, 53)
		checkPartition(t, w, 1, 0, 10)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
