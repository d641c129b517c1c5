// Package guard protects an object store from its callers and its callers
// from the object store: one guard per agent, shared by everything that
// talks to the store (uploader, reads, compaction, retention), spends a
// request budget (token buckets per operation class), retries transient
// failures with exponential backoff and full jitter, adapts the PUT rate to
// throttling (AIMD), and stops traffic to a failing store with a circuit
// breaker. DESIGN.md, "Backpressure", says how the agent builds on it.
//
// # Order of a call
//
// Each attempt is admitted by the breaker, then takes a token of its class,
// then goes to the store. Its error is classified by S3 error code, HTTP
// status and error type (never by message): throttling (503 SlowDown and
// kin, 429), 500 InternalError, RequestTimeout, other 5xx and transport
// errors are retried and count as failures for the breaker; every other
// answer (NotFound, Exists, Range, AccessDenied, ...) is returned at once
// and counts as a success; errors from the caller's context end the call.
//
// # Waiting
//
// Callers wait for tokens rather than fail, up to their context's deadline:
// a token that would come after the deadline fails the call at once with an
// error wrapping context.DeadlineExceeded (deadlines are compared with the
// guard's Clock, so tests with a FakeClock set deadlines on its time). While the breaker is open (and,
// half-open, when its probe slots are taken) Get, Head, List and Delete fail
// at once with an error wrapping ErrUnavailable, and PutIfAbsent waits until
// it may go or its context ends: the agent's data is safe in its WAL, and an
// upload that waits is better than one that fails and is retried blindly.
//
// # PutIfAbsent and retries
//
// A PUT whose answer was lost (connection reset, timeout, 500) may have been
// applied, so its retry can find the key taken by its own first attempt.
// When a retry of PutIfAbsent gets ErrExists after such an ambiguous failure,
// the guard reads the object back and returns nil if it holds exactly the
// data given (the write is ours, or indistinguishable from ours), and
// ErrExists otherwise. A PUT refused with a throttling answer was not
// applied, so ErrExists after only those is a real conflict. Callers use
// unique keys (agent id + ULID), so the read-back is rare and cheap.
package guard

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/streamhouse/streamhouse/pkg/objstore"
)

// ErrUnavailable means the circuit breaker is open: the store has been
// failing and the guard does not send it this request. Callers map it to
// Connect's Unavailable.
var ErrUnavailable = errors.New("object store unavailable")

// Op is an operation class: each has its own token bucket and metrics.
type Op int

// Operation classes. Head draws on OpList.
const (
	OpPut Op = iota
	OpGet
	OpDelete
	OpList
	numOps
)

func (o Op) String() string {
	switch o {
	case OpPut:
		return "put"
	case OpGet:
		return "get"
	case OpDelete:
		return "delete"
	case OpList:
		return "list"
	}
	return "unknown"
}

// Store is an objstore.Store behind a guard. Safe for concurrent use; one
// per agent, shared by every user of the store.
type Store struct {
	store   objstore.Store
	cfg     Config
	clk     Clock
	buckets [numOps]*bucket
	aimd    *aimd
	br      *breaker
	ops     [numOps]opCounters
	m       [numOps]opMetrics

	stateGauge *metrics.Gauge
	rateGauge  *metrics.Gauge
	prefix     string
	log        *slog.Logger

	puts putHealth
	// lastFailure is the last retryable error of any operation (a string),
	// for the breaker's log lines.
	lastFailure atomic.Value
	// outageStart is when the breaker last opened from closed; only the
	// breaker's transition callback (under the breaker's lock) uses it.
	outageStart time.Time
}

// putHealth tracks the outcome of recent PUT attempts, for Health.
type putHealth struct {
	mu       sync.Mutex
	inFlight int       // PUT calls in progress (retries included)
	streak   int       // retryable PUT failures since the last PUT that succeeded
	lastErr  error     // the last of them
	failedAt time.Time // when it came
	retryAt  time.Time // when the latest PUT retry waiting for its backoff is due
}

var _ objstore.Store = (*Store)(nil)

type opCounters struct {
	calls, attempts, retries, throttled, unavailable, failures, verified atomic.Int64
	waitedNanos                                                          atomic.Int64
}

