package objstore

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"
)

// RetryAfter returns the delay the service asked for with a Retry-After
// header on the error response carried by err (S3 sends it with some 503
// SlowDown and 429 answers), and whether there was one. Only errors from
// [S3] (or made by [WithRetryAfter]) carry it: minio-go's ErrorResponse does
// not keep response headers, so S3 records the header per request.
func RetryAfter(err error) (time.Duration, bool) {
	var ra *retryAfterError
	if errors.As(err, &ra) {
		return ra.after, true
	}
	return 0, false
}

// WithRetryAfter returns err annotated with a Retry-After delay that
// RetryAfter reports. The message and the errors err wraps are unchanged.
// Stores other than S3 (and test fakes) use it to pass the hint on.
func WithRetryAfter(err error, after time.Duration) error {
	if err == nil {
		return nil
	}
	return &retryAfterError{err: err, after: after}
}

type retryAfterError struct {
	err   error
	after time.Duration
}

func (e *retryAfterError) Error() string { return e.err.Error() }
func (e *retryAfterError) Unwrap() error { return e.err }

// retryAfterKey is the context key of the *atomic.Int64 in which
// retryAfterTransport records a Retry-After delay (nanoseconds, -1 unset).
type retryAfterKey struct{}

// withRetryAfterHolder returns a context whose requests record a Retry-After
// header into the returned holder.
func withRetryAfterHolder(ctx context.Context) (context.Context, *atomic.Int64) {
	h := new(atomic.Int64)
	h.Store(-1)
	return context.WithValue(ctx, retryAfterKey{}, h), h
}

// annotate wraps err with the Retry-After delay recorded in h, if any.
func annotate(h *atomic.Int64, err error) error {
	if err == nil {
		return nil
	}
	if d := h.Load(); d >= 0 {
		return WithRetryAfter(err, time.Duration(d))
	}
	return err
}

// retryAfterTransport records the Retry-After header of 429 and 503
// responses into the holder found in the request's context.
type retryAfterTransport struct{ next http.RoundTripper }

func (t retryAfterTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(req)
	if err != nil || resp == nil {
		return resp, err
	}
	if resp.StatusCode != http.StatusServiceUnavailable && resp.StatusCode != http.StatusTooManyRequests {
		return resp, nil
	}
	h, _ := req.Context().Value(retryAfterKey{}).(*atomic.Int64)
	if h == nil {
		return resp, nil
	}
	if d, ok := parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
		h.Store(int64(d))
	}
	return resp, nil
}

// parseRetryAfter parses a Retry-After value: delay-seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	if v == "" {
		return 0, false
	}
	if s, err := strconv.ParseInt(v, 10, 64); err == nil {
		if s < 0 {
			return 0, false
		}
		return time.Duration(min(s, 3600)) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(0, min(t.Sub(now), time.Hour)), true
	}
	return 0, false
}
