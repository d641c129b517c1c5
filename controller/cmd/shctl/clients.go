package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"

	"connectrpc.com/connect"

	"github.com/streamhouse/streamhouse/api/gen/streamhouse/v1/streamhousev1connect"
	"github.com/streamhouse/streamhouse/pkg/client"
	"github.com/streamhouse/streamhouse/pkg/failover"
)

// server names the server a request went to, for error messages.
type server struct {
	role string // "gateway" or "controller"
	addr string // as the user gave it
}

func (s server) String() string { return "the " + s.role + " at " + s.addr }

// gatewayURL turns --gateway (host:port or a URL) into a base URL.
func gatewayURL(addr string) (string, error) {
	addr = strings.TrimSpace(addr)
	if addr == "" {
		return "", usagef("--gateway is empty")
	}
	if strings.Contains(addr, "://") {
		if !strings.HasPrefix(addr, "http://") && !strings.HasPrefix(addr, "https://") {
			return "", usagef("--gateway %q: the scheme must be http or https", addr)
		}
		return strings.TrimRight(addr, "/"), nil
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return "", usagef("--gateway %q: want host:port or a URL: %v", addr, err)
	}
	return "http://" + addr, nil
}

// gatewayClient returns an SDK client for --gateway.
func gatewayClient() (*client.Client, server, error) {
	srv := server{role: "gateway", addr: global.gateway}
	u, err := gatewayURL(global.gateway)
	if err != nil {
		return nil, srv, err
	}
	c, err := client.New(u)
	if err != nil {
		return nil, srv, usagef("%v", err)
	}
	return c, srv, nil
}

// clusterClient returns a ClusterService client for --controller (a comma
// list of host:port; a request moves on to the next one when a connection is
// refused), defaulting to --gateway.
func clusterClient() (streamhousev1connect.ClusterServiceClient, server, func(), error) {
	list := global.controller
	if strings.TrimSpace(list) == "" {
		list = global.gateway
	}
	srv := server{role: "controller", addr: list}
	var addrs []string
	for a := range strings.SplitSeq(list, ",") {
		a = strings.TrimSpace(a)
		a = strings.TrimPrefix(a, "http://")
		a = strings.TrimRight(a, "/")
		if a == "" {
			continue
		}
		if strings.Contains(a, "://") {
			return nil, srv, nil, usagef("--controller %q: controllers are addressed as host:port (plain HTTP/2)", a)
		}
		if _, _, err := net.SplitHostPort(a); err != nil {
			return nil, srv, nil, usagef("--controller %q: want host:port: %v", a, err)
		}
		addrs = append(addrs, a)
	}
	if len(addrs) == 0 {
		return nil, srv, nil, usagef("--controller is empty")
	}
	tr, err := failover.New(addrs, nil)
	if err != nil {
		return nil, srv, nil, usagef("--controller: %v", err)
	}
	hc := &http.Client{Transport: tr}
	return streamhousev1connect.NewClusterServiceClient(hc, tr.URL()), srv, tr.CloseIdleConnections, nil
}

// rpcCtx bounds one request by --timeout.
func rpcCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, global.timeout)
}

// apiError turns the error of a request to srv into a one-line error with an
// exit code. op says what was being done ("create topic \"x\""); notFound,
// when set, replaces the server's message for NotFound answers.
func apiError(ctx context.Context, err error, srv server, op, notFound string) error {
	if err == nil {
		return nil
	}
	var ee *exitErr
	if errors.As(err, &ee) {
		return err
	}
	if ctx.Err() != nil && errors.Is(ctx.Err(), context.Canceled) {
		return withCode(exitInterrupted, errors.New("interrupted"))
	}
	if reason, ok := unreachable(err); ok {
		return withCode(exitUnreachable, fmt.Errorf("cannot reach %s: %s", srv, reason))
	}
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return withCode(exitError, fmt.Errorf("%s: %v", op, err))
	}
	if !connect.IsWireError(ce) {
		switch ce.Code() {
		case connect.CodeDeadlineExceeded:
			return withCode(exitUnreachable, fmt.Errorf("%s: no answer from %s within %v", op, srv, global.timeout))
		case connect.CodeCanceled:
			return withCode(exitInterrupted, errors.New("interrupted"))
		}
		// A transport failure after the request left: the server may or
		// may not have acted on it.
		return withCode(exitUnreachable, fmt.Errorf("%s: lost the connection to %s: %s", op, srv, ce.Message()))
	}
	msg := ce.Message()
	switch ce.Code() {
	case connect.CodeNotFound:
		if notFound != "" {
			msg = notFound
		}
		return withCode(exitNotFound, errors.New(msg))
	case connect.CodeInvalidArgument, connect.CodeOutOfRange:
		return withCode(exitUsage, fmt.Errorf("%s: %s", op, msg))
	case connect.CodeUnavailable:
		return withCode(exitUnavailable, fmt.Errorf("%s: %s is unavailable: %s", op, srv, msg))
	case connect.CodeAlreadyExists, connect.CodeFailedPrecondition, connect.CodePermissionDenied, connect.CodeUnauthenticated:
		return withCode(exitError, fmt.Errorf("%s: %s", op, msg))
	case connect.CodeUnimplemented:
		return withCode(exitError, fmt.Errorf("%s: %s does not serve this (%s); is it the right address?", op, srv, msg))
	default:
		return withCode(exitError, fmt.Errorf("%s: %s: %s", op, ce.Code(), msg))
	}
}

// unreachable reports whether err says no connection could be made, and why
// in a few words.
func unreachable(err error) (string, bool) {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused", true
	case errors.Is(err, syscall.EHOSTUNREACH):
		return "no route to host", true
	case errors.Is(err, syscall.ENETUNREACH):
		return "network is unreachable", true
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return "cannot resolve " + dnsErr.Name + ": " + dnsErr.Err, true
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "dial" {
		if opErr.Timeout() {
			return "connection timed out", true
		}
		return opErr.Err.Error(), true
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) {
		return "the connection was closed (is it a StreamHouse server speaking HTTP/2?)", true
	}
	return "", false
}

// topicMissing is the message for a topic that does not exist.
func topicMissing(name string) string { return fmt.Sprintf("topic %q does not exist", name) }
