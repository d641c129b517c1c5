package client

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/streamhouse/streamhouse/pkg/rpcerr"
)

// ErrUnknownOutcome is matched (errors.Is) by every error reporting that a
// produce request failed in a way that does not tell whether its records
// were appended: they may or may not have been written. See the package
// documentation for the retry rule.
var ErrUnknownOutcome = errors.New("outcome unknown: the records may or may not have been written")

// ErrClosed is reported for records produced after Close.
var ErrClosed = errors.New("client: producer closed")

// ErrRecordTooLarge is reported for a record larger than the topic's
// max_record_bytes or than the producer's MaxBufferedBytes.
var ErrRecordTooLarge = errors.New("client: record too large")

// ErrBadPartition is reported for a record whose explicit partition is out of
// range for the topic.
var ErrBadPartition = errors.New("client: partition out of range")

// UnknownOutcomeError reports a produce request whose records may or may not
// have been written (a timeout, a connection reset mid-request, a server
// error after the append may have happened). errors.Is(err,
// ErrUnknownOutcome) is true for it; Err is the underlying error.
type UnknownOutcomeError struct {
	Topic     string
	Partition int32
	// Records is the number of records in the failed batch.
	Records int
	Err     error
}

func (e *UnknownOutcomeError) Error() string {
	return "client: produce to " + e.Topic + "/" + strconv.Itoa(int(e.Partition)) + " (" +
		strconv.Itoa(e.Records) + " records): " + ErrUnknownOutcome.Error() + ": " + e.Err.Error()
}

// Unwrap returns the underlying error.
func (e *UnknownOutcomeError) Unwrap() error { return e.Err }

// Is reports whether target is ErrUnknownOutcome.
func (e *UnknownOutcomeError) Is(target error) bool { return target == ErrUnknownOutcome }

// outcome classifies a failed produce request.
type outcome int

const (
	// outcomeRetry: the batch provably was not appended and may be retried.
	outcomeRetry outcome = iota
	// outcomeRejected: the server rejected the batch; it was not appended.
	outcomeRejected
	// outcomeUnknown: the batch may have been appended.
	outcomeUnknown
)

// classifyProduceError applies the retry safety rule of the package
// documentation. It also returns the server's Retry-After hint, if any.
func classifyProduceError(err error) (outcome, time.Duration) {
	if rpcerr.NeverSent(err) {
		return outcomeRetry, 0
	}
	ce, ok := errorsAsConnect(err)
	if !ok || !connect.IsWireError(err) {
		// Synthesised by the client from a transport failure or a timeout:
		// the request may have reached the server.
		return outcomeUnknown, 0
	}
	return classifyRefusal(ce)
}

// classifyRefusal classifies an error the server sent: a whole request's,
// or one entry's (rpcerr.FromEntry of a PartitionResult's error).
func classifyRefusal(ce *connect.Error) (outcome, time.Duration) {
	switch ce.Code() {
	case connect.CodeResourceExhausted:
		return outcomeRetry, retryAfter(ce)
	case connect.CodeUnavailable, connect.CodeFailedPrecondition:
		// Only refusals the server marked as "nothing applied": a proxy's
		// 503 is Unavailable too, and says nothing about the append.
		if rpcerr.IsNotApplied(ce) {
			return outcomeRetry, retryAfter(ce)
		}
		return outcomeUnknown, 0
	case connect.CodeInvalidArgument, connect.CodeNotFound, connect.CodeOutOfRange,
		connect.CodePermissionDenied, connect.CodeUnauthenticated, connect.CodeUnimplemented,
		connect.CodeAlreadyExists:
		return outcomeRejected, 0
	default:
		// Internal, Unknown, DeadlineExceeded, Canceled, Aborted, DataLoss:
		// the server may have failed after appending (an acks wait that timed
		// out, for example).
		return outcomeUnknown, 0
	}
}

// transientReadError reports whether a Fetch error is worth retrying. Fetch
// has no side effects, so transport failures are retried too.
func transientReadError(err error) bool {
	if rpcerr.NeverSent(err) {
		return true
	}
	ce, ok := errorsAsConnect(err)
	if !ok {
		return false
	}
	switch ce.Code() {
	case connect.CodeUnavailable, connect.CodeResourceExhausted, connect.CodeAborted:
		return true
	case connect.CodeInternal, connect.CodeUnknown, connect.CodeDeadlineExceeded, connect.CodeCanceled:
		// Transport failures (resets, per-request timeouts) are synthesised
		// by the client; server-answered ones are not retried.
		return !connect.IsWireError(err)
	}
	return false
}

// retryAfter returns the Retry-After hint of a server error: seconds (an
// integer or a decimal number) or an HTTP date. 0 when absent or invalid.
func retryAfter(ce *connect.Error) time.Duration {
	v := strings.TrimSpace(ce.Meta().Get("Retry-After"))
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseFloat(v, 64); err == nil {
		if secs <= 0 || secs > 3600 {
			return 0
		}
		return time.Duration(secs * float64(time.Second))
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := time.Until(t); d > 0 {
			return d
		}
	}
	return 0
}

// backoff is exponential backoff with full jitter.
type backoff struct {
	base, max time.Duration
}

// delay returns the wait before retry number attempt (0-based): a uniformly
// random duration in [0, min(max, base*2^attempt)].
func (b backoff) delay(attempt int) time.Duration {
	ceil := b.max
	if attempt < 30 {
		if d := b.base << attempt; d > 0 && d < ceil {
			ceil = d
		}
	}
	if ceil <= 0 {
		return 0
	}
	return rand.N(ceil + 1)
}

// sleepCtx waits d or until ctx is done.
func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
