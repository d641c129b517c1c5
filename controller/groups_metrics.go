package controller

import (
	"fmt"
	"io"
	"sync"

	"github.com/VictoriaMetrics/metrics"

	"github.com/streamhouse/streamhouse/controller/fsm"
)

// Consumer group metrics. The per-group series are computed at scrape time
// from the replicated state, by the leader only (followers export none), so
// a deleted group's series vanish with it:
//
//	streamhouse_controller_group_lag_records{group}          sum of end offset - committed offset over the group's committed partitions
//	streamhouse_controller_group_partition_lag_records{group,topic,partition}  per partition, only with Config.MetricsPartitionLag
//	streamhouse_controller_group_members{group}
//	streamhouse_controller_group_rebalances_total{group}     group epoch bumps (replicated: survives a leader change)
var groupFencedCommits = metrics.NewCounter("streamhouse_controller_group_commits_rejected_total")

var (
	groupMetricsOnce  sync.Once
	groupMetricsMu    sync.Mutex
	groupMetricsCoord = map[*groupCoord]struct{}{}
)

// registerGroupMetrics adds a coordinator to the scrape-time writer.
func registerGroupMetrics(g *groupCoord) {
	groupMetricsOnce.Do(func() { metrics.RegisterMetricsWriter(writeGroupMetrics) })
	groupMetricsMu.Lock()
	groupMetricsCoord[g] = struct{}{}
	groupMetricsMu.Unlock()
}

// unregisterGroupMetrics removes a stopped coordinator.
func unregisterGroupMetrics(g *groupCoord) {
	groupMetricsMu.Lock()
	delete(groupMetricsCoord, g)
	groupMetricsMu.Unlock()
}

func writeGroupMetrics(w io.Writer) {
	groupMetricsMu.Lock()
	defer groupMetricsMu.Unlock()
	for g := range groupMetricsCoord {
		if g.ready.Load() && g.n.IsLeader() {
			g.writeMetrics(w)
		}
	}
}

// writeMetrics writes the leader's group series. Group ids and topic names
// are limited to [a-zA-Z0-9._-], so labels need no escaping.
func (g *groupCoord) writeMetrics(w io.Writer) {
	n := g.n
	n.fsm.Read(func(s *fsm.State) {
		for _, id := range s.GroupIDs() {
			gr := s.Groups[id]
			var lag int64
			parts := n.groupLag(s, gr)
			for _, gp := range parts {
				lag += gp.Lag
			}
			fmt.Fprintf(w, "streamhouse_controller_group_lag_records{group=%q} %d\n", id, lag)
			fmt.Fprintf(w, "streamhouse_controller_group_members{group=%q} %d\n", id, len(gr.Meta.Members))
			fmt.Fprintf(w, "streamhouse_controller_group_rebalances_total{group=%q} %d\n", id, gr.Rebalances)
			if n.cfg.MetricsPartitionLag {
				for _, gp := range parts {
					if gp.CommittedOffset >= 0 {
						fmt.Fprintf(w, "streamhouse_controller_group_partition_lag_records{group=%q,topic=%q,partition=\"%d\"} %d\n", id, gp.Topic, gp.Partition, gp.Lag)
					}
				}
			}
		}
	})
}
