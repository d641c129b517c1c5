package controller

import (
	"context"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/streamhouse/streamhouse/controller/fsm"
	"github.com/streamhouse/streamhouse/pkg/telemetry/spans"
)

// tracer makes the controller's spans (through spans.Start: only inside a
// sampled request). It follows the global provider, which pkg/telemetry
// installs only when tracing is on.
var tracer = otel.Tracer("github.com/streamhouse/streamhouse/controller")

// startApplySpan starts the raft.apply span of one replicated command: the
// time from handing the entry to Raft to the FSM's answer (log append on a
// quorum, commit, apply). Its parent is the request's span, e.g.
// controller.commit_object.
func startApplySpan(ctx context.Context, t fsm.MessageType, bytes int) trace.Span {
	_, span := spans.Start(ctx, tracer, "raft.apply")
	if span.IsRecording() {
		span.SetAttributes(attribute.Int("raft.command_type", int(t)), attribute.Int("raft.entry_bytes", bytes))
	}
	return span
}

// endSpan marks the span failed when err is not nil, then ends it.
func endSpan(span trace.Span, err error) {
	if err != nil && span.IsRecording() {
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}
