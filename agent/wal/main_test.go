package wal

import (
	"context"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const testTopic = "orders"

// payload returns deterministic bytes for (partition, base).
func payload(part int32, base int64) []byte {
	n := 50 + int((base*37+int64(part)*11)%900)
	b := make([]byte, n)
	x := uint64(part)<<40 ^ uint64(base)*0x9E3779B97F4A7C15 + 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		b[i] = byte(x)
	}
	return b
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func openT(t testing.TB, opts Options) *WAL {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = quietLogger()
	}
	w, err := Open(opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = w.Close() })
	return w
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// appendN appends n entries of one record each to (testTopic, part) starting
// at base and waits for them.
func appendN(t testing.TB, w *WAL, part int32, base int64, n int) []Pos {
	t.Helper()
	ps := make([]*Pending, n)
	for i := range n {
		off := base + int64(i)
		ps[i] = w.Append(Entry{Topic: testTopic, Partition: part, BaseOffset: off, EndOffset: off + 1, MaxTimestampMs: off * 10, Data: payload(part, off)})
	}
	out := make([]Pos, n)
	for i, p := range ps {
		pos, err := p.Wait(ctxT(t))
		if err != nil {
			t.Fatalf("Wait(%d/%d): %v", part, base+int64(i), err)
		}
		out[i] = pos
	}
	return out
}

// checkPartition verifies that Entries returns exactly offsets [from, to) of
// part, one record per entry, with the right bytes.
func checkPartition(t testing.TB, w *WAL, part int32, from, to int64) {
	t.Helper()
	es := w.Entries(testTopic, part, from, 1<<40)
	if int64(len(es)) != to-from {
		t.Fatalf("partition %d: %d entries from %d, want %d", part, len(es), from, to-from)
	}
	for i, e := range es {
		want := from + int64(i)
		if e.BaseOffset != want || e.EndOffset != want+1 || e.MaxTimestampMs != want*10 {
			t.Fatalf("partition %d entry %d: %+v, want base %d", part, i, e, want)
		}
		got, err := w.Read(e.Pos)
		if err != nil {
			t.Fatalf("Read(%+v): %v", e.Pos, err)
		}
		if string(got) != string(payload(part, want)) {
			t.Fatalf("partition %d offset %d: wrong bytes", part, want)
		}
	}
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
