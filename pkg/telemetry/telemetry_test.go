package telemetry

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"
)

// clearOTelEnv unsets every variable wanted reads, for the test's duration.
func clearOTelEnv(t *testing.T) {
	for _, k := range []string{"OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT",
		"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"} {
		t.Setenv(k, "")
	}
}

func TestOnOffRule(t *testing.T) {
	for _, tc := range []struct {
		name  string
		env   map[string]string
		ratio float64
		want  bool
	}{
		{"no endpoint", nil, 1, false},
		{"endpoint", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"}, 0.01, true},
		{"traces endpoint", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:1/v1/traces"}, 1, true},
		{"ratio 0", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"}, 0, false},
		{"sdk disabled", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_SDK_DISABLED": "TRUE"}, 1, false},
		{"exporter none", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_TRACES_EXPORTER": "none"}, 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clearOTelEnv(t)
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			if got, why := wanted(Config{SampleRatio: tc.ratio}); got != tc.want {
				t.Errorf("wanted = %v (%s), want %v", got, why, tc.want)
			}
		})
	}
}

func TestSetupOffInstallsNothing(t *testing.T) {
	clearOTelEnv(t)
	before := otel.GetTracerProvider()
	tel, err := Setup(context.Background(), Config{SampleRatio: 1})
	if err != nil || tel != nil {
		t.Fatalf("Setup with no endpoint = %v, %v; want nil, nil", tel, err)
	}
	if otel.GetTracerProvider() != before || Enabled() {
		t.Error("Setup installed a provider while off")
	}
	// The nil *Tracing leaves Connect options untouched: no interceptor.
	if got := tel.ClientOptions(); len(got) != 0 {
		t.Errorf("ClientOptions on nil = %v", got)
	}
	if got := tel.HandlerOptions(); len(got) != 0 {
		t.Errorf("HandlerOptions on nil = %v", got)
	}
	if got := tel.PublicHandlerOptions(); len(got) != 0 {
		t.Errorf("PublicHandlerOptions on nil = %v", got)
	}
	if err := tel.Shutdown(context.Background()); err != nil {
		t.Error(err)
	}
}

func TestSetupRejectsBadConfig(t *testing.T) {
	clearOTelEnv(t)
	for _, r := range []float64{-0.1, 1.5} {
		if _, err := Setup(context.Background(), Config{SampleRatio: r}); err == nil {
			t.Errorf("ratio %v accepted", r)
		}
	}
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
	if _, err := Setup(context.Background(), Config{SampleRatio: 1}); err == nil {
		t.Error("unsupported protocol http/json accepted")
	}
}

func TestSetupOnSamplesByParentAndExports(t *testing.T) {
	clearOTelEnv(t)
	// An OTLP/HTTP receiver that keeps the request bodies.
	var mu sync.Mutex
	var bodies [][]byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.URL.Path == "/v1/traces" {
			mu.Lock()
			bodies = append(bodies, b)
			mu.Unlock()
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	defer srv.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", srv.URL)
	t.Setenv("OTEL_SERVICE_NAME", "from-env")
	prev := otel.GetTracerProvider()
	t.Cleanup(func() { otel.SetTracerProvider(prev) })

	tel, err := Setup(context.Background(), Config{ServiceName: "streamhouse-test", SampleRatio: 1e-9})
	if err != nil || tel == nil {
		t.Fatalf("Setup = %v, %v", tel, err)
	}
	if !Enabled() || len(tel.ClientOptions()) != 1 || len(tel.HandlerOptions()) != 1 || len(tel.PublicHandlerOptions()) != 1 {
		t.Error("tracing on but no interceptor")
	}
	tr := otel.Tracer("test")
	// A sampled remote parent is followed even at a tiny ratio.
	parent := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1}, SpanID: trace.SpanID{1}, TraceFlags: trace.FlagsSampled, Remote: true,
	})
	_, s := tr.Start(trace.ContextWithRemoteSpanContext(context.Background(), parent), "sampled-child")
	if !s.SpanContext().IsSampled() || s.SpanContext().TraceID() != parent.TraceID() {
		t.Errorf("child of a sampled parent: %+v", s.SpanContext())
	}
	s.End()
	// An unsampled parent is followed too.
	_, s = tr.Start(trace.ContextWithRemoteSpanContext(context.Background(), parent.WithTraceFlags(0)), "unsampled-child")
	if s.SpanContext().IsSampled() {
		t.Error("child of an unsampled parent is sampled")
	}
	s.End()
	// A root at ratio 1e-9 is (almost surely) not sampled.
	_, s = tr.Start(context.Background(), "root")
	if s.SpanContext().IsSampled() {
		t.Error("root sampled at ratio 1e-9")
	}
	s.End()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := tel.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if Enabled() {
		t.Error("Enabled after Shutdown")
	}
	mu.Lock()
	all := bytes.Join(bodies, nil)
	mu.Unlock()
	// Protobuf keeps strings as raw bytes: enough to see what was sent.
	for _, want := range []string{"sampled-child", "from-env"} {
		if !bytes.Contains(all, []byte(want)) {
			t.Errorf("export lacks %q (%d requests)", want, len(bodies))
		}
	}
	for _, not := range []string{"unsampled-child", "root", "streamhouse-test"} {
		if bytes.Contains(all, []byte(not)) {
			t.Errorf("export has %q", not)
		}
	}
}

func TestSetupGRPC(t *testing.T) {
	clearOTelEnv(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc")
	prev := otel.GetTracerProvider()
	t.Cleanup(func() { otel.SetTracerProvider(prev) })
	tel, err := Setup(context.Background(), Config{SampleRatio: 0.5})
	if err != nil || tel == nil {
		t.Fatalf("Setup = %v, %v", tel, err)
	}
	// No span was recorded, so shutting down exports nothing.
	if err := tel.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
}