type opMetrics struct {
	waited      *metrics.FloatCounter
	throttled   *metrics.Counter
	retries     *metrics.Counter
	unavailable *metrics.Counter
}

// New returns store behind a guard configured by cfg (zero fields take
// their defaults) reading the time from clk (nil: RealClock).
//
// Logs, to cfg.Logger, once per transition (never per request): the
// breaker opening (Warn, with the reason and the last error), opening
// again after a failed probe and closing (Info); the PUT rate lowered from
// its configured value because of throttling (Warn), back at it (Info), and
// throttles read as random failures rather than a rate limit (Warn).
// Individual rate changes are logged at Debug.
//
// Metrics, with prefix cfg.MetricsPrefix, in the process's
// VictoriaMetrics/metrics registry:
//
//	<prefix>_s3_token_wait_seconds_total{op}       time spent waiting for tokens
//	<prefix>_s3_throttled_total{op}                throttling answers (503 SlowDown, 429)
//	<prefix>_s3_retries_total{op}                  retries
//	<prefix>_s3_unavailable_total{op}              calls failed fast by the open breaker
//	<prefix>_s3_breaker_state                      0 closed, 1 half-open, 2 open
//	<prefix>_s3_breaker_transitions_total{to}      breaker transitions
//	<prefix>_s3_put_rate                           the PUT token rate AIMD allows (per second)
//
// op is put, get, delete or list (head counts as list).
func New(store objstore.Store, cfg Config, clk Clock) *Store {
	if clk == nil {
		clk = RealClock()
	}
	cfg = cfg.withDefaults()
	g := &Store{store: store, cfg: cfg, clk: clk, prefix: cfg.MetricsPrefix, log: cfg.Logger}
	for op, l := range [numOps]Limit{cfg.Put, cfg.Get, cfg.Delete, cfg.List} {
		g.buckets[op] = newBucket(clk, l.Rate, l.Burst)
		name := Op(op).String()
		g.m[op] = opMetrics{
			waited:      metrics.GetOrCreateFloatCounter(fmt.Sprintf(`%s_s3_token_wait_seconds_total{op=%q}`, g.prefix, name)),
			throttled:   metrics.GetOrCreateCounter(fmt.Sprintf(`%s_s3_throttled_total{op=%q}`, g.prefix, name)),
			retries:     metrics.GetOrCreateCounter(fmt.Sprintf(`%s_s3_retries_total{op=%q}`, g.prefix, name)),
			unavailable: metrics.GetOrCreateCounter(fmt.Sprintf(`%s_s3_unavailable_total{op=%q}`, g.prefix, name)),
		}
	}
	g.stateGauge = metrics.GetOrCreateGauge(g.prefix+"_s3_breaker_state", nil)
	g.stateGauge.Set(float64(Closed))
	g.rateGauge = metrics.GetOrCreateGauge(g.prefix+"_s3_put_rate", nil)
	g.rateGauge.Set(cfg.Put.Rate)
	g.br = newBreaker(cfg.Breaker, clk, func(from, to State, reason string) {
		g.stateGauge.Set(float64(to))
		metrics.GetOrCreateCounter(fmt.Sprintf(`%s_s3_breaker_transitions_total{to=%q}`, g.prefix, to)).Inc()
		g.logTransition(from, to, reason)
		if to == Closed {
			g.aimd.recovered()
		}
	})
	g.aimd = newAIMD(cfg.AIMD, g.buckets[OpPut], clk, cfg.Logger, g.rateGauge.Set)
	return g
}

