package rpcerr

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"connectrpc.com/connect"
)

// An entry error carries everything a whole-request error says in metadata,
// so FromEntry(ToEntry(err)) classifies like err.
func TestEntryRoundTrip(t *testing.T) {
	full := NotApplied(connect.CodeResourceExhausted, errors.New("agent is shedding load"))
	full.Meta().Set(RetryAfterKey, "2")
	trunc := connect.NewError(connect.CodeFailedPrecondition, errors.New("truncated"))
	trunc.Meta().Set(TruncatedAtKey, "0")
	for _, tc := range []struct {
		err        error
		code       connect.Code
		notApplied bool
		retry      time.Duration
		truncated  string
	}{
		{full, connect.CodeResourceExhausted, true, 2 * time.Second, ""},
		{trunc, connect.CodeFailedPrecondition, false, 0, "0"},
		{fmt.Errorf("wrapped: %w", connect.NewError(connect.CodeNotFound, errors.New("no topic"))), connect.CodeNotFound, false, 0, ""},
		{context.DeadlineExceeded, connect.CodeDeadlineExceeded, false, 0, ""},
		{errors.New("plain"), connect.CodeUnknown, false, 0, ""},
	} {
		e := ToEntry(tc.err)
		back := FromEntry(e)
		if back.Code() != tc.code || IsNotApplied(back) != tc.notApplied || RetryAfter(back) != tc.retry || back.Meta().Get(TruncatedAtKey) != tc.truncated {
			t.Errorf("%v -> %v -> %v (not applied %v, retry %v, truncated %q); want code %v, not applied %v, retry %v, truncated %q",
				tc.err, e, back, IsNotApplied(back), RetryAfter(back), back.Meta().Get(TruncatedAtKey), tc.code, tc.notApplied, tc.retry, tc.truncated)
		}
	}
	if ToEntry(nil) != nil || FromEntry(nil) != nil {
		t.Error("nil must map to nil")
	}
}
