package controller

import "github.com/VictoriaMetrics/metrics"

// Controller metrics, in the process-wide registry served at /metrics.
var (
	uncleanHandoffs    = metrics.NewCounter("streamhouse_controller_unclean_handoffs_total")
	uncleanLostRecords = metrics.NewCounter("streamhouse_controller_unclean_lost_records_total")
	fencedSections     = metrics.NewCounter("streamhouse_controller_fenced_commits_total")
)
