package wal

import (
	"time"

	"github.com/VictoriaMetrics/metrics"
)

// WAL metrics, in the process-wide registry the agent serves at /metrics.
// They are process totals over every WAL the process opens (one per agent):
//
//	streamhouse_agent_wal_appends_total                     frames accepted by Append
//	streamhouse_agent_wal_fsyncs_total                      fdatasync calls on segment files
//	streamhouse_agent_wal_fsync_duration_seconds            histogram: fdatasync time per commit group
//	streamhouse_agent_wal_recoveries_total                  Opens that found an unclean WAL
//	streamhouse_agent_wal_last_recovery_timestamp_seconds   Unix time of the last such Open, 0 if none
//	streamhouse_agent_corruption_detected_total{source="wal"}
//	streamhouse_agent_corruption_last_detected_timestamp_seconds{source="wal"}
//
// The agent package counts source="object" (corrupt batches read back from
// the object store) under the same two names.
var (
	appendsTotal  = metrics.NewCounter("streamhouse_agent_wal_appends_total")
	fsyncsTotal   = metrics.NewCounter("streamhouse_agent_wal_fsyncs_total")
	fsyncDuration = metrics.NewPrometheusHistogramExt("streamhouse_agent_wal_fsync_duration_seconds",
		[]float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1})
	recoveriesTotal = metrics.NewCounter("streamhouse_agent_wal_recoveries_total")
	lastRecovery    = metrics.NewGauge("streamhouse_agent_wal_last_recovery_timestamp_seconds", nil)
	corruptTotal    = metrics.NewCounter(`streamhouse_agent_corruption_detected_total{source="wal"}`)
	lastCorrupt     = metrics.NewGauge(`streamhouse_agent_corruption_last_detected_timestamp_seconds{source="wal"}`, nil)
)

// noteCorruption counts a corrupt frame or segment found in the WAL.
func noteCorruption() {
	corruptTotal.Inc()
	lastCorrupt.Set(float64(time.Now().UnixNano()) / 1e9)
}

// noteRecovery counts an Open that had to replay frames the index did not
// hold, or repair segments: the WAL was not closed cleanly.
func noteRecovery() {
	recoveriesTotal.Inc()
	lastRecovery.Set(float64(time.Now().UnixNano()) / 1e9)
}
