package gateway

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"sync"
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

// inflight bounds the bytes of produce requests the gateway holds at once,
// from admission until their answer, so its memory follows
// Config.MaxInFlightBytes rather than the offered load.
type inflight struct {
	limit int64

	mu       sync.Mutex
	held     int64
	released int64
	rateAt   time.Time
	relAt    int64
	rate     float64 // bytes/s released, last measured
}

// admit takes n bytes of the budget and returns the function that gives
// them back, or a not-applied ResourceExhausted error with a Retry-After
// when the budget is spent. A request larger than the whole budget is
// admitted when nothing else is held, so it is never refused forever.
func (g *Gateway) admit(n int) (release func(), err error) {
	f := &g.inflight
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.held > 0 && f.held+int64(n) > f.limit {
		wait := f.retryAfterLocked(time.Now())
		inflightRefused.Inc()
		ce := rpcerr.NotApplied(connect.CodeResourceExhausted, fmt.Errorf(
			"gateway is overloaded: %d bytes of produce requests in flight, its limit is %d (--max-inflight-bytes); retry after %v",
			f.held, f.limit, wait))
		ce.Meta().Set(rpcerr.RetryAfterKey, strconv.FormatInt(int64((wait+time.Second-1)/time.Second), 10))
		return nil, ce
	}
	f.held += int64(n)
	inflightBytes.Set(float64(f.held))
	return func() {
		f.mu.Lock()
		f.held -= int64(n)
		f.released += int64(n)
		inflightBytes.Set(float64(f.held))
		f.mu.Unlock()
	}, nil
}

// retryAfterLocked estimates how long the bytes now held take to drain, at
// the release rate of about the last second; between 1 s (Retry-After's
// resolution) and 5 s. Releases come in bursts (durable acks at each flush),
// so a window without one says little: it gives the minimum, not the
// maximum, or clients would sit idle long after the load has gone.
func (f *inflight) retryAfterLocked(now time.Time) time.Duration {
	if el := now.Sub(f.rateAt); el >= time.Second || f.rateAt.IsZero() {
		if !f.rateAt.IsZero() {
			f.rate = float64(f.released-f.relAt) / el.Seconds()
		}
		f.rateAt, f.relAt = now, f.released
	}
	wait := time.Second
	if f.rate > 0 {
		wait = time.Duration(float64(f.held) / f.rate * float64(time.Second))
	}
	return min(max(wait, time.Second), 5*time.Second)
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
