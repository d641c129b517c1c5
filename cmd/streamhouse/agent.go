package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"time"

	"connectrpc.com/connect"
	"github.com/VictoriaMetrics/metrics"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/streamhouse/streamhouse/agent"
	"github.com/streamhouse/streamhouse/api/gen/streamhouse/v1/streamhousev1connect"
	"github.com/streamhouse/streamhouse/pkg/failover"
	"github.com/streamhouse/streamhouse/pkg/membership"
)

type agentConfig struct {
	commonConfig
	DataDir       string
	Listen        string
	Advertise     string
	Zone          string
	Controllers   string
	Gossip        gossipConfig
	FlushInterval time.Duration
	FlushBytes    int
	Store         storeConfig
	// BackpressureMinDwell is --backpressure-min-dwell (addDwellFlag).
	BackpressureMinDwell time.Duration
}

// addDwellFlag registers --backpressure-min-dwell (agent and dev).
func addDwellFlag(f *pflag.FlagSet, d *time.Duration) {
	f.DurationVar(d, "backpressure-min-dwell", 2*time.Second, "least time WAL backpressure (429 past 80% of --wal-budget) stays on, or off, once it changed, so a crowd of retries does not flap it; writes refused for it are told to retry after it; past 90% of the budget it turns on regardless")
}

// validDwell checks --backpressure-min-dwell.
func validDwell(d time.Duration) error {
	if d <= 0 || d > time.Minute {
		return fmt.Errorf("--backpressure-min-dwell %v must be positive and at most 1m", d)
	}
	return nil
}

func newAgentCommand() *cobra.Command {
	cfg := agentConfig{}
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run an agent: WAL, uploads to the object store, reads",
		Long: `Run an agent. It takes partition leases from the controllers, appends
produced batches to its write-ahead log, uploads one object per flush to the
object store, commits it to the controllers, and serves reads.

SIGTERM shuts down gracefully: the agent uploads and commits everything its
WAL holds, then releases its leases so other agents take its partitions at
once.`,
		Example: `  streamhouse agent --data-dir /var/lib/sh/agent --listen :7101 \
    --controllers c1:7001,c2:7001,c3:7001 --object-store s3 --s3-endpoint ... --s3-bucket ...`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(splitList(cfg.Controllers)) == 0 && cfg.Gossip.Seeds == "" {
				return usageError{errors.New("give --controllers (the controllers' API addresses) or --seeds (to find them through gossip)")}
			}
			if err := errors.Join(cfg.Store.validate(), validDwell(cfg.BackpressureMinDwell)); err != nil {
				return usageError{err}
			}
			return runAgent(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.DataDir, "data-dir", "./data/agent", "directory for the WAL (a persistent volume)")
	f.StringVar(&cfg.Listen, "listen", ":7101", "agent API address")
	f.StringVar(&cfg.Advertise, "advertise", "", "address gateways use to reach this agent (default the listen address, wildcard host replaced by the hostname)")
	f.StringVar(&cfg.Zone, "zone", "", "availability zone of this agent")
	f.StringVar(&cfg.Controllers, "controllers", "", "controller API addresses: host:port,... (or find them through gossip with --seeds)")
	cfg.Gossip.addFlags(f)
	f.DurationVar(&cfg.FlushInterval, "flush-interval", 250*time.Millisecond, "longest time new records wait before they are uploaded")
	f.IntVar(&cfg.FlushBytes, "flush-bytes", 16<<20, "upload early once this many bytes wait; also caps one object's size")
	cfg.Store.addFlags(f)
	addDwellFlag(f, &cfg.BackpressureMinDwell)
	cfg.commonConfig.addFlags(f, "json")
	annotateEnv(f)
	return cmd
}

// controllerClient returns a ControllerService client over every
// controller address (failing over on refused connections).
func controllerClients(addrs []string) (*failover.Transport, *http.Client, error) {
	tr, err := failover.New(addrs, nil)
	if err != nil {
		return nil, nil, err
	}
	return tr, &http.Client{Transport: tr}, nil
}

func runAgent(ctx context.Context, cfg agentConfig) error {
	log, err := cfg.logger()
	if err != nil {
		return err
	}
	tel, err := startTracing(ctx, "streamhouse-agent", cfg.TraceSampleRatio, log)
	if err != nil {
		return err
	}
	defer tel.ShutdownWithin(traceFlushTimeout, log) // runs last: after the final flush
	ln, advertise, err := listen(cfg.Listen, cfg.Advertise)
	if err != nil {
		return err
	}
	defer ln.Close()
	tr, hc, stop, err := reachControllers(ctx, cfg.Gossip, membership.Member{Name: "agent@" + advertise, Role: membership.RoleAgent, APIAddress: advertise, Zone: cfg.Zone}, cfg.Controllers, log)
	if err != nil {
		return err
	}
	defer stop()
	store, closeStore, err := cfg.Store.open(ctx, filepath.Join(cfg.DataDir, "objects"))
	if err != nil {
		return fmt.Errorf("open object store: %w", err)
	}
	defer closeStore()

	var ag *agent.Agent
	for attempt := 0; ; attempt++ { // the controllers may still be electing
		ag, err = agent.Open(ctx, agent.Config{
			DataDir: cfg.DataDir, Address: advertise, Zone: cfg.Zone,
			Controller: streamhousev1connect.NewControllerServiceClient(hc, tr.URL(), tel.ClientOptions(connect.WithGRPC())...),
			Store:      store, KeyRoot: cfg.Store.KeyRoot, PrefixCount: cfg.Store.PrefixCount,
			FlushInterval: cfg.FlushInterval, FlushBytes: cfg.FlushBytes, Logger: log,
			Guard: cfg.Store.guardConfig(), WALBudget: cfg.Store.WALBudget, NoGuard: cfg.Store.NoGuard,
			MaxInFlightBytes: cfg.Store.MaxInFlightBytes, DurableAckTimeout: cfg.Store.DurableAckTimeout,
			BackpressureMinDwell: cfg.BackpressureMinDwell,
		})
		if err == nil {
			break
		}
		if connect.CodeOf(err) != connect.CodeUnavailable || ctx.Err() != nil || attempt > 150 {
			return fmt.Errorf("start agent: %w", err)
		}
		log.Warn("controllers not ready; retrying", "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	mux := http.NewServeMux()
	mux.Handle(streamhousev1connect.NewAgentServiceHandler(ag.Handler(), tel.HandlerOptions(connect.WithReadMaxBytes(40<<20))...))
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, _ *http.Request) { metrics.WritePrometheus(w, true) })
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	srv := startServer(ln, mux)
	announce("agent", ln)
	log.Info("agent is serving", "id", ag.ID(), "listen", ln.Addr().String(), "advertise", advertise)

	err = srv.wait(ctx)
	log.Info("shutting down: uploading what the WAL holds, releasing leases")
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	// Stop taking requests only after the agent has handed its partitions
	// over; appends meanwhile get a retryable refusal.
	cerr := ag.Close(sctx)
	// The partitions are handed over: requests still arriving are refused
	// anyway, so give connections a short drain, not the whole timeout.
	hctx, hcancel := context.WithTimeout(sctx, time.Second)
	defer hcancel()
	if serr := srv.shutdown(hctx); serr != nil {
		srv.srv.Close()
	}
	return errors.Join(err, cerr)
}
