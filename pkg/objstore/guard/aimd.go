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
// The decrease starts from the smaller of the current rate and the rate at
// which PUTs were actually sent over the last second: a bucket allowed 3000/s
// but used at 200/s is cut to 200*Decrease, not to 1500/s (which would not
// slow anything down). This is how congestion window validation (RFC 7661)
// treats an application-limited sender.
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
	sent         [10]int64 // PUT attempts per tenth of a second, a ring
	sentSlot     int64     // the slot (unix time / 100ms) sent[sentSlot%10] counts
}

func newAIMD(cfg AIMD, b *bucket, clk Clock, onRate func(float64)) *aimd {
	now := clk.Now()
	return &aimd{cfg: cfg, b: b, clk: clk, onRate: onRate, lastAdjust: now, lastDecrease: now.Add(-cfg.Hold)}
}

const slotDur = 100 * time.Millisecond

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
	slot := a.rotateLocked(a.clk.Now())
	a.sent[slot%int64(len(a.sent))]++
}

// sentRate is the PUT attempts per second over the last second.
func (a *aimd) sentRateLocked(now time.Time) float64 {
	a.rotateLocked(now)
	var n int64
	for _, v := range a.sent {
		n += v
	}
	return float64(n) / (slotDur * time.Duration(len(a.sent))).Seconds()
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
	if sent := a.sentRateLocked(now); sent > 0 && sent < from {
		from = sent
	}
	a.ceiling = from
	r := max(a.cfg.MinRate, from*a.cfg.Decrease)
	a.lastDecrease, a.lastAdjust = now, now
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
	if now.Sub(a.lastAdjust) < a.cfg.Interval {
		return
	}
	a.lastAdjust = now
	cur := a.b.currentRate()
	if cur >= a.b.maxRate {
		return
	}
	// Once the store has shown its limit, probe toward it in small steps
	// (5 % of it), so the rate saws between Decrease and 1 times the limit
	// instead of overshooting it by a fixed step sized for the maximum.
	step := a.cfg.Step
	if a.ceiling > 0 {
		step = min(step, max(1, a.ceiling*0.05))
	}
	r := min(a.b.maxRate, cur+step)
	a.b.setRate(r)
	a.onRate(r)
}
