package guard

import (
	"sync"
	"time"
)

// aimd adapts the PUT bucket's rate: on a throttle answer it multiplies the
// rate by Decrease (at most once per Hold, so one burst of 503s is one
// congestion event, as TCP reacts once per round trip), and after each
// Interval of successes without a throttle it adds Step, up to the
// configured rate.
//
// The decrease starts from the current rate, or, when no PUT had to wait for
// a token over the last second, from the rate at which PUTs were actually
// sent: a bucket allowed 3000/s but used at 200/s is cut to 200*Decrease, not
// to 2850/s (which would not slow anything down). This is how congestion
// window validation (RFC 7661) treats an application-limited sender.
//
// That starting rate is remembered as the store's limit (ceiling). Near it the
// increase is 5 % of it rather than Step, and past it each increase also
// waits for probeSuccesses successes, so a store admitting a few PUTs per
// second sees a SlowDown only every few dozen PUTs (the simulation in
// aimd_sim_test.go measures it: 91-99 % of the limit with 0.3-8 % SlowDowns
// for limits of 2 to 100 PUT/s). The estimate is dropped when the rate
// passes forgetAbove times it without a throttle, and after an outage.
// Lock order: aimd.mu, then bucket.mu.
type aimd struct {
	cfg    AIMD
	b      *bucket
	clk    Clock
	onRate func(float64)

	mu           sync.Mutex
	ceiling      float64 // the sent rate when the store last throttled (its estimated limit); 0 before
	lastDecrease time.Time
	lastAdjust   time.Time
	successes    int       // PUTs that succeeded since the last rate change
	sent         [10]int64 // PUT attempts per tenth of a second, a ring
	sentSlot     int64     // the slot (unix time / 100ms) sent[sentSlot%10] counts
	firstSent    time.Time // the first PUT attempt; zero before
}

func newAIMD(cfg AIMD, b *bucket, clk Clock, onRate func(float64)) *aimd {
	now := clk.Now()
	return &aimd{cfg: cfg, b: b, clk: clk, onRate: onRate, lastAdjust: now, lastDecrease: now.Add(-cfg.Hold)}
}

const slotDur = 100 * time.Millisecond

// probeSuccesses is how many PUTs must succeed, at or past the store's known
// limit, before the rate is raised again.
const probeSuccesses = 10

// forgetAbove: a rate this many times the store's known limit, reached
// without a throttle, shows the limit has grown.
const forgetAbove = 1.25

// forgetLimit drops the estimate of the store's limit, so the rate grows by
// full steps again. Called when the breaker closes after an outage: what
// was sent while the store was down says nothing about its rate limit.
func (a *aimd) forgetLimit() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.ceiling = 0
}

// rotateLocked clears the slots that passed since the last call.
func (a *aimd) rotateLocked(now time.Time) int64 {
	slot := now.UnixNano() / int64(slotDur)
	if slot-a.sentSlot >= int64(len(a.sent)) {
		a.sent = [10]int64{}
	} else {
		for s := a.sentSlot + 1; s <= slot; s++ {
			a.sent[s%int64(len(a.sent))] = 0
		}
	}
	if slot > a.sentSlot {
		a.sentSlot = slot
	}
	return slot
}

// sending records one PUT attempt.
func (a *aimd) sending() {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.clk.Now()
	if a.firstSent.IsZero() {
		a.firstSent = now
	}
	slot := a.rotateLocked(now)
	a.sent[slot%int64(len(a.sent))]++
}

// sentRate is the PUT attempts per second over the last second.
func (a *aimd) sentRateLocked(now time.Time) float64 {
	a.rotateLocked(now)
	var n int64
	for _, v := range a.sent {
		n += v
	}
	// Within the first second of sending, divide by the time sent so far
	// (at least a slot): a burst at start-up is a high rate, not a low one.
	span := slotDur * time.Duration(len(a.sent))
	if el := now.Sub(a.firstSent); el < span {
		span = max(el, slotDur)
	}
	return float64(n) / span.Seconds()
}

// throttled reacts to a SlowDown answer.
func (a *aimd) throttled() {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.clk.Now()
	if now.Sub(a.lastDecrease) < a.cfg.Hold {
		return
	}
	cur := a.b.currentRate()
	from := cur
	// Cut an application-limited sender from what it sent. A sender whose
	// PUTs waited for tokens within the last second was sending at the
	// bucket's rate, whatever a count of a few PUTs says (4 or 5 of 5/s).
	if sent := a.sentRateLocked(now); sent > 0 && sent < from && !a.b.limitedSince(now.Add(-time.Second)) {
		from = sent
	}
	a.ceiling = from
	r := max(a.cfg.MinRate, from*a.cfg.Decrease)
	a.lastDecrease, a.lastAdjust = now, now
	a.successes = 0
	if r != cur {
		a.b.setRate(r)
		a.onRate(r)
	}
}

// succeeded reacts to a PUT that was not throttled.
func (a *aimd) succeeded() {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.clk.Now()
	a.successes++
	if now.Sub(a.lastAdjust) < a.cfg.Interval {
		return
	}
	cur := a.b.currentRate()
	if cur >= a.b.maxRate {
		a.lastAdjust = now
		return
	}
	// A rate well past the store's known limit (forgetAbove times it),
	// reached without a throttle, shows the limit has grown: forget it.
	if a.ceiling > 0 && cur > a.ceiling*forgetAbove {
		a.ceiling = 0
	}
	step := a.cfg.Step
	if a.ceiling > 0 {
		// Past the known limit, an increase also needs enough successes to
		// be evidence: at a few PUTs per second one Interval holds only a
		// handful, and probing on each would make every other PUT past the
		// limit a SlowDown.
		if cur >= a.ceiling && a.successes < probeSuccesses {
			return
		}
		// Probe toward and past the limit in small steps (5 % of it, however
		// small the limit), so the rate saws between Decrease and 1 times
		// the limit instead of overshooting it by a step sized for the
		// maximum.
		step = min(step, a.ceiling*0.05)
	}
	a.lastAdjust = now
	a.successes = 0
	r := min(a.b.maxRate, cur+step)
	a.b.setRate(r)
	a.onRate(r)
}
