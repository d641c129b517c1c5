package objstore_test

import (
	"context"
	"errors"
	"testing"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/streamhouse/streamhouse/pkg/objstore"
	"github.com/streamhouse/streamhouse/pkg/objstore/storetest"
)

func TestTracedConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) objstore.Store { return objstore.Traced(newLocal(t)) })
}

func TestTracedSpans(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	otel.SetTracerProvider(tp)

	s := objstore.Traced(newLocal(t))
	// Outside a trace: no span.
	if err := s.PutIfAbsent(context.Background(), "a/untraced", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if n := len(rec.Ended()); n != 0 {
		t.Fatalf("%d spans for a call outside any trace", n)
	}

	ctx, parent := tp.Tracer("test").Start(context.Background(), "flush")
	if err := s.PutIfAbsent(ctx, "a/b", []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if err := s.PutIfAbsent(ctx, "a/b", []byte("again")); !errors.Is(err, objstore.ErrExists) {
		t.Fatalf("second put: %v", err)
	}
	if _, err := s.Get(ctx, "a/missing", 0, -1); !errors.Is(err, objstore.ErrNotFound) {
		t.Fatalf("get missing: %v", err)
	}
	if _, err := s.Get(ctx, "bad//key", 0, -1); err == nil {
		t.Fatal("get of an invalid key succeeded")
	}
	parent.End()

	spans := rec.Ended()
	if len(spans) != 5 { // 4 store calls and the parent
		t.Fatalf("got %d spans, want 5", len(spans))
	}
	want := []struct {
		name   string
		status codes.Code
	}{
		{"objstore.put", codes.Unset},
		{"objstore.put", codes.Unset}, // ErrExists is an answer, not a failure
		{"objstore.get", codes.Unset}, // so is ErrNotFound
		{"objstore.get", codes.Error},
	}
	for i, w := range want {
		sp := spans[i]
		if sp.Name() != w.name || sp.Status().Code != w.status {
			t.Errorf("span %d: %s status %v, want %s %v", i, sp.Name(), sp.Status().Code, w.name, w.status)
		}
		if sp.Parent().SpanID() != parent.SpanContext().SpanID() {
			t.Errorf("span %d (%s) is not a child of the caller's span", i, sp.Name())
		}
	}
	attrs := map[string]any{}
	for _, kv := range spans[0].Attributes() {
		attrs[string(kv.Key)] = kv.Value.AsInterface()
	}
	if attrs["objstore.key"] != "a/b" || attrs["objstore.bytes"] != int64(5) {
		t.Errorf("put span attributes: %v", attrs)
	}
}
