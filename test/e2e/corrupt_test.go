package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/test/devproc"
)

func produceN(t *testing.T, c clients, topic string, partition int32, n int, acks v1.Acks, prefix string) {
	t.Helper()
	recs := make([]*v1.Record, n)
	for i := range recs {
		recs[i] = &v1.Record{Value: []byte(fmt.Sprintf("%s-%d", prefix, i))}
	}
	if _, err := c.produce.Produce(ctxT(t, time.Minute), connect.NewRequest(&v1.ProduceRequest{
		Topic: topic, Partition: proto.Int32(partition), Records: recs, Acks: acks})); err != nil {
		t.Fatalf("produce to %s/%d: %v", topic, partition, err)
	}
}

func fetchAll(t *testing.T, c clients, topic string, partition int32) ([]*v1.Record, error) {
	t.Helper()
	var out []*v1.Record
	offset := int64(0)
	for {
		res, err := c.consume.Fetch(ctxT(t, time.Minute), connect.NewRequest(&v1.FetchRequest{Topic: topic, Partition: partition, Offset: offset}))
		if err != nil {
			return out, err
		}
		out = append(out, res.Msg.Records...)
		if res.Msg.NextOffset >= res.Msg.HighWatermark || res.Msg.NextOffset == offset {
			return out, nil
		}
		offset = res.Msg.NextOffset
	}
}

// TestCorruptWALTail: a torn or garbage WAL tail after a crash is detected by
// CRC, cut off and reported; everything acknowledged before it is served.
func TestCorruptWALTail(t *testing.T) {
	dir := t.TempDir()
	p := devproc.Start(t, bin, dir)
	c := newClients(t, p.URL)
	createTopic(t, c, "w", 2, v1.Durability_DURABILITY_WAL)
	for i := 0; i < 5; i++ {
		produceN(t, c, "w", int32(i%2), 100, v1.Acks_ACKS_WAL, fmt.Sprintf("batch%d", i))
	}
	p.Kill()

	segs, err := filepath.Glob(filepath.Join(dir, "agent", "wal", "segments", "*.wal"))
	if err != nil || len(segs) == 0 {
		t.Fatalf("no WAL segments found: %v", err)
	}
	sort.Strings(segs)
	last := segs[len(segs)-1]
	f, err := os.OpenFile(last, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	// A frame header promising 4 KiB, then garbage: what a torn write leaves.
	if _, err := f.Write(append([]byte{0, 0, 16, 0, 0xde, 0xad, 0xbe, 0xef}, []byte(strings.Repeat("garbage", 50))...)); err != nil {
		t.Fatal(err)
	}
	f.Close()

	p.Restart()
	for part := int32(0); part < 2; part++ {
		recs, err := fetchAll(t, c, "w", part)
		if err != nil {
			t.Fatalf("fetch %d after restart: %v", part, err)
		}
		if len(recs) < 200 || (part == 0 && len(recs) != 300) {
			t.Fatalf("partition %d has %d records after recovery, want %d", part, len(recs), 300-100*part)
		}
	}
	if !strings.Contains(p.Stderr(), "truncat") {
		t.Errorf("recovery did not report the truncated tail; stderr:\n%s", p.Stderr())
	}
	produceN(t, c, "w", 0, 10, v1.Acks_ACKS_WAL, "after")
	recs, err := fetchAll(t, c, "w", 0)
	if err != nil || len(recs) != 310 {
		t.Fatalf("after recovery: %d records, %v", len(recs), err)
	}
}

// TestCorruptObject: a damaged object is detected by CRC and reported as
// DataLoss naming the object; the server keeps serving everything else.
func TestCorruptObject(t *testing.T) {
	dir := t.TempDir()
	p := devproc.Start(t, bin, dir)
	c := newClients(t, p.URL)
	createTopic(t, c, "d", 2, v1.Durability_DURABILITY_DURABLE)
	objects := func() []string {
		var out []string
		_ = filepath.Walk(filepath.Join(dir, "objects"), func(path string, info os.FileInfo, err error) error {
			if err == nil && strings.HasSuffix(path, ".obj") {
				out = append(out, path)
			}
			return nil
		})
		return out
	}
	produceN(t, c, "d", 0, 200, v1.Acks_ACKS_DURABLE, "zero") // acked = committed in its own object
	first := objects()
	if len(first) != 1 {
		t.Fatalf("want exactly one object after the first durable produce, got %v", first)
	}
	produceN(t, c, "d", 1, 200, v1.Acks_ACKS_DURABLE, "one")
	p.Stop()

	data, err := os.ReadFile(first[0])
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/3] ^= 0xff // inside partition 0's records
	if err := os.WriteFile(first[0], data, 0o644); err != nil {
		t.Fatal(err)
	}

	p.Restart()
	_, err = fetchAll(t, c, "d", 0)
	if connect.CodeOf(err) != connect.CodeDataLoss || !strings.Contains(err.Error(), filepath.Base(first[0])) {
		t.Fatalf("fetch of the corrupt partition = %v, want DataLoss naming %s", err, filepath.Base(first[0]))
	}
	recs, err := fetchAll(t, c, "d", 1)
	if err != nil || len(recs) != 200 {
		t.Fatalf("the healthy partition: %d records, %v", len(recs), err)
	}
	produceN(t, c, "d", 0, 5, v1.Acks_ACKS_DURABLE, "new")
	res, err := c.consume.Fetch(ctxT(t, time.Minute), connect.NewRequest(&v1.FetchRequest{Topic: "d", Partition: 0, Offset: 200}))
	if err != nil || len(res.Msg.Records) != 5 {
		t.Fatalf("new records after the corrupt object: %v, %v", res, err)
	}
}
