package agent

import (
	"fmt"
	"strconv"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/VictoriaMetrics/metrics"

	"github.com/streamhouse/streamhouse/pkg/rpcerr"
)

// Admission metrics (the rest are in metrics.go):
//
//	streamhouse_agent_inflight_bytes                      bytes of Append requests held now
//	streamhouse_agent_inflight_refused_total              requests refused past --max-inflight-bytes
//	streamhouse_agent_durable_ack_timeouts_total          durable entries answered at --durable-ack-timeout, uncommitted
var (
	inflightBytes      = metrics.NewGauge("streamhouse_agent_inflight_bytes", nil)
	inflightRefused    = metrics.NewCounter("streamhouse_agent_inflight_refused_total")
	durableAckTimeouts = metrics.NewCounter("streamhouse_agent_durable_ack_timeouts_total")
)

// inflight bounds the bytes of Append requests the agent holds at once, from
// admission until their answer (for durable acks that includes the wait for
// the next flush). Memory is then bounded by MaxInFlightBytes, not by the
// offered load: past it, requests are refused with ResourceExhausted and a
// Retry-After computed from how fast in-flight bytes have been draining.
type inflight struct {
	limit int64

	mu       sync.Mutex
	held     int64
	released int64     // bytes released since start
	rateAt   time.Time // when rate was last measured
	relAt    int64     // released at rateAt
	rate     float64   // bytes/s released, last measured
}

// admit takes n bytes of the budget and returns the function that gives
// them back, or a not-applied ResourceExhausted error when the budget is
// spent. One request larger than the whole budget is admitted alone (when
// nothing else is held), so a maximal batch is never refused forever.
func (a *Agent) admit(n int) (release func(), err error) {
	f := &a.inflight
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.held > 0 && f.held+int64(n) > f.limit {
		wait := f.retryAfterLocked(time.Now())
		inflightRefused.Inc()
		ce := rpcerr.NotApplied(connect.CodeResourceExhausted, fmt.Errorf(
			"agent %s is overloaded: %d bytes of requests in flight, its limit is %d (--max-inflight-bytes); retry after %v",
			a.cfg.ID, f.held, f.limit, wait))
		ce.Meta().Set(rpcerr.RetryAfterKey, strconv.FormatInt(int64((wait+time.Second-1)/time.Second), 10))
		return nil, ce
	}
	f.held += int64(n)
	inflightBytes.Set(float64(f.held))
	return func() {
		f.mu.Lock()
		f.held -= int64(n)
		f.released += int64(n)
		inflightBytes.Set(float64(f.held))
		f.mu.Unlock()
	}, nil
}

// retryAfterLocked estimates how long until the bytes now held have
// drained, from the release rate over the last second or so; between 1 s
// (Retry-After's resolution) and 5 s.
func (f *inflight) retryAfterLocked(now time.Time) time.Duration {
	if el := now.Sub(f.rateAt); el >= time.Second || f.rateAt.IsZero() {
		if !f.rateAt.IsZero() {
			f.rate = float64(f.released-f.relAt) / el.Seconds()
		}
		f.rateAt, f.relAt = now, f.released
	}
	// Releases come in bursts (durable acks at each flush): a window
	// without one gives the minimum, not the maximum, or clients would sit
	// idle long after the load has gone.
	wait := time.Second
	if f.rate > 0 {
		wait = time.Duration(float64(f.held) / f.rate * float64(time.Second))
	}
	return min(max(wait, time.Second), 5*time.Second)
}
