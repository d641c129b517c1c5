package guard

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// State is a circuit breaker state.
type State int

// Breaker states; the numbers are the values of the breaker state gauge.
const (
	// Closed: requests flow.
	Closed State = iota
	// HalfOpen: the cool-down has passed; up to Breaker.Probes requests at a
	// time test the store.
	HalfOpen
	// Open: the store is failing; reads fail fast with ErrUnavailable and
	// writes wait.
	Open
)

func (s State) String() string {
	switch s {
	case Closed:
		return "closed"
	case HalfOpen:
		return "half_open"
	case Open:
		return "open"
	}
	return "unknown"
}

// outcome is what one attempt tells the breaker.
type outcome int

const (
	outcomeSuccess outcome = iota // the store answered (including NotFound, Exists, ...)
	outcomeFailure                // the store failed (throttled, 5xx, connection error)
	outcomeIgnore                 // says nothing about the store (context ended)
)

// breaker is the circuit breaker; every attempt is admitted by admit and
// reported by record.
type breaker struct {
	cfg          Breaker
	clk          Clock
	onTransition func(from, to State, reason string)

	mu          sync.Mutex
	state       State
	consecutive int       // failures in a row while closed
	openedAt    time.Time // when it last opened
	probes      int       // probes in flight while half-open
	successes   int       // successful probes while half-open
	transitions int64
	slots       []windowSlot  // the error-rate window, one slot per Window/len
	changed     chan struct{} // closed and replaced on a transition or a freed probe slot
}

type windowSlot struct {
	index           int64 // which Window/len interval since the epoch this slot counts
	total, failures int
}

const windowSlots = 10

func newBreaker(cfg Breaker, clk Clock, onTransition func(from, to State, reason string)) *breaker {
	return &breaker{cfg: cfg, clk: clk, onTransition: onTransition, slots: make([]windowSlot, windowSlots), changed: make(chan struct{})}
}

func (b *breaker) notifyLocked() {
	close(b.changed)
	b.changed = make(chan struct{})
}

// setLocked moves the breaker to state to, for reason (logged by the
// guard), and tells onTransition. onTransition runs under b.mu: it must not
// call the breaker.
func (b *breaker) setLocked(to State, now time.Time, reason string) {
	from := b.state
	if from == to {
		return
	}
	b.state = to
	b.transitions++
	switch to {
	case Open:
		b.openedAt = now
	case HalfOpen:
		b.successes = 0
	case Closed:
		b.consecutive = 0
		clear(b.slots)
	}
	b.notifyLocked()
	b.onTransition(from, to, reason)
}

// refreshLocked moves an open breaker whose cool-down has passed to half-open.
func (b *breaker) refreshLocked(now time.Time) {
	if b.state == Open && now.Sub(b.openedAt) >= b.cfg.CoolDown {
		b.setLocked(HalfOpen, now, fmt.Sprintf("the %v cool-down passed; up to %d probes test the store", b.cfg.CoolDown, b.cfg.Probes))
	}
}

func (b *breaker) current() State {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refreshLocked(b.clk.Now())
	return b.state
}

// admit lets one attempt through. It returns probe=true if the attempt is a
// half-open probe (record must then be called with probe=true). When the
// breaker is open, or half-open with every probe slot taken, it fails at once
// with errOpen if wait is false, and otherwise waits until the attempt can go
// or ctx ends.
func (b *breaker) admit(ctx context.Context, wait bool) (probe bool, err error) {
	for {
		b.mu.Lock()
		now := b.clk.Now()
		b.refreshLocked(now)
		var until time.Duration
		switch b.state {
		case Closed:
			b.mu.Unlock()
			return false, nil
		case HalfOpen:
			if b.probes < b.cfg.Probes {
				b.probes++
				b.mu.Unlock()
				return true, nil
			}
		case Open:
			until = b.cfg.CoolDown - now.Sub(b.openedAt)
		}
		changed := b.changed
		state := b.state
		b.mu.Unlock()
		if !wait {
			return false, errOpen{state}
		}
		if err := b.waitChange(ctx, changed, until); err != nil {
			return false, err
		}
	}
}

// waitChange waits for changed to close, for d (if > 0) to pass, or for ctx.
func (b *breaker) waitChange(ctx context.Context, changed <-chan struct{}, d time.Duration) error {
	var timeout <-chan time.Time
	if d > 0 {
		t := b.clk.NewTimer(d)
		defer t.Stop()
		timeout = t.C()
	}
	select {
	case <-changed:
	case <-timeout:
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

// record reports the outcome of an admitted attempt.
func (b *breaker) record(probe bool, o outcome) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.clk.Now()
	if probe {
		b.probes--
		b.notifyLocked() // a probe slot is free
	}
	if o == outcomeIgnore {
		return
	}
	b.refreshLocked(now)
	switch b.state {
	case Closed:
		s := b.slotLocked(now)
		s.total++
		if o == outcomeFailure {
			s.failures++
			b.consecutive++
		} else {
			b.consecutive = 0
		}
		if o == outcomeFailure {
			if why := b.tripLocked(now); why != "" {
				b.setLocked(Open, now, why)
			}
		}
	case HalfOpen:
		if o == outcomeFailure {
			b.setLocked(Open, now, "a probe failed")
			return
		}
		b.successes++
		if b.successes >= b.cfg.CloseAfter {
			b.setLocked(Closed, now, fmt.Sprintf("%d probes in a row succeeded", b.successes))
		}
	case Open:
		// An attempt admitted before the breaker opened: its answer is old
		// news; the probes decide.
	}
}

// slotLocked returns the window slot for now, resetting it if stale.
func (b *breaker) slotLocked(now time.Time) *windowSlot {
	width := max(b.cfg.Window/windowSlots, time.Millisecond)
	idx := now.UnixNano() / int64(width)
	s := &b.slots[idx%windowSlots]
	if s.index != idx {
		*s = windowSlot{index: idx}
	}
	return s
}

// tripLocked says why the failures seen call for opening, or "" if they
// do not.
func (b *breaker) tripLocked(now time.Time) string {
	if b.consecutive >= b.cfg.ConsecutiveFailures {
		return fmt.Sprintf("%d failures in a row", b.consecutive)
	}
	width := max(b.cfg.Window/windowSlots, time.Millisecond)
	idx := now.UnixNano() / int64(width)
	var total, failures int
	for _, s := range b.slots {
		if idx-s.index < windowSlots {
			total += s.total
			failures += s.failures
		}
	}
	if total >= b.cfg.MinRequests && float64(failures) >= b.cfg.FailureRate*float64(total) {
		return fmt.Sprintf("%d of %d attempts failed in the last %v", failures, total, b.cfg.Window)
	}
	return ""
}

// untilHalfOpen returns the state and, when open, how long until the
// breaker lets probes through (0 otherwise).
func (b *breaker) untilHalfOpen() (State, time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.clk.Now()
	b.refreshLocked(now)
	if b.state != Open {
		return b.state, 0
	}
	return Open, b.cfg.CoolDown - now.Sub(b.openedAt)
}

func (b *breaker) stats() (State, int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refreshLocked(b.clk.Now())
	return b.state, b.transitions
}

// errOpen is what admit returns when it will not wait; it wraps ErrUnavailable.
type errOpen struct{ state State }

func (e errOpen) Error() string {
	return "circuit breaker " + e.state.String() + ": " + ErrUnavailable.Error()
}
func (e errOpen) Unwrap() error { return ErrUnavailable }
