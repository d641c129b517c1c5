package gateway

import (
	"context"
	"errors"
	"fmt"
	"regexp"

	"connectrpc.com/connect"
	"github.com/streamhouse/streamhouse/pkg/rpcerr"
)

func invalid(format string, args ...any) error {
	return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf(format, args...))
}

// unavailable is the gateway's own refusal before anything was sent to an
// agent, so it is marked safe to retry.
func unavailable(format string, args ...any) error {
	return rpcerr.NotApplied(connect.CodeUnavailable, fmt.Errorf(format, args...))
}

// upstream returns err, from the controller or an agent, as an error to hand
// to our own client: a *connect.Error keeps its code, message and details but
// drops the wire metadata (HTTP headers and trailers of the upstream
// response), which must not leak into our response. A context error becomes
// Canceled or DeadlineExceeded; anything else is Unavailable.
func upstream(err error) error {
	if err == nil {
		return nil
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		out := connect.NewError(ce.Code(), errors.New(ce.Message()))
		for _, d := range ce.Details() {
			out.AddDetail(d)
		}
		if rpcerr.IsNotApplied(ce) {
			out.Meta().Set(rpcerr.NotAppliedKey, "true")
		}
		// Backpressure (ResourceExhausted: HTTP 429) says when to retry.
		if ra := ce.Meta().Get("Retry-After"); ra != "" {
			out.Meta().Set("Retry-After", ra)
		}
		// A reader's log was truncated by an unclean handoff: where to resume.
		if at := ce.Meta().Get(rpcerr.TruncatedAtKey); at != "" {
			out.Meta().Set(rpcerr.TruncatedAtKey, at)
		}
		return out
	}
	switch {
	case errors.Is(err, context.Canceled):
		return connect.NewError(connect.CodeCanceled, err)
	case errors.Is(err, context.DeadlineExceeded):
		return connect.NewError(connect.CodeDeadlineExceeded, err)
	}
	return connect.NewError(connect.CodeUnavailable, err)
}

var topicNameRE = regexp.MustCompile(`^[a-zA-Z0-9._-]{1,249}$`)

// validateTopic checks a topic name by Kafka's rules (the controller's).
func validateTopic(name string) error {
	switch {
	case name == "":
		return invalid("topic is required")
	case name == "." || name == "..":
		return invalid("topic name %q is not allowed", name)
	case len(name) > 249:
		return invalid("topic name is %d characters long; the limit is 249", len(name))
	case !topicNameRE.MatchString(name):
		return invalid("topic name %q has characters outside [a-zA-Z0-9._-]", name)
	}
	return nil
}

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }
