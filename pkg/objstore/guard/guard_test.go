package guard_test

import (
	"context"
	"errors"
	"math"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/streamhouse/streamhouse/pkg/objstore"
	"github.com/streamhouse/streamhouse/pkg/objstore/guard"
)

var (
	errSlowDown = minio.ErrorResponse{Code: "SlowDown", Message: "Please reduce your request rate.", StatusCode: 503}
	errInternal = minio.ErrorResponse{Code: "InternalError", StatusCode: 500}
	errDenied   = minio.ErrorResponse{Code: "AccessDenied", StatusCode: 403}
	errReset    = &netOpError{syscall.ECONNRESET}
)

// netOpError stands for a transport failure without an S3 answer.
type netOpError struct{ err error }

func (e *netOpError) Error() string { return "read tcp: " + e.err.Error() }
func (e *netOpError) Unwrap() error { return e.err }

// fakeStore is a Local store whose calls can be made to fail: fail, if set,
// is asked before each call; applyPut makes a failing PUT store the object
// anyway (an answer lost on the way back).
type fakeStore struct {
	objstore.Store
	mu       sync.Mutex
	fail     func(op string) error
	applyPut bool
	calls    map[string]int
}

func newFake(t *testing.T) *fakeStore {
	l, err := objstore.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return &fakeStore{Store: l, calls: map[string]int{}}
}

func (f *fakeStore) setFail(fn func(op string) error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail = fn
}

func (f *fakeStore) before(op string) error {
	f.mu.Lock()
	f.calls[op]++
	fail := f.fail
	f.mu.Unlock()
	if fail != nil {
		return fail(op)
	}
	return nil
}

func (f *fakeStore) count(op string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[op]
}

func (f *fakeStore) PutIfAbsent(ctx context.Context, key string, data []byte) error {
	if err := f.before("put"); err != nil {
		if f.applyPut {
			_ = f.Store.PutIfAbsent(ctx, key, data)
		}
		return err
	}
	return f.Store.PutIfAbsent(ctx, key, data)
}

func (f *fakeStore) Get(ctx context.Context, key string, off, n int64) ([]byte, error) {
	if err := f.before("get"); err != nil {
		return nil, err
	}
	return f.Store.Get(ctx, key, off, n)
}

func (f *fakeStore) Head(ctx context.Context, key string) (objstore.Info, error) {
	if err := f.before("head"); err != nil {
		return objstore.Info{}, err
	}
	return f.Store.Head(ctx, key)
}

func (f *fakeStore) List(ctx context.Context, prefix string) ([]objstore.Info, error) {
	if err := f.before("list"); err != nil {
		return nil, err
	}
	return f.Store.List(ctx, prefix)
}

func (f *fakeStore) Delete(ctx context.Context, key string) error {
	if err := f.before("delete"); err != nil {
		return err
	}
	return f.Store.Delete(ctx, key)
}

var epoch = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

// unlimited is a config whose buckets never make anyone wait.
func unlimited() guard.Config {
	inf := guard.Limit{Rate: math.Inf(1)}
	return guard.Config{MetricsPrefix: "guard_test", Put: inf, Get: inf, Delete: inf, List: inf}
}

// async runs fn in a goroutine and returns a channel with its result.
func async(fn func() error) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- fn() }()
	return ch
}

// drive advances clk to each pending timer until done delivers, and
// returns what it delivered.
func drive(t *testing.T, clk *guard.FakeClock, done <-chan error) error {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case err := <-done:
			return err
		case <-deadline:
			t.Fatal("call did not finish")
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
		if clk.BlockUntil(ctx, 1) {
			if d, ok := clk.NextDue(); ok {
				clk.Advance(max(d, 0))
			}
		}
		cancel()
	}
}

func TestConformance(t *testing.T) {
	// The guard with default limits must not change the store's behaviour.
	storetestRun(t, func(t *testing.T) objstore.Store {
		return guard.New(newFake(t), guard.Config{MetricsPrefix: "guard_conformance"}, nil)
	})
}

