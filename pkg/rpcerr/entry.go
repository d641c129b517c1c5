package rpcerr

import (
	"context"
	"errors"
	"math"
	"strconv"
	"time"

	"connectrpc.com/connect"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
)

// RetryAfterKey is the metadata key (an HTTP header) of a ResourceExhausted
// refusal's retry hint, in whole seconds as HTTP's Retry-After.
const RetryAfterKey = "Retry-After"

// ToEntry turns the error of one entry of a multi-entry request (a produce
// batch, a fetched partition) into its wire form, keeping what a whole-request
// error says in metadata: the code, the message, the not-applied mark, the
// Retry-After hint and the truncation offset. A context error becomes
// Canceled or DeadlineExceeded; an error without a code is Unknown. nil gives
// nil.
func ToEntry(err error) *v1.EntryError {
	if err == nil {
		return nil
	}
	out := &v1.EntryError{Code: connect.CodeUnknown.String(), Message: err.Error()}
	var ce *connect.Error
	switch {
	case errors.As(err, &ce):
		out.Code, out.Message = ce.Code().String(), ce.Message()
		out.NotApplied = IsNotApplied(ce)
		if ra := ce.Meta().Get(RetryAfterKey); ra != "" {
			if s, perr := strconv.ParseFloat(ra, 64); perr == nil && s > 0 {
				out.RetryAfterMs = int64(math.Ceil(s * 1000))
			}
		}
		if at := ce.Meta().Get(TruncatedAtKey); at != "" {
			if n, perr := strconv.ParseInt(at, 10, 64); perr == nil {
				out.TruncatedAt = &n
			}
		}
	case errors.Is(err, context.DeadlineExceeded):
		out.Code = connect.CodeDeadlineExceeded.String()
	case errors.Is(err, context.Canceled):
		out.Code = connect.CodeCanceled.String()
	}
	return out
}

// FromEntry is the inverse of ToEntry: the *connect.Error a whole-request
// failure with the same outcome would have been, metadata included, so
// callers classify entry errors and request errors with the same code
// (IsNotApplied, the Retry-After hint, TruncatedAtKey). nil gives nil; an
// unknown code name is Unknown.
func FromEntry(e *v1.EntryError) *connect.Error {
	if e == nil {
		return nil
	}
	var code connect.Code
	if err := code.UnmarshalText([]byte(e.GetCode())); err != nil {
		code = connect.CodeUnknown
	}
	ce := connect.NewError(code, errors.New(e.GetMessage()))
	if e.GetNotApplied() {
		ce.Meta().Set(NotAppliedKey, "true")
	}
	if ms := e.GetRetryAfterMs(); ms > 0 {
		ce.Meta().Set(RetryAfterKey, strconv.FormatInt((ms+999)/1000, 10))
	}
	if e.TruncatedAt != nil {
		ce.Meta().Set(TruncatedAtKey, strconv.FormatInt(e.GetTruncatedAt(), 10))
	}
	return ce
}

// RetryAfter returns the Retry-After hint a Connect error carries (whole
// seconds, as sent), or 0.
func RetryAfter(err error) time.Duration {
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return 0
	}
	s, perr := strconv.ParseFloat(ce.Meta().Get(RetryAfterKey), 64)
	if perr != nil || s <= 0 {
		return 0
	}
	return time.Duration(s * float64(time.Second))
}
