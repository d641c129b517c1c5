package guard

import (
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// aimd adapts the PUT bucket's rate: on a throttle answer it multiplies the
// rate by Decrease (at most once per Hold, so one burst of 503s is one
// congestion event, as TCP reacts once per round trip), and after each
// Interval of successes without a throttle it raises it again, up to the
// configured rate.
//
// # Where a cut starts
//
// The decrease starts from the current rate, or, when no PUT had to wait for
// a token over the last second, from the rate at which PUTs were actually
// sent: a bucket allowed 3000/s but used at 200/s is cut to 200*Decrease, not
// to 2850/s (which would not slow anything down). This is how congestion
// window validation (RFC 7661) treats an application-limited sender. When at
// least deepShare of the last window PUTs were throttled (the sender is at
// twice the store's limit or more), the cut starts from the rate the store
// accepted since it began to throttle: a limit that fell from 100 to 10
// PUT/s is found in one cut, not in twenty-two cuts of 10 %.
//
// # What is not a rate limit
//
// Some 503s say nothing about the store's rate limit and do not cut the
// rate:
//   - while nothing was accepted since the last cut the store is down, not
//     throttling: the breaker deals with that (and throttles while the
//     breaker is not closed are not reported here at all). When the breaker
//     closes again the rate goes back to what it was before the outage's
//     cuts;
//   - random failures. A rate limit takes every PUT paced below it; random
//     failures (a degraded store, the fault proxy's "slowdown": 0.3) hit
//     the same share of PUTs whatever the rate. So once an episode of
//     throttling (from a throttle to episodeEnd without one) has cut the
//     rate to testCut of where it began, the rate is held for the next
//     testOutcomes PUTs: the test. If they were sent at no more than the
//     store accepted per second before the test point, and heavyShare or
//     more of them (but less than deepShare) were throttled all the same,
//     the failures are random: the rate goes back to what it was before the
//     episode and is not cut again while throttling stays at that share (a
//     block of noiseBlock PUTs throttled noiseMargin more often is read as
//     a limit again). Otherwise the cuts go on. An episode whose test saw
//     such failures but ended before it could conclude (the store got
//     better) also gives the rate back when it ends. TestStormSimSeeds
//     measures it: random 30 % failures are recognised in 5-15 s in most
//     runs, and limits of 1 to 6.5 PUT/s (for a sender at about 8) are never
//     taken for them.
//
// # Increases
//
// The starting rate of a cut is remembered as the store's limit (ceiling).
// Below it the rate grows by 5 % of it each Interval (half the gap when
// below 80 % of it). Past it the first
// increase (5 % of the limit, however small) waits for probeSuccesses
// successes in a row, so a store admitting a few PUTs per second sees a
// SlowDown only every few dozen PUTs (the simulation in aimd_sim_test.go
// measures it: 91-99 % of the limit with 0.3-8 % SlowDowns for limits of 2
// to 100 PUT/s); once one probe passed, the next come each Interval, each
// twice the last. The estimate is dropped when the rate passes forgetAbove
// times it, after an outage, and when the throttles turn out to be random.
// Without an estimate the rate doubles each Interval (slow start), and
// quadruples once nothing was throttled for episodeEnd, so a rate left low
// by a storm is back at the configured rate within seconds (the storm of
// issue 13, 60 s of 100 % then 60 s of 30 % 503s: 0-15 s after the store
// recovers, in TestStormRecovery and TestStormSimSeeds; it took 146-152 s).
//
// Lock order: aimd.mu, then bucket.mu. The breaker calls recovered under its
// own lock (breaker.mu, then aimd.mu); aimd never calls the breaker.
type aimd struct {
	cfg    AIMD
	b      *bucket
	clk    Clock
	onRate func(float64)
	log    *slog.Logger

	mu           sync.Mutex
	ceiling      float64 // the rate when the store last throttled (its estimated limit); 0: none
	lastDecrease time.Time
	lastAdjust   time.Time
	lastThrottle time.Time
	successes    int       // PUTs that succeeded since the last rate change or throttle
	sent         [10]int64 // PUT attempts per tenth of a second, a ring
	sentSlot     int64     // the slot (unix time / 100ms) sent[sentSlot%10] counts
	firstSent    time.Time // the first PUT attempt; zero before

	cut    tally       // PUT outcomes since the last cut
	recent [window]obs // the last window PUT outcomes, a ring
	next   int         // where the next outcome goes in recent
	ep     episode
	// before is the rate before the first cut of the current or last
	// episode: what an outage or random failures are forgiven back to.
	before float64
	// noise > 0 while throttles are read as random failures: their share
	// when that was found. noiseTally counts outcomes since, in blocks.
	noise      float64
	noiseTally tally
	probes     int // successful probes past the ceiling since the last cut
	// limitedAt is when the rate first fell below the configured rate;
	// zero while it is at the configured rate.
	limitedAt time.Time
}

// tally counts PUT outcomes.
type tally struct{ ok, throttled int }

func (t tally) n() int { return t.ok + t.throttled }

func (t tally) share() float64 {
	if t.n() == 0 {
		return 0
	}
	return float64(t.throttled) / float64(t.n())
}

// obs is one PUT outcome.
type obs struct {
	at        time.Time
	throttled bool
}

// episode is a run of throttling: from a throttle after a quiet spell of
// episodeEnd until the next such spell.
type episode struct {
	active    bool
	start     time.Time // its first throttle
	ok        int       // PUTs accepted since start
	ref       float64   // the rate its first cut started from
	cuts      int
	pre       tally     // outcomes before the rate fell to testCut*ref
	testStart time.Time // when it did (zero before): later outcomes are the test
	// suspect: the test found the store throttling PUTs sent at no more
	// than it had accepted, whether or not it could conclude.
	suspect bool
}

func newAIMD(cfg AIMD, b *bucket, clk Clock, log *slog.Logger, onRate func(float64)) *aimd {
	now := clk.Now()
	return &aimd{cfg: cfg, b: b, clk: clk, log: log, onRate: onRate, lastAdjust: now, lastDecrease: now.Add(-cfg.Hold)}
}

const slotDur = 100 * time.Millisecond

// probeSuccesses is how many PUTs must succeed, at or past the store's known
// limit, before the rate is raised again.
const probeSuccesses = 10

// forgetAbove: a rate this many times the store's known limit, reached
// without a throttle, shows the limit has grown.
const forgetAbove = 1.25

// window is how many recent PUT outcomes the deep cut's share is taken
// over; testOutcomes how many after the test point the test takes.
const (
	window       = 16
	testOutcomes = 12
)

// deepShare: at least this share of the last window PUTs throttled means
// the sender is at twice the store's limit or more; the cut then starts from
// what the store accepted (given at least measureOK accepted PUTs over a
// second or more).
const (
	deepShare = 0.5
	measureOK = 3
)

// testCut: once an episode has cut the rate to this share of where it
// began, the next PUTs test whether a rate limit throttles them.
const testCut = 0.6

// heavyShare: at least this share of throttles after the test point means
// random failures (with the other conditions; see aimd).
const heavyShare = 0.15

// noiseMargin: while throttles look random at share s, a block of
// noiseBlock outcomes throttled at s+noiseMargin or more is read as a rate
// limit again (by chance: once in about 2,500 blocks at s = 0.3).
const (
	noiseMargin = 0.3
	noiseBlock  = 32
)

// noiseForget: after this long without a throttle, random failures are
// over. episodeEnd: after this long without a throttle, an episode is.
const (
	noiseForget = 10 * time.Second
	episodeEnd  = 5 * time.Second
)

// recovered is called when the breaker closes after an outage: what was
// sent while the store was down says nothing about its rate limit, so the
// estimate is dropped and the rate goes back to what it was before the
// outage's cuts.
func (a *aimd) recovered() {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.clk.Now()
	a.ceiling, a.noise = 0, 0
	a.ep, a.cut = episode{}, tally{}
	a.restoreLocked(now, "the object store recovered from an outage")
}

// restoreLocked sets the rate back to a.before (if higher).
func (a *aimd) restoreLocked(now time.Time, why string) {
	cur := a.b.currentRate()
	if a.before > cur {
		a.setRateLocked(now, a.before, why)
	}
	a.lastAdjust = now
	a.successes = 0
}

// setRateLocked changes the rate and logs the transitions between "at the
// configured rate" and "held below it".
func (a *aimd) setRateLocked(now time.Time, r float64, why string) {
	cur := a.b.currentRate()
	if r == cur {
		return
	}
	a.b.setRate(r)
	a.onRate(r)
	full := r >= a.b.maxRate
	switch {
	case !full && a.limitedAt.IsZero():
		a.limitedAt = now
		a.log.Warn("object store is throttling PUTs: PUT rate lowered", "put_rate", round2(r), "from", round2(cur), "limit", a.b.maxRate, "reason", why)
	case full && !a.limitedAt.IsZero():
		a.log.Info("PUT rate back at its limit", "put_rate", round2(r), "limited_for", now.Sub(a.limitedAt).Round(time.Millisecond), "reason", why)
		a.limitedAt = time.Time{}
	default:
		a.log.Debug("PUT rate changed", "put_rate", round2(r), "from", round2(cur), "reason", why)
	}
}

func round2(v float64) float64 { return float64(int64(v*100+0.5)) / 100 }

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

// observeLocked records one PUT outcome in the recent ring, the cut tally
// and the episode.
func (a *aimd) observeLocked(now time.Time, throttled bool) {
	a.recent[a.next] = obs{at: now, throttled: throttled}
	a.next = (a.next + 1) % window
	if throttled {
		a.cut.throttled++
		a.lastThrottle = now
		a.successes = 0 // a probe past the limit needs probeSuccesses in a row
		if !a.ep.active {
			a.ep = episode{active: true, start: now}
		}
	} else {
		a.cut.ok++
	}
	if a.noise > 0 {
		if throttled {
			a.noiseTally.throttled++
		} else {
			a.noiseTally.ok++
		}
	}
	if !a.ep.active {
		return
	}
	if !throttled {
		a.ep.ok++
	}
	if a.ep.testStart.IsZero() {
		if throttled {
			a.ep.pre.throttled++
		} else {
			a.ep.pre.ok++
		}
	}
}

// recentSince tallies the recent outcomes at or after t, and returns when
// the oldest of them came (zero if none).
func (a *aimd) recentSince(t time.Time) (tl tally, first time.Time) {
	for _, o := range a.recent {
		if o.at.IsZero() || o.at.Before(t) {
			continue
		}
		if first.IsZero() || o.at.Before(first) {
			first = o.at
		}
		if o.throttled {
			tl.throttled++
		} else {
			tl.ok++
		}
	}
	return tl, first
}

// throttled reacts to a SlowDown answer to a PUT sent while the breaker was
// closed.
func (a *aimd) throttled() {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.clk.Now()
	a.observeLocked(now, true)
	if now.Sub(a.lastDecrease) < a.cfg.Hold {
		return // the same congestion event as the last cut
	}
	if a.cut.ok == 0 {
		// Nothing accepted since the last cut: the store is down, not
		// rate limiting. The breaker deals with that.
		return
	}
	ep := &a.ep
	if a.noise > 0 {
		// Judge blocks of noiseBlock outcomes: a window of 16 at a 30 %
		// failure rate is throttled at 60 % now and then by chance.
		b := a.noiseTally
		if b.n() < noiseBlock {
			return
		}
		a.noiseTally = tally{}
		if b.share() < a.noise+noiseMargin {
			return // still the random failures found before: not a rate limit
		}
	} else if !ep.testStart.IsZero() {
		w, first := a.recentSince(ep.testStart)
		// Leave out the throttles that choose the instants: the one being
		// answered (it ends the window), and the first of the episode and
		// the one that cut to the test point (they bound pre).
		w.throttled--
		pre := ep.pre
		pre.throttled = max(0, pre.throttled-2)
		preSpan := ep.testStart.Sub(ep.start).Seconds()
		postSpan := now.Sub(first).Seconds()
		// What the store accepted before the test point, per second, and
		// what was sent to it since: a rate limit takes (nearly) every PUT
		// sent at no more than it accepted before.
		accepted := float64(pre.ok) / max(preSpan, slotDur.Seconds())
		sent := float64(w.n()) / max(postSpan, slotDur.Seconds())
		share := w.share()
		below := postSpan > 0 && sent <= 1.1*accepted
		if below && share >= heavyShare && pre.n() >= testOutcomes/3 && w.n() >= testOutcomes/3 {
			ep.suspect = true
		}
		if w.n() < testOutcomes-1 {
			return // the test is under way: hold the rate
		}
		if below && share >= heavyShare && share < deepShare && pre.n() >= testOutcomes/2 && a.b.currentRate() > a.cfg.MinRate/a.cfg.Decrease {
			// Sent no more than the store accepted before, and still
			// throttled: a rate limit would have taken these PUTs.
			a.noise, a.noiseTally = share, tally{}
			a.ceiling = 0
			a.log.Warn("object store fails PUTs at random, not at a rate: the PUT rate is not lowered for them",
				"throttled_share", round2(share), "before_share", round2(pre.share()),
				"sent_per_second", round2(sent), "accepted_before_per_second", round2(accepted))
			a.restoreLocked(now, fmt.Sprintf("random failures (%.0f%% of PUTs), not a rate limit", 100*share))
			a.cut = tally{}
			return
		}
	}
	cur := a.b.currentRate()
	from := cur
	// Cut an application-limited sender from what it sent. A sender whose
	// PUTs waited for tokens within the last second was sending at the
	// bucket's rate, whatever a count of a few PUTs says (4 or 5 of 5/s).
	if sent := a.sentRateLocked(now); sent > 0 && sent < from && !a.b.limitedSince(now.Add(-time.Second)) {
		from = sent
	}
	why := fmt.Sprintf("503 SlowDown at %.2f PUT/s", from)
	if w, _ := a.recentSince(ep.start); w.n() == window && w.share() >= deepShare {
		if span := now.Sub(ep.start); ep.ok >= measureOK && span >= time.Second {
			// Heavily throttled: the store's limit is what it accepted
			// since it began to throttle.
			if accepted := float64(ep.ok) / span.Seconds(); accepted < from {
				from = accepted
				why = fmt.Sprintf("%.0f%% of the last %d PUTs throttled; the store accepted %.2f PUT/s", 100*w.share(), window, accepted)
			}
		}
	}
	if ep.cuts == 0 {
		ep.ref = from
		a.before = cur
	}
	ep.cuts++
	a.ceiling = from
	r := max(a.cfg.MinRate, from*a.cfg.Decrease)
	if ep.testStart.IsZero() && r <= testCut*ep.ref {
		ep.testStart = now
	}
	a.lastDecrease, a.lastAdjust = now, now
	a.successes, a.probes = 0, 0
	a.cut = tally{}
	a.setRateLocked(now, r, why)
}

// succeeded reacts to a PUT that was not throttled.
func (a *aimd) succeeded() {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.clk.Now()
	a.successes++
	a.observeLocked(now, false)
	quiet := now.Sub(a.lastThrottle)
	if a.ep.active && quiet >= episodeEnd {
		if a.ep.suspect {
			// Throttling stopped at a rate the episode had already tested
			// and still seen throttled: the store got better, rather than
			// the rate got under a limit. Do not crawl back from there.
			a.ceiling = 0
			a.restoreLocked(now, fmt.Sprintf("throttling stopped %v ago; the rates it was seen at were no limit", quiet.Round(time.Millisecond)))
		}
		a.ep = episode{}
	}
	if a.noise > 0 && quiet >= noiseForget {
		a.log.Info("object store no longer fails PUTs at random", "quiet_for", quiet.Round(time.Millisecond))
		a.noise = 0
	}
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
	var step float64
	why := "no throttling for an interval"
	switch {
	case a.ceiling > 0 && cur < a.ceiling:
		// Below the known limit: 5 % of it each Interval near it (where
		// a cut of Decrease lands), as past it; far below it (after a cut
		// from the accepted rate, or at the floor) half the gap.
		step = min(a.cfg.Step, a.ceiling*0.05)
		if cur < 0.8*a.ceiling {
			step = max(step, (a.ceiling-cur)/2)
		}
	case a.ceiling > 0:
		// Past the known limit, an increase also needs enough successes to
		// be evidence: at a few PUTs per second one Interval holds only a
		// handful, and probing on each would make every other PUT past the
		// limit a SlowDown. Probe in small steps (5 % of the limit, however
		// small), so the rate saws between Decrease and 1 times the limit
		// instead of overshooting it by a step sized for the maximum. Once
		// a probe passed, the next come each Interval, each twice the last
		// (5, 10, 20 %: past forgetAbove in three), so a stale estimate is
		// soon left behind.
		if a.successes < probeSuccesses && a.probes == 0 {
			return // the first probe past the limit; later ones follow each Interval
		}
		step = min(a.cfg.Step, a.ceiling*0.05) * float64(int(1)<<min(a.probes, 10))
		a.probes++
	default:
		// No known limit (never throttled, or the estimate was dropped):
		// double, as TCP's slow start does, or quadruple once nothing was
		// throttled for episodeEnd, so a low rate left by a storm is gone
		// in a few Intervals (3.5 to 3000 PUT/s in five).
		step = max(cur, a.cfg.MinRate)
		why = "no throttling for an interval (no known limit: doubling)"
		if quiet >= episodeEnd {
			// Nothing throttled for a while either: quadruple.
			step *= 3
			why = fmt.Sprintf("no throttling for %v (no known limit: quadrupling)", quiet.Round(time.Second))
		}
	}
	a.lastAdjust = now
	a.successes = 0
	a.setRateLocked(now, min(a.b.maxRate, cur+step), why)
}

// limited reports whether the rate is held below the configured rate, and
// whether throttles are being read as random failures.
func (a *aimd) state() (limited, noise bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return !a.limitedAt.IsZero(), a.noise > 0
}
