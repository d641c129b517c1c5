package guard

import (
	"log/slog"
	"math"
	"time"
)

// Config configures a guard. Zero fields take the value of DefaultConfig.
type Config struct {
	// MetricsPrefix names the component in metric names, e.g.
	// "streamhouse_agent". Default "streamhouse_agent".
	MetricsPrefix string

	// Logger receives the breaker's and AIMD's transitions (see New).
	// Default slog.Default().
	Logger *slog.Logger

	// Put, Get, Delete and List are the token buckets of the operation
	// classes (Head draws on List). Defaults: PUT 3000/s burst 300, GET
	// 5000/s burst 500, DELETE 3000/s burst 300, LIST 100/s burst 10 (S3
	// allows 3500 PUT/COPY/POST/DELETE and 5500 GET/HEAD per second per
	// prefix). A Rate of math.Inf(1) disables the bucket.
	Put, Get, Delete, List Limit

	// Retry is the retry policy.
	Retry Retry
	// Breaker is the circuit breaker.
	Breaker Breaker
	// AIMD adapts the PUT rate to throttling.
	AIMD AIMD
}

// Limit is one token bucket: Rate tokens per second, at most Burst saved up.
type Limit struct {
	Rate  float64
	Burst int
}

// Retry is the retry policy: exponential backoff with full jitter. Attempt n
// (n = 1 for the first retry) waits a uniformly random time in
// [0, min(MaxDelay, BaseDelay*2^(n-1))), but at least the Retry-After the
// service sent (capped at MaxDelay). A call gives up after MaxAttempts
// attempts, or at once when the next wait would end past the context's
// deadline, returning the last error.
type Retry struct {
	// MaxAttempts counts every try, the first included. Default 10.
	MaxAttempts int
	// BaseDelay is the first backoff ceiling. Default 50ms.
	BaseDelay time.Duration
	// MaxDelay caps every wait. Default 5s.
	MaxDelay time.Duration
}

// Breaker configures the circuit breaker. Every attempt counts: throttling
// answers, 5xx and transport errors are failures; any other answer from the
// store (including NotFound, Exists) is a success; attempts ended by the
// caller's context do not count.
type Breaker struct {
	// ConsecutiveFailures opens the breaker after that many failures in a
	// row. Default 10 (at a steady 30 % failure rate ten in a row happen
	// about once in 170 000 attempts).
	ConsecutiveFailures int
	// Window, MinRequests and FailureRate open the breaker when at least
	// MinRequests attempts in the last Window failed at FailureRate or more.
	// Defaults 10s, 20, 0.8.
	Window      time.Duration
	MinRequests int
	FailureRate float64
	// CoolDown is how long the breaker stays open before going half-open.
	// Default 5s.
	CoolDown time.Duration
	// Probes is how many attempts may be in flight while half-open. Default 2.
	Probes int
	// CloseAfter successful probes close the breaker; one failed probe opens
	// it again for another CoolDown. Default 3.
	CloseAfter int
}

// AIMD configures additive-increase, multiplicative-decrease of the PUT
// rate. On a throttling answer (503 SlowDown, 429) the rate becomes
// max(MinRate, Decrease * min(rate, PUTs sent over the last second)), at most
// once per Hold, or Decrease times what the store accepted when it throttles
// half the PUTs or more; after every Interval without one it grows again, up
// to Config.Put.Rate, by smaller steps near the store's limit as last seen.
// Throttling that is not a rate limit (an outage, which the breaker handles,
// or random failures that go on at the same share whatever the rate) does
// not lower the rate (see aimd). With Decrease d the rate saws between d*N
// and N under a store that accepts N PUT/s, so it averages about
// (1+d)/2 * N.
type AIMD struct {
	// Decrease multiplies the rate on throttling. Default 0.9 (the rate then
	// saws between 0.9 and 1 times the store's limit); 1 disables AIMD.
	Decrease float64
	// MinRate is the floor. Default 1 PUT/s.
	MinRate float64
	// Step caps each increase near the store's known limit (PUT/s per
	// Interval; see aimd for the increases). Default 1 % of
	// Config.Put.Rate.
	Step float64
	// Interval is the success window. Default 1s.
	Interval time.Duration
	// Hold is the least time between two decreases. Default 500ms.
	Hold time.Duration
}

// DefaultConfig returns the defaults documented on Config's fields.
func DefaultConfig() Config {
	return Config{
		MetricsPrefix: "streamhouse_agent",
		Put:           Limit{Rate: 3000, Burst: 300},
		Get:           Limit{Rate: 5000, Burst: 500},
		Delete:        Limit{Rate: 3000, Burst: 300},
		List:          Limit{Rate: 100, Burst: 10},
		Retry:         Retry{MaxAttempts: 10, BaseDelay: 50 * time.Millisecond, MaxDelay: 5 * time.Second},
		Breaker: Breaker{
			ConsecutiveFailures: 10,
			Window:              10 * time.Second,
			MinRequests:         20,
			FailureRate:         0.8,
			CoolDown:            5 * time.Second,
			Probes:              2,
			CloseAfter:          3,
		},
		AIMD: AIMD{Decrease: 0.9, MinRate: 1, Interval: time.Second, Hold: 500 * time.Millisecond},
	}
}

// withDefaults fills zero fields from DefaultConfig.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	or := func(v *float64, def float64) {
		if *v <= 0 || math.IsNaN(*v) {
			*v = def
		}
	}
	ori := func(v *int, def int) {
		if *v <= 0 {
			*v = def
		}
	}
	ord := func(v *time.Duration, def time.Duration) {
		if *v <= 0 {
			*v = def
		}
	}
	if c.MetricsPrefix == "" {
		c.MetricsPrefix = d.MetricsPrefix
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	for _, p := range []struct{ c, d *Limit }{{&c.Put, &d.Put}, {&c.Get, &d.Get}, {&c.Delete, &d.Delete}, {&c.List, &d.List}} {
		or(&p.c.Rate, p.d.Rate)
		if p.c.Burst <= 0 {
			p.c.Burst = max(1, int(min(p.c.Rate, 1e9)/10))
			if p.c.Rate == p.d.Rate {
				p.c.Burst = p.d.Burst
			}
		}
	}
	ori(&c.Retry.MaxAttempts, d.Retry.MaxAttempts)
	ord(&c.Retry.BaseDelay, d.Retry.BaseDelay)
	ord(&c.Retry.MaxDelay, d.Retry.MaxDelay)
	ori(&c.Breaker.ConsecutiveFailures, d.Breaker.ConsecutiveFailures)
	ord(&c.Breaker.Window, d.Breaker.Window)
	ori(&c.Breaker.MinRequests, d.Breaker.MinRequests)
	or(&c.Breaker.FailureRate, d.Breaker.FailureRate)
	ord(&c.Breaker.CoolDown, d.Breaker.CoolDown)
	ori(&c.Breaker.Probes, d.Breaker.Probes)
	ori(&c.Breaker.CloseAfter, d.Breaker.CloseAfter)
	or(&c.AIMD.Decrease, d.AIMD.Decrease)
	c.AIMD.Decrease = min(c.AIMD.Decrease, 1)
	or(&c.AIMD.MinRate, d.AIMD.MinRate)
	if c.AIMD.Step <= 0 {
		c.AIMD.Step = max(1, min(c.Put.Rate, 1e9)/100)
	}
	ord(&c.AIMD.Interval, d.AIMD.Interval)
	ord(&c.AIMD.Hold, d.AIMD.Hold)
	return c
}
