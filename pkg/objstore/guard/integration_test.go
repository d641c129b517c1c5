package guard_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/streamhouse/streamhouse/pkg/objstore"
	"github.com/streamhouse/streamhouse/pkg/objstore/faultproxy"
	"github.com/streamhouse/streamhouse/pkg/objstore/guard"
	"github.com/streamhouse/streamhouse/pkg/objstore/s3test"
)

// chain starts versitygw and a fault proxy in front of it and returns an
// S3 store reaching the server through the proxy.
func chain(t *testing.T, prefix string) (*objstore.S3, *faultproxy.Proxy) {
	t.Helper()
	cfg := s3test.Start(t)
	p, err := faultproxy.Start(cfg.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	cfg.Endpoint = p.URL()
	cfg.Prefix = prefix
	s, err := objstore.NewS3(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, p
}

func TestIntegrationConformance(t *testing.T) {
	cfg := s3test.Start(t)
	p, err := faultproxy.Start(cfg.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	cfg.Endpoint = p.URL()
	var n atomic.Int64
	storetestRun(t, func(t *testing.T) objstore.Store {
		c := cfg
		c.Prefix = fmt.Sprintf("g-%d/", n.Add(1))
		s, err := objstore.NewS3(t.Context(), c)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return guard.New(s, guard.Config{MetricsPrefix: "guard_it_conformance"}, nil)
	})
}

// work runs n PutIfAbsent+Get pairs over workers goroutines and returns the
// first error.
func work(ctx context.Context, g objstore.Store, prefix string, n, workers int) error {
	var (
		wg    sync.WaitGroup
		next  atomic.Int64
		mu    sync.Mutex
		first error
	)
	for range workers {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				key := fmt.Sprintf("%s/%05d", prefix, i)
				data := fmt.Appendf(nil, "value %d", i)
				err := g.PutIfAbsent(ctx, key, data)
				if err == nil {
					var got []byte
					got, err = g.Get(ctx, key, 0, -1)
					if err == nil && string(got) != string(data) {
						err = fmt.Errorf("get %s = %q", key, got)
					}
				}
				if err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	return first
}

func TestIntegration30PercentSlowDown(t *testing.T) {
	s, p := chain(t, "storm30")
	g := guard.New(s, guard.Config{
		MetricsPrefix: "guard_it_30",
		Retry:         guard.Retry{BaseDelay: 5 * time.Millisecond, MaxDelay: 200 * time.Millisecond, MaxAttempts: 20},
		// Random 503s look like congestion to AIMD until its test tells
		// them from a rate limit (seconds; see aimd), cutting the PUT rate
		// meanwhile; a floor of 50/s keeps this test short.
		AIMD: guard.AIMD{MinRate: 50},
	}, nil)
	if err := p.Set(faultproxy.Faults{SlowDown: 0.3}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	const n = 300
	if err := work(ctx, g, "k", n, 8); err != nil {
		t.Fatal(err)
	}
	st := g.Stats()
	put, get := st.Op(guard.OpPut), st.Op(guard.OpGet)
	t.Logf("%d PUT+GET pairs through 30%% SlowDown: put %d attempts, %d retries, %d throttled; get %d attempts, %d retries; proxy %v; breaker %v, %d transitions; put rate %.0f/s",
		n, put.Attempts, put.Retries, put.Throttled, get.Attempts, get.Retries, p.Stats().Injected, st.State, st.Transitions, st.PutRate)
	if st.State != guard.Closed || st.Transitions != 0 {
		t.Fatalf("breaker %v after %d transitions; want closed throughout", st.State, st.Transitions)
	}
	if put.Retries == 0 || get.Retries == 0 {
		t.Fatal("no retries: were faults injected?")
	}
}

func TestIntegrationFullOutage(t *testing.T) {
	s, p := chain(t, "storm100")
	g := guard.New(s, guard.Config{
		MetricsPrefix: "guard_it_100",
		Retry:         guard.Retry{BaseDelay: 10 * time.Millisecond, MaxDelay: 100 * time.Millisecond, MaxAttempts: 1000},
		Breaker:       guard.Breaker{ConsecutiveFailures: 5, CoolDown: 200 * time.Millisecond, Probes: 1, CloseAfter: 2},
	}, nil)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if err := g.PutIfAbsent(ctx, "before", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := p.Set(faultproxy.Faults{SlowDown: 1, RetryAfter: faultproxy.Duration(time.Second)}); err != nil {
		t.Fatal(err)
	}
	// Reads retry until the breaker opens, then fail fast.
	_, err := g.Get(ctx, "before", 0, -1)
	if !errors.Is(err, guard.ErrUnavailable) || g.State() == guard.Closed {
		t.Fatalf("get in the storm: %v, breaker %v", err, g.State())
	}
	start := time.Now()
	_, err = g.Get(ctx, "before", 0, -1)
	if !errors.Is(err, guard.ErrUnavailable) || time.Since(start) > 50*time.Millisecond {
		t.Fatalf("get with the breaker open: %v after %v; want ErrUnavailable at once", err, time.Since(start))
	}
	// A PUT waits through the storm and lands after it.
	put := make(chan error, 1)
	putStart := time.Now()
	go func() { put <- g.PutIfAbsent(ctx, "during", []byte("safe in the WAL")) }()
	time.Sleep(1500 * time.Millisecond)
	select {
	case err := <-put:
		t.Fatalf("put returned during the storm: %v", err)
	default:
	}
	p.Clear()
	healed := time.Now()
	if err := <-put; err != nil {
		t.Fatalf("put after the storm: %v", err)
	}
	t.Logf("put waited %v in all, %v after the store healed (Retry-After 1s)", time.Since(putStart).Round(time.Millisecond), time.Since(healed).Round(time.Millisecond))
	got, err := g.Get(ctx, "during", 0, -1)
	if err != nil || string(got) != "safe in the WAL" {
		t.Fatalf("get after: %q, %v", got, err)
	}
	// Make sure the breaker closes (CloseAfter 2 good probes).
	if _, err := g.Head(ctx, "before"); err != nil {
		t.Fatal(err)
	}
	st := g.Stats()
	t.Logf("breaker %v after %d transitions; proxy injected %v; get unavailable %d", st.State, st.Transitions, p.Stats().Injected, st.Op(guard.OpGet).Unavailable)
	if st.State != guard.Closed {
		t.Fatalf("breaker %v after the store healed", st.State)
	}
}

func TestIntegrationAIMDSettles(t *testing.T) {
	s, p := chain(t, "aimd")
	const n = 50 // PUT/s the proxy accepts
	g := guard.New(s, guard.Config{
		MetricsPrefix: "guard_it_aimd",
		Put:           guard.Limit{Rate: 400, Burst: 40},
		Retry:         guard.Retry{BaseDelay: 10 * time.Millisecond, MaxDelay: 200 * time.Millisecond, MaxAttempts: 50},
		Breaker:       guard.Breaker{ConsecutiveFailures: 1000, MinRequests: 100000},
		AIMD:          guard.AIMD{Decrease: 0.9, Step: 1, Interval: 100 * time.Millisecond, Hold: 300 * time.Millisecond},
	}, nil)
	if err := p.Set(faultproxy.Faults{PutRate: n}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 6*time.Second)
	defer cancel()
	var (
		ok     atomic.Int64
		marks  sync.Map // second -> ok count at that time
		wg     sync.WaitGroup
		failed atomic.Int64
	)
	for w := range 16 {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				err := g.PutIfAbsent(ctx, fmt.Sprintf("w%02d/%06d", w, i), []byte("x"))
				if err == nil {
					ok.Add(1)
				} else if ctx.Err() == nil {
					failed.Add(1)
				}
			}
		})
	}
	start := time.Now()
	var thr0 int64
	for sec := 1; sec <= 5; sec++ {
		time.Sleep(time.Until(start.Add(time.Duration(sec) * time.Second)))
		marks.Store(sec, ok.Load())
		st := g.Stats().Op(guard.OpPut)
		t.Logf("t=%ds: %d PUTs ok, %d throttled so far (+%d), rate %.1f/s", sec, ok.Load(), st.Throttled, st.Throttled-thr0, g.Stats().PutRate)
		thr0 = st.Throttled
	}
	cancel()
	wg.Wait()
	a, _ := marks.Load(2)
	b, _ := marks.Load(5)
	rate := float64(b.(int64)-a.(int64)) / 3
	t.Logf("settled at %.1f PUT/s over t=2..5s with the proxy allowing %d/s (%.0f%%); %d calls failed", rate, n, 100*rate/n, failed.Load())
	if rate > n*1.05 || rate < n*0.8 {
		t.Fatalf("settled at %.1f PUT/s, want near %d", rate, n)
	}
}
