package objstore

import (
	"context"
	"errors"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// tracer names the instrumentation scope of Traced's spans.
var tracer = otel.Tracer("github.com/streamhouse/streamhouse/pkg/objstore")

// Traced wraps a Store so that every request made inside a trace gets a
// client span, a child of the caller's span: objstore.put, objstore.get,
// objstore.head, objstore.list or objstore.delete, with the key (or prefix)
// and byte count as attributes. minio-go does not trace, so this is where
// an S3 PUT shows up in a trace. Wrap the raw store (inside retries) to see
// one span per real request.
//
// A call outside a sampled trace (background work, an unsampled request,
// or tracing off) is passed through without a span: then Traced costs one
// context lookup.
func Traced(s Store) Store { return &traced{s: s} }

type traced struct{ s Store }

// start begins the span for op, or returns a nil span when ctx's span is
// not recording.
func (t *traced) start(ctx context.Context, op string, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	if !trace.SpanFromContext(ctx).IsRecording() {
		return ctx, nil
	}
	return tracer.Start(ctx, "objstore."+op, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
}

// end records err (expected outcomes such as ErrNotFound and ErrExists are
// not span errors: callers act on them) and ends the span.
func end(span trace.Span, err error, attrs ...attribute.KeyValue) {
	if span == nil {
		return
	}
	if err != nil {
		span.SetAttributes(attribute.String("objstore.error", err.Error()))
		if !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrExists) && !errors.Is(err, ErrRange) {
			span.SetStatus(codes.Error, err.Error())
		}
	}
	span.SetAttributes(attrs...)
	span.End()
}

func (t *traced) PutIfAbsent(ctx context.Context, key string, data []byte) error {
	ctx, span := t.start(ctx, "put", attribute.String("objstore.key", key), attribute.Int("objstore.bytes", len(data)))
	err := t.s.PutIfAbsent(ctx, key, data)
	end(span, err)
	return err
}

func (t *traced) Get(ctx context.Context, key string, offset, length int64) ([]byte, error) {
	ctx, span := t.start(ctx, "get", attribute.String("objstore.key", key), attribute.Int64("objstore.offset", offset), attribute.Int64("objstore.length", length))
	b, err := t.s.Get(ctx, key, offset, length)
	end(span, err, attribute.Int("objstore.bytes", len(b)))
	return b, err
}

func (t *traced) Head(ctx context.Context, key string) (Info, error) {
	ctx, span := t.start(ctx, "head", attribute.String("objstore.key", key))
	i, err := t.s.Head(ctx, key)
	end(span, err)
	return i, err
}

func (t *traced) List(ctx context.Context, prefix string) ([]Info, error) {
	ctx, span := t.start(ctx, "list", attribute.String("objstore.prefix", prefix))
	l, err := t.s.List(ctx, prefix)
	end(span, err, attribute.Int("objstore.objects", len(l)))
	return l, err
}

func (t *traced) Delete(ctx context.Context, key string) error {
	ctx, span := t.start(ctx, "delete", attribute.String("objstore.key", key))
	err := t.s.Delete(ctx, key)
	end(span, err)
	return err
}
