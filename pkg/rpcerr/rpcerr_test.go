package rpcerr

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"connectrpc.com/connect"
	"go.uber.org/goleak"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/api/gen/streamhouse/v1/streamhousev1connect"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type refusing struct {
	streamhousev1connect.UnimplementedAgentServiceHandler
	err error
}

func (r refusing) Append(context.Context, *connect.Request[v1.AppendRequest]) (*connect.Response[v1.AppendResponse], error) {
	return nil, r.err
}

// The mark must survive the wire in every protocol, and plain errors of the
// same code must not carry it.
func TestMarkSurvivesTheWire(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{NotApplied(connect.CodeUnavailable, errors.New("no lease")), true},
		{connect.NewError(connect.CodeUnavailable, errors.New("broken")), false},
	} {
		mux := http.NewServeMux()
		mux.Handle(streamhousev1connect.NewAgentServiceHandler(refusing{err: tc.err}))
		srv := httptest.NewUnstartedServer(mux)
		srv.EnableHTTP2 = true
		srv.StartTLS()
		for name, opt := range map[string]connect.ClientOption{"connect": nil, "grpc": connect.WithGRPC(), "grpcweb": connect.WithGRPCWeb()} {
			var opts []connect.ClientOption
			if opt != nil {
				opts = append(opts, opt)
			}
			c := streamhousev1connect.NewAgentServiceClient(srv.Client(), srv.URL, opts...)
			_, err := c.Append(context.Background(), connect.NewRequest(&v1.AppendRequest{}))
			if connect.CodeOf(err) != connect.CodeUnavailable || IsNotApplied(err) != tc.want {
				t.Errorf("%s: err %v: IsNotApplied = %v, want %v", name, err, IsNotApplied(err), tc.want)
			}
		}
		srv.Client().CloseIdleConnections()
		srv.Close()
	}
	if IsNotApplied(errors.New("plain")) || IsNotApplied(nil) {
		t.Error("plain errors are not marked")
	}
}
