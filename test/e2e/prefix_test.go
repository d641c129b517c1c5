package e2e

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/test/devproc"
)

// TestPrefixCountChange: object keys are spread over --prefix-count shard
// prefixes; changing the count only changes where new objects go, and
// every old object stays readable (readers follow the index, not a hash).
func TestPrefixCountChange(t *testing.T) {
	dir := t.TempDir()
	p := devproc.Start(t, bin, dir, "--prefix-count", "2", "--flush-interval", "20ms")
	c := newClients(t, p.URL)
	createTopic(t, c, "px", 2, v1.Durability_DURABILITY_DURABLE)
	for i := range 20 {
		produceN(t, c, "px", int32(i%2), 50, v1.Acks_ACKS_DURABLE, "old"+strconv.Itoa(i))
	}
	p.Stop()
	shards := func() map[string]bool {
		out := map[string]bool{}
		entries, _ := os.ReadDir(filepath.Join(dir, "objects"))
		for _, e := range entries {
			if e.IsDir() && len(e.Name()) == 2 {
				out[e.Name()] = true
			}
		}
		return out
	}
	before := shards()
	for s := range before {
		if s != "00" && s != "01" {
			t.Fatalf("with --prefix-count 2 an object went to shard %s", s)
		}
	}
	p.Args = []string{"--prefix-count", "64", "--flush-interval", "20ms"}
	p.Restart()
	for i := range 20 {
		produceN(t, c, "px", int32(i%2), 50, v1.Acks_ACKS_DURABLE, "new"+strconv.Itoa(i))
	}
	after := shards()
	if len(after) <= 2 {
		t.Fatalf("after --prefix-count 64 objects are still in %v", after)
	}
	for part := range int32(2) {
		recs, err := fetchAll(t, c, "px", part)
		if err != nil || len(recs) != 1000 {
			t.Fatalf("partition %d: %d records (%v), want 1000 across old and new prefixes", part, len(recs), err)
		}
	}
	t.Logf("shards before %v, after %d shard prefixes; all 2,000 records readable", before, len(after))
}
