package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/spf13/pflag"

	"github.com/streamhouse/streamhouse/pkg/telemetry"
)

// Default --trace-sample-ratio: every trace in dev (it is for looking at
// things), 1 % in a cluster (the parent-based sampler makes the gateway's
// decision the one that counts for a whole request).
const (
	devTraceSampleRatio     = 1.0
	clusterTraceSampleRatio = 0.01
)

// traceFlushTimeout bounds exporting the last spans on the way out.
const traceFlushTimeout = 5 * time.Second

// addTraceFlags adds --trace-sample-ratio.
func addTraceFlags(f *pflag.FlagSet, ratio *float64, def float64) {
	f.Float64Var(ratio, "trace-sample-ratio", def,
		"fraction of new traces recorded, 0 to 1 (0: off); tracing is on only when OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set and OTEL_SDK_DISABLED is not true")
}

// startTracing sets up tracing for one component (see pkg/telemetry for
// when it is on). The caller defers ShutdownWithin on the result, so spans
// still buffered are exported on SIGTERM; the result is nil when off.
func startTracing(ctx context.Context, service string, ratio float64, log *slog.Logger) (*telemetry.Tracing, error) {
	tel, err := telemetry.Setup(ctx, telemetry.Config{ServiceName: service, Version: version, SampleRatio: ratio, Logger: log})
	if err != nil {
		return nil, usageError{err}
	}
	return tel, nil
}
