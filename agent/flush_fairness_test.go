package agent

import (
	"testing"
	"time"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
)

// With more than FlushBytes waiting, successive flushes take turns over the
// partitions: one with a backlog does not hold the others back flush after
// flush.
func TestFlushTakesPartitionsInTurn(t *testing.T) {
	e := newEnv(t, walTopic("t", 2))
	// No flush runs on its own (an hour's interval, 1 GiB to kick one), so
	// the test's flushOnce calls are the upload loop's only work.
	a := e.open(func(c *Config) { c.FlushInterval, c.FlushBytes = time.Hour, 1<<30 })
	for _, p := range []int32{0, 1} {
		for range 3 {
			mustAppend(t, a, "t", p, "x", 50, v1.Acks_ACKS_WAL)
		}
	}
	a.cfg.FlushBytes = len(mkBatch(t, "x", 50)) // one batch per flush from now on
	uploaded := func(p int32) int64 {
		part := a.partition(partKey{"t", p})
		part.mu.Lock()
		defer part.mu.Unlock()
		return part.uploadedEnd
	}
	for i := range 2 {
		if _, err := a.flushOnce(ctxT(t)); err != nil {
			t.Fatalf("flush %d: %v", i, err)
		}
	}
	if u0, u1 := uploaded(0), uploaded(1); u0 == 0 || u1 == 0 {
		t.Fatalf("after two flushes of one batch each, uploaded ends are %d and %d: a partition was held back", u0, u1)
	}
}
