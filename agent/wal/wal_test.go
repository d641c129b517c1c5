package wal

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func TestConcurrentAppends(t *testing.T) {
	w := openT(t, Options{Dir: t.TempDir()})
	const (
		goroutines = 16
		partitions = 8
		rounds     = 40
		burst      = 8
	)
	var (
		mu   [partitions]sync.Mutex
		next [partitions]int64
		wg   sync.WaitGroup
		ctx  = ctxT(t)
	)
	type rec struct {
		part int32
		base int64
		pos  Pos
	}
	var recsMu sync.Mutex
	var recs []rec
	errc := make(chan error, goroutines)
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			part := int32(g % partitions)
			for range rounds {
				// Append a burst under the partition lock (offsets in order),
				// then wait for all of it outside the lock.
				mu[part].Lock()
				bases := make([]int64, burst)
				ps := make([]*Pending, burst)
				for i := range burst {
					base := next[part]
					next[part]++
					bases[i] = base
					ps[i] = w.Append(Entry{Topic: testTopic, Partition: part, BaseOffset: base, EndOffset: base + 1, MaxTimestampMs: base * 10, Data: payload(part, base)})
				}
				mu[part].Unlock()
				for i, p := range ps {
					pos, err := p.Wait(ctx)
					if err != nil {
						errc <- err
						return
					}
					recsMu.Lock()
					recs = append(recs, rec{part, bases[i], pos})
					recsMu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	if len(recs) != goroutines*rounds*burst {
		t.Fatalf("%d acks", len(recs))
	}
	for _, r := range recs {
		got, err := w.Read(r.pos)
		if err != nil || string(got) != string(payload(r.part, r.base)) {
			t.Fatalf("Read %d/%d: err %v, bytes match %v", r.part, r.base, err, string(got) == string(payload(r.part, r.base)))
		}
	}
	for p := range partitions {
		checkPartition(t, w, int32(p), 0, next[p])
	}
	parts := w.Partitions()
	if len(parts) != partitions {
		t.Fatalf("Partitions: %+v", parts)
	}
	for _, ps := range parts {
		if ps.FirstOffset != 0 || ps.EndOffset != next[ps.Partition] || ps.CommittedEnd != 0 {
			t.Fatalf("partition state %+v", ps)
		}
	}
	st := w.Stats()
	t.Logf("stats: %+v", st)
	if st.Appends != int64(len(recs)) {
		t.Fatalf("Appends = %d, want %d", st.Appends, len(recs))
	}
	if st.Fsyncs == 0 || st.Fsyncs*4 > st.Appends {
		t.Fatalf("group commit: %d fsyncs for %d appends", st.Fsyncs, st.Appends)
	}
}

func TestEntriesMaxBytes(t *testing.T) {
	w := openT(t, Options{Dir: t.TempDir(), NoSync: true})
	appendN(t, w, 0, 0, 10)
	if es := w.Entries(testTopic, 0, 3, 0); len(es) != 1 || es[0].BaseOffset != 3 {
		t.Fatalf("maxBytes 0: %+v", es)
	}
	sz := len(payload(0, 3)) + len(payload(0, 4))
	if es := w.Entries(testTopic, 0, 3, sz); len(es) != 2 {
		t.Fatalf("maxBytes for two: %d entries", len(es))
	}
	if es := w.Entries(testTopic, 0, 10, 1<<20); len(es) != 0 {
		t.Fatalf("past end: %+v", es)
	}
	if es := w.Entries(testTopic, 9, 0, 1<<20); len(es) != 0 {
		t.Fatalf("unknown partition: %+v", es)
	}
}

func TestInvalidEntry(t *testing.T) {
	w := openT(t, Options{Dir: t.TempDir(), NoSync: true})
	_, err := w.Append(Entry{Topic: testTopic, BaseOffset: 5, EndOffset: 5}).Wait(ctxT(t))
	if !errors.Is(err, ErrInvalidEntry) {
		t.Fatalf("got %v", err)
	}
}

// segFiles returns the live segment sequences on disk.
func segFiles(t *testing.T, dir string) map[uint64]bool {
	t.Helper()
	live, _, err := listSegments(filepath.Join(dir, "segments"))
	if err != nil {
		t.Fatal(err)
	}
	m := make(map[uint64]bool)
	for _, s := range live {
		m[s] = true
	}
	return m
}

func TestSegmentRollAndSetCommitted(t *testing.T) {
	dir := t.TempDir()
	w := openT(t, Options{Dir: dir, SegmentBytes: 4 << 10, NoSync: true})
	// Interleave two partitions so that segments hold both.
	type rec struct {
		part int32
		base int64
		pos  Pos
	}
	var recs []rec
	for i := range 60 {
		for part := int32(0); part < 2; part++ {
			pos := appendN(t, w, part, int64(i), 1)[0]
			recs = append(recs, rec{part, int64(i), pos})
		}
	}
	files := segFiles(t, dir)
	if len(files) < 5 {
		t.Fatalf("expected several segments, got %d", len(files))
	}
	for _, r := range recs {
		if r.pos.Offset+int64(r.pos.Length) > 4<<10 && r.pos.Offset != 0 {
			t.Fatalf("frame %+v crosses the segment limit", r.pos)
		}
	}
	committed := map[int32]int64{}
	check := func() {
		t.Helper()
		files := segFiles(t, dir)
		activeSeq := recs[len(recs)-1].pos.Segment
		// Per segment: are all its frames committed?
		allCommitted := map[uint64]bool{}
		for _, r := range recs {
			if _, ok := allCommitted[r.pos.Segment]; !ok {
				allCommitted[r.pos.Segment] = true
			}
			if r.base+1 > committed[r.part] {
				allCommitted[r.pos.Segment] = false
			}
		}
		for seq, all := range allCommitted {
			switch {
			case !all && !files[seq]:
				t.Fatalf("segment %d deleted with uncommitted data", seq)
			case all && seq != activeSeq && files[seq]:
				t.Fatalf("fully committed sealed segment %d not deleted", seq)
			case seq == activeSeq && !files[seq]:
				t.Fatalf("active segment %d deleted", seq)
			}
		}
		for _, r := range recs {
			_, err := w.Read(r.pos)
			if files[r.pos.Segment] && err != nil {
				t.Fatalf("Read %+v: %v", r.pos, err)
			}
			if !files[r.pos.Segment] && !errors.Is(err, ErrSegmentNotFound) {
				t.Fatalf("Read of deleted %+v: %v", r.pos, err)
			}
		}
		for part := int32(0); part < 2; part++ {
			checkPartition(t, w, part, committed[part], 60)
		}
	}
	// Committing only partition 0 deletes nothing: every segment holds partition 1.
	committed[0] = 60
	if err := w.SetCommitted(testTopic, 0, 60); err != nil {
		t.Fatal(err)
	}
	check()
	if got := len(segFiles(t, dir)); got != len(files) {
		t.Fatalf("segments %d -> %d after committing one partition", len(files), got)
	}
	committed[1] = 25
	if err := w.SetCommitted(testTopic, 1, 25); err != nil {
		t.Fatal(err)
	}
	check()
	// A lower mark is ignored.
	if err := w.SetCommitted(testTopic, 1, 10); err != nil {
		t.Fatal(err)
	}
	check()
	committed[1] = 60
	if err := w.SetCommitted(testTopic, 1, 60); err != nil {
		t.Fatal(err)
	}
	check()
	if got := len(segFiles(t, dir)); got != 1 {
		t.Fatalf("%d segments left after committing everything, want the active one", got)
	}
	st := w.Stats()
	if st.UncommittedBytes != 0 || st.Segments != 1 {
		t.Fatalf("stats %+v", st)
	}
	for _, ps := range w.Partitions() {
		if ps.FirstOffset != 60 || ps.EndOffset != 60 || ps.CommittedEnd != 60 {
			t.Fatalf("partition state %+v", ps)
		}
	}
	// The marks survive a restart.
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	w2 := openT(t, Options{Dir: dir, NoSync: true})
	if es := w2.Entries(testTopic, 1, 0, 1<<20); len(es) != 0 {
		t.Fatalf("committed entries came back: %+v", es)
	}
	if got := len(w2.Partitions()); got != 2 {
		t.Fatalf("partitions after restart: %+v", w2.Partitions())
	}
}

func TestForget(t *testing.T) {
	dir := t.TempDir()
	w := openT(t, Options{Dir: dir, SegmentBytes: 4 << 10, NoSync: true})
	for i := range 30 {
		appendN(t, w, 0, int64(i), 1)
		appendN(t, w, 1, int64(i), 1)
	}
	if err := w.Forget(testTopic, 0); err != nil {
		t.Fatal(err)
	}
	if es := w.Entries(testTopic, 0, 0, 1<<20); len(es) != 0 {
		t.Fatalf("forgotten entries: %d", len(es))
	}
	for _, ps := range w.Partitions() {
		if ps.Partition == 0 {
			t.Fatalf("forgotten partition listed: %+v", ps)
		}
	}
	// Committing partition 1 now frees every sealed segment: partition 0's
	// frames there are forgotten.
	if err := w.SetCommitted(testTopic, 1, 30); err != nil {
		t.Fatal(err)
	}
	if n := len(segFiles(t, dir)); n != 1 {
		t.Fatalf("%d segments left", n)
	}
	// The partition comes back, starting below where it was forgotten.
	appendN(t, w, 0, 10, 5)
	checkPartition(t, w, 0, 10, 15)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	w2 := openT(t, Options{Dir: dir, NoSync: true})
	checkPartition(t, w2, 0, 10, 15)
	checkPartition(t, w2, 1, 30, 30)
	// Forget everything, even without the index: the forgotten mark is
	// positional, so old frames stay forgotten.
	if err := w2.Forget(testTopic, 0); err != nil {
		t.Fatal(err)
	}
	w2.Close()
	w3 := openT(t, Options{Dir: dir, NoSync: true})
	if es := w3.Entries(testTopic, 0, 0, 1<<20); len(es) != 0 {
		t.Fatalf("forgotten entries after restart: %+v", es)
	}
}

func TestCloseFlushesQueued(t *testing.T) {
	w, err := Open(Options{Dir: t.TempDir(), Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	var ps []*Pending
	for i := range 500 {
		ps = append(ps, w.Append(Entry{Topic: testTopic, BaseOffset: int64(i), EndOffset: int64(i) + 1, Data: payload(0, int64(i))}))
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	for i, p := range ps {
		select {
		case <-p.Done():
		default:
			t.Fatalf("pending %d not complete after Close", i)
		}
		if _, err := p.Wait(context.Background()); err != nil {
			t.Fatalf("pending %d: %v", i, err)
		}
	}
	if _, err := w.Append(Entry{Topic: testTopic, BaseOffset: 500, EndOffset: 501}).Wait(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("append after close: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := w.SetCommitted(testTopic, 0, 1); !errors.Is(err, ErrClosed) {
		t.Fatalf("SetCommitted after close: %v", err)
	}
	if _, err := w.Read(Pos{Segment: 1, Length: 40}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Read after close: %v", err)
	}
}

func TestFsyncFailureIsFatal(t *testing.T) {
	var calls atomic.Int32
	dir := t.TempDir()
	w := openT(t, Options{Dir: dir, testSyncFile: func(f *os.File) error {
		if calls.Add(1) > 3 {
			return syscall.EIO
		}
		return fdatasync(f)
	}})
	var okPos []Pos
	var failed bool
	for i := range 20 {
		pos, err := w.Append(Entry{Topic: testTopic, BaseOffset: int64(i), EndOffset: int64(i) + 1, MaxTimestampMs: int64(i) * 10, Data: payload(0, int64(i))}).Wait(ctxT(t))
		if err != nil {
			if !errors.Is(err, ErrFailed) || !errors.Is(err, syscall.EIO) {
				t.Fatalf("append %d: %v", i, err)
			}
			failed = true
			continue
		}
		if failed {
			t.Fatalf("append %d succeeded after an fsync failure", i)
		}
		okPos = append(okPos, pos)
	}
	if len(okPos) != 3 || !failed {
		t.Fatalf("%d acked, failed=%v", len(okPos), failed)
	}
	// Reads of acknowledged data still work; Close completes.
	checkPartition(t, w, 0, 0, 3)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	// Reopening recovers: the acked entries are there (the un-acked ones may
	// be too: they were written, only their fsync "failed").
	w2 := openT(t, Options{Dir: dir})
	es := w2.Entries(testTopic, 0, 0, 1<<30)
	if len(es) < 3 {
		t.Fatalf("%d entries after reopen", len(es))
	}
	checkPartition(t, w2, 0, 0, int64(len(es)))
}

func TestWaitContext(t *testing.T) {
	block := make(chan struct{})
	w := openT(t, Options{Dir: t.TempDir(), testSyncFile: func(f *os.File) error { <-block; return nil }})
	p := w.Append(Entry{Topic: testTopic, BaseOffset: 0, EndOffset: 1, Data: []byte("x")})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := p.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v", err)
	}
	close(block)
	if _, err := p.Wait(ctxT(t)); err != nil {
		t.Fatal(err)
	}
}

func TestReadDetectsCorruption(t *testing.T) {
	dir := t.TempDir()
	w := openT(t, Options{Dir: dir, NoSync: true})
	pos := appendN(t, w, 0, 0, 3)
	path := filepath.Join(dir, "segments", segName(pos[1].Segment))
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{0xff}, pos[1].Offset+int64(pos[1].Length)-1); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, err := w.Read(pos[1]); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Read corrupt: %v", err)
	}
	if _, err := w.Read(pos[0]); err != nil {
		t.Fatal(err)
	}
	bad := pos[0]
	bad.Length += 3
	if _, err := w.Read(bad); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Read with wrong length: %v", err)
	}
}
