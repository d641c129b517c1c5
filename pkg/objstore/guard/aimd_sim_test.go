package guard

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"testing"
	"time"
)

// simStore admits at most rate PUTs per second from a token bucket of
// burst tokens, as a rate-limiting S3 prefix (or the fault proxy's PutRate)
// does, and answers SlowDown past it.
type simStore struct {
	rate, burst, tokens float64
	last                time.Time
}

func (s *simStore) admit(now time.Time) bool {
	s.tokens = min(s.burst, s.tokens+now.Sub(s.last).Seconds()*s.rate)
	s.last = now
	if s.tokens >= 1 {
		s.tokens--
		return true
	}
	return false
}

// simulateAIMD drives the PUT bucket and AIMD of a default-configured guard
// with one sequential uploader (each PUT takes service, a SlowDown is
// followed by a jittered backoff, as the guard's retries do) against a
// store admitting storeRate PUT/s. It returns the accepted PUTs per second
// and the fraction of PUTs answered SlowDown over the last half of the run.
var debugSim = os.Getenv("AIMD_DEBUG") != ""

func simulateAIMD(t *testing.T, storeRate float64, service time.Duration, run time.Duration) (okRate, slowFrac float64) {
	t.Helper()
	cfg := Config{}.withDefaults()
	start := time.Unix(1_700_000_000, 0)
	clk := NewFakeClock(start)
	b := newBucket(clk, cfg.Put.Rate, cfg.Put.Burst)
	log := slog.New(slog.DiscardHandler)
	if debugSim {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	a := newAIMD(cfg.AIMD, b, clk, log, func(float64) {})
	store := &simStore{rate: storeRate, burst: max(1, storeRate/10), tokens: 1, last: start}
	rng := rand.New(rand.NewPCG(1, 2))
	var ok, slow int
	for clk.Now().Sub(start) < run {
		b.mu.Lock()
		b.advanceLocked(clk.Now())
		var d time.Duration
		if b.tokens < 1 {
			d = time.Duration((1 - b.tokens) / b.rate * float64(time.Second))
		}
		b.tokens--
		b.mu.Unlock()
		clk.Advance(d)
		a.sending()
		measured := clk.Now().Sub(start) >= run/2
		if store.admit(clk.Now()) {
			a.succeeded()
			if measured {
				ok++
			}
			// Service time varies by ±25 %, as real PUTs and commits do.
			clk.Advance(service*3/4 + time.Duration(rng.Int64N(int64(service/2))))
			continue
		}
		a.throttled()
		if debugSim {
			t.Logf("%8.3f 503 rate %.3f ceiling %.3f tokens %.2f", clk.Now().Sub(start).Seconds(), b.currentRate(), a.ceiling, store.tokens)
		}
		if measured {
			slow++
		}
		clk.Advance(time.Duration(rng.Int64N(int64(cfg.Retry.BaseDelay))))
	}
	secs := (run / 2).Seconds()
	return float64(ok) / secs, float64(slow) / float64(ok+slow)
}

// TestAIMDSettlesUnderStoreLimit checks issue 5's "the agent's PUT rate
// settles within 10 % under N without sustained 503s" against a simulated
// store, for limits from far below to far above what one uploader sends.
func TestAIMDSettlesUnderStoreLimit(t *testing.T) {
	for _, n := range []float64{2, 5, 8, 20, 100} {
		for _, service := range []time.Duration{5 * time.Millisecond, 80 * time.Millisecond} {
			if 1/service.Seconds() < n*1.2 {
				continue // the uploader cannot reach the limit
			}
			t.Run(fmt.Sprintf("N=%v/service=%v", n, service), func(t *testing.T) {
				okRate, slowFrac := simulateAIMD(t, n, service, 10*time.Minute)
				t.Logf("store admits %v PUT/s: accepted %.2f PUT/s (%.1f%% of N), %.1f%% SlowDown", n, okRate, 100*okRate/n, 100*slowFrac)
				if okRate < 0.9*n || okRate > n*1.001 {
					t.Errorf("accepted %.2f PUT/s, want within 10%% under %v", okRate, n)
				}
				if slowFrac > 0.1 {
					t.Errorf("%.1f%% of PUTs answered SlowDown, want at most 10%%", 100*slowFrac)
				}
			})
		}
	}
}