// logTransition logs one breaker transition. It runs under the breaker's
// lock, so transitions are logged in order and once each.
func (g *Store) logTransition(from, to State, reason string) {
	now := g.clk.Now()
	last, _ := g.lastFailure.Load().(string)
	switch {
	case to == Open && from == Closed:
		g.outageStart = now
		g.log.Warn("object store failing: circuit breaker open; reads fail fast, uploads wait, durable writes are refused",
			"state", to.String(), "reason", reason, "cool_down", g.cfg.Breaker.CoolDown, "last_error", last)
	case to == Open:
		g.log.Info("object store still failing: circuit breaker open again",
			"state", to.String(), "reason", reason, "cool_down", g.cfg.Breaker.CoolDown,
			"open_for", now.Sub(g.outageStart).Round(time.Millisecond), "last_error", last)
	case to == Closed:
		g.log.Info("object store recovered: circuit breaker closed",
			"state", to.String(), "reason", reason, "outage", now.Sub(g.outageStart).Round(time.Millisecond))
	default:
		g.log.Debug("circuit breaker half-open", "state", to.String(), "reason", reason)
	}
}

// Health is the guard's view of whether the store takes PUTs now: what a
// caller needs to decide whether to accept work that must be uploaded soon
// (the agent refuses acks=durable writes while Failing).
type Health struct {
	// State is the breaker's state.
	State State
	// Failing is true while the breaker is open, and while the most recent
	// PUT attempt failed with a retryable error (throttling included) and
	// no PUT has succeeded since, as long as a PUT call is still retrying
	// or the failure is less than Retry.MaxDelay old (a failure nobody
	// retries does not mark the store failing forever). A half-open
	// breaker is not failing by itself: callers that hold work back while
	// Failing must let some through then, or no probe would ever close it.
	Failing bool
	// Throttled is true while AIMD holds the PUT rate below the configured
	// rate because of throttling.
	Throttled bool
	// RandomFailures is true while throttling answers are read as random
	// failures rather than a rate limit (they do not lower the rate).
	RandomFailures bool
	// PutRate is the PUT rate AIMD allows now (per second).
	PutRate float64
	// RetryAfter is how long until the guard expects a new PUT to go
	// through: the breaker's remaining cool-down while open, the backoff
	// of the PUT retry now waiting while failing, plus the wait for a PUT
	// token. 0 when a PUT could go at once.
	RetryAfter time.Duration
	// Reason says, for a person, why the store is failing; empty when it
	// is not.
	Reason string
}

// Health returns the guard's view of the store now. It is cheap (a few
// mutexes, no I/O): callers may ask on every request.
func (g *Store) Health() Health {
	now := g.clk.Now()
	state, untilProbe := g.br.untilHalfOpen()
	limited, noise := g.aimd.state()
	h := Health{State: state, Throttled: limited, RandomFailures: noise, PutRate: g.buckets[OpPut].currentRate()}
	p := &g.puts
	p.mu.Lock()
	streak, lastErr, failedAt, retryAt, inFlight := p.streak, p.lastErr, p.failedAt, p.retryAt, p.inFlight
	p.mu.Unlock()
	wait := g.buckets[OpPut].tokenWait()
	switch {
	case state == Open:
		h.Failing = true
		h.RetryAfter = untilProbe + wait
		h.Reason = fmt.Sprintf("circuit breaker open: the object store is failing; probes in %v", untilProbe.Round(time.Millisecond))
	case streak > 0 && (inFlight > 0 || now.Sub(failedAt) < g.cfg.Retry.MaxDelay):
		h.Failing = true
		h.RetryAfter = max(retryAt.Sub(now), 0) + wait
		h.Reason = fmt.Sprintf("the last %d PUT attempts failed (last: %v)", streak, lastErr)
	}
	return h
}

// notePut records the outcome of one PUT attempt for Health.
func (g *Store) notePut(cl class, err error) {
	p := &g.puts
	p.mu.Lock()
	defer p.mu.Unlock()
	switch cl {
	case classOK:
		p.streak, p.lastErr = 0, nil
	case classRetryable:
		p.streak++
		p.lastErr, p.failedAt = err, g.clk.Now()
	}
}

// Unwrap returns the store the guard protects.
func (g *Store) Unwrap() objstore.Store { return g.store }

// Config returns the effective configuration (defaults filled in).
func (g *Store) Config() Config { return g.cfg }

// State returns the breaker's state.
func (g *Store) State() State { return g.br.current() }

