package loadgen_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/pkg/client"
	"github.com/streamhouse/streamhouse/pkg/partition"
	"github.com/streamhouse/streamhouse/test/checker"
	"github.com/streamhouse/streamhouse/test/devproc"
	"github.com/streamhouse/streamhouse/test/loadgen"
)

var bin string

func TestMain(m *testing.M) {
	os.Exit(devproc.Main(m, func(dir string) (err error) { bin, err = devproc.Build(dir); return err }))
}

// dev starts `streamhouse dev` with a topic of 4 partitions and returns an
// SDK client for it and its URL.
func dev(t *testing.T, topic string) (*client.Client, string) {
	p := devproc.Start(t, bin, t.TempDir())
	sdk, err := client.New(p.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sdk.Close() })
	if _, err := sdk.Admin().CreateTopic(context.Background(), connect.NewRequest(&v1.CreateTopicRequest{Name: topic, Partitions: 4})); err != nil {
		t.Fatal(err)
	}
	return sdk, p.URL
}

// readAll reads every partition of topic from offset 0 to its high
// watermark.
func readAll(t *testing.T, ctx context.Context, sdk *client.Client, topic string) []checker.Read {
	t.Helper()
	reads, err := loadgen.ReadAll(ctx, sdk, topic, 4)
	if err != nil {
		t.Fatal(err)
	}
	return reads
}

// TestLoad runs producers on two clients until Stop, then checks that the
// history matches what the topic holds and that Stop left the counts final.
func TestLoad(t *testing.T) {
	sdk, url := dev(t, "t")
	other, err := client.New(url)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	l := loadgen.StartT(t, ctx, []*client.Client{sdk, other}, loadgen.Config{Topic: "t", Producers: 3, FirstID: 10})
	l.WaitAckedT(t, 3000, time.Minute)
	if err := l.Stop(); err != nil {
		t.Fatal(err)
	}
	acked, failed := l.Acked(), l.Failed()
	if err := l.Stop(); err != nil || l.Acked() != acked || l.Failed() != failed {
		t.Fatalf("second Stop: %v, counts %d/%d then %d/%d", err, acked, failed, l.Acked(), l.Failed())
	}
	if failed != 0 {
		t.Fatalf("%d records failed: %v", failed, l.Failures())
	}
	var sum int64
	for id := 10; id < 13; id++ {
		if l.AckedBy(id) == 0 {
			t.Errorf("producer %d had nothing acknowledged", id)
		}
		sum += l.AckedBy(id)
	}
	if sum != acked {
		t.Errorf("acks by producer sum to %d, total %d", sum, acked)
	}
	res := l.History().Check(readAll(t, ctx, sdk, "t"))
	if err := res.Err(); err != nil {
		t.Fatal(err)
	}
	if int64(res.Acked) != acked || res.Read != res.Acked {
		t.Fatalf("history has %d acks, counter %d, read back %d", res.Acked, acked, res.Read)
	}
	if err := l.WaitAcked(ctx, acked+1); err == nil {
		t.Fatal("WaitAcked after Stop returned nil for a count never reached")
	}
}

// TestRecordsAndRate: producers with a record count stop by themselves,
// paced at the rate asked, with the values the scheme gives.
func TestRecordsAndRate(t *testing.T) {
	sdk, _ := dev(t, "r")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	// 2 producers x 200 records at 1,000/s: at least 200 ms.
	l := loadgen.StartT(t, ctx, []*client.Client{sdk}, loadgen.Config{Topic: "r", Producers: 2, Records: 200, Rate: 1000,
		Keyless: true, Acks: v1.Acks_ACKS_DURABLE, Value: func(id, seq int) []byte { return fmt.Appendf(nil, "v%d/%d", id, seq) }})
	select {
	case <-l.Done():
	case <-ctx.Done():
		t.Fatal("producers with a record count never stopped")
	}
	if err := l.Wait(); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < 190*time.Millisecond {
		t.Errorf("200 records per producer at 1000/s took %v", took)
	}
	if l.Acked() != 400 || l.Failed() != 0 {
		t.Fatalf("acked %d, failed %d; want 400 and 0", l.Acked(), l.Failed())
	}
	res := l.History().Check(readAll(t, ctx, sdk, "r"))
	if err := res.Err(); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, r := range readAll(t, ctx, sdk, "r") {
		seen[r.Value] = true
	}
	if !seen["v0/0"] || !seen["v1/199"] {
		t.Errorf("values not from the scheme: %d distinct", len(seen))
	}
}

// TestStartFails: a topic that does not exist fails Start, with no
// producer or goroutine left behind (TestMain's goleak check).
func TestStartFails(t *testing.T) {
	sdk, _ := dev(t, "exists")
	if _, err := loadgen.Start(context.Background(), []*client.Client{sdk}, loadgen.Config{Topic: "missing", Producers: 2}); err == nil {
		t.Fatal("Start on a missing topic succeeded")
	}
	if _, err := loadgen.Start(context.Background(), nil, loadgen.Config{Topic: "exists"}); err == nil {
		t.Fatal("Start without a client succeeded")
	}
	l := loadgen.StartT(t, context.Background(), []*client.Client{sdk}, loadgen.Config{Topic: "exists", CountOnly: true})
	l.WaitAckedT(t, 100, time.Minute)
	if err := l.Stop(); err != nil {
		t.Fatal(err)
	}
	if l.History() != nil {
		t.Error("CountOnly load kept a history")
	}
}

// TestKeyAndPad: Config.Key gives each record its key (keys that repeat
// land in their key's partition) and Config.Pad lengthens the values sent,
// while the history knows them by the value without the padding.
func TestKeyAndPad(t *testing.T) {
	sdk, _ := dev(t, "k")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const pad = 100
	key := func(id, seq int) []byte { return fmt.Appendf(nil, "key-%d", seq%5) }
	l := loadgen.StartT(t, ctx, []*client.Client{sdk}, loadgen.Config{Topic: "k", Records: 200, Key: key, Pad: pad})
	if err := l.Wait(); err != nil {
		t.Fatal(err)
	}
	var reads []checker.Read
	for part := range int32(4) {
		r := sdk.NewReader("k", part, 0, client.MaxWait(0))
		for r.Offset() < 0 || r.HighWatermark() < 0 || r.Offset() < r.HighWatermark() {
			recs, err := r.Next(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, rec := range recs {
				if want := partition.ForKey(rec.Key, 4); !strings.HasPrefix(string(rec.Key), "key-") || want != part {
					t.Fatalf("record with key %q in partition %d, want a key-N key in partition %d", rec.Key, part, want)
				}
				v, ok := strings.CutSuffix(string(rec.Value), strings.Repeat(".", pad))
				if !ok {
					t.Fatalf("value %q is not padded with %d bytes", rec.Value, pad)
				}
				reads = append(reads, checker.Read{Partition: part, Offset: rec.Offset, Value: v})
			}
		}
	}
	res := l.History().Check(reads)
	if err := res.Err(); err != nil {
		t.Fatal(err)
	}
	if res.Acked != 200 || res.Read != 200 {
		t.Fatalf("acked %d, read %d; want 200 each", res.Acked, res.Read)
	}
}
