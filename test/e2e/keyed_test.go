package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/pkg/batch"
	"github.com/streamhouse/streamhouse/pkg/client"
	"github.com/streamhouse/streamhouse/pkg/objstore/s3test"
	"github.com/streamhouse/streamhouse/pkg/partition"
	"github.com/streamhouse/streamhouse/test/checker"
	"github.com/streamhouse/streamhouse/test/devproc"
	"github.com/streamhouse/streamhouse/test/loadgen"
)

// leaseTrouble are the agent log lines that say it lost, or nearly lost,
// partitions it held: a lease that lapsed (heartbeats failing), a partition
// dropped, records answered with the lease-lost error.
var leaseTrouble = []string{"lost the partition's lease", "dropped partition", "heartbeat failed"}

// checkLeaseLog fails the test for every lease-trouble line of log, and
// logs how many warnings and errors it has (with the first few).
func checkLeaseLog(t *testing.T, log string) {
	t.Helper()
	n := 0
	var warnings []string
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") {
			warnings = append(warnings, line)
		}
		for _, s := range leaseTrouble {
			if strings.Contains(line, s) {
				if n++; n <= 10 {
					t.Errorf("server log: %s", line)
				}
				break
			}
		}
	}
	if n > 0 {
		t.Errorf("%d server log lines report lease loss (%q)", n, leaseTrouble)
	}
	t.Logf("server log: %d lines report lease loss, %d warnings and errors in all; first: %q",
		n, len(warnings), warnings[:min(3, len(warnings))])
}

const mGetOK = `streamhouse_agent_s3_requests_total{op="get",outcome="ok"}`

// methodCodes returns the gateway's answers to method by code, from a
// scrape.
func methodCodes(m map[string]float64, method string) map[string]int {
	out := map[string]int{}
	prefix := `streamhouse_gateway_requests_total{method="` + method + `",code="`
	for k, v := range m {
		if code, ok := strings.CutPrefix(k, prefix); ok {
			out[strings.TrimSuffix(code, `"}`)] += int(v)
		}
	}
	return out
}

// mix is splitmix64: a deterministic, well-spread hash of x.
func mix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// readBack reads every partition of topic from offset 0 to the high
// watermark it had when first answered, with `readers` MultiReaders at once
// (partition p goes to reader p % readers; each fetches all of its
// partitions still behind with one FetchPartitions of at most fetchMax
// bytes per Next). value turns each record into the value the checker
// knows it by (it may also check the record); it is called from the
// readers' goroutines, concurrently.
func readBack(t *testing.T, ctx context.Context, sdk *client.Client, topic string, partitions int32, readers int, fetchMax int32,
	value func(partition int32, rec *batch.Record) string) []checker.Read {
	t.Helper()
	type result struct {
		reads   []checker.Read
		fetches int
		slowest time.Duration
		err     error
	}
	results := make([]result, readers)
	var wg sync.WaitGroup
	for i := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res := &results[i]
			starts := map[client.TopicPartition]int64{}
			for p := int32(i); p < partitions; p += int32(readers) {
				starts[client.TopicPartition{Topic: topic, Partition: p}] = 0
			}
			r := sdk.NewMultiReader(starts, client.MaxWait(0), client.FetchMaxBytes(fetchMax))
			end := map[client.TopicPartition]int64{} // high watermark at the first answer
			for len(r.Partitions()) > 0 {
				res.fetches++
				began := time.Now()
				fps, err := r.Next(ctx)
				res.slowest = max(res.slowest, time.Since(began))
				if err != nil {
					res.err = fmt.Errorf("read %s: %w", topic, err)
					return
				}
				for _, fp := range fps {
					if fp.Err != nil {
						res.err = fmt.Errorf("read %s/%d: %w", topic, fp.Partition, fp.Err)
						return
					}
					for i := range fp.Records {
						rec := &fp.Records[i]
						res.reads = append(res.reads, checker.Read{Partition: fp.Partition, Offset: rec.Offset, Value: value(fp.Partition, rec)})
					}
				}
				for _, tp := range r.Partitions() {
					hwm := r.HighWatermark(tp)
					if hwm < 0 {
						continue // not answered yet
					}
					if _, ok := end[tp]; !ok {
						end[tp] = hwm
					}
					if off, _ := r.Offset(tp); off >= end[tp] {
						r.Remove(tp)
					}
				}
			}
		}()
	}
	wg.Wait()
	var reads []checker.Read
	fetches, slowest := 0, time.Duration(0)
	for _, res := range results {
		if res.err != nil {
			t.Fatal(res.err)
		}
		reads = append(reads, res.reads...)
		fetches, slowest = fetches+res.fetches, max(slowest, res.slowest)
	}
	t.Logf("read %d records of %d partitions with %d readers: %d fetches, the slowest took %v",
		len(reads), partitions, readers, fetches, slowest.Round(time.Millisecond))
	return reads
}

// keyedValue is readBack's value function for keyed records: it checks that
// each record sits in the partition its key hashes to (murmur2, as Kafka)
// and counts, in misplaced, those that do not.
func keyedValue(t *testing.T, partitions int32, misplaced *atomic.Int64) func(int32, *batch.Record) string {
	return func(part int32, rec *batch.Record) string {
		if want := partition.ForKey(rec.Key, partitions); want != part {
			if misplaced.Add(1) <= 5 {
				t.Errorf("record %q with key %q is in partition %d; its key hashes to %d", rec.Value, rec.Key, part, want)
			}
		}
		return string(rec.Value)
	}
}

