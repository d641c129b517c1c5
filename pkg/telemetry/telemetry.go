// Package telemetry sets up OpenTelemetry tracing for StreamHouse's
// components and puts trace ids on their log records.
//
// # When tracing is on
//
// Tracing is on only when all of these hold, and off otherwise:
//
//   - an OTLP endpoint is configured: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or
//     OTEL_EXPORTER_OTLP_ENDPOINT is set and not empty;
//   - OTEL_SDK_DISABLED is not "true" and OTEL_TRACES_EXPORTER is not "none";
//   - the sample ratio (Config.SampleRatio, the --trace-sample-ratio flag)
//     is above 0.
//
// Off means off: Setup installs nothing, the global tracer provider stays
// OpenTelemetry's no-op one, and the Connect options helpers return their
// arguments unchanged, so no interceptor runs on any RPC.
//
// # What Setup installs when on
//
//   - an OTLP exporter, gRPC when OTEL_EXPORTER_OTLP_TRACES_PROTOCOL (or
//     OTEL_EXPORTER_OTLP_PROTOCOL) is "grpc", HTTP/protobuf otherwise (the
//     OpenTelemetry default). The exporters read the endpoint, headers,
//     timeout, TLS and compression from the standard OTEL_EXPORTER_OTLP_*
//     variables themselves; an http:// endpoint means no TLS.
//   - a batch span processor (tuned by the standard OTEL_BSP_* variables);
//   - a parent-based sampler with a trace-id ratio for root spans: a
//     request that arrives with a sampled parent is traced, one with an
//     unsampled parent is not, and a new trace is sampled with probability
//     SampleRatio (the flag wins over OTEL_TRACES_SAMPLER);
//   - the W3C trace context and baggage propagators;
//   - a resource with service.name (Config.ServiceName unless
//     OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES says otherwise) and
//     service.version.
//
// Both the provider and the propagator are installed globally (otel.Set*),
// so code anywhere creates spans with otel.Tracer(name) and they join the
// request's trace.
package telemetry

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/otelconnect"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// Config configures Setup.
type Config struct {
	// ServiceName is the resource's service.name, e.g.
	// "streamhouse-agent"; "streamhouse" when empty. OTEL_SERVICE_NAME
	// overrides it.
	ServiceName string
	// Version is the resource's service.version, optional.
	Version string
	// SampleRatio is the fraction of new traces (requests without a
	// sampled or unsampled parent) that are recorded, between 0 and 1. 0
	// turns tracing off.
	SampleRatio float64
	// Logger receives the decision (on or off, and why) and export errors;
	// slog.Default() when nil.
	Logger *slog.Logger
}

// Validate reports a SampleRatio outside [0, 1].
func (c Config) Validate() error {
	if c.SampleRatio < 0 || c.SampleRatio > 1 || c.SampleRatio != c.SampleRatio {
		return fmt.Errorf("trace sample ratio %v must be between 0 and 1", c.SampleRatio)
	}
	return nil
}

// Tracing is the result of Setup. A nil *Tracing is valid and means off:
// every method works on it.
type Tracing struct {
	tp       *sdktrace.TracerProvider
	internal *otelconnect.Interceptor
	public   *otelconnect.Interceptor
}

// enabled is set while a Setup's provider is installed; Enabled reads it.
var enabled atomic.Bool

// Enabled reports whether tracing is on in this process: a Setup turned it
// on and its Shutdown has not run.
func Enabled() bool { return enabled.Load() }

// Setup decides from the environment and cfg whether tracing is on (see
// the package documentation) and, if so, installs the exporter, sampler,
// provider and propagator globally. It returns a nil *Tracing (off) and no
// error when tracing is off. Call Shutdown on the result before exiting so
// buffered spans are exported.
func Setup(ctx context.Context, cfg Config) (*Tracing, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	if on, why := wanted(cfg); !on {
		log.Debug("tracing is off", "reason", why)
		return nil, nil
	}
	exp, proto, err := newExporter(ctx)
	if err != nil {
		return nil, err
	}
	name := cfg.ServiceName
	if name == "" {
		name = "streamhouse"
	}
	attrs := []attribute.KeyValue{attribute.String("service.name", name)}
	if cfg.Version != "" {
		attrs = append(attrs, attribute.String("service.version", cfg.Version))
	}
	// Later detectors win: the environment overrides our defaults.
	res, err := resource.New(ctx,
		resource.WithAttributes(attrs...),
		resource.WithTelemetrySDK(),
		resource.WithFromEnv(),
	)
	if err != nil {
		_ = exp.Shutdown(ctx)
		return nil, fmt.Errorf("telemetry: build resource: %w", err)
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(cfg.SampleRatio))),
	)
	prop := propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(prop)
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		log.Warn("opentelemetry error (spans may be lost)", "err", err)
	}))
	common := []otelconnect.Option{
		otelconnect.WithTracerProvider(tp),
		otelconnect.WithPropagator(prop),
		// Metrics come from VictoriaMetrics counters at /metrics, not OTel.
		otelconnect.WithoutMetrics(),
	}
	internal, err := otelconnect.NewInterceptor(append(common, otelconnect.WithTrustRemote())...)
	if err != nil {
		_ = tp.Shutdown(ctx)
		return nil, fmt.Errorf("telemetry: connect interceptor: %w", err)
	}
	public, err := otelconnect.NewInterceptor(common...)
	if err != nil {
		_ = tp.Shutdown(ctx)
		return nil, fmt.Errorf("telemetry: connect interceptor: %w", err)
	}
	enabled.Store(true)
	if v, ok := res.Set().Value("service.name"); ok {
		name = v.AsString() // OTEL_SERVICE_NAME may have replaced ours
	}
	log.Info("tracing is on", "service", name, "sample_ratio", cfg.SampleRatio, "protocol", proto)
	return &Tracing{tp: tp, internal: internal, public: public}, nil
}

