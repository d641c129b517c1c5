package agent

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"connectrpc.com/connect"
	"github.com/VictoriaMetrics/metrics"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/pkg/objstore/guard"
	"github.com/streamhouse/streamhouse/pkg/rpcerr"
)

// maxRetryAfter caps the Retry-After hint of a refusal: a client told to
// wait longer would rather be told to go elsewhere.
const maxRetryAfter = 30 * time.Second

// backpressureLoop watches the WAL's uncommitted bytes and turns write
// refusal on past the high watermark and off below the low one, with
// hysteresis and a minimum dwell (BackpressureMinDwell) in each state, so
// the agent does not flap when a crowd of retries arrives the moment it
// accepts writes again. The dwell never lets the WAL outgrow its budget:
// past halfway between the high watermark and the budget refusal turns on
// at once. The data already acknowledged stays in the WAL until uploaded:
// backpressure refuses new writes, it drops nothing.
//
// It also logs, once per change rather than per request, when the agent
// starts and stops refusing acks=durable writes because the object store is
// failing (see shed).
func (a *Agent) backpressureLoop() {
	defer a.wg.Done()
	high := int64(float64(a.cfg.WALBudget) * a.cfg.HighWatermark)
	low := int64(float64(a.cfg.WALBudget) * a.cfg.LowWatermark)
	hard := int64(float64(a.cfg.WALBudget) * (a.cfg.HighWatermark + 1) / 2)
	dwell := a.cfg.BackpressureMinDwell
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	changed := time.Now().Add(-dwell) // when backpressure last turned on or off
	var durable durableRefusals
	for {
		select {
		case <-a.ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		st := a.wal.Stats()
		un := st.UncommittedBytes
		walUncommitted.Set(float64(un))
		walDisk.Set(float64(st.RetainedBytes))
		walBudget.Set(float64(a.cfg.WALBudget))
		on := a.backpressure.Load()
		held := now.Sub(changed)
		switch {
		case !on && (un > hard || (un > high && held >= dwell)):
			a.backpressure.Store(true)
			changed = now
			a.log.Warn("backpressure on: the WAL holds too much not yet uploaded; refusing writes with 429",
				"uncommitted_bytes", un, "high_watermark", high, "off_for", held.Round(time.Millisecond), "min_dwell", dwell)
		case on && un < low && held >= dwell:
			a.backpressure.Store(false)
			changed = now
			a.log.Info("backpressure off: accepting writes again",
				"uncommitted_bytes", un, "low_watermark", low, "on_for", held.Round(time.Millisecond))
		}
		backpressureGauge.Set(boolGauge(a.backpressure.Load()))
		if !a.cfg.NoGuard {
			durable.observe(a, now, a.guard.Health())
		}
	}
}

// durableRefusals logs the agent's refusing acks=durable writes for a
// failing store, debounced: on once the store has failed for
// durableLogAfter, off once it has been well for durableLogAfter. (Health
// can flip per request while a store fails a share of PUTs at random.)
type durableRefusals struct {
	logged        bool      // "refusing" was logged, "accepting" not yet
	since         time.Time // when Failing last changed
	failing       bool
	refusedAtLog  int64
	reasonAtStart string
}

const durableLogAfter = time.Second

func (d *durableRefusals) observe(a *Agent, now time.Time, h guard.Health) {
	storeFailing.Set(boolGauge(h.Failing))
	if h.Failing != d.failing {
		d.failing, d.since = h.Failing, now
		if h.Failing {
			d.reasonAtStart = h.Reason
		}
	}
	if now.Sub(d.since) < durableLogAfter {
		return
	}
	switch {
	case d.failing && !d.logged:
		d.logged = true
		d.refusedAtLog = int64(durableRefused.Get())
		a.log.Warn("refusing acks=durable writes with 429: the object store is failing, so they could not be committed within --durable-ack-timeout",
			"state", h.State.String(), "reason", d.reasonAtStart, "retry_after", retryAfter(h.RetryAfter), "durable_ack_timeout", a.cfg.DurableAckTimeout)
	case !d.failing && d.logged:
		d.logged = false
		a.log.Info("accepting acks=durable writes again: the object store takes uploads",
			"refused", int64(durableRefused.Get())-d.refusedAtLog)
	}
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// retryAfter rounds a wait up to the whole seconds of a Retry-After
// header, between 1 s and maxRetryAfter.
func retryAfter(d time.Duration) time.Duration {
	d = min(max(d, time.Second), maxRetryAfter)
	return (d + time.Second - 1).Truncate(time.Second)
}

// shed refuses a write before it is appended when the agent cannot take
// it now. It returns nil or a ResourceExhausted error (HTTP 429) marked
// not applied (rpcerr.NotApplied: nothing was written, a retry cannot
// duplicate it) whose Retry-After metadata (whole seconds, 1 to 30) says
// when to try again. It refuses:
//
//   - every write while WAL backpressure is on (the WAL holds more than the
//     high watermark not yet uploaded); Retry-After is the backpressure's
//     minimum dwell, or the object store's expected recovery if that is
//     later, since the WAL drains only through uploads;
//   - acks=durable writes while the object store is failing, as soon as
//     the guard sees it (the last PUT attempt failed, or the breaker is
//     open), not only once the breaker opens: such a write could not be
//     committed within DurableAckTimeout. Retry-After is the guard's
//     expected recovery (the breaker's remaining cool-down, the backoff of
//     the upload retry under way, the wait for a PUT token). While the
//     breaker is half-open durable writes are taken: their uploads are
//     the probes that close it (an admitted one is answered by
//     DurableAckTimeout at the latest);
//   - acks=durable writes while the guard holds the PUT rate so low that
//     the uploads the WAL already waits for would take longer than
//     DurableAckTimeout.
//
// acks=wal writes are taken while the store fails, up to the WAL's budget.
// shed takes no locks of the agent and a few of the guard's; the Append
// handler calls it per entry.
func (a *Agent) shed(acks v1.Acks) error {
	if a.backpressure.Load() {
		wait := a.cfg.BackpressureMinDwell
		if h := a.guard.Health(); h.Failing {
			wait = max(wait, h.RetryAfter)
		}
		return a.refuse(wait, fmt.Sprintf("agent %s is shedding load: its WAL holds more than %.0f%% of its %d-byte budget not yet uploaded to the object store",
			a.cfg.ID, a.cfg.HighWatermark*100, a.cfg.WALBudget), false)
	}
	if acks != v1.Acks_ACKS_DURABLE || a.cfg.NoGuard {
		return nil
	}
	h := a.guard.Health()
	if h.Failing {
		return a.refuse(h.RetryAfter, fmt.Sprintf("agent %s refuses acks=durable writes while the object store is failing (%s): they could not be committed within %v; nothing was written, retry later or write with acks=wal",
			a.cfg.ID, h.Reason, a.cfg.DurableAckTimeout), true)
	}
	if h.Throttled && h.PutRate > 0 {
		// The uploads the WAL already waits for, one object each (at most
		// FlushBytes), at the PUT rate AIMD allows.
		puts := float64(a.unuploaded.Load())/float64(a.cfg.FlushBytes) + 1
		if wait := time.Duration(puts / h.PutRate * float64(time.Second)); wait > a.cfg.DurableAckTimeout {
			return a.refuse(wait-a.cfg.DurableAckTimeout, fmt.Sprintf("agent %s refuses acks=durable writes: the object store is throttling uploads to %.2f PUT/s, and what the WAL holds would take %v to upload, past the %v durable-ack timeout; nothing was written, retry later or write with acks=wal",
				a.cfg.ID, h.PutRate, wait.Round(time.Millisecond), a.cfg.DurableAckTimeout), true)
		}
	}
	return nil
}

// refuse builds shed's refusal with a Retry-After of wait (see retryAfter).
func (a *Agent) refuse(wait time.Duration, why string, durable bool) error {
	shedTotal.Inc()
	if durable {
		durableRefused.Inc()
	}
	ra := retryAfter(wait)
	secs := int64(ra / time.Second)
	ce := rpcerr.NotApplied(connect.CodeResourceExhausted, errors.New(why+"; retry after "+strconv.FormatInt(secs, 10)+"s"))
	ce.Meta().Set(rpcerr.RetryAfterKey, strconv.FormatInt(secs, 10))
	return ce
}

// Gauges set by backpressureLoop and the refusals counted by shed (see
// metrics.go for the list).
var (
	walUncommitted    = metrics.NewGauge("streamhouse_agent_wal_uncommitted_bytes", nil)
	walDisk           = metrics.NewGauge("streamhouse_agent_wal_disk_bytes", nil)
	walBudget         = metrics.NewGauge("streamhouse_agent_wal_budget_bytes", nil)
	backpressureGauge = metrics.NewGauge("streamhouse_agent_backpressure", nil)
	storeFailing      = metrics.NewGauge("streamhouse_agent_store_failing", nil)
	durableRefused    = metrics.NewCounter("streamhouse_agent_durable_writes_refused_total")
)
