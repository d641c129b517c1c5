package guard

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"
)

// bucket is a token bucket read against a Clock. Callers reserve a token,
// possibly driving the balance negative (a debt later callers queue behind),
// and wait until their reservation falls due, so waiters are served in the
// order they arrived and the long-run rate never exceeds the bucket's rate.
// Its rate can change at any time (AIMD); the burst scales with it.
type bucket struct {
	clk Clock

	mu        sync.Mutex
	rate      float64 // tokens per second; +Inf: unlimited
	maxRate   float64 // the configured rate
	maxBurst  float64 // the configured burst, at maxRate
	tokens    float64
	last      time.Time
	unlimited bool
	// limitedAt is when a caller last had to wait for a token: the bucket,
	// not the caller, was setting the pace then.
	limitedAt time.Time
}

func newBucket(clk Clock, rate float64, burst int) *bucket {
	b := &bucket{clk: clk, rate: rate, maxRate: rate, maxBurst: float64(max(burst, 1)), last: clk.Now()}
	b.unlimited = math.IsInf(rate, 1)
	b.tokens = b.maxBurst
	return b
}

// burst is the bucket's capacity at its current rate: the configured burst
// scaled by rate/maxRate (at least 1), so a bucket slowed by AIMD does not
// let out a burst sized for the full rate.
func (b *bucket) burst() float64 {
	if b.rate >= b.maxRate {
		return b.maxBurst
	}
	return max(1, b.maxBurst*b.rate/b.maxRate)
}

// advanceLocked adds the tokens earned since last.
func (b *bucket) advanceLocked(now time.Time) {
	if el := now.Sub(b.last); el > 0 {
		b.tokens = min(b.burst(), b.tokens+el.Seconds()*b.rate)
		b.last = now
	}
}

// setRate changes the rate (tokens earned so far are kept).
func (b *bucket) setRate(r float64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.advanceLocked(b.clk.Now())
	if r > b.rate {
		b.limitedAt = time.Time{} // waits at the old rate say nothing about the new one
	}
	b.rate = r
	b.tokens = min(b.tokens, b.burst())
}

// limitedSince reports whether a caller had to wait for a token at or after t.
func (b *bucket) limitedSince(t time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return !b.limitedAt.Before(t)
}

// tokenWait is how long a caller arriving now would wait for a token.
func (b *bucket) tokenWait() time.Duration {
	if b.unlimited {
		return 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.advanceLocked(b.clk.Now())
	if b.tokens >= 1 {
		return 0
	}
	return time.Duration((1 - b.tokens) / b.rate * float64(time.Second))
}

func (b *bucket) currentRate() float64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.rate
}

// wait takes one token, waiting until it is available. If ctx has a
// deadline that falls before the token would be available it fails at once
// (with an error wrapping context.DeadlineExceeded) and takes nothing; if ctx
// ends while waiting the token is given back. It returns how long it waited.
func (b *bucket) wait(ctx context.Context) (time.Duration, error) {
	if b.unlimited {
		return 0, ctx.Err()
	}
	b.mu.Lock()
	now := b.clk.Now()
	b.advanceLocked(now)
	var d time.Duration
	if b.tokens < 1 {
		d = time.Duration((1 - b.tokens) / b.rate * float64(time.Second))
		b.limitedAt = now
	}
	if dl, ok := ctx.Deadline(); ok && d > 0 && now.Add(d).After(dl) {
		b.mu.Unlock()
		return 0, fmt.Errorf("rate limit: next token in %v, after the deadline: %w", d, context.DeadlineExceeded)
	}
	b.tokens--
	b.mu.Unlock()
	if d <= 0 {
		return 0, ctx.Err()
	}
	t := b.clk.NewTimer(d)
	select {
	case <-t.C():
		return d, nil
	case <-ctx.Done():
		t.Stop()
		b.mu.Lock()
		b.tokens = min(b.burst(), b.tokens+1)
		b.mu.Unlock()
		return b.clk.Now().Sub(now), ctx.Err()
	}
}
