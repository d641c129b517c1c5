package wal

import (
	"testing"
	"time"
)

// benchPartitions is the partition count at which a per-partition bbolt
// bucket made every index transaction write tens of MB.
const benchPartitions = 10_000

// benchRetained is how many entries each partition keeps in the index
// between being persisted and being committed (a few indexer rounds while
// the upload of a flush is in flight).
const benchRetained = 4

// indexBench is a WAL holding benchRetained persisted entries in each of
// benchPartitions partitions.
type indexBench struct {
	w    *WAL
	next int64 // offset of the next entry of every partition
}

func newIndexBench(b *testing.B) *indexBench {
	b.Helper()
	// The indexer loop is kept out of the way (the benchmark persists
	// explicitly); NoSync only affects segment files, bbolt still fsyncs.
	w := openT(b, Options{Dir: b.TempDir(), NoSync: true, IndexInterval: time.Hour})
	ib := &indexBench{w: w}
	for range benchRetained {
		ib.appendOne(b)
		if err := w.persistIndex(); err != nil {
			b.Fatal(err)
		}
	}
	return ib
}

// appendOne appends one single-record entry to every partition and waits
// for all of them.
func (ib *indexBench) appendOne(b *testing.B) {
	b.Helper()
	data := make([]byte, 100)
	es := make([]Entry, benchPartitions)
	for i := range es {
		es[i] = Entry{Topic: "bench-topic", Partition: int32(i), BaseOffset: ib.next, EndOffset: ib.next + 1, Data: data}
	}
	for _, p := range ib.w.AppendAll(es) {
		if _, err := p.Wait(ctxT(b)); err != nil {
			b.Fatal(err)
		}
	}
	ib.next++
}

// commitOldest sets every partition's committed mark past its oldest
// retained entry, as a flush that carried all of them does.
func (ib *indexBench) commitOldest(b *testing.B) {
	b.Helper()
	marks := make([]CommittedMark, benchPartitions)
	for i := range marks {
		marks[i] = CommittedMark{Topic: "bench-topic", Partition: int32(i), End: ib.next - benchRetained}
	}
	if err := ib.w.SetCommittedMany(marks); err != nil {
		b.Fatal(err)
	}
}

// pageAlloc is the total of bytes bbolt has allocated for dirty pages: what
// its commits wrote and fsynced.
func (ib *indexBench) pageAlloc() int64 {
	st := ib.w.db.Stats()
	return st.TxStats.GetPageAlloc()
}

// BenchmarkIndex10kPartitions measures the two index writers over 10,000
// partitions in steady state: persistIndex with one new entry in every
// partition, and SetCommittedMany with a committed mark for every partition
// (each dropping that partition's oldest entry). The other writer runs
// outside the timer so that every partition keeps benchRetained entries.
// MiB-written/op is what the timed transaction wrote (and fsynced).
func BenchmarkIndex10kPartitions(b *testing.B) {
	b.Run("persistIndex", func(b *testing.B) {
		ib := newIndexBench(b)
		var written int64
		b.ResetTimer()
		for range b.N {
			b.StopTimer()
			ib.appendOne(b)
			before := ib.pageAlloc()
			b.StartTimer()
			if err := ib.w.persistIndex(); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			written += ib.pageAlloc() - before
			ib.commitOldest(b)
			b.StartTimer()
		}
		b.ReportMetric(float64(written)/float64(b.N)/(1<<20), "MiB-written/op")
	})
	b.Run("SetCommittedMany", func(b *testing.B) {
		ib := newIndexBench(b)
		ib.appendOne(b) // so that the first commit leaves benchRetained
		if err := ib.w.persistIndex(); err != nil {
			b.Fatal(err)
		}
		var written int64
		b.ResetTimer()
		for range b.N {
			before := ib.pageAlloc()
			ib.commitOldest(b)
			written += ib.pageAlloc() - before
			b.StopTimer()
			ib.appendOne(b)
			if err := ib.w.persistIndex(); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
		b.ReportMetric(float64(written)/float64(b.N)/(1<<20), "MiB-written/op")
	})
}
