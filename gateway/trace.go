package gateway

import "go.opentelemetry.io/otel"

// tracer makes the gateway's spans. It follows the global provider, which
// pkg/telemetry installs only when tracing is on; otherwise its spans are
// no-ops.
var tracer = otel.Tracer("github.com/streamhouse/streamhouse/gateway")
