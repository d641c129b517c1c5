package wal

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestRecoveryAfterClose(t *testing.T) {
	dir := t.TempDir()
	w := openT(t, Options{Dir: dir, SegmentBytes: 8 << 10})
	for part := int32(0); part < 3; part++ {
		appendN(t, w, part, 0, 40)
	}
	if err := w.SetCommitted(testTopic, 1, 15); err != nil {
		t.Fatal(err)
	}
	before := w.Partitions()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	w2 := openT(t, Options{Dir: dir, SegmentBytes: 8 << 10})
	checkPartition(t, w2, 0, 0, 40)
	checkPartition(t, w2, 1, 15, 40)
	checkPartition(t, w2, 2, 0, 40)
	after := w2.Partitions()
	if len(after) != len(before) {
		t.Fatalf("partitions %+v -> %+v", before, after)
	}
	for i := range before {
		if before[i] != after[i] {
			t.Fatalf("partitions %+v -> %+v", before, after)
		}
	}
	// Appends continue after recovery.
	appendN(t, w2, 0, 40, 5)
	checkPartition(t, w2, 0, 0, 45)
	if st := w2.Stats(); st.TruncatedBytes != 0 || st.QuarantinedSegments != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestRecoveryIndexMissing(t *testing.T) {
	dir := t.TempDir()
	w := openT(t, Options{Dir: dir, SegmentBytes: 8 << 10, NoSync: true})
	appendN(t, w, 0, 0, 30)
	appendN(t, w, 1, 0, 30)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "index.db")); err != nil {
		t.Fatal(err)
	}
	w2 := openT(t, Options{Dir: dir, NoSync: true})
	checkPartition(t, w2, 0, 0, 30)
	checkPartition(t, w2, 1, 0, 30)
}

func TestRecoveryIndexLagging(t *testing.T) {
	t.Run("never persisted", func(t *testing.T) {
		dir := t.TempDir()
		w := openT(t, Options{Dir: dir, SegmentBytes: 8 << 10, NoSync: true, testSkipIndexPersist: true})
		appendN(t, w, 0, 0, 50)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		w2 := openT(t, Options{Dir: dir, NoSync: true})
		checkPartition(t, w2, 0, 0, 50)
	})
	t.Run("partly persisted", func(t *testing.T) {
		dir := t.TempDir()
		w := openT(t, Options{Dir: dir, SegmentBytes: 8 << 10, NoSync: true})
		appendN(t, w, 0, 0, 25)
		appendN(t, w, 1, 0, 25)
		if err := w.persistIndex(); err != nil {
			t.Fatal(err)
		}
		if err := w.SetCommitted(testTopic, 1, 10); err != nil {
			t.Fatal(err)
		}
		w.skipPersist.Store(true)
		appendN(t, w, 0, 25, 25)
		appendN(t, w, 1, 25, 25)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		w2 := openT(t, Options{Dir: dir, NoSync: true})
		checkPartition(t, w2, 0, 0, 50)
		checkPartition(t, w2, 1, 10, 50)
	})
}

func TestRecoveryDeletedSegmentStillIndexed(t *testing.T) {
	dir := t.TempDir()
	w := openT(t, Options{Dir: dir, SegmentBytes: 4 << 10, NoSync: true})
	pos := appendN(t, w, 0, 0, 40)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	// Delete the first segment behind the index's back (as if a crash hit
	// between deleting the file and updating the index).
	first := pos[0].Segment
	if err := os.Remove(filepath.Join(dir, "segments", segName(first))); err != nil {
		t.Fatal(err)
	}
	gone := int64(0)
	for _, p := range pos {
		if p.Segment == first {
			gone++
		}
	}
	w2 := openT(t, Options{Dir: dir, NoSync: true})
	checkPartition(t, w2, 0, gone, 40)
}

// lastFrameSegment returns the path of the segment holding pos.
func segPath(dir string, pos Pos) string {
	return filepath.Join(dir, "segments", segName(pos.Segment))
}

