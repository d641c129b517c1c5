package gateway

import "go.opentelemetry.io/otel"

// tracer makes the gateway's spans (through spans.Start: only inside a
// sampled request). It follows the global provider, which pkg/telemetry
// installs only when tracing is on.
var tracer = otel.Tracer("github.com/streamhouse/streamhouse/gateway")
