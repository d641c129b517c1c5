package agent

import (
	"fmt"
	"strconv"
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

// admit takes n bytes of the in-flight budget (MaxInFlightBytes: the bytes
// of Append requests held from admission to answer; for durable acks that
// includes the wait for the next flush) and returns the function that gives
// them back, or a not-applied ResourceExhausted error with a Retry-After
// when the budget is spent. Memory then follows the limit, not the offered
// load.
func (a *Agent) admit(n int) (release func(), err error) {
	release, held, wait := a.inflight.Admit(int64(n))
	if release != nil {
		return release, nil
	}
	inflightRefused.Inc()
	ce := rpcerr.NotApplied(connect.CodeResourceExhausted, fmt.Errorf(
		"agent %s is overloaded: %d bytes of requests in flight, its limit is %d (--max-inflight-bytes); retry after %v",
		a.cfg.ID, held, a.inflight.Limit(), wait))
	ce.Meta().Set(rpcerr.RetryAfterKey, strconv.FormatInt(int64((wait+time.Second-1)/time.Second), 10))
	return nil, ce
}