// PutIfAbsent implements objstore.Store. It waits while the breaker is open
// (see the package documentation) and may return nil for an object its own
// earlier attempt wrote (see "PutIfAbsent and retries").
func (g *Store) PutIfAbsent(ctx context.Context, key string, data []byte) error {
	var ambiguousFailure bool
	return g.do(ctx, OpPut, key, true, func(ctx context.Context, attempt int) error {
		err := g.store.PutIfAbsent(ctx, key, data)
		if err != nil && attempt > 1 && ambiguousFailure && errors.Is(err, objstore.ErrExists) {
			if g.sameObject(ctx, key, data) {
				g.ops[OpPut].verified.Add(1)
				return nil
			}
		}
		if err != nil && classify(ctx, err) == classRetryable && ambiguous(err) {
			ambiguousFailure = true
		}
		return err
	})
}

// sameObject reports whether key holds exactly data, reading it back
// through the guard (a GET token, the breaker).
func (g *Store) sameObject(ctx context.Context, key string, data []byte) bool {
	got, err := g.Get(ctx, key, 0, -1)
	return err == nil && bytes.Equal(got, data)
}

// Get implements objstore.Store; it fails fast with ErrUnavailable while the
// breaker is open.
func (g *Store) Get(ctx context.Context, key string, offset, length int64) ([]byte, error) {
	var b []byte
	err := g.do(ctx, OpGet, key, false, func(ctx context.Context, _ int) error {
		var err error
		b, err = g.store.Get(ctx, key, offset, length)
		return err
	})
	if err != nil {
		return nil, err
	}
	return b, nil
}

// Head implements objstore.Store with a LIST-class token; it fails fast with
// ErrUnavailable while the breaker is open.
func (g *Store) Head(ctx context.Context, key string) (objstore.Info, error) {
	var info objstore.Info
	err := g.do(ctx, OpList, key, false, func(ctx context.Context, _ int) error {
		var err error
		info, err = g.store.Head(ctx, key)
		return err
	})
	return info, err
}

// List implements objstore.Store; it fails fast with ErrUnavailable while
// the breaker is open.
func (g *Store) List(ctx context.Context, prefix string) ([]objstore.Info, error) {
	var infos []objstore.Info
	err := g.do(ctx, OpList, prefix, false, func(ctx context.Context, _ int) error {
		var err error
		infos, err = g.store.List(ctx, prefix)
		return err
	})
	return infos, err
}

// Delete implements objstore.Store; it fails fast with ErrUnavailable while
// the breaker is open (deletes are background work that is retried later).
func (g *Store) Delete(ctx context.Context, key string) error {
	return g.do(ctx, OpDelete, key, false, func(ctx context.Context, _ int) error {
		return g.store.Delete(ctx, key)
	})
}

