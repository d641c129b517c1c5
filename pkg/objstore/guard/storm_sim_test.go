package guard

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/streamhouse/streamhouse/pkg/objstore"
)

// phase is what the simulated store does for a while.
type phase struct {
	name   string
	d      time.Duration
	fail   float64 // share of PUTs answered 503 SlowDown at random (1: all)
	retry  time.Duration
	limitN float64 // > 0: a rate limiter admitting limitN PUT/s
}

// phasedStore answers PUTs after a service time read on the fake clock,
// as the phase of the moment says. Only PutIfAbsent is used.
type phasedStore struct {
	objstore.Store
	clk     *FakeClock
	start   time.Time
	phases  []phase
	service time.Duration

	mu      sync.Mutex
	rng     *rand.Rand
	limiter *simStore
	lim     float64
}

func (s *phasedStore) at(now time.Time) (phase, bool) {
	el := now.Sub(s.start)
	for _, p := range s.phases {
		if el < p.d {
			return p, true
		}
		el -= p.d
	}
	return phase{}, false
}

func (s *phasedStore) PutIfAbsent(ctx context.Context, _ string, _ []byte) error {
	if err := s.clk.Sleep(ctx, s.service); err != nil {
		return err
	}
	now := s.clk.Now()
	p, _ := s.at(now)
	s.mu.Lock()
	defer s.mu.Unlock()
	slow := error(minio.ErrorResponse{Code: "SlowDown", Message: "Please reduce your request rate.", StatusCode: 503})
	if p.retry > 0 {
		slow = objstore.WithRetryAfter(slow, p.retry)
	}
	if p.limitN > 0 {
		if s.limiter == nil || s.lim != p.limitN {
			s.limiter = &simStore{rate: p.limitN, burst: max(1, p.limitN/10), tokens: 1, last: now}
			s.lim = p.limitN
		}
		if !s.limiter.admit(now) {
			return slow
		}
	}
	if p.fail > 0 && s.rng.Float64() < p.fail {
		return slow
	}
	return nil
}

// stormRun is what simulateStorm measured.
type stormRun struct {
	rate     []float64 // the AIMD PUT rate at the end of each second
	failing  []bool    // whether Health said Failing at the end of each second
	ok, errs int
	log      string
}

// simulateStorm runs a default-configured guard (MetricsPrefix aside) on a
// fake clock with one uploader that PUTs one object every flush (waiting
// for each, with the guard's own retries only), through phases, and
// samples the PUT rate once a simulated second.
func simulateStorm(t *testing.T, phases []phase, flush time.Duration) stormRun {
	return simulateStormSeed(t, phases, flush, 3)
}

func simulateStormSeed(t *testing.T, phases []phase, flush time.Duration, seed uint64) stormRun {
	t.Helper()
	start := time.Unix(1_700_000_000, 0)
	clk := NewFakeClock(start)
	var logBuf strings.Builder
	var logMu sync.Mutex
	var total time.Duration
	for _, p := range phases {
		total += p.d
	}
	store := &phasedStore{clk: clk, start: start, phases: phases, service: 20 * time.Millisecond, rng: rand.New(rand.NewPCG(seed, 4))}
	g := New(store, Config{MetricsPrefix: "guard_sim_" + strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			return r
		}
		return '_'
	}, t.Name()),
		Logger: slog.New(slog.NewTextHandler(&lockedBuilder{b: &logBuf, mu: &logMu}, &slog.HandlerOptions{Level: simLogLevel()}))}, clk)
	ctx, cancel := context.WithCancel(context.Background())
	var run stormRun
	var wg sync.WaitGroup
	var mu sync.Mutex
	wg.Go(func() {
		for i := 0; ctx.Err() == nil; i++ {
			if clk.Sleep(ctx, flush) != nil {
				return
			}
			err := g.PutIfAbsent(ctx, fmt.Sprintf("k%d", i), nil)
			mu.Lock()
			if err == nil {
				run.ok++
			} else if ctx.Err() == nil {
				run.errs++
			}
			mu.Unlock()
		}
	})
	next := start.Add(time.Second)
	for clk.Now().Sub(start) < total {
		bctx, bcancel := context.WithTimeout(context.Background(), 5*time.Second)
		if !clk.BlockUntil(bctx, 1) {
			bcancel()
			t.Fatal("the uploader is not waiting on the fake clock")
		}
		bcancel()
		d, _ := clk.NextDue()
		if at := clk.Now().Add(d); !at.Before(next) {
			clk.Advance(next.Sub(clk.Now()))
			run.rate = append(run.rate, g.Stats().PutRate)
			run.failing = append(run.failing, g.Health().Failing)
			next = next.Add(time.Second)
			continue
		}
		clk.Advance(max(d, 0))
	}
	cancel()
	// Fire what the uploader waits on, so it sees ctx ended.
	for range 100 {
		if d, ok := clk.NextDue(); ok {
			clk.Advance(max(d, 0))
		}
	}
	wg.Wait()
	logMu.Lock()
	run.log = logBuf.String()
	logMu.Unlock()
	return run
}

