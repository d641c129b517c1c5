// Package rpcerr marks Connect errors that guarantee a write was not applied.
//
// Without idempotent producers, a client may retry a write only when it knows
// the first attempt changed nothing. A bare Unavailable does not say that: a
// connection that broke mid-request is reported as Unavailable too. So every
// server-side refusal made before anything was written (no lease holder yet,
// lease not renewed, shutting down, backpressure) carries the metadata key
// NotAppliedKey, which survives the wire as a header or trailer, and callers
// retry writes only when IsNotApplied says so.
package rpcerr

import (
	"errors"
	"net"
	"syscall"

	"connectrpc.com/connect"
)

// NotAppliedKey is the error metadata key that marks a refused write.
const NotAppliedKey = "Streamhouse-Not-Applied"

// NotApplied returns a Connect error with code and err, marked as "nothing
// was applied; safe to retry".
func NotApplied(code connect.Code, err error) *connect.Error {
	ce := connect.NewError(code, err)
	ce.Meta().Set(NotAppliedKey, "true")
	return ce
}

// IsNotApplied reports whether err is a Connect error marked by NotApplied.
func IsNotApplied(err error) bool {
	var ce *connect.Error
	return errors.As(err, &ce) && ce.Meta().Get(NotAppliedKey) == "true"
}

// TruncatedAtKey is the error metadata key a fetch failure carries when an
// unclean handoff truncated what the consumer had read: its value is the
// offset to resume from (the records read at and after it were lost and the
// offsets now hold other records).
const TruncatedAtKey = "Streamhouse-Truncated-At"

// NeverSent reports whether err proves a request never reached a server:
// the connection could not be made (refused, name not resolved, any dial
// failure). Such a write was not applied and is safe to retry.
func NeverSent(err error) bool {
	if errors.Is(err, syscall.ECONNREFUSED) {
		return true
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return true
	}
	var opErr *net.OpError
	return errors.As(err, &opErr) && opErr.Op == "dial"
}
