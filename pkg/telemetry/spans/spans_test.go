package spans

import (
	"context"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestStartOnlyUnderRecordingSpans(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec), sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.AlwaysSample())))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	tr := tp.Tracer("test")

	// No span in ctx: nothing starts, ctx is returned as is.
	ctx := context.Background()
	got, sp := Start(ctx, tr, "orphan")
	if got != ctx || sp.IsRecording() || sp.SpanContext().IsValid() {
		t.Error("Start without a parent made a span")
	}
	sp.End()

	// An unsampled parent: nothing starts.
	unsampled := trace.ContextWithSpanContext(ctx, trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1}, SpanID: trace.SpanID{1}}))
	if got, sp := Start(unsampled, tr, "child"); got != unsampled || sp.IsRecording() {
		t.Error("Start under an unsampled parent made a span")
	}

	// A recording parent: a real child.
	pctx, parent := tr.Start(ctx, "parent")
	cctx, child := Start(pctx, tr, "child")
	if !child.IsRecording() || trace.SpanFromContext(cctx) != child {
		t.Fatal("Start under a recording parent made no span")
	}
	child.End()
	parent.End()
	ended := rec.Ended()
	if len(ended) != 2 || ended[0].Name() != "child" || ended[0].Parent().SpanID() != parent.SpanContext().SpanID() {
		t.Errorf("ended spans: %v", ended)
	}
}
