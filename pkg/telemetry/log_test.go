package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// decode parses the JSON lines a slog.JSONHandler wrote.
func decode(t *testing.T, buf *bytes.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	dec := json.NewDecoder(buf)
	for dec.More() {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			t.Fatalf("decode log line: %v", err)
		}
		out = append(out, m)
	}
	return out
}

func TestLogHandlerAddsTraceIDs(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })

	var buf bytes.Buffer
	log := slog.New(LogHandler(slog.NewJSONHandler(&buf, nil))).With("component", "test")

	ctx, span := tp.Tracer("test").Start(context.Background(), "request")
	log.InfoContext(ctx, "inside a span", "n", 1)
	span.End()
	log.InfoContext(context.Background(), "no span")
	log.Info("no context")
	log.WithGroup("g").InfoContext(ctx, "grouped", "k", "v")

	lines := decode(t, &buf)
	if len(lines) != 4 {
		t.Fatalf("got %d log lines, want 4: %v", len(lines), lines)
	}
	sc := span.SpanContext()
	in := lines[0]
	if in[TraceIDKey] != sc.TraceID().String() || in[SpanIDKey] != sc.SpanID().String() {
		t.Errorf("record in a span: trace_id=%v span_id=%v, want %s %s", in[TraceIDKey], in[SpanIDKey], sc.TraceID(), sc.SpanID())
	}
	if in["component"] != "test" || in["n"] != float64(1) || in["msg"] != "inside a span" {
		t.Errorf("record in a span lost its own attributes: %v", in)
	}
	for _, l := range lines[1:3] {
		if _, ok := l[TraceIDKey]; ok {
			t.Errorf("record %q without a span has a trace_id: %v", l["msg"], l)
		}
		if _, ok := l[SpanIDKey]; ok {
			t.Errorf("record %q without a span has a span_id: %v", l["msg"], l)
		}
	}
	// WithGroup puts the ids in the group, as documented.
	g, _ := lines[3]["g"].(map[string]any)
	if g[TraceIDKey] != sc.TraceID().String() || g["k"] != "v" {
		t.Errorf("grouped record: %v", lines[3])
	}
}

func TestLogHandlerKeepsLevel(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(LogHandler(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn})))
	log.Info("dropped")
	log.Warn("kept")
	if got := buf.String(); bytes.Contains([]byte(got), []byte("dropped")) || !bytes.Contains([]byte(got), []byte("kept")) {
		t.Errorf("level not honoured: %q", got)
	}
}
