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
// can and prints "ack <partition> <base>" after each successful Wait, until
// it is killed.
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
	time.Sleep(60 * time.Second) // the parent kills us long before this
	os.Exit(5)
}

// TestCrash kills a child appending to the WAL with SIGKILL, twice, and checks
// that every acknowledged entry survives with identical bytes.
func TestCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	dir := t.TempDir()
	acked := map[[2]int64]bool{}
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
			if _, err := fmt.Sscanf(sc.Text(), "ack %d %d", &part, &base); err != nil {
				t.Logf("child: %s", sc.Text())
				continue
			}
			acked[[2]int64{part, base}] = true
			n++
			if n == 300+round*200 && !killed {
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
		t.Logf("round %d: %d acks seen (killed after %d)", round, n, 300+round*200)

		w, err := Open(Options{Dir: dir, Logger: quietLogger()})
		if err != nil {
			t.Fatalf("Open after kill: %v", err)
		}
		for key := range acked {
			part, base := int32(key[0]), key[1]
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
		// Offsets stay dense: each partition's entries are contiguous.
		for _, ps := range w.Partitions() {
			es := w.Entries(ps.Topic, ps.Partition, 0, 1<<40)
			for i, e := range es {
				if e.BaseOffset != int64(i) {
					w.Close()
					t.Fatalf("partition %d: entry %d has offset %d", ps.Partition, i, e.BaseOffset)
				}
			}
		}
		st := w.Stats()
		t.Logf("round %d: recovered %d segments, %d bytes, truncated %d", round, st.Segments, st.RetainedBytes, st.TruncatedBytes)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