func simLogLevel() slog.Level {
	if os.Getenv("AIMD_DEBUG") != "" {
		return slog.LevelDebug
	}
	return slog.LevelInfo
}

type lockedBuilder struct {
	b  *strings.Builder
	mu *sync.Mutex
}

func (l *lockedBuilder) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// recoveredWithin returns how many seconds after second from the rate is at
// least frac of limit and stays there to the end, or -1.
func recoveredWithin(rate []float64, from int, limit, frac float64) int {
	at := -1
	for i := from; i < len(rate); i++ {
		if rate[i] >= frac*limit {
			if at < 0 {
				at = i
			}
		} else {
			at = -1
		}
	}
	if at < 0 {
		return -1
	}
	return at - from
}

// atLimit counts the samples at 90 % of limit or more.
func atLimit(rate []float64, limit float64) int {
	n := 0
	for _, r := range rate {
		if r >= 0.9*limit {
			n++
		}
	}
	return n
}

func fmtRates(r []float64) string {
	var sb strings.Builder
	for i, v := range r {
		if i > 0 {
			sb.WriteByte(' ')
		}
		fmt.Fprintf(&sb, "%.0f", v)
	}
	return sb.String()
}

// TestStormRecovery replays issue 13's storm against the guard: 100 % 503
// SlowDown (Retry-After 1s) for 60 s, then 30 % at random for 60 s, then a
// healthy store, with an uploader flushing every 100 ms. The PUT rate must
// be back at its configured limit within 20 s of the store recovering (it
// took 146-152 s before: random 503s were read as a 1-2 PUT/s limit), and
// the breaker and throttling transitions are logged once each, not per
// request.
func TestStormRecovery(t *testing.T) {
	phases := []phase{
		{name: "healthy", d: 5 * time.Second},
		{name: "100%", d: 60 * time.Second, fail: 1, retry: time.Second},
		{name: "30%", d: 60 * time.Second, fail: 0.3},
		{name: "healthy", d: 40 * time.Second},
	}
	run := simulateStorm(t, phases, 100*time.Millisecond)
	limit := DefaultConfig().Put.Rate
	t.Logf("PUT rate each second: %s", fmtRates(run.rate))
	t.Logf("uploads: %d ok, %d failed", run.ok, run.errs)
	healed := 125
	rec := recoveredWithin(run.rate, healed, limit, 0.9)
	t.Logf("PUT rate back at >= 90%% of %v %d s after the store recovered", limit, rec)
	if rec < 0 || rec > 20 {
		t.Errorf("PUT rate back at its limit %d s after the store recovered, want within 20 s", rec)
	}
	// How much of the 30 % phase the rate spent at its limit depends on
	// when the breaker, which a failed probe reopens, closes; logged only.
	t.Logf("seconds of the 30%% phase at >= 90%% of the limit: %d of 60", atLimit(run.rate[65:125], limit))
	for _, want := range []string{"circuit breaker open", "circuit breaker closed", "object store is throttling PUTs", "PUT rate back at its limit"} {
		if !strings.Contains(run.log, want) {
			t.Errorf("no log line %q; log:\n%s", want, run.log)
		}
	}
	if n := strings.Count(run.log, "\n"); n > 60 {
		t.Errorf("%d log lines for one storm: logging per request?\n%s", n, run.log)
	}
}

// TestRandomFailuresKeepRate: 30 % of PUTs fail at random for a minute; the
// PUT rate may dip while AIMD tests whether the store limits the rate (5-15
// s in most runs; see TestStormSimSeeds), then goes back to its configured
// limit. The guard's retry jitter is not seeded, so runs differ: the bound
// is loose (the worst of 30 seeded runs spent 31 s of 60 at the limit).
func TestRandomFailuresKeepRate(t *testing.T) {
	run := simulateStorm(t, []phase{
		{name: "healthy", d: 5 * time.Second},
		{name: "30%", d: 60 * time.Second, fail: 0.3},
	}, 100*time.Millisecond)
	limit := DefaultConfig().Put.Rate
	t.Logf("PUT rate each second: %s", fmtRates(run.rate))
	high := atLimit(run.rate[5:], limit)
	t.Logf("seconds of 60 with random failures at >= 90%% of the limit: %d (for good from %d s)", high, recoveredWithin(run.rate, 5, limit, 0.9))
	if high < 20 {
		t.Errorf("random failures held the PUT rate below its limit for %d of 60 s", 60-high)
	}
	if !strings.Contains(run.log, "fails PUTs at random") {
		t.Errorf("random failures not recognised; log:\n%s", run.log)
	}
}