// TestKeyedThousandPartitions (issue 13): four producers, each with its own
// SDK client and connection, write keyed records (keys drawn from a space of
// a million) to a durable topic of 1,000 partitions on `streamhouse dev`
// over a real S3 server for 12 s. Read back, every acknowledged record is
// present exactly once at its acknowledged offset, offsets are dense, each
// producer's acks keep their order per partition, and every record is in
// its key's partition; nothing failed, and the server log shows no lease
// lost.
func TestKeyedThousandPartitions(t *testing.T) {
	if testing.Short() {
		t.Skip("a 1,000-partition load for 12 s; not in -short")
	}
	const (
		partitions = 1000
		producers  = 4
		keySpace   = 1_000_000
		rate       = 5000 // records/s per producer
		window     = 12 * time.Second
		topic      = "keyed"
	)
	s3 := s3test.Start(t)
	// A 1 s flush interval: each object holds a section of nearly every
	// partition, and reading a partition back costs one range GET per
	// object, so fewer objects keep the read-back of 1,000 partitions
	// short (about 12 objects instead of 50).
	p := devproc.Start(t, bin, t.TempDir(), append(s3Args(s3, s3.Endpoint), "--flush-interval", "1s")...)
	cl := newClients(t, p.URL)
	createTopic(t, cl, topic, partitions, v1.Durability_DURABILITY_DURABLE)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var sdks []*client.Client
	for range producers {
		sdk, err := client.New(p.URL) // its own transport: one connection per producer
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { sdk.Close() })
		sdks = append(sdks, sdk)
	}
	key := func(id, seq int) []byte {
		return fmt.Appendf(nil, "k%06d", mix(uint64(id)<<32|uint64(seq))%keySpace)
	}
	// Each producer offers 5,000 records/s (fewer when the server cannot
	// keep up: Produce then blocks on the 1 MiB buffer), far under the
	// server's 128 MiB in-flight limit: no refusal is expected.
	load := loadgen.StartT(t, ctx, sdks, loadgen.Config{Topic: topic, Producers: producers, Key: key, Rate: rate,
		Options: []client.ProducerOption{client.MaxBufferedBytes(1 << 20)}})
	start := time.Now()
	select {
	case <-time.After(window): // the load's duration, not a wait for an event
	case <-load.Done():
		t.Fatalf("producers stopped by themselves after %v: %v", time.Since(start), load.Stop())
	}
	inWindow := load.Acked()
	stopping := time.Now()
	if err := load.Stop(); err != nil {
		t.Errorf("stop producers: %v", err)
	}
	var per []string
	for id := range producers {
		n := load.AckedBy(id)
		per = append(per, fmt.Sprint(n))
		if n == 0 {
			t.Errorf("producer %d had no record acknowledged", id)
		}
	}
	codes := produceCodes(t, p.URL)
	requests := 0
	for _, n := range codes {
		requests += n
	}
	t.Logf("%d producers: %d records acked in %v (%.0f/s), %d in all after the final flush (%v; per producer %s), %d failed; "+
		"%d Produce requests (%.0f records each), answers by code %v",
		producers, inWindow, window, float64(inWindow)/window.Seconds(), load.Acked(), time.Since(stopping).Round(time.Millisecond),
		strings.Join(per, "/"), load.Failed(), requests, float64(load.Acked())/float64(max(requests, 1)), codes)
	if n := load.Failed(); n > 0 {
		fs := load.Failures()
		t.Errorf("%d records failed; none should on a healthy server, first: %v", n, fs[:min(3, len(fs))])
	}

	m0 := scrape(t, p.URL)
	readStart := time.Now()
	var misplaced atomic.Int64
	// 256 KiB per fetch: the records of a partition are spread over a dozen
	// objects, one range GET each, and the agent reads a fetch's sections
	// one after the other; bigger fetches of many partitions take tens of
	// seconds each on this machine, near the client's 30 s request timeout.
	reads := readBack(t, ctx, sdks[0], topic, partitions, 8, 256<<10, keyedValue(t, partitions, &misplaced))
	if n := misplaced.Load(); n > 0 {
		t.Errorf("%d records are not in the partition their key hashes to", n)
	}
	res := load.History().Check(reads)
	m1 := scrape(t, p.URL)
	written := 0
	for _, end := range res.PartitionEnds {
		if end > 0 {
			written++
		}
	}
	t.Logf("read back and checked in %v: %d acked, %d failed, %d read from %d of %d partitions; "+
		"%.0f objects written, %.0f range GETs to read them back; FetchPartitions answers by code %v",
		time.Since(readStart).Round(time.Millisecond), res.Acked, res.Failed, res.Read, written, partitions,
		m1[mPutOK], m1[mGetOK]-m0[mGetOK], methodCodes(m1, "FetchPartitions"))
	if err := res.Err(); err != nil {
		t.Error(err)
	}
	if res.Acked < 2*partitions {
		t.Errorf("only %d records acknowledged in %v: too little load to say anything about %d partitions", res.Acked, window, partitions)
	}
	checkLeaseLog(t, p.Stderr())
}
