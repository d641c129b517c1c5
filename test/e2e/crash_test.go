package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/pkg/client"
	"github.com/streamhouse/streamhouse/pkg/objstore/s3test"
	"github.com/streamhouse/streamhouse/test/checker"
	"github.com/streamhouse/streamhouse/test/devproc"
	"github.com/streamhouse/streamhouse/test/loadgen"
)

const (
	crashProducers  = 4
	crashRecords    = 100_000 // in all
	crashPartitions = 8
)

// TestCrashRecovery runs 4 concurrent producers writing 100,000 records to 8
// partitions of a real `streamhouse dev`, kills the process with SIGKILL at a
// random moment, restarts it on the same data directory, lets the producers
// finish, then reads everything back and checks the history: every
// acknowledged record exactly once at its acknowledged offset, ack order kept
// per partition, dense offsets from 0, nothing unacknowledged twice.
func TestCrashRecovery(t *testing.T) {
	cases := []struct {
		name       string
		durability v1.Durability
		acks       v1.Acks
		s3         bool
	}{
		{"durable/local", v1.Durability_DURABILITY_DURABLE, v1.Acks_ACKS_DURABLE, false},
		{"wal/local", v1.Durability_DURABILITY_WAL, v1.Acks_ACKS_WAL, false},
		{"durable/s3", v1.Durability_DURABILITY_DURABLE, v1.Acks_ACKS_DURABLE, true},
		{"wal/s3", v1.Durability_DURABILITY_WAL, v1.Acks_ACKS_WAL, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var args []string
			if tc.s3 {
				cfg := s3test.Start(t)
				args = []string{"--object-store", "s3", "--s3-endpoint", cfg.Endpoint, "--s3-bucket", cfg.Bucket,
					"--s3-access-key", cfg.AccessKey, "--s3-secret-key", cfg.SecretKey, "--s3-region", cfg.Region}
			}
			runCrash(t, tc.durability, tc.acks, append(args, "--flush-interval", "100ms")...)
		})
	}
}

func runCrash(t *testing.T, durability v1.Durability, acks v1.Acks, args ...string) {
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 0))
	killAt := crashRecords/10 + rng.IntN(crashRecords*6/10) // acks before the kill
	t.Logf("seed %d: SIGKILL after %d acknowledged records", seed, killAt)

	p := devproc.Start(t, bin, t.TempDir(), args...)
	c := newClients(t, p.URL)
	createTopic(t, c, "crash", crashPartitions, durability)

	sdk, err := client.New(p.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer sdk.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	h := checker.NewHistory()
	var acked atomic.Int64
	killed := make(chan struct{})
	var killOnce sync.Once
	var wg sync.WaitGroup
	for id := range crashProducers {
		// Small batches, so the records in flight at the kill (which get an
		// unknown outcome) are a small share and the kill lands mid-stream.
		prod, err := sdk.NewProducer("crash", client.Acks(acks), client.BatchBytes(16<<10), client.MaxBufferedBytes(1<<20))
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer prod.Close()
			for seq := range crashRecords / crashProducers {
				value := fmt.Sprintf("p%d-%06d", id, seq)
				prod.Produce(ctx, client.Record{Key: []byte(value), Value: []byte(value)}, func(r client.Result) {
					if r.Err != nil {
						h.Failed(value)
						return
					}
					h.Acked(checker.Ack{Producer: id, Seq: seq, Value: value, Partition: r.Partition, Offset: r.Offset})
					if acked.Add(1) == int64(killAt) {
						killOnce.Do(func() { close(killed) })
					}
				})
			}
			if err := prod.Flush(ctx); err != nil {
				t.Errorf("producer %d flush: %v", id, err)
			}
		}()
	}
	producersDone := make(chan struct{})
	go func() { wg.Wait(); close(producersDone) }()

	select {
	case <-killed:
		p.Kill()
		a, f := h.Counts()
		t.Logf("killed with SIGKILL: %d acked, %d failed so far; restarting", a, f)
		p.Restart()
	case <-producersDone:
		t.Fatalf("producers finished before the kill point %d", killAt)
	}
	<-producersDone
	if t.Failed() {
		return
	}

	reads := readAll(t, ctx, sdk, "crash", crashPartitions)
	res := h.Check(reads)
	t.Logf("acked %d, failed (outcome unknown) %d of which %d were written, read %d; partition ends %v",
		res.Acked, res.Failed, res.FailedPresent, res.Read, res.PartitionEnds)
	if err := res.Err(); err != nil {
		t.Fatal(err)
	}
	if res.Acked+res.Failed != crashRecords {
		t.Fatalf("%d acked + %d failed callbacks for %d records", res.Acked, res.Failed, crashRecords)
	}
	if res.Acked < crashRecords/2 {
		t.Fatalf("only %d of %d records were acknowledged: the restart did not let producers continue", res.Acked, crashRecords)
	}
}

// readAll reads every partition from 0 to its high watermark.
func readAll(t *testing.T, ctx context.Context, sdk *client.Client, topic string, partitions int32) []checker.Read {
	t.Helper()
	reads, err := loadgen.ReadAll(ctx, sdk, topic, partitions)
	if err != nil {
		t.Fatal(err)
	}
	return reads
}
