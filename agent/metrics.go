package agent

import "github.com/VictoriaMetrics/metrics"

// Agent metrics, in the process-wide registry served at /metrics. Object
// store requests are counted by objstore.Metered as streamhouse_agent_s3_*.
var (
	appendRecords   = metrics.NewCounter("streamhouse_agent_append_records_total")
	appendBytes     = metrics.NewCounter("streamhouse_agent_append_bytes_total")
	flushesTotal    = metrics.NewCounter("streamhouse_agent_flushes_total")
	flushBytes      = metrics.NewHistogram("streamhouse_agent_flush_size_bytes")
	flushDuration   = metrics.NewHistogram("streamhouse_agent_flush_duration_seconds")
	flushPartitions = metrics.NewHistogram("streamhouse_agent_flush_partitions")
	shedTotal       = metrics.NewCounter("streamhouse_agent_writes_refused_total")

	truncationsDetected = metrics.NewCounter("streamhouse_agent_truncations_detected_total")
)
