package wal

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"
)

const (
	crashDirEnv     = "STREAMHOUSE_WAL_CRASH_DIR"
	crashPartitions = 8
)

// TestCrashChild is the child side of TestCrash: it appends as fast as it
// can and prints "ack <partition> <base>" after each successful Wait, and
// every few milliseconds commits every partition up to 20 offsets behind
// its appends and prints "committed <partition> <end>" once that returns,
// until it is killed.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashDirEnv)
	if dir == "" {
		t.Skip("child process of TestCrash only")
	}
	w, err := Open(Options{Dir: dir, SegmentBytes: 256 << 10, IndexInterval: 5 * time.Millisecond, Logger: quietLogger()})
	if err != nil {
		fmt.Printf("open: %v\n", err)
		os.Exit(3)
	}
	// Continue each partition where the recovered WAL ends.
	var (
		mu   [crashPartitions]sync.Mutex
		next [crashPartitions]int64
		out  sync.Mutex
	)
	for _, ps := range w.Partitions() {
		next[ps.Partition] = ps.EndOffset
	}
	for g := range 32 {
		go func() {
			part := int32(g % crashPartitions)
			for {
				mu[part].Lock()
				base := next[part]
				next[part]++
				p := w.Append(Entry{Topic: testTopic, Partition: part, BaseOffset: base, EndOffset: base + 1, MaxTimestampMs: base * 10, Data: payload(part, base)})
				mu[part].Unlock()
				if _, err := p.Wait(context.Background()); err != nil {
					fmt.Printf("error %v\n", err)
					os.Exit(4)
				}
				out.Lock()
				fmt.Printf("ack %d %d\n", part, base)
				out.Unlock()
			}
		}()
	}
	go func() {
		marks := make([]CommittedMark, 0, crashPartitions)
		for {
			time.Sleep(5 * time.Millisecond)
			marks = marks[:0]
			for part := range int32(crashPartitions) {
				mu[part].Lock()
				if end := next[part] - 20; end > 0 {
					marks = append(marks, CommittedMark{Topic: testTopic, Partition: part, End: end})
				}
				mu[part].Unlock()
			}
			if err := w.SetCommittedMany(marks); err != nil {
				fmt.Printf("error %v\n", err)
				os.Exit(4)
			}
			out.Lock()
			for _, m := range marks {
				fmt.Printf("committed %d %d\n", m.Partition, m.End)
			}
			out.Unlock()
		}
	}()
	time.Sleep(60 * time.Second) // the parent kills us long before this
	os.Exit(5)
}

// TestCrash kills a child appending to and committing in the WAL with
// SIGKILL, three times, and checks that every acknowledged entry above the
// committed mark survives with identical bytes, that no committed mark goes
// back, and that each partition's entries run densely from its mark.
func TestCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	dir := t.TempDir()
	acked := map[[2]int64]bool{}
	committed := map[int32]int64{}
	for round := range 3 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$")
		cmd.Env = append(os.Environ(), crashDirEnv+"="+dir)
		cmd.Stderr = os.Stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		timer := time.AfterFunc(30*time.Second, func() { _ = cmd.Process.Kill() })
		sc := bufio.NewScanner(stdout)
		n, killed := 0, false
		for sc.Scan() {
			var part, base int64
			if _, err := fmt.Sscanf(sc.Text(), "committed %d %d", &part, &base); err == nil {
				committed[int32(part)] = max(committed[int32(part)], base)
				continue
			}
			if _, err := fmt.Sscanf(sc.Text(), "ack %d %d", &part, &base); err != nil {
				t.Logf("child: %s", sc.Text())
				continue
			}
			acked[[2]int64{part, base}] = true
			n++
			if n == 3000+round*2000 && !killed {
				killed = true
				if err := cmd.Process.Kill(); err != nil { // SIGKILL
					t.Fatal(err)
				}
			}
		}
		timer.Stop()
		_ = cmd.Wait()
		if !killed {
			t.Fatalf("round %d: child exited after %d acks without being killed", round, n)
		}
		t.Logf("round %d: %d acks seen (killed after %d)", round, n, 3000+round*2000)

		w, err := Open(Options{Dir: dir, Logger: quietLogger()})
		if err != nil {
			t.Fatalf("Open after kill: %v", err)
		}
		marks := map[int32]int64{}
		for _, ps := range w.Partitions() {
			if ps.CommittedEnd < committed[ps.Partition] {
				w.Close()
				t.Fatalf("round %d: partition %d committed end %d, was %d", round, ps.Partition, ps.CommittedEnd, committed[ps.Partition])
			}
			marks[ps.Partition] = ps.CommittedEnd
		}
		for key := range acked {
			part, base := int32(key[0]), key[1]
			if base < marks[part] {
				continue
			}
			es := w.Entries(testTopic, part, base, 1)
			if len(es) == 0 || es[0].BaseOffset != base || es[0].EndOffset != base+1 || es[0].MaxTimestampMs != base*10 {
				w.Close()
				t.Fatalf("round %d: acked %d/%d missing: %+v", round, part, base, es)
			}
			got, err := w.Read(es[0].Pos)
			if err != nil || string(got) != string(payload(part, base)) {
				w.Close()
				t.Fatalf("round %d: acked %d/%d: read err %v or wrong bytes", round, part, base, err)
			}
		}
		// Offsets stay dense: each partition's entries are contiguous from
		// its committed mark.
		for _, ps := range w.Partitions() {
			es := w.Entries(ps.Topic, ps.Partition, 0, 1<<40)
			for i, e := range es {
				if e.BaseOffset != ps.CommittedEnd+int64(i) {
					w.Close()
					t.Fatalf("partition %d: entry %d has offset %d", ps.Partition, i, e.BaseOffset)
				}
			}
		}
		st := w.Stats()
		t.Logf("round %d: recovered %d segments, %d bytes, truncated %d, committed marks %v", round, st.Segments, st.RetainedBytes, st.TruncatedBytes, marks)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