// wanted applies the on/off rule of the package documentation.
func wanted(cfg Config) (bool, string) {
	switch {
	case strings.EqualFold(strings.TrimSpace(os.Getenv("OTEL_SDK_DISABLED")), "true"):
		return false, "OTEL_SDK_DISABLED=true"
	case strings.EqualFold(strings.TrimSpace(os.Getenv("OTEL_TRACES_EXPORTER")), "none"):
		return false, "OTEL_TRACES_EXPORTER=none"
	case os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == "" && os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") == "":
		return false, "no OTLP endpoint (OTEL_EXPORTER_OTLP_ENDPOINT) is set"
	case cfg.SampleRatio == 0:
		return false, "trace sample ratio is 0"
	}
	return true, ""
}

// newExporter returns the OTLP exporter the protocol variables ask for.
func newExporter(ctx context.Context) (sdktrace.SpanExporter, string, error) {
	proto := os.Getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	if proto == "" {
		proto = os.Getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	var (
		exp sdktrace.SpanExporter
		err error
	)
	switch proto {
	case "grpc":
		exp, err = otlptracegrpc.New(ctx)
	case "", "http/protobuf":
		proto = "http/protobuf"
		exp, err = otlptracehttp.New(ctx)
	default:
		return nil, "", fmt.Errorf("telemetry: OTLP protocol %q is not supported: use grpc or http/protobuf", proto)
	}
	if err != nil {
		return nil, "", fmt.Errorf("telemetry: create OTLP %s exporter: %w", proto, err)
	}
	return exp, proto, nil
}

// Shutdown exports the spans still buffered and stops the provider, within
// ctx. Tracing is off afterwards. It is safe on a nil *Tracing.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if t == nil {
		return nil
	}
	enabled.Store(false)
	if err := t.tp.Shutdown(ctx); err != nil {
		return fmt.Errorf("telemetry: flush spans: %w", err)
	}
	return nil
}

// ShutdownWithin is Shutdown bounded by timeout, for deferred calls on the
// way out of a command; a failure is logged, not returned.
func (t *Tracing) ShutdownWithin(timeout time.Duration, log *slog.Logger) {
	if t == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := t.Shutdown(ctx); err != nil && log != nil {
		log.Warn("spans not exported before exit", "err", err)
	}
}

// ClientOptions returns opts with the tracing interceptor prepended: the
// client starts a span per call and propagates the trace context to the
// server in W3C traceparent headers. Unchanged when tracing is off.
func (t *Tracing) ClientOptions(opts ...connect.ClientOption) []connect.ClientOption {
	if t == nil {
		return opts
	}
	return append([]connect.ClientOption{connect.WithInterceptors(t.internal)}, opts...)
}

// HandlerOptions returns opts with the tracing interceptor prepended, for
// handlers that only StreamHouse's own components call (agent, controller):
// a request's incoming trace context becomes the parent of the server span.
// Unchanged when tracing is off.
func (t *Tracing) HandlerOptions(opts ...connect.HandlerOption) []connect.HandlerOption {
	if t == nil {
		return opts
	}
	return append([]connect.HandlerOption{connect.WithInterceptors(t.internal)}, opts...)
}

// PublicHandlerOptions is HandlerOptions for handlers that anyone may call
// (the gateway): the server span starts a new trace, sampled by this
// process's ratio, with a span link to the caller's span instead of taking
// it as parent, so a client cannot force sampling on or join our traces.
// Unchanged when tracing is off.
func (t *Tracing) PublicHandlerOptions(opts ...connect.HandlerOption) []connect.HandlerOption {
	if t == nil {
		return opts
	}
	return append([]connect.HandlerOption{connect.WithInterceptors(t.public)}, opts...)
}
