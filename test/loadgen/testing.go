package loadgen

import (
	"context"
	"time"

	"github.com/streamhouse/streamhouse/pkg/client"
)

// TB is the part of testing.TB that StartT and WaitAckedT use, so that this
// package need not import testing.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
	Cleanup(func())
}

// StartT is Start for tests: it fails the test if the producers cannot be
// created, and stops the load when the test ends (a no-op if the test
// stopped it already), so no producer outlives its test.
func StartT(t TB, ctx context.Context, clients []*client.Client, cfg Config) *Load {
	t.Helper()
	l, err := Start(ctx, clients, cfg)
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(func() { _ = l.Stop() })
	return l
}

// WaitAckedT waits until n more records than now are acknowledged, and
// fails the test if that takes longer than limit or the producers stop.
func (l *Load) WaitAckedT(t TB, n int64, limit time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(l.ctx, limit)
	defer cancel()
	if err := l.WaitAcked(ctx, l.Acked()+n); err != nil {
		t.Fatalf("waiting for %d more acknowledged records of %q: %v", n, l.cfg.Topic, err)
	}
}
