package agent

import (
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect"
	"github.com/VictoriaMetrics/metrics"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/pkg/objstore/guard"
	"github.com/streamhouse/streamhouse/pkg/rpcerr"
)

// retryAfterSeconds is the hint writers get with a 429.
const retryAfterSeconds = "1"

// backpressureLoop watches the WAL's uncommitted bytes and turns write
// refusal on past the high watermark and off below the low one (hysteresis,
// so the agent does not flap). The data already acknowledged stays in the
// WAL until uploaded: backpressure refuses new writes, it drops nothing.
func (a *Agent) backpressureLoop() {
	defer a.wg.Done()
	high := int64(float64(a.cfg.WALBudget) * a.cfg.HighWatermark)
	low := int64(float64(a.cfg.WALBudget) * a.cfg.LowWatermark)
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-a.ctx.Done():
			return
		case <-t.C:
		}
		st := a.wal.Stats()
		un := st.UncommittedBytes
		metrics.GetOrCreateGauge("streamhouse_agent_wal_uncommitted_bytes", nil).Set(float64(un))
		metrics.GetOrCreateGauge("streamhouse_agent_wal_disk_bytes", nil).Set(float64(st.RetainedBytes))
		metrics.GetOrCreateGauge("streamhouse_agent_wal_budget_bytes", nil).Set(float64(a.cfg.WALBudget))
		on := a.backpressure.Load()
		switch {
		case !on && un > high:
			a.backpressure.Store(true)
			a.log.Warn("backpressure on: the WAL holds too much not yet uploaded; refusing writes with 429", "uncommitted_bytes", un, "high_watermark", high)
		case on && un < low:
			a.backpressure.Store(false)
			a.log.Info("backpressure off: accepting writes again", "uncommitted_bytes", un, "low_watermark", low)
		}
		v := 0.0
		if a.backpressure.Load() {
			v = 1
		}
		metrics.GetOrCreateGauge("streamhouse_agent_backpressure", nil).Set(v)
	}
}

// shed refuses a write before it is appended when the agent cannot take
// it: the WAL is past its high watermark, or the write wants acks=durable
// while the object store is failing (it could not be made durable soon).
// The refusal is ResourceExhausted (HTTP 429) with a Retry-After hint and
// marked not applied, so clients retry it safely.
func (a *Agent) shed(acks v1.Acks) error {
	var why string
	switch {
	case a.backpressure.Load():
		why = fmt.Sprintf("agent %s is shedding load: its WAL holds more than %.0f%% of its %d-byte budget not yet uploaded to the object store", a.cfg.ID, a.cfg.HighWatermark*100, a.cfg.WALBudget)
	case acks == v1.Acks_ACKS_DURABLE && a.guard.State() == guard.Open:
		why = fmt.Sprintf("agent %s cannot reach the object store (circuit breaker open): durable writes are refused until it recovers", a.cfg.ID)
	default:
		return nil
	}
	shedTotal.Inc()
	ce := rpcerr.NotApplied(connect.CodeResourceExhausted, errors.New(why+"; retry after "+retryAfterSeconds+"s"))
	ce.Meta().Set("Retry-After", retryAfterSeconds)
	return ce
}
