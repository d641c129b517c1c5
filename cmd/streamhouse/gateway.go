package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	"github.com/streamhouse/streamhouse/api/gen/streamhouse/v1/streamhousev1connect"
	"github.com/streamhouse/streamhouse/gateway"
	"github.com/streamhouse/streamhouse/pkg/membership"
)

type gatewayConfig struct {
	commonConfig
	Listen      string
	Advertise   string
	Controllers string
	Zone        string
	Gossip      gossipConfig
	// MaxInFlightBytes bounds the produce request bytes held at once.
	MaxInFlightBytes int64
}

func newGatewayCommand() *cobra.Command {
	cfg := gatewayConfig{}
	cmd := &cobra.Command{
		Use:   "gateway",
		Short: "Run a stateless gateway serving the public API",
		Long: `Run a gateway: it serves AdminService, ProduceService and ConsumeService
(Connect, gRPC and gRPC-web) on --listen, validates requests, and routes them
to the agent holding each partition's lease. Run as many as you like.`,
		Example: `  streamhouse gateway --listen :8080 --controllers c1:7001,c2:7001,c3:7001`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if cfg.MaxInFlightBytes < 1<<20 {
				return usageError{fmt.Errorf("--max-inflight-bytes must be at least 1 MiB, got %d", cfg.MaxInFlightBytes)}
			}
			if len(splitList(cfg.Controllers)) == 0 && cfg.Gossip.Seeds == "" {
				return usageError{errors.New("give --controllers (the controllers' API addresses) or --seeds (to find them through gossip)")}
			}
			return runGateway(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Listen, "listen", ":8080", "public API address (Connect, gRPC, gRPC-web, /metrics)")
	f.StringVar(&cfg.Advertise, "advertise", "", "address clients use to reach this gateway, announced through gossip (default the listen address, wildcard host replaced by the hostname)")
	f.StringVar(&cfg.Controllers, "controllers", "", "controller API addresses: host:port,... (or find them through gossip with --seeds)")
	f.StringVar(&cfg.Zone, "zone", "", "availability zone of this gateway, announced through gossip and logged (agents take the same flag)")
	f.Int64Var(&cfg.MaxInFlightBytes, "max-inflight-bytes", gateway.DefaultMaxInFlightBytes, "bytes of produce requests the gateway holds at once, from arrival to answer; past it produce requests get 429 with a Retry-After, so memory follows this limit, not the offered load")
	cfg.Gossip.addFlags(f)
	cfg.commonConfig.addFlags(f, "json")
	annotateEnv(f)
	return cmd
}

// agentClients hands out one AgentService client per agent address, all
// sharing one h2c transport.
type agentClients struct {
	hc   *http.Client
	opts []connect.ClientOption
	mu   sync.Mutex
	m    map[string]streamhousev1connect.AgentServiceClient
}

func (a *agentClients) get(addr string) (streamhousev1connect.AgentServiceClient, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	c, ok := a.m[addr]
	if !ok {
		c = streamhousev1connect.NewAgentServiceClient(a.hc, "http://"+addr, a.opts...)
		a.m[addr] = c
	}
	return c, nil
}

func runGateway(ctx context.Context, cfg gatewayConfig) error {
	log, err := cfg.logger()
	if err != nil {
		return err
	}
	tel, err := startTracing(ctx, "streamhouse-gateway", cfg.TraceSampleRatio, log)
	if err != nil {
		return err
	}
	defer tel.ShutdownWithin(traceFlushTimeout, log)
	ln, advertise, err := listen(cfg.Listen, cfg.Advertise)
	if err != nil {
		return err
	}
	defer ln.Close()
	tr, hc, stop, err := reachControllers(ctx, cfg.Gossip, membership.Member{Name: "gateway@" + advertise, Role: membership.RoleGateway, APIAddress: advertise, Zone: cfg.Zone}, cfg.Controllers, log)
	if err != nil {
		return err
	}
	defer stop()
	agentTransport := &http.Transport{}
	agentTransport.Protocols = new(http.Protocols)
	agentTransport.Protocols.SetUnencryptedHTTP2(true)
	defer agentTransport.CloseIdleConnections()
	agents := &agentClients{hc: &http.Client{Transport: agentTransport}, opts: tel.ClientOptions(connect.WithGRPC()), m: map[string]streamhousev1connect.AgentServiceClient{}}

	ctlOpts := tel.ClientOptions(connect.WithGRPC())
	gw, err := gateway.New(gateway.Config{
		MaxInFlightBytes: cfg.MaxInFlightBytes,
		Admin:            streamhousev1connect.NewAdminServiceClient(hc, tr.URL(), ctlOpts...),
		Controller:       streamhousev1connect.NewControllerServiceClient(hc, tr.URL(), ctlOpts...),
		Routes:           streamhousev1connect.NewRoutesServiceClient(hc, tr.URL(), ctlOpts...),
		Groups:           streamhousev1connect.NewGroupServiceClient(hc, tr.URL(), ctlOpts...),
		// Public API: a client's trace context is linked, not trusted.
		HandlerOptions: tel.PublicHandlerOptions(),
		Agents:         agents.get,
		Logger:         log,
	})
	if err != nil {
		return err
	}
	defer gw.Close()
	srv := startServer(ln, gw.Handler())
	announce("gateway", ln)
	log.Info("gateway is serving", "listen", ln.Addr().String(), "zone", cfg.Zone)
	err = srv.wait(ctx)
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	return errors.Join(err, srv.shutdown(sctx))
}