// TestRateLimitNotMistakenForNoise: the store's limit falls from far above
// what the uploader sends to 2x, 1.5x and 10x below it; AIMD must find each
// limit (not call it random failures).
func TestRateLimitNotMistakenForNoise(t *testing.T) {
	for _, n := range []float64{5, 6.5, 1} {
		t.Run(fmt.Sprintf("N=%v", n), func(t *testing.T) {
			run := simulateStorm(t, []phase{
				{name: "healthy", d: 5 * time.Second},
				{name: "limited", d: 60 * time.Second, limitN: n},
			}, 100*time.Millisecond)
			t.Logf("PUT rate each second: %s", fmtRates(run.rate))
			if strings.Contains(run.log, "fails PUTs at random") {
				t.Errorf("a %v PUT/s rate limit read as random failures; log:\n%s", n, run.log)
			}
			// Near the limit, a PUT/s or so of probing past it at the
			// smallest limits (1 PUT/s is also the floor).
			tail := run.rate[len(run.rate)-20:]
			for _, r := range tail {
				if r > max(1.5*n, n+1.5) || r < 0.5*n {
					t.Errorf("rate over the last 20 s %s, want near the store's %v PUT/s", fmtRates(tail), n)
					break
				}
			}
		})
	}
}

// TestStormSimSeeds (AIMD_SEEDS=n) runs the simulations over n seeds and
// prints how often and how fast random failures are recognised, and how
// often a rate limit is mistaken for them: for tuning, not for CI.
func TestStormSimSeeds(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("AIMD_SEEDS"))
	if n == 0 {
		t.Skip("AIMD_SEEDS not set")
	}
	limit := DefaultConfig().Put.Rate
	var recs, highs []int
	for seed := range n {
		run := simulateStormSeed(t, []phase{{d: 5 * time.Second}, {d: 60 * time.Second, fail: 0.3}}, 100*time.Millisecond, uint64(seed))
		recs = append(recs, recoveredWithin(run.rate, 5, limit, 0.9))
		highs = append(highs, atLimit(run.rate[5:], limit))
	}
	t.Logf("30%% random: back at the limit for good after (s): %v; seconds of 60 at the limit: %v", recs, highs)
	var long []string
	for seed := range n {
		run := simulateStormSeed(t, []phase{{d: 5 * time.Second}, {d: 60 * time.Second, fail: 1, retry: time.Second}, {d: 60 * time.Second, fail: 0.3}, {d: 40 * time.Second}}, 100*time.Millisecond, uint64(seed))
		long = append(long, fmt.Sprintf("%d/%d", recoveredWithin(run.rate, 125, limit, 0.9), atLimit(run.rate[65:125], limit)))
	}
	t.Logf("60 s 100%% + 60 s 30%%: back at the limit after (s) / seconds of the 30%% phase at the limit: %v", long)
	for _, lim := range []float64{1, 2, 3, 4, 4.5, 5, 6.5} {
		mis := 0
		for seed := range n {
			run := simulateStormSeed(t, []phase{{d: 5 * time.Second}, {d: 60 * time.Second, limitN: lim}}, 100*time.Millisecond, uint64(seed))
			if strings.Contains(run.log, "fails PUTs at random") {
				mis++
			}
		}
		t.Logf("limit %v PUT/s: read as random failures in %d of %d runs", lim, mis, n)
	}
	var stormRecs []int
	for seed := range n {
		run := simulateStormSeed(t, []phase{{d: 5 * time.Second}, {d: 15 * time.Second, fail: 1, retry: time.Second}, {d: 10 * time.Second, fail: 0.3}, {d: 30 * time.Second}}, 100*time.Millisecond, uint64(seed))
		stormRecs = append(stormRecs, recoveredWithin(run.rate, 30, limit, 0.9))
	}
	t.Logf("15 s 100%% + 10 s 30%%: PUT rate back at the limit after (s): %v", stormRecs)
}
