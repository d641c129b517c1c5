package agent

import (
	"time"

	"github.com/VictoriaMetrics/metrics"
)

// Agent metrics, in the process-wide registry served at /metrics. Object
// store requests are counted by objstore.Metered and the S3 guard as
// streamhouse_agent_s3_*, the WAL's own by package wal as
// streamhouse_agent_wal_*. Histograms have Prometheus le buckets, so
// histogram_quantile works on them. Gauges set by backpressureLoop, and
// refusals counted by shed (backpressure.go):
//
//	streamhouse_agent_wal_uncommitted_bytes          WAL bytes not yet uploaded and committed
//	streamhouse_agent_wal_disk_bytes                 bytes of WAL segment files on disk
//	streamhouse_agent_wal_budget_bytes               the WAL's disk budget (--wal-budget)
//	streamhouse_agent_backpressure                   1 while writes are refused past the high watermark
//	streamhouse_agent_store_failing                  1 while the S3 guard reports the store failing (durable writes refused)
//	streamhouse_agent_writes_refused_total           writes refused by shed, for any reason
//	streamhouse_agent_durable_writes_refused_total   acks=durable writes refused because the store fails or is throttled
var (
	appendRecords   = metrics.NewCounter("streamhouse_agent_append_records_total")
	appendBytes     = metrics.NewCounter("streamhouse_agent_append_bytes_total")
	flushesTotal    = metrics.NewCounter("streamhouse_agent_flushes_total")
	flushBytes      = metrics.NewPrometheusHistogramExt("streamhouse_agent_flush_size_bytes", metrics.ExponentialBuckets(1024, 4, 9))
	flushDuration   = metrics.NewPrometheusHistogramExt("streamhouse_agent_flush_duration_seconds", latencyBuckets)
	flushPartitions = metrics.NewPrometheusHistogramExt("streamhouse_agent_flush_partitions", []float64{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024})
	shedTotal       = metrics.NewCounter("streamhouse_agent_writes_refused_total")

	truncationsDetected = metrics.NewCounter("streamhouse_agent_truncations_detected_total")

	// Corrupt batches read back from objects; package wal counts source="wal".
	objectCorruptTotal = metrics.NewCounter(`streamhouse_agent_corruption_detected_total{source="object"}`)
	objectCorruptLast  = metrics.NewGauge(`streamhouse_agent_corruption_last_detected_timestamp_seconds{source="object"}`, nil)
)

// latencyBuckets are the upper bounds in seconds of latency histograms, from
// half a millisecond to a stalled S3 call.
var latencyBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}

// noteObjectCorruption counts a corrupt batch found in an object.
func noteObjectCorruption() {
	objectCorruptTotal.Inc()
	objectCorruptLast.Set(float64(time.Now().UnixNano()) / 1e9)
}