func TestRecoveryTornTail(t *testing.T) {
	t.Run("truncated mid-frame, index lagging", func(t *testing.T) {
		dir := t.TempDir()
		w := openT(t, Options{Dir: dir, NoSync: true, testSkipIndexPersist: true})
		pos := appendN(t, w, 0, 0, 20)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		last := pos[19]
		cutAt := last.Offset + int64(last.Length)/2
		if err := os.Truncate(segPath(dir, last), cutAt); err != nil {
			t.Fatal(err)
		}
		w2 := openT(t, Options{Dir: dir, NoSync: true})
		checkPartition(t, w2, 0, 0, 19)
		if st := w2.Stats(); st.TruncatedBytes != cutAt-last.Offset {
			t.Fatalf("TruncatedBytes = %d, want %d", st.TruncatedBytes, cutAt-last.Offset)
		}
		fi, err := os.Stat(segPath(dir, last))
		if err != nil || fi.Size() != last.Offset {
			t.Fatalf("segment size %v (%v), want %d", fi.Size(), err, last.Offset)
		}
	})
	t.Run("truncated mid-frame, index persisted", func(t *testing.T) {
		dir := t.TempDir()
		w := openT(t, Options{Dir: dir, NoSync: true})
		pos := appendN(t, w, 0, 0, 20)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		last := pos[19]
		if err := os.Truncate(segPath(dir, last), last.Offset+3); err != nil {
			t.Fatal(err)
		}
		w2 := openT(t, Options{Dir: dir, NoSync: true})
		checkPartition(t, w2, 0, 0, 19)
	})
	t.Run("garbage appended", func(t *testing.T) {
		for _, garbage := range [][]byte{
			[]byte("this is not a frame at all, just junk"),
			{0, 0, 0, 40, 1, 2, 3, 4}, // a header promising more than there is
			make([]byte, 100),         // zeros
			{1, 2, 3},                 // shorter than a header
		} {
			dir := t.TempDir()
			w := openT(t, Options{Dir: dir, NoSync: true})
			pos := appendN(t, w, 0, 0, 20)
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			f, err := os.OpenFile(segPath(dir, pos[19]), os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.Write(garbage)
			f.Close()
			w2 := openT(t, Options{Dir: dir, NoSync: true})
			checkPartition(t, w2, 0, 0, 20)
			if st := w2.Stats(); st.TruncatedBytes != int64(len(garbage)) {
				t.Fatalf("TruncatedBytes = %d, want %d", st.TruncatedBytes, len(garbage))
			}
			appendN(t, w2, 0, 20, 3)
			checkPartition(t, w2, 0, 0, 23)
			w2.Close()
		}
	})
}

func TestRecoveryCorruptSealedSegmentQuarantined(t *testing.T) {
	dir := t.TempDir()
	w := openT(t, Options{Dir: dir, SegmentBytes: 4 << 10, NoSync: true, testSkipIndexPersist: true})
	pos := appendN(t, w, 0, 0, 60)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	// Corrupt a data byte of the second frame of the second segment.
	var victim Pos
	var bad []int64
	seg := pos[0].Segment + 1
	n := 0
	for i, p := range pos {
		if p.Segment == seg {
			if n == 1 {
				victim = p
			}
			n++
			bad = append(bad, int64(i))
		}
	}
	if n < 3 || pos[59].Segment <= seg {
		t.Fatalf("test needs several frames in a sealed segment, got %d", n)
	}
	f, err := os.OpenFile(segPath(dir, victim), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := []byte{0}
	f.ReadAt(b, victim.Offset+int64(victim.Length)-5)
	b[0] ^= 0x55
	f.WriteAt(b, victim.Offset+int64(victim.Length)-5)
	f.Close()

	w2 := openT(t, Options{Dir: dir, NoSync: true})
	if st := w2.Stats(); st.QuarantinedSegments != 1 {
		t.Fatalf("stats %+v", st)
	}
	if fileExists(segPath(dir, victim)) || !fileExists(segPath(dir, victim)+corruptSuffix) {
		t.Fatal("segment not renamed to .corrupt")
	}
	// Entries before and after the quarantined segment survive.
	var want []int64
	for i := int64(0); i < 60; i++ {
		if i < bad[0] || i > bad[len(bad)-1] {
			want = append(want, i)
		}
	}
	es := w2.Entries(testTopic, 0, 0, 1<<30)
	if len(es) != len(want) {
		t.Fatalf("%d entries survive, want %d", len(es), len(want))
	}
	for i, e := range es {
		got, err := w2.Read(e.Pos)
		if e.BaseOffset != want[i] || err != nil || string(got) != string(payload(0, want[i])) {
			t.Fatalf("entry %d: %+v, want offset %d (read err %v)", i, e, want[i], err)
		}
	}
	if _, err := w2.Read(victim); !errors.Is(err, ErrSegmentNotFound) {
		t.Fatalf("Read in quarantined segment: %v", err)
	}
	if err := w2.Close(); err != nil {
		t.Fatal(err)
	}
	// A second recovery is clean, and sequence numbers never reuse the
	// quarantined segment's.
	w3 := openT(t, Options{Dir: dir, NoSync: true})
	if st := w3.Stats(); st.QuarantinedSegments != 0 {
		t.Fatalf("stats %+v", st)
	}
	p := appendN(t, w3, 0, 60, 1)[0]
	if p.Segment <= pos[59].Segment {
		t.Fatalf("new segment %d not above %d", p.Segment, pos[59].Segment)
	}
}

func TestOpenLocked(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the bbolt lock timeout")
	}
	dir := t.TempDir()
	openT(t, Options{Dir: dir, NoSync: true})
	if _, err := Open(Options{Dir: dir, NoSync: true, Logger: quietLogger()}); err == nil {
		t.Fatal("second Open of the same Dir succeeded")
	}
}

// An append below the partition's end supersedes the overlapped entries, the
// same way live, after a clean restart, and after a restart without index.
func TestSupersedingAppend(t *testing.T) {
	for _, lag := range []bool{false, true} {
		dir := t.TempDir()
		w := openT(t, Options{Dir: dir, NoSync: true, testSkipIndexPersist: lag})
		appendN(t, w, 0, 0, 10)
		if !lag {
			if err := w.persistIndex(); err != nil {
				t.Fatal(err)
			}
		}
		appendN(t, w, 0, 5, 3) // offsets 5, 6, 7 again (same payloads)
		check := func(w *WAL) {
			t.Helper()
			checkPartition(t, w, 0, 0, 8)
			ps := w.Partitions()
			if len(ps) != 1 || ps[0].EndOffset != 8 {
				t.Fatalf("partitions %+v", ps)
			}
		}
		check(w)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		w2 := openT(t, Options{Dir: dir, NoSync: true})
		check(w2)
		w2.Close()
		w3 := openT(t, Options{Dir: dir, NoSync: true})
		check(w3)
		w3.Close()
	}
}
