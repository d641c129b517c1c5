// Package gateway serves StreamHouse's public API: AdminService,
// ProduceService and ConsumeService, over Connect, gRPC and gRPC-web on one
// HTTP handler.
//
// A Gateway is stateless. It validates requests, picks partitions (murmur2 of
// the key as Kafka's default partitioner, or one round-robin partition for the
// keyless records of a request), and routes each partition's share to the
// agent holding the partition's lease. It reaches the controller and the
// agents only through the generated Connect client interfaces, so the same
// code runs in one process (`streamhouse dev`, where it is handed the
// controller's and agent's handlers, whose unary methods match the client
// interfaces) and in a cluster (real Connect clients).
//
// Every error a Gateway returns is a *connect.Error with a code a program can
// act on and a message a person can act on; a request that fails validation
// changes nothing.
package gateway

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"

	"github.com/streamhouse/streamhouse/api/gen/streamhouse/v1/streamhousev1connect"
	"github.com/streamhouse/streamhouse/pkg/admission"
)

// Limits and defaults.
const (
	// ReadMaxBytes is the largest request message the gateway accepts.
	ReadMaxBytes = 40 << 20
	// DefaultRouteTTL is how long routing metadata is cached when
	// Config.RouteTTL is zero.
	DefaultRouteTTL = 2 * time.Second
	// DefaultFetchMaxBytes is the fetch and subscribe size limit when the
	// request leaves max_bytes at 0.
	DefaultFetchMaxBytes = 1 << 20
	// MaxFetchMaxBytes caps a request's max_bytes.
	MaxFetchMaxBytes = 32 << 20
	// MaxFetchWaitMs is the longest max_wait_ms a fetch may ask for.
	MaxFetchWaitMs = 30000
	// SubscribeWaitMs is how long each of Subscribe's reads long-polls the agent.
	SubscribeWaitMs = 5000
)

// Config configures a Gateway. Admin, Controller and Agents are required.
type Config struct {
	// Admin is the controller's AdminService. Admin calls are validated and
	// passed through to it; Subscribe uses its DescribeTopic to resolve the
	// offsets -1 (high watermark) and -2 (start offset).
	Admin streamhousev1connect.AdminServiceClient
	// Controller is the controller's ControllerService; the gateway calls
	// only GetRoutes, for routing metadata.
	Controller streamhousev1connect.ControllerServiceClient
	// Agents resolves an agent address (from GetRoutes) to a client. In
	// `streamhouse dev` it always returns the in-process agent. It is called
	// for every agent call, so it should cache its clients.
	Agents func(address string) (streamhousev1connect.AgentServiceClient, error)
	// RouteTTL is how long a topic's routing metadata is cached;
	// DefaultRouteTTL when zero. A negative value disables the cache.
	RouteTTL time.Duration
	// Routes, optional, is the controller's RoutesService: when set, the
	// gateway keeps its lease table current from its Watch stream instead
	// of asking GetRoutes when the TTL runs out (it still asks after an
	// agent's refusal, and while the stream is down). Call Close to stop it.
	Routes streamhousev1connect.RoutesServiceClient
	// Groups, optional, is the controller's GroupService: when set, the
	// gateway serves GroupService, validating requests and passing them
	// through.
	Groups streamhousev1connect.GroupServiceClient
	// Logger receives Debug lines only (one or two per request, plus route
	// refreshes); nil discards.
	Logger *slog.Logger
	// MaxInFlightBytes bounds the bytes of produce requests held at once,
	// from admission to answer; past it produce requests get
	// ResourceExhausted (HTTP 429) with a Retry-After.
	// DefaultMaxInFlightBytes when zero.
	MaxInFlightBytes int64
	// HandlerOptions, optional, are added to every service handler before
	// the gateway's own (cmd/streamhouse passes the tracing interceptor of
	// pkg/telemetry here when tracing is on).
	HandlerOptions []connect.HandlerOption
}

// Gateway serves the public services. It is safe for concurrent use.
type Gateway struct {
	cfg    Config
	log    *slog.Logger
	routes *routeCache
	// rr picks the partition of a request's keyless records, round-robin.
	rr atomic.Uint64
	// inflight is the admission budget of produce requests.
	inflight *admission.Budget

	stop context.CancelFunc
	wg   sync.WaitGroup
}

// Close stops the routes watch, if any. The Handler keeps working (with
// TTL-cached routes).
func (g *Gateway) Close() {
	if g.stop != nil {
		g.stop()
	}
	g.wg.Wait()
}

// New returns a Gateway, or an error if a required Config field is missing.
func New(cfg Config) (*Gateway, error) {
	switch {
	case cfg.Admin == nil:
		return nil, errors.New("gateway: Config.Admin is required")
	case cfg.Controller == nil:
		return nil, errors.New("gateway: Config.Controller is required")
	case cfg.Agents == nil:
		return nil, errors.New("gateway: Config.Agents is required")
	}
	if cfg.RouteTTL == 0 {
		cfg.RouteTTL = DefaultRouteTTL
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxInFlightBytes < 0 {
		return nil, errors.New("gateway: Config.MaxInFlightBytes must not be negative")
	}
	if cfg.MaxInFlightBytes == 0 {
		cfg.MaxInFlightBytes = DefaultMaxInFlightBytes
	}
	g := &Gateway{cfg: cfg, log: cfg.Logger}
	g.inflight = admission.New(cfg.MaxInFlightBytes, func(held int64) { inflightBytes.Set(float64(held)) })
	g.routes = newRouteCache(cfg.Controller, cfg.RouteTTL)
	if cfg.Routes != nil {
		ctx, cancel := context.WithCancel(context.Background())
		g.stop = cancel
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			g.routes.watch(ctx, cfg.Routes, g.log)
		}()
	}
	return g, nil
}

// Handler returns one http.Handler serving AdminService, ProduceService and
// ConsumeService (each over Connect, gRPC and gRPC-web; request messages up
// to ReadMaxBytes), GET /metrics (Prometheus text format) and GET /healthz,
// which answers 200 "ok". JSON requests with an unknown field or enum name
// are refused with InvalidArgument (see strictJSONCodec).
//
// gRPC needs HTTP/2: serve the handler with TLS, or without TLS with
// http.Server.Protocols allowing UnencryptedHTTP2 (h2c).
func (g *Gateway) Handler() http.Handler {
	opts := append(slices.Clone(g.cfg.HandlerOptions), connect.WithReadMaxBytes(ReadMaxBytes), connect.WithInterceptors(metricsInterceptor()), withStrictJSON())
	mux := http.NewServeMux()
	mux.Handle(streamhousev1connect.NewAdminServiceHandler(adminService{g}, opts...))
	producepath, produceHandler := streamhousev1connect.NewProduceServiceHandler(produceService{g}, opts...)
	mux.Handle(producepath, g.admitBodies(produceHandler))
	mux.Handle(streamhousev1connect.NewConsumeServiceHandler(consumeService{g}, opts...))
	if g.cfg.Groups != nil {
		mux.Handle(streamhousev1connect.NewGroupServiceHandler(groupService{g}, opts...))
	}
	mux.HandleFunc("GET /metrics", serveMetrics)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok"))
	})
	return mux
}
