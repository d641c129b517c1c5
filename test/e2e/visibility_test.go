package e2e

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/pkg/client"
	"github.com/streamhouse/streamhouse/test/devproc"
)

// TestNeverPastHighWatermark fetches concurrently with producers and checks
// that consumers never see a record that could still be lost (DESIGN.md,
// Visibility): every fetched record lies below the response's high
// watermark; on a durable topic it is already committed to the controller
// when the consumer sees it; on a wal topic it survives a SIGKILL of the
// server right after.
func TestNeverPastHighWatermark(t *testing.T) {
	for _, durability := range []v1.Durability{v1.Durability_DURABILITY_DURABLE, v1.Durability_DURABILITY_WAL} {
		t.Run(durability.String(), func(t *testing.T) { runVisibility(t, durability) })
	}
}

func runVisibility(t *testing.T, durability v1.Durability) {
	const partitions, records = 4, 20_000
	p := devproc.Start(t, bin, t.TempDir(), "--flush-interval", "50ms")
	c := newClients(t, p.URL)
	createTopic(t, c, "vis", partitions, durability)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	sdk, err := client.New(p.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer sdk.Close()
	prod, err := sdk.NewProducer("vis", client.Linger(time.Millisecond), client.BatchBytes(16<<10))
	if err != nil {
		t.Fatal(err)
	}
	produced := make(chan struct{})
	go func() {
		defer close(produced)
		for i := range records {
			v := fmt.Sprintf("v%06d", i)
			prod.Produce(ctx, client.Record{Key: []byte(v), Value: []byte(v)}, func(r client.Result) {
				if r.Err != nil {
					t.Errorf("produce %s: %v", v, r.Err)
				}
			})
		}
		if err := prod.Close(); err != nil {
			t.Errorf("producer close: %v", err)
		}
	}()

	seen := make([][]string, partitions) // values by offset, per partition
	var wg sync.WaitGroup
	for part := range int32(partitions) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			offset, done := int64(0), false
			for {
				select {
				case <-produced:
					done = true
				default:
				}
				res, err := c.consume.Fetch(ctx, connect.NewRequest(&v1.FetchRequest{Topic: "vis", Partition: part, Offset: offset, MaxWaitMs: 100, MaxBytes: 8 << 10}))
				if err != nil {
					t.Errorf("fetch %d at %d: %v", part, offset, err)
					return
				}
				hw := res.Msg.HighWatermark
				for _, r := range res.Msg.Records {
					if r.Offset >= hw {
						t.Errorf("partition %d: record at offset %d returned with high watermark %d", part, r.Offset, hw)
					}
					if r.Offset != offset {
						t.Errorf("partition %d: expected offset %d, got %d", part, offset, r.Offset)
						return
					}
					seen[part] = append(seen[part], string(r.Value))
					offset++
				}
				if n := len(res.Msg.Records); n > 0 && durability == v1.Durability_DURABILITY_DURABLE {
					d, err := c.admin.DescribeTopic(ctx, connect.NewRequest(&v1.DescribeTopicRequest{Name: "vis"}))
					if err != nil {
						t.Errorf("describe: %v", err)
						return
					}
					if ce := d.Msg.Partitions[part].CommittedEndOffset; ce < offset {
						t.Errorf("partition %d: consumer saw offset %d but the controller has committed only up to %d", part, offset-1, ce)
					}
				}
				if done && offset >= hw && len(res.Msg.Records) == 0 {
					return
				}
			}
		}()
	}
	wg.Wait()
	<-produced
	total := 0
	for _, s := range seen {
		total += len(s)
	}
	t.Logf("consumers saw %d records while %d were produced", total, records)
	if total != records && !t.Failed() {
		t.Fatalf("consumers saw %d records, want %d", total, records)
	}

	// What consumers saw must survive a crash: kill -9 and read it back.
	p.Kill()
	p.Restart()
	for part := range int32(partitions) {
		recs, err := fetchAll(t, c, "vis", part)
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Fatalf("fetch after restart: %v", err)
		}
		if len(recs) < len(seen[part]) {
			t.Fatalf("partition %d: consumers saw %d records before the crash, only %d survived", part, len(seen[part]), len(recs))
		}
		for i, v := range seen[part] {
			if string(recs[i].Value) != v {
				t.Fatalf("partition %d offset %d: saw %q before the crash, %q after", part, i, v, recs[i].Value)
			}
		}
	}
}
