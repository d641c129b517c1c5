package agent

import (
	"context"
	"net"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/pkg/objstore"
	"github.com/streamhouse/streamhouse/pkg/objstore/guard"
	"github.com/streamhouse/streamhouse/pkg/rpcerr"
)

// downStore fails every PUT with a transport error (retryable, so the
// guard counts it) while down is set.
type downStore struct {
	objstore.Store
	down atomic.Bool
}

func (s *downStore) PutIfAbsent(ctx context.Context, key string, data []byte) error {
	if s.down.Load() {
		return &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	}
	return s.Store.PutIfAbsent(ctx, key, data)
}

// fastGuard retries quickly and opens its breaker late, so tests see the
// refusal from the first failed upload, before the breaker opens.
func fastGuard(c *Config) {
	c.Guard = guard.Config{MetricsPrefix: "agent_test",
		Retry:   guard.Retry{MaxAttempts: 3, BaseDelay: 10 * time.Millisecond, MaxDelay: 50 * time.Millisecond},
		Breaker: guard.Breaker{ConsecutiveFailures: 1000, MinRequests: 100000, CoolDown: 200 * time.Millisecond}}
}

// While uploads fail, durable writes are refused at once (not held until
// the breaker opens or the ack times out): ResourceExhausted, not applied,
// with a Retry-After in whole seconds. acks=wal writes are still taken.
// When the store is back, durable writes are accepted again.
func TestDurableRefusedWhileStoreFails(t *testing.T) {
	e := newEnv(t, durableTopic("d", 1), walTopic("w", 1))
	store := &downStore{Store: e.store}
	a := e.open(fastGuard, func(c *Config) { c.Store = store; c.DurableAckTimeout = 5 * time.Second })
	mustAppend(t, a, "d", 0, "before", 2, v1.Acks_ACKS_DURABLE)

	store.down.Store(true)
	refused0 := durableRefused.Get()
	// A wal write gives the uploader something to fail on.
	mustAppend(t, a, "w", 0, "wal", 2, v1.Acks_ACKS_WAL)
	waitUntil(t, "the guard sees the failing uploads", func() bool { return a.guard.Health().Failing })
	if st := a.guard.State(); st != guard.Closed {
		t.Fatalf("breaker %v; this test wants the refusal before it opens", st)
	}
	_, err := appendB(ctxT(t), a, "d", 0, mkBatch(t, "refused", 1), v1.Acks_ACKS_DURABLE)
	wantRefused(t, err, connect.CodeResourceExhausted, "durable append while uploads fail")
	if ra := rpcerr.RetryAfter(err); ra < time.Second || ra > maxRetryAfter || ra%time.Second != 0 {
		t.Errorf("Retry-After %v, want whole seconds in [1s, %v]", ra, maxRetryAfter)
	}
	if durableRefused.Get() <= refused0 {
		t.Error("streamhouse_agent_durable_writes_refused_total did not count the refusal")
	}
	mustAppend(t, a, "w", 0, "wal-while-down", 1, v1.Acks_ACKS_WAL)

	store.down.Store(false)
	// Refusals are not applied: retrying until accepted duplicates nothing.
	var off int64 = -1
	waitUntil(t, "durable writes accepted again", func() bool {
		r, err := appendB(ctxT(t), a, "d", 0, mkBatch(t, "after", 1), v1.Acks_ACKS_DURABLE)
		if err != nil {
			if connect.CodeOf(err) != connect.CodeResourceExhausted {
				t.Fatalf("durable append after the store recovered: %v", err)
			}
			return false
		}
		off = r.GetBaseOffset()
		return true
	})
	if off != 2 {
		t.Errorf("first durable write after recovery at offset %d, want 2 (the refused one took none)", off)
	}
}

// WAL backpressure holds for BackpressureMinDwell even when the WAL drains
// at once, and its refusals carry that dwell as their Retry-After.
func TestBackpressureMinDwell(t *testing.T) {
	const dwell = 1500 * time.Millisecond
	e := newEnv(t, walTopic("w", 1))
	store := &downStore{Store: e.store}
	store.down.Store(true)
	a := e.open(fastGuard, func(c *Config) {
		c.Store, c.WALBudget, c.BackpressureMinDwell = store, 64<<10, dwell
	})
	// Fill the WAL past its high watermark while nothing uploads.
	for i := 0; !a.backpressure.Load(); i++ {
		if i > 1000 {
			t.Fatal("backpressure never turned on")
		}
		_, err := appendB(ctxT(t), a, "w", 0, mkBatch(t, "fill", 100), v1.Acks_ACKS_WAL)
		if err != nil && connect.CodeOf(err) != connect.CodeResourceExhausted {
			t.Fatal(err)
		}
	}
	on := time.Now()
	_, err := appendB(ctxT(t), a, "w", 0, mkBatch(t, "refused", 1), v1.Acks_ACKS_WAL)
	wantRefused(t, err, connect.CodeResourceExhausted, "append with backpressure on")
	if ra := rpcerr.RetryAfter(err); ra != 2*time.Second {
		t.Errorf("Retry-After %v, want the %v dwell rounded up to 2s", ra, dwell)
	}
	store.down.Store(false)
	waitUntil(t, "the WAL drained below the low watermark", func() bool {
		return a.wal.Stats().UncommittedBytes < int64(float64(a.cfg.WALBudget)*a.cfg.LowWatermark)
	})
	drained := time.Since(on)
	waitUntil(t, "backpressure off", func() bool { return !a.backpressure.Load() })
	off := time.Since(on)
	t.Logf("WAL drained %v after backpressure turned on; backpressure off after %v (dwell %v)", drained, off, dwell)
	// on was taken after the loop turned it on, so off-on is at most the
	// time it was on; a tick (50ms) of slack for the loop.
	if off < dwell-60*time.Millisecond {
		t.Errorf("backpressure off %v after it turned on, before the %v dwell", off, dwell)
	}
}
