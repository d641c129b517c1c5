package gateway

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"connectrpc.com/connect"
	"github.com/VictoriaMetrics/metrics"

	"github.com/streamhouse/streamhouse/pkg/rpcerr"
)

// DefaultMaxInFlightBytes is the default of Config.MaxInFlightBytes.
const DefaultMaxInFlightBytes = 128 << 20

var (
	inflightBytes   = metrics.NewGauge("streamhouse_gateway_inflight_bytes", nil)
	inflightRefused = metrics.NewCounter("streamhouse_gateway_inflight_refused_total")
)

// admit takes n bytes of the in-flight budget (Config.MaxInFlightBytes:
// produce request bytes held from admission to answer) and returns the
// function that gives them back, or a not-applied ResourceExhausted error
// with a Retry-After when the budget is spent, so the gateway's memory
// follows the limit rather than the offered load.
func (g *Gateway) admit(n int) (release func(), err error) {
	release, held, wait := g.inflight.Admit(int64(n))
	if release != nil {
		return release, nil
	}
	inflightRefused.Inc()
	ce := rpcerr.NotApplied(connect.CodeResourceExhausted, fmt.Errorf(
		"gateway is overloaded: %d bytes of produce requests in flight, its limit is %d (--max-inflight-bytes); retry after %v",
		held, g.inflight.Limit(), wait))
	ce.Meta().Set(rpcerr.RetryAfterKey, strconv.FormatInt(int64((wait+time.Second-1)/time.Second), 10))
	return nil, ce
}

// admittedKey marks a request's context when admitBodies has already taken
// its bytes from the budget (its body length was known).
type admittedKey struct{}

// admitBodies takes a produce request's bytes from the in-flight budget
// before Connect reads its body: admission after decoding bounds only what
// is held while waiting for acks, not the bodies being read, so memory
// followed the offered load (measured: 16 clients sending 4 MiB requests
// against an 8 MiB limit held 120 MiB of heap). A request whose length is
// unknown (a streamed body) is admitted by the handler after decoding, as
// before. Refusals are written in the request's protocol (Connect, gRPC or
// gRPC-web) with connect's ErrorWriter, Retry-After included.
func (g *Gateway) admitBodies(next http.Handler) http.Handler {
	ew := connect.NewErrorWriter()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength < 0 || !ew.IsSupported(r) {
			next.ServeHTTP(w, r)
			return
		}
		release, err := g.admit(int(min(r.ContentLength, int64(ReadMaxBytes))))
		if err != nil {
			_ = ew.Write(w, r, err)
			return
		}
		defer release()
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), admittedKey{}, true)))
	})
}

// admitDecoded admits a decoded produce request of n bytes unless
// admitBodies already did; it returns the release function.
func (g *Gateway) admitDecoded(ctx context.Context, n int) (func(), error) {
	if ctx.Value(admittedKey{}) != nil {
		return func() {}, nil
	}
	return g.admit(n)
}