func TestTokenBucketWaitsOnFakeClock(t *testing.T) {
	clk := guard.NewFakeClock(epoch)
	cfg := unlimited()
	cfg.Get = guard.Limit{Rate: 10, Burst: 3}
	f := newFake(t)
	if err := f.PutIfAbsent(t.Context(), "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	g := guard.New(f, cfg, clk)
	for i := range 3 { // the burst goes at once
		if _, err := g.Get(t.Context(), "k", 0, -1); err != nil {
			t.Fatalf("get %d: %v", i, err)
		}
	}
	if clk.Pending() != 0 {
		t.Fatal("burst waited")
	}
	done := async(func() error { _, err := g.Get(t.Context(), "k", 0, -1); return err })
	if !clk.BlockUntil(ctxT(t), 1) {
		t.Fatal("fourth get did not wait")
	}
	if d, _ := clk.NextDue(); d != 100*time.Millisecond {
		t.Fatalf("fourth get waits %v, want 100ms (one token at 10/s)", d)
	}
	clk.Advance(99 * time.Millisecond)
	select {
	case <-done:
		t.Fatal("get went before its token")
	default:
	}
	clk.Advance(time.Millisecond)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if w := g.Stats().Op(guard.OpGet).TokenWait; w != 100*time.Millisecond {
		t.Fatalf("TokenWait = %v", w)
	}

	// A token due after the deadline fails at once, as DeadlineExceeded.
	dctx, cancel := context.WithDeadline(t.Context(), time.Now().Add(50*time.Millisecond))
	defer cancel()
	// (the fake clock is at epoch+100ms; deadlines are wall time, far in
	// the fake clock's past, so any wait is past the deadline)
	_, err := g.Get(dctx, "k", 0, -1)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("get with a token past the deadline: %v", err)
	}

	// A cancelled waiter gives its token back.
	cctx, ccancel := context.WithCancel(t.Context())
	done = async(func() error { _, err := g.Get(cctx, "k", 0, -1); return err })
	clk.BlockUntil(ctxT(t), 1)
	ccancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled wait: %v", err)
	}
	clk.Advance(100 * time.Millisecond) // one token earned since
	if _, err := g.Get(t.Context(), "k", 0, -1); err != nil || clk.Pending() != 0 {
		t.Fatalf("token not returned: err %v, pending %d", err, clk.Pending())
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestRetriesWithBackoff(t *testing.T) {
	clk := guard.NewFakeClock(epoch)
	f := newFake(t)
	cfg := unlimited()
	cfg.Retry = guard.Retry{MaxAttempts: 5, BaseDelay: 100 * time.Millisecond, MaxDelay: time.Second}
	g := guard.New(f, cfg, clk)
	var n atomic.Int32
	f.setFail(func(op string) error {
		switch n.Add(1) {
		case 1:
			return errSlowDown
		case 2:
			return errInternal
		case 3:
			return errReset
		}
		return nil
	})
	start := clk.Now()
	err := drive(t, clk, async(func() error { return g.PutIfAbsent(t.Context(), "a", []byte("x")) }))
	if err != nil {
		t.Fatal(err)
	}
	if got := f.count("put"); got != 4 {
		t.Fatalf("%d attempts, want 4", got)
	}
	// Full jitter: waits below 100, 200, 400 ms.
	if el := clk.Now().Sub(start); el >= 700*time.Millisecond {
		t.Fatalf("backoff took %v, want < 700ms", el)
	}
	s := g.Stats().Op(guard.OpPut)
	if s.Retries != 3 || s.Throttled != 1 || s.Failures != 3 || s.Attempts != 4 {
		t.Fatalf("stats %+v", s)
	}

	// Gives up after MaxAttempts, returning the last error.
	f.setFail(func(string) error { return errSlowDown })
	err = drive(t, clk, async(func() error { _, err := g.Get(t.Context(), "a", 0, -1); return err }))
	if objstore.S3ErrorCode(err) != "SlowDown" {
		t.Fatalf("err = %v, want the SlowDown", err)
	}
	if got := f.count("get"); got != 5 {
		t.Fatalf("%d get attempts, want 5", got)
	}
}

func TestRetryAfterHonoured(t *testing.T) {
	clk := guard.NewFakeClock(epoch)
	f := newFake(t)
	cfg := unlimited()
	cfg.Retry = guard.Retry{MaxAttempts: 3, BaseDelay: time.Millisecond, MaxDelay: 10 * time.Second}
	g := guard.New(f, cfg, clk)
	var n atomic.Int32
	f.setFail(func(string) error {
		if n.Add(1) == 1 {
			return objstore.WithRetryAfter(errSlowDown, 2*time.Second)
		}
		return nil
	})
	done := async(func() error { return g.PutIfAbsent(t.Context(), "a", []byte("x")) })
	clk.BlockUntil(ctxT(t), 1)
	if d, _ := clk.NextDue(); d != 2*time.Second {
		t.Fatalf("retry waits %v, want the 2s Retry-After", d)
	}
	if err := drive(t, clk, done); err != nil {
		t.Fatal(err)
	}
}

func TestNoRetryOnDefiniteAnswers(t *testing.T) {
	f := newFake(t)
	g := guard.New(f, unlimited(), guard.NewFakeClock(epoch))
	ctx := t.Context()
	if _, err := g.Get(ctx, "missing", 0, -1); !errors.Is(err, objstore.ErrNotFound) {
		t.Fatal(err)
	}
	_ = g.PutIfAbsent(ctx, "k", []byte("1"))
	if err := g.PutIfAbsent(ctx, "k", []byte("2")); !errors.Is(err, objstore.ErrExists) {
		t.Fatal(err)
	}
	if _, err := g.Get(ctx, "k", 5, 1); !errors.Is(err, objstore.ErrRange) {
		t.Fatal(err)
	}
	f.setFail(func(string) error { return errDenied })
	if err := g.Delete(ctx, "k"); objstore.S3ErrorCode(err) != "AccessDenied" {
		t.Fatal(err)
	}
	f.setFail(func(string) error { return errors.New("something we do not understand") })
	if _, err := g.List(ctx, ""); err == nil {
		t.Fatal("no error")
	}
	if f.count("get") != 2 || f.count("put") != 2 || f.count("delete") != 1 || f.count("list") != 1 {
		t.Fatalf("retried a definite answer: %v", f.calls)
	}
	if s := g.Stats(); s.Op(guard.OpGet).Retries+s.Op(guard.OpPut).Retries != 0 || s.State != guard.Closed {
		t.Fatalf("stats %+v", s)
	}
}

func TestNoRetryPastDeadline(t *testing.T) {
	clk := guard.NewFakeClock(epoch)
	f := newFake(t)
	cfg := unlimited()
	cfg.Retry = guard.Retry{MaxAttempts: 5, BaseDelay: time.Hour, MaxDelay: time.Hour}
	g := guard.New(f, cfg, clk)
	f.setFail(func(string) error { return objstore.WithRetryAfter(errSlowDown, time.Hour) })
	// Deadlines are compared with the guard's clock: a minute after the
	// fake clock's now, so a 1h Retry-After cannot fit.
	ctx2, cancel2 := context.WithDeadline(t.Context(), epoch.Add(time.Minute))
	defer cancel2()
	err := g.PutIfAbsent(ctx2, "k", []byte("x"))
	if objstore.S3ErrorCode(err) != "SlowDown" || f.count("put") != 1 {
		t.Fatalf("err %v after %d attempts; want the SlowDown after 1", err, f.count("put"))
	}
}

func TestAmbiguousPutVerified(t *testing.T) {
	clk := guard.NewFakeClock(epoch)
	f := newFake(t)
	f.applyPut = true
	g := guard.New(f, unlimited(), clk)
	var n atomic.Int32
	f.setFail(func(op string) error {
		if op == "put" && n.Add(1) == 1 {
			return errReset // applied, answer lost
		}
		return nil
	})
	if err := drive(t, clk, async(func() error { return g.PutIfAbsent(t.Context(), "k", []byte("mine")) })); err != nil {
		t.Fatalf("retry of an applied PUT: %v, want nil", err)
	}
	if v := g.Stats().Op(guard.OpPut).Verified; v != 1 {
		t.Fatalf("Verified = %d", v)
	}
	// Someone else's object under the key stays a conflict.
	if err := f.Store.PutIfAbsent(t.Context(), "other", []byte("theirs")); err != nil {
		t.Fatal(err)
	}
	n.Store(0)
	f.applyPut = false
	err := drive(t, clk, async(func() error { return g.PutIfAbsent(t.Context(), "other", []byte("mine")) }))
	if !errors.Is(err, objstore.ErrExists) {
		t.Fatalf("conflict after an ambiguous failure: %v, want ErrExists", err)
	}
	// After only throttling answers, ErrExists is reported without a read.
	gets := f.count("get")
	f.setFail(func(op string) error {
		if op == "put" && n.Add(1) == 2 {
			return errSlowDown
		}
		return nil
	})
	err = drive(t, clk, async(func() error { return g.PutIfAbsent(t.Context(), "other", []byte("theirs")) }))
	if !errors.Is(err, objstore.ErrExists) || f.count("get") != gets {
		t.Fatalf("err %v, %d reads; want ErrExists and no read", err, f.count("get")-gets)
	}
}

func breakerConfig() guard.Config {
	cfg := unlimited()
	cfg.Retry = guard.Retry{MaxAttempts: 100, BaseDelay: 10 * time.Millisecond, MaxDelay: 10 * time.Millisecond}
	cfg.Breaker = guard.Breaker{ConsecutiveFailures: 3, Window: time.Second, MinRequests: 1000, FailureRate: 1,
		CoolDown: time.Second, Probes: 1, CloseAfter: 2}
	return cfg
}

func TestBreaker(t *testing.T) {
	clk := guard.NewFakeClock(epoch)
	f := newFake(t)
	cfg := breakerConfig()
	cfg.Retry.MaxAttempts = 3
	g := guard.New(f, cfg, clk)
	ctx := t.Context()
	if err := g.PutIfAbsent(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	var down atomic.Bool
	down.Store(true)
	f.setFail(func(string) error {
		if down.Load() {
			return errSlowDown
		}
		return nil
	})
	// Three failed attempts open it.
	err := drive(t, clk, async(func() error { _, err := g.Get(ctx, "k", 0, -1); return err }))
	if err == nil || g.State() != guard.Open {
		t.Fatalf("after 3 failures: err %v, state %v", err, g.State())
	}
	// Open: reads fail fast without reaching the store.
	gets := f.count("get")
	for _, call := range []func() error{
		func() error { _, err := g.Get(ctx, "k", 0, -1); return err },
		func() error { _, err := g.Head(ctx, "k"); return err },
		func() error { _, err := g.List(ctx, ""); return err },
		func() error { return g.Delete(ctx, "k") },
	} {
		if err := call(); !errors.Is(err, guard.ErrUnavailable) {
			t.Fatalf("while open: %v, want ErrUnavailable", err)
		}
	}
	if f.count("get") != gets || clk.Pending() != 0 {
		t.Fatal("fail-fast calls reached the store or waited")
	}
	// A PUT waits for the cool-down.
	put := async(func() error { return g.PutIfAbsent(ctx, "p", []byte("v")) })
	clk.BlockUntil(ctxT(t), 1)
	if d, _ := clk.NextDue(); d != time.Second {
		t.Fatalf("put waits %v, want the 1s cool-down", d)
	}
	puts := f.count("put")
	// Half-open: the PUT is the one probe; it fails, so the breaker opens again.
	clk.Advance(time.Second)
	clk.BlockUntil(ctxT(t), 1) // the put is waiting again (backoff, then breaker)
	if f.count("put") != puts+1 {
		t.Fatalf("probe not sent")
	}
	if s := g.State(); s != guard.Open {
		t.Fatalf("after a failed probe: %v, want open", s)
	}
	// The store heals: the next probes succeed; CloseAfter=2 needs two.
	down.Store(false)
	if err := drive(t, clk, put); err != nil {
		t.Fatalf("waiting put: %v", err)
	}
	if s := g.State(); s != guard.HalfOpen {
		t.Fatalf("after one good probe: %v, want half-open", s)
	}
	if _, err := g.Get(ctx, "p", 0, -1); err != nil {
		t.Fatal(err)
	}
	if s := g.State(); s != guard.Closed {
		t.Fatalf("after two good probes: %v, want closed", s)
	}
	st := g.Stats()
	if st.Transitions != 5 { // open, half, open, half, closed
		t.Fatalf("transitions %d, want 5", st.Transitions)
	}
	if st.Op(guard.OpGet).Unavailable != 1 || st.Op(guard.OpList).Unavailable != 2 || st.Op(guard.OpDelete).Unavailable != 1 {
		t.Fatalf("unavailable counts %+v", st.Ops)
	}
}

func TestBreakerHalfOpenProbeLimit(t *testing.T) {
	clk := guard.NewFakeClock(epoch)
	f := newFake(t)
	cfg := breakerConfig()
	cfg.Retry.MaxAttempts = 1
	g := guard.New(f, cfg, clk)
	ctx := t.Context()
	release := make(chan struct{})
	var failing atomic.Bool
	failing.Store(true)
	var block atomic.Bool
	f.setFail(func(string) error {
		if block.Load() {
			<-release
		}
		if failing.Load() {
			return errInternal
		}
		return nil
	})
	for range cfg.Breaker.ConsecutiveFailures {
		_ = g.Delete(ctx, "x")
	}
	if g.State() != guard.Open {
		t.Fatalf("state %v", g.State())
	}
	clk.Advance(time.Second)
	failing.Store(false)
	block.Store(true)
	probe := async(func() error { _, err := g.Head(ctx, "x"); return err })
	// Wait until the probe holds the slot.
	deadline := time.Now().Add(5 * time.Second)
	for f.count("head") == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if _, err := g.Get(ctx, "x", 0, -1); !errors.Is(err, guard.ErrUnavailable) {
		t.Fatalf("second request while the one probe is out: %v, want ErrUnavailable", err)
	}
	close(release)
	if err := <-probe; !errors.Is(err, objstore.ErrNotFound) {
		t.Fatalf("probe: %v", err)
	}
}

func TestBreakerErrorRate(t *testing.T) {
	clk := guard.NewFakeClock(epoch)
	f := newFake(t)
	cfg := unlimited()
	cfg.Retry.MaxAttempts = 1
	cfg.Breaker = guard.Breaker{ConsecutiveFailures: 1000, Window: 10 * time.Second, MinRequests: 10, FailureRate: 0.5,
		CoolDown: time.Second, Probes: 1, CloseAfter: 1}
	g := guard.New(f, cfg, clk)
	var n atomic.Int32
	f.setFail(func(string) error {
		if n.Add(1)%2 == 0 {
			return errInternal
		}
		return nil
	})
	for i := range 9 {
		_, _ = g.Get(t.Context(), "x", 0, -1)
		clk.Advance(100 * time.Millisecond)
		if g.State() != guard.Closed {
			t.Fatalf("opened after %d requests", i+1)
		}
	}
	_, _ = g.Get(t.Context(), "x", 0, -1) // 10th: 5 of 10 failed
	if g.State() != guard.Open {
		t.Fatalf("state %v after a 50%% error rate over 10 requests", g.State())
	}
	// Old failures leave the window.
	clk.Advance(2 * time.Second) // half-open
	_, _ = g.Get(t.Context(), "x", 0, -1)
	if g.State() != guard.Closed {
		t.Fatalf("state %v after a good probe", g.State())
	}
}

func TestAIMD(t *testing.T) {
	clk := guard.NewFakeClock(epoch)
	f := newFake(t)
	cfg := unlimited()
	cfg.MetricsPrefix = "guard_test_aimd"
	cfg.Put = guard.Limit{Rate: 1000, Burst: 1000}
	cfg.Retry.MaxAttempts = 1
	cfg.Breaker.ConsecutiveFailures = 1000
	cfg.Breaker.MinRequests = 1000
	cfg.AIMD = guard.AIMD{Decrease: 0.5, MinRate: 10, Step: 5, Interval: time.Second, Hold: 100 * time.Millisecond}
	g := guard.New(f, cfg, clk)
	ctx := t.Context()
	var throttle atomic.Bool
	f.setFail(func(string) error {
		if throttle.Load() {
			return errSlowDown
		}
		return nil
	})
	// 100 PUTs sent over the last second: the cut starts from 100/s, not
	// the 1000/s allowed.
	_ = g.PutIfAbsent(ctx, "first", nil)
	clk.Advance(2 * time.Second) // past the start-up second
	for i := range 100 {
		_ = g.PutIfAbsent(ctx, key(i), nil)
		clk.Advance(9 * time.Millisecond)
	}
	throttle.Store(true)
	_ = g.PutIfAbsent(ctx, "t1", nil)
	if r := g.Stats().PutRate; r != 50.5 {
		t.Fatalf("rate after one SlowDown = %v, want 0.5*101", r)
	}
	if h := g.Health(); !h.Throttled || !h.Failing {
		t.Fatalf("health after a SlowDown %+v, want throttled and failing", h)
	}
	_ = g.PutIfAbsent(ctx, "t2", nil) // within Hold: one congestion event
	if r := g.Stats().PutRate; r != 50.5 {
		t.Fatalf("rate after a second SlowDown within Hold = %v", r)
	}
	// Throttles with nothing accepted since the cut: the store is down,
	// which is the breaker's business, not a rate limit.
	for range 10 {
		clk.Advance(200 * time.Millisecond)
		_ = g.PutIfAbsent(ctx, "t3", nil)
	}
	if r := g.Stats().PutRate; r != 50.5 {
		t.Fatalf("rate after SlowDowns with nothing accepted = %v, want 50.5 (no cut)", r)
	}
	// Throttled while the store accepts one PUT in two, at 2.5 accepted
	// PUT/s: a rate limit. The rate falls to the floor.
	for i := range 40 {
		clk.Advance(200 * time.Millisecond)
		throttle.Store(i%2 == 1)
		_ = g.PutIfAbsent(ctx, key(100+i), nil)
	}
	if r := g.Stats().PutRate; r != 10 {
		t.Fatalf("rate = %v, want the floor 10", r)
	}
	// The PUT bucket really runs at the AIMD rate: its burst shrank with it
	// (1000 * 10/1000 = 10 tokens at most), then each token takes 1/10 s.
	throttle.Store(false)
	var done <-chan error
	for n := 0; ; n++ {
		if n > 10 {
			t.Fatal("more than 10 PUTs went without waiting: the burst did not shrink")
		}
		done = async(func() error { return g.PutIfAbsent(ctx, key(2000+n), nil) })
		if doneOrWaiting(t, clk, &done) {
			break
		}
	}
	if d, _ := clk.NextDue(); d < 85*time.Millisecond || d > 101*time.Millisecond {
		t.Fatalf("next token in %v, want about 1/10 s", d)
	}
	if err := drive(t, clk, done); err != nil {
		t.Fatal(err)
	}
	// The store stops throttling: the rate probes past the known limit,
	// drops the estimate, then doubles (quadruples once quiet for 5 s)
	// back to the configured 1000/s within seconds, not minutes.
	last := g.Stats().PutRate
	for i := range 300 {
		clk.Advance(100 * time.Millisecond)
		done := async(func() error { return g.PutIfAbsent(ctx, key(3000+i), nil) })
		for doneOrWaiting(t, clk, &done) {
			d, _ := clk.NextDue()
			clk.Advance(max(d, 0))
		}
		r := g.Stats().PutRate
		if r < last {
			t.Fatalf("rate fell from %v to %v without a throttle", last, r)
		}
		last = r
	}
	if last != 1000 {
		t.Fatalf("rate %v after 30 s without throttling, want back at 1000", last)
	}
	if h := g.Health(); h.Throttled || h.Failing {
		t.Fatalf("health after recovering %+v", h)
	}
}

// doneOrWaiting waits until the call behind *done has returned (it must
// have succeeded) or waits on clk; it reports whether it waits. When it
// returned, *done is nil.
func doneOrWaiting(t *testing.T, clk *guard.FakeClock, done *<-chan error) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	waiting := make(chan bool, 1)
	go func() { waiting <- clk.BlockUntil(ctx, 1) }()
	select {
	case err := <-*done:
		cancel()
		<-waiting
		if err != nil {
			t.Fatal(err)
		}
		*done = nil
		return false
	case ok := <-waiting:
		if !ok {
			t.Fatal("the call neither returned nor waited")
		}
		return true
	}
}

func key(i int) string { return "k/" + string(rune('a'+i%26)) + "/" + itoa(i) }

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	var b []byte
	for ; i > 0; i /= 10 {
		b = append([]byte{byte('0' + i%10)}, b...)
	}
	return string(b)
}

