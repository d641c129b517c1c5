package controller

import (
	"fmt"
	"io"

	"github.com/VictoriaMetrics/metrics"
	"github.com/hashicorp/raft"

	"github.com/streamhouse/streamhouse/controller/fsm"
)

// Controller metrics, in the process-wide registry served at /metrics.
// Process totals:
//
//	streamhouse_controller_unclean_handoffs_total, streamhouse_controller_unclean_lost_records_total
//	streamhouse_controller_fenced_commits_total     commit sections rejected for a stale lease epoch (fencing)
//	streamhouse_controller_lease_grants_total       partition leases given to an agent that did not hold them
//	streamhouse_controller_lease_expiries_total     leases found lapsed (not renewed in time) when re-granted
//	streamhouse_controller_raft_apply_duration_seconds   histogram (le buckets) of Raft applies
//	streamhouse_controller_raft_leader_changes_total     new leaders this node learned of
//
// Per node (registerNodeMetrics), computed at scrape time:
//
//	streamhouse_controller_raft_term, streamhouse_controller_raft_is_leader (0/1),
//	streamhouse_controller_raft_has_leader (0/1: this node knows a leader),
//	streamhouse_controller_raft_commit_index, streamhouse_controller_raft_applied_index,
//	streamhouse_controller_raft_last_log_index,
//	streamhouse_controller_raft_commit_lag_entries  stored but not yet committed (last log - commit index)
//	streamhouse_controller_raft_apply_lag_entries   committed but not yet applied (commit - applied index)
//	streamhouse_controller_requests_awaiting_leader requests held until a leader is known (Config.LeaderWait)
//	streamhouse_controller_agent_heartbeat_age_seconds{agent}  leader only: time since the agent's last heartbeat
var (
	uncleanHandoffs    = metrics.NewCounter("streamhouse_controller_unclean_handoffs_total")
	uncleanLostRecords = metrics.NewCounter("streamhouse_controller_unclean_lost_records_total")
	fencedSections     = metrics.NewCounter("streamhouse_controller_fenced_commits_total")
	leaseGrants        = metrics.NewCounter("streamhouse_controller_lease_grants_total")
	leaseExpiries      = metrics.NewCounter("streamhouse_controller_lease_expiries_total")
	applyDuration      = metrics.NewPrometheusHistogramExt("streamhouse_controller_raft_apply_duration_seconds",
		[]float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10})
	leaderChanges = metrics.NewCounter("streamhouse_controller_raft_leader_changes_total")
)

// registerNodeMetrics registers n's per-node gauges in a set of their own,
// unregistered by Close, so a process that runs several nodes (tests) or
// reopens one exports only live nodes. It also starts counting the leader
// changes the node observes.
func (n *Node) registerNodeMetrics() {
	set := metrics.NewSet()
	b2f := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}
	set.NewGauge("streamhouse_controller_raft_term", func() float64 { return float64(n.raft.CurrentTerm()) })
	set.NewGauge("streamhouse_controller_raft_is_leader", func() float64 { return b2f(n.raft.State() == raft.Leader) })
	set.NewGauge("streamhouse_controller_raft_has_leader", func() float64 {
		_, id := n.raft.LeaderWithID()
		return b2f(id != "")
	})
	set.NewGauge("streamhouse_controller_raft_commit_index", func() float64 { return float64(n.raft.CommitIndex()) })
	set.NewGauge("streamhouse_controller_raft_applied_index", func() float64 { return float64(n.raft.AppliedIndex()) })
	set.NewGauge("streamhouse_controller_raft_last_log_index", func() float64 { return float64(n.raft.LastIndex()) })
	set.NewGauge("streamhouse_controller_raft_commit_lag_entries", func() float64 {
		return float64(lag(n.raft.LastIndex(), n.raft.CommitIndex()))
	})
	set.NewGauge("streamhouse_controller_raft_apply_lag_entries", func() float64 {
		return float64(lag(n.raft.CommitIndex(), n.raft.AppliedIndex()))
	})
	set.NewGauge("streamhouse_controller_requests_awaiting_leader", func() float64 { return float64(n.awaitingLeader.Load()) })
	set.RegisterMetricsWriter(n.writeHeartbeatAges)
	metrics.RegisterSet(set)
	n.metrics = set

	ch := make(chan raft.Observation, 16)
	n.observer = raft.NewObserver(ch, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.LeaderObservation)
		return ok
	})
	n.raft.RegisterObserver(n.observer)
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		for {
			select {
			case <-n.stop:
				return
			case o := <-ch:
				if lo, ok := o.Data.(raft.LeaderObservation); ok && lo.LeaderID != "" {
					leaderChanges.Inc()
				}
			}
		}
	}()
}

// unregisterNodeMetrics undoes registerNodeMetrics.
func (n *Node) unregisterNodeMetrics() {
	if n.observer != nil {
		n.raft.DeregisterObserver(n.observer)
	}
	if n.metrics != nil {
		metrics.UnregisterSet(n.metrics, true)
	}
}

func lag(a, b uint64) uint64 {
	if a > b {
		return a - b
	}
	return 0
}

// writeHeartbeatAges writes, on the leader only (followers do not receive
// heartbeats), the time since each known agent's last heartbeat. An agent
// stays listed until it releases its leases on a clean shutdown, so one that
// vanished shows a growing age (the agent-heartbeat alert); the set of
// agents is small and bounded by the cluster's size.
func (n *Node) writeHeartbeatAges(w io.Writer) {
	if n.raft.State() != raft.Leader {
		return
	}
	now := n.cfg.Now()
	n.mu.Lock()
	ids, ages := n.beats.ages(now)
	n.mu.Unlock()
	for i, id := range ids {
		metrics.WriteGaugeFloat64(w, fmt.Sprintf(`streamhouse_controller_agent_heartbeat_age_seconds{agent=%q}`, id), ages[i].Seconds())
	}
}

// resetHeartbeats restarts the heartbeat-age metric's clock of every agent
// this node knows or that holds a partition, when it becomes leader: it has
// heard from none of them yet in this term, and stale times from an earlier
// term would read as missed heartbeats. Lease planning still uses the real
// times of the heartbeats (heartbeats.live).
func (n *Node) resetHeartbeats() {
	now := n.cfg.Now()
	holders := map[string]bool{}
	n.fsm.Read(func(s *fsm.State) {
		for _, t := range s.Topics {
			for _, p := range t.Partitions {
				if p.Holder != "" {
					holders[p.Holder] = true
				}
			}
		}
	})
	n.mu.Lock()
	defer n.mu.Unlock()
	n.beats.takeover(now, holders)
}

// countLeaseChanges counts, before g is applied to s, the leases g gives to
// an agent (process incarnation) that did not hold them and the lapsed
// leases it renews or moves.
func countLeaseChanges(s *fsm.State, g *fsm.GrantLeases) (grants, expiries int) {
	for _, ref := range g.Partitions {
		t := s.Topics[ref.Topic]
		if t == nil || int(ref.Partition) >= len(t.Partitions) {
			continue
		}
		p := t.Partitions[ref.Partition]
		if p.Holder != g.AgentID || p.Incarnation != g.Incarnation {
			grants++
		}
		if p.Holder != "" && !p.LeaseValid(g.NowMs) {
			expiries++
		}
	}
	return grants, expiries
}
