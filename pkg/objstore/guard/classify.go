package guard

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"syscall"

	"github.com/streamhouse/streamhouse/pkg/objstore"
)

// class is how the guard treats an error from the store.
type class int

const (
	classOK        class = iota // success, or a definite answer (NotFound, Exists, Range, AccessDenied, ...)
	classRetryable              // the store failed transiently: retry, count against the breaker
	classContext                // the caller's context ended: stop, tell the breaker nothing
)

// throttleCodes are the S3 error codes that mean "slow down".
var throttleCodes = map[string]bool{
	"SlowDown": true, "SlowDownWrite": true, "SlowDownRead": true,
	"Throttling": true, "ThrottlingException": true, "RequestLimitExceeded": true,
	"RequestThrottled": true, "TooManyRequests": true,
}

// retryableCodes are S3 error codes of transient failures besides throttling.
var retryableCodes = map[string]bool{
	"InternalError": true, "RequestTimeout": true, "ServiceUnavailable": true,
}

// isThrottle reports whether err is a throttling answer (503 SlowDown and
// kin, or 429), which also drives AIMD.
func isThrottle(err error) bool {
	if err == nil {
		return false
	}
	if throttleCodes[objstore.S3ErrorCode(err)] {
		return true
	}
	switch objstore.S3StatusCode(err) {
	case http.StatusServiceUnavailable, http.StatusTooManyRequests:
		return true
	}
	return false
}

// classify sorts an error from the store by S3 error code, HTTP status and
// error type; never by message text.
func classify(ctx context.Context, err error) class {
	switch {
	case err == nil:
		return classOK
	case ctx.Err() != nil, errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return classContext
	case errors.Is(err, objstore.ErrNotFound), errors.Is(err, objstore.ErrExists),
		errors.Is(err, objstore.ErrRange), errors.Is(err, objstore.ErrInvalidKey):
		return classOK
	}
	code, status := objstore.S3ErrorCode(err), objstore.S3StatusCode(err)
	if throttleCodes[code] || retryableCodes[code] {
		return classRetryable
	}
	if code != "" || status != 0 {
		switch status {
		case http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable,
			http.StatusGatewayTimeout, http.StatusRequestTimeout, http.StatusTooManyRequests:
			return classRetryable
		}
		return classOK // a definite answer from the service: AccessDenied, NoSuchBucket, ...
	}
	// No S3 answer at all: transport failures are retryable.
	var (
		netErr net.Error
		urlErr *url.Error
		opErr  *net.OpError
	)
	switch {
	case errors.As(err, &opErr), errors.As(err, &netErr), errors.As(err, &urlErr),
		errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF),
		errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.ECONNREFUSED),
		errors.Is(err, syscall.ECONNABORTED), errors.Is(err, syscall.EPIPE),
		errors.Is(err, net.ErrClosed):
		return classRetryable
	}
	return classOK // an error we do not understand: surface it, do not hammer
}

// ambiguous reports whether a failed PUT may nevertheless have been applied:
// anything but a throttling answer (which S3 gives before doing anything).
func ambiguous(err error) bool { return !isThrottle(err) }