func TestFakeClockSleep(t *testing.T) {
	clk := guard.NewFakeClock(epoch)
	done := async(func() error { return clk.Sleep(t.Context(), time.Minute) })
	clk.BlockUntil(ctxT(t), 1)
	clk.Advance(time.Minute)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done = async(func() error { return clk.Sleep(ctx, time.Minute) })
	clk.BlockUntil(ctxT(t), 1)
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	if clk.Pending() != 0 {
		t.Fatal("cancelled sleep left a timer")
	}
	if !clk.Now().Equal(epoch.Add(time.Minute)) {
		t.Fatal(clk.Now())
	}
}

// TestHealth: Health says Failing from the first failed PUT attempt (not
// only once the breaker opens), with a RetryAfter of the retry's backoff,
// then the breaker's remaining cool-down; not when half-open by itself; a
// PUT that succeeds clears it.
func TestHealth(t *testing.T) {
	clk := guard.NewFakeClock(epoch)
	f := newFake(t)
	cfg := breakerConfig()
	cfg.MetricsPrefix = "guard_test_health"
	cfg.Retry = guard.Retry{MaxAttempts: 2, BaseDelay: 400 * time.Millisecond, MaxDelay: 400 * time.Millisecond}
	cfg.Breaker.ConsecutiveFailures = 2
	g := guard.New(f, cfg, clk)
	ctx := t.Context()
	if h := g.Health(); h.Failing || h.State != guard.Closed || h.RetryAfter != 0 {
		t.Fatalf("fresh guard: %+v", h)
	}
	var down atomic.Bool
	down.Store(true)
	f.setFail(func(string) error {
		if down.Load() {
			return objstore.WithRetryAfter(errSlowDown, 300*time.Millisecond)
		}
		return nil
	})
	// The first attempt fails; the retry waits its backoff (at least the
	// 300ms Retry-After): Failing, with that wait.
	put := async(func() error { return g.PutIfAbsent(ctx, "a", []byte("v")) })
	clk.BlockUntil(ctxT(t), 1)
	h := g.Health()
	d, _ := clk.NextDue()
	if !h.Failing || h.State != guard.Closed || h.RetryAfter != d || h.Reason == "" {
		t.Fatalf("retrying a failed PUT: %+v, want failing with RetryAfter %v", h, d)
	}
	// The retry fails too: the breaker (2 in a row) opens; RetryAfter is
	// what is left of the cool-down.
	if err := drive(t, clk, put); err == nil {
		t.Fatal("put succeeded against a failing store")
	}
	if g.State() != guard.Open {
		t.Fatalf("breaker %v after two failures", g.State())
	}
	clk.Advance(300 * time.Millisecond)
	if h := g.Health(); !h.Failing || h.State != guard.Open || h.RetryAfter != 700*time.Millisecond {
		t.Fatalf("breaker open: %+v, want RetryAfter 700ms", h)
	}
	// Half-open: not failing by itself (work must come, or no probe
	// would close the breaker); the last failure is older than MaxDelay.
	clk.Advance(700 * time.Millisecond)
	if h := g.Health(); h.Failing || h.State != guard.HalfOpen {
		t.Fatalf("after the cool-down: %+v", h)
	}
	down.Store(false)
	for i := range 2 {
		if err := g.PutIfAbsent(ctx, key(i), nil); err != nil {
			t.Fatal(err)
		}
	}
	if h := g.Health(); h.Failing || h.State != guard.Closed || h.RetryAfter != 0 {
		t.Fatalf("after the store recovered: %+v", h)
	}
	// A failure nobody retries stops counting once Retry.MaxDelay passed.
	// (The deadline, on the fake clock, leaves no time for a retry.)
	down.Store(true)
	dctx, cancel := context.WithDeadline(ctx, clk.Now().Add(10*time.Millisecond))
	defer cancel()
	if err := g.PutIfAbsent(dctx, "c", nil); err == nil {
		t.Fatal("put succeeded against a failing store")
	}
	if !g.Health().Failing {
		t.Fatal("not failing right after a failed PUT")
	}
	clk.Advance(400 * time.Millisecond)
	if h := g.Health(); h.Failing {
		t.Fatalf("a failure of 400ms ago that nobody retries still counts: %+v", h)
	}
}
