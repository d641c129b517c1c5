package agent

import (
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"
)

// tracer makes the agent's spans: agent.flush directly (it may start a
// trace), the others through spans.Start (only inside a sampled request).
// It follows the global provider, which pkg/telemetry installs only when
// tracing is on.
var tracer = otel.Tracer("github.com/streamhouse/streamhouse/agent")

// maxFlushWaiters bounds the sampled durable appends a partition remembers
// for the next flush's trace (one becomes the flush span's parent, the
// rest links), so a fully sampled firehose cannot grow the list without
// bound between flushes.
const maxFlushWaiters = 64

// maxFlushLinks bounds the span links of one flush span.
const maxFlushLinks = 32

// flushWaiter is a sampled acks=durable append waiting for the flush that
// uploads and commits offsets below end.
type flushWaiter struct {
	end int64
	sc  trace.SpanContext
}

// addFlushWaiter remembers a sampled durable append (sc) that waits for
// offsets below end to be committed. Called before the batch is handed to
// the WAL, so any flush that can carry it finds it. Nothing is recorded for
// an unsampled (or absent) span, so with tracing off this is a no-op.
func (p *partition) addFlushWaiter(sc trace.SpanContext, end int64) {
	if !sc.IsSampled() {
		return
	}
	p.mu.Lock()
	if len(p.flushWaiters) < maxFlushWaiters {
		p.flushWaiters = append(p.flushWaiters, flushWaiter{end: end, sc: sc})
	}
	p.mu.Unlock()
}

// takeFlushWaiters removes and returns the waiters a flush up to end
// satisfies.
func (p *partition) takeFlushWaiters(end int64, dst []trace.SpanContext) []trace.SpanContext {
	p.mu.Lock()
	defer p.mu.Unlock()
	kept := p.flushWaiters[:0]
	for _, w := range p.flushWaiters {
		if w.end <= end {
			dst = append(dst, w.sc)
		} else {
			kept = append(kept, w)
		}
	}
	clear(p.flushWaiters[len(kept):])
	p.flushWaiters = kept
	return dst
}