// do runs one call: attempts admitted by the breaker and the bucket of op,
// retried per cfg.Retry. wait says whether to wait out an open breaker.
func (g *Store) do(ctx context.Context, op Op, key string, wait bool, attempt func(ctx context.Context, n int) error) error {
	c := &g.ops[op]
	c.calls.Add(1)
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s %s: %w", op, key, err)
	}
	if op == OpPut {
		g.puts.mu.Lock()
		g.puts.inFlight++
		g.puts.mu.Unlock()
		defer func() {
			g.puts.mu.Lock()
			g.puts.inFlight--
			g.puts.mu.Unlock()
		}()
	}
	var last error
	for n := 1; ; n++ {
		probe, err := g.br.admit(ctx, wait)
		if err != nil {
			if errors.Is(err, ErrUnavailable) {
				c.unavailable.Add(1)
				g.m[op].unavailable.Inc()
			}
			return joinLast(op, key, err, last)
		}
		waited, err := g.buckets[op].wait(ctx)
		if waited > 0 {
			c.waitedNanos.Add(int64(waited))
			g.m[op].waited.Add(waited.Seconds())
		}
		if err != nil {
			g.br.record(probe, outcomeIgnore)
			return joinLast(op, key, err, last)
		}
		c.attempts.Add(1)
		if op == OpPut {
			g.aimd.sending()
		}
		err = attempt(ctx, n)
		cl := classify(ctx, err)
		switch cl {
		case classOK:
			g.br.record(probe, outcomeSuccess)
		case classRetryable:
			g.lastFailure.Store(fmt.Sprintf("%s: %v", op, err))
			g.br.record(probe, outcomeFailure)
			c.failures.Add(1)
		case classContext:
			g.br.record(probe, outcomeIgnore)
		}
		throttled := isThrottle(err)
		if throttled {
			c.throttled.Add(1)
			g.m[op].throttled.Inc()
		}
		if op == OpPut {
			g.notePut(cl, err)
			switch {
			case throttled && !probe && g.br.current() == Closed:
				// Throttles while the breaker is not closed are part of an
				// outage, not a rate limit (see aimd).
				g.aimd.throttled()
			case cl == classOK:
				g.aimd.succeeded()
			}
		}
		if cl != classRetryable {
			return err
		}
		last = err
		if n >= g.cfg.Retry.MaxAttempts {
			return fmt.Errorf("%w (gave up after %d attempts)", err, n)
		}
		ra, _ := objstore.RetryAfter(err)
		delay := g.backoff(n, ra, rand.Float64())
		if dl, ok := ctx.Deadline(); ok && g.clk.Now().Add(delay).After(dl) {
			return fmt.Errorf("%w (no retry: backoff %v would pass the deadline)", err, delay)
		}
		c.retries.Add(1)
		g.m[op].retries.Inc()
		if op == OpPut {
			g.puts.mu.Lock()
			g.puts.retryAt = g.clk.Now().Add(delay)
			g.puts.mu.Unlock()
		}
		if err := g.clk.Sleep(ctx, delay); err != nil {
			return joinLast(op, key, err, last)
		}
	}
}

// backoff returns the wait before retry n (n >= 1): full jitter, u in [0,1)
// the random draw, at least retryAfter, at most MaxDelay.
func (g *Store) backoff(n int, retryAfter time.Duration, u float64) time.Duration {
	r := g.cfg.Retry
	ceil := r.MaxDelay
	if n-1 < 40 {
		if c := r.BaseDelay << (n - 1); c > 0 && c < ceil {
			ceil = c
		}
	}
	d := time.Duration(u * float64(ceil))
	if retryAfter > d {
		d = min(retryAfter, r.MaxDelay)
	}
	return d
}

// joinLast returns err for op, mentioning the last store error if any (both
// can be tested with errors.Is).
func joinLast(op Op, key string, err, last error) error {
	if last == nil {
		return fmt.Errorf("%s %s: %w", op, key, err)
	}
	return fmt.Errorf("%s %s: %w (last error: %w)", op, key, err, last)
}

// OpStats counts what the guard did for one operation class.
type OpStats struct {
	Calls       int64         // calls made to the guard
	Attempts    int64         // requests sent to the store
	Retries     int64         // attempts that were retries
	Throttled   int64         // throttling answers (503 SlowDown, 429)
	Failures    int64         // retryable failures (throttling included)
	Unavailable int64         // calls failed fast by the breaker
	Verified    int64         // PutIfAbsent retries whose ErrExists was our own write
	TokenWait   time.Duration // total time spent waiting for tokens
}

// Stats is a snapshot of a guard's state and counters.
type Stats struct {
	State       State
	Transitions int64   // breaker transitions so far
	PutRate     float64 // the PUT token rate AIMD allows now
	Ops         [numOps]OpStats
}

// Op returns the counters of one class.
func (s Stats) Op(op Op) OpStats { return s.Ops[op] }

// Stats returns a snapshot of the guard's state and counters.
func (g *Store) Stats() Stats {
	var s Stats
	s.State, s.Transitions = g.br.stats()
	s.PutRate = g.buckets[OpPut].currentRate()
	for op := range s.Ops {
		c := &g.ops[op]
		s.Ops[op] = OpStats{
			Calls:       c.calls.Load(),
			Attempts:    c.attempts.Load(),
			Retries:     c.retries.Load(),
			Throttled:   c.throttled.Load(),
			Failures:    c.failures.Load(),
			Unavailable: c.unavailable.Load(),
			Verified:    c.verified.Load(),
			TokenWait:   time.Duration(c.waitedNanos.Load()),
		}
	}
	return s
}
