package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/VictoriaMetrics/metrics"
	"github.com/spf13/cobra"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/api/gen/streamhouse/v1/streamhousev1connect"
	"github.com/streamhouse/streamhouse/controller"
	"github.com/streamhouse/streamhouse/pkg/failover"
	"github.com/streamhouse/streamhouse/pkg/membership"
)

type controllerConfig struct {
	commonConfig
	DataDir        string
	NodeID         string
	RaftListen     string
	RaftAdvertise  string
	Listen         string
	Advertise      string
	InitialCluster string
	Join           string
	LeaseDuration  time.Duration
	WALHandoff     time.Duration
	LeaderWait     time.Duration
	Groups         groupConfig
	Gossip         gossipConfig
}

func (c *controllerConfig) peers() ([]controller.Peer, error) {
	var out []controller.Peer
	for _, item := range splitList(c.InitialCluster) {
		id, addr, ok := strings.Cut(item, "=")
		if !ok || id == "" || addr == "" {
			return nil, fmt.Errorf("--initial-cluster item %q: use id=host:port", item)
		}
		out = append(out, controller.Peer{ID: id, RaftAddress: addr})
	}
	return out, nil
}

func newControllerCommand() *cobra.Command {
	cfg := controllerConfig{}
	host, _ := os.Hostname()
	cmd := &cobra.Command{
		Use:   "controller",
		Short: "Run one controller voter (Raft) of a cluster",
		Long: `Run one controller: a voter of the Raft group that owns topics, partition
leases, the object index and committed offsets. Run 3 (or 5) of them.

A new cluster forms when every member starts with the same --initial-cluster
(id=raft-address for each voter). A controller started with --join instead
asks an existing cluster to add it as a voter. Requests sent to a follower are
forwarded to the leader.`,
		Example: `  streamhouse controller --node-id c1 --data-dir /var/lib/sh/c1 \
    --raft-listen 10.0.0.1:7000 --listen :7001 \
    --initial-cluster c1=10.0.0.1:7000,c2=10.0.0.2:7000,c3=10.0.0.3:7000`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if cfg.NodeID == "" {
				return usageError{errors.New("--node-id must not be empty")}
			}
			if _, err := cfg.peers(); err != nil {
				return usageError{err}
			}
			if cfg.LeaderWait < 0 {
				return usageError{fmt.Errorf("--leader-wait %v is negative", cfg.LeaderWait)}
			}
			if cfg.InitialCluster != "" && cfg.Join != "" {
				return usageError{errors.New("give either --initial-cluster (a new cluster) or --join (an existing one), not both")}
			}
			return runController(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.DataDir, "data-dir", "./data/controller", "directory for the Raft log and snapshots")
	f.StringVar(&cfg.NodeID, "node-id", host, "this voter's stable id (default the hostname)")
	f.StringVar(&cfg.RaftListen, "raft-listen", ":7000", "Raft address to listen on")
	f.StringVar(&cfg.RaftAdvertise, "raft-advertise", "", "Raft address other voters dial (default the listen address, wildcard host replaced by the hostname)")
	f.StringVar(&cfg.Listen, "listen", ":7001", "controller API address (Connect/gRPC)")
	f.StringVar(&cfg.Advertise, "advertise", "", "API address others use to reach this controller (default as for --raft-advertise)")
	f.StringVar(&cfg.InitialCluster, "initial-cluster", "", "voters of a new cluster: id=host:port,... (the same on every member)")
	f.StringVar(&cfg.Join, "join", "", "API addresses of an existing cluster's controllers to join: host:port,...")
	f.DurationVar(&cfg.LeaseDuration, "lease-duration", 10*time.Second, "how long a partition lease lasts without renewal")
	f.DurationVar(&cfg.WALHandoff, "wal-handoff-timeout", 60*time.Second, "how long a wal topic's partition waits for a vanished agent to come back before it moves (losing that agent's un-uploaded tail)")
	f.DurationVar(&cfg.LeaderWait, "leader-wait", 5*time.Second, "how long a follower holds a request while it knows no leader (during an election) before answering Unavailable; 0 answers at once")
	cfg.Gossip.addFlags(f)
	cfg.Groups.addFlags(f)
	cfg.commonConfig.addFlags(f, "json")
	annotateEnv(f)
	return cmd
}

// leaderWait maps the --leader-wait flag onto controller.Config, which
// reads 0 as "the default" where the flag's 0 means "do not wait".
func leaderWait(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

func runController(ctx context.Context, cfg controllerConfig) error {
	log, err := cfg.logger()
	if err != nil {
		return err
	}
	tel, err := startTracing(ctx, "streamhouse-controller", cfg.TraceSampleRatio, log)
	if err != nil {
		return err
	}
	defer tel.ShutdownWithin(traceFlushTimeout, log)
	peers, _ := cfg.peers()
	ln, advertise, err := listen(cfg.Listen, cfg.Advertise)
	if err != nil {
		return err
	}
	defer ln.Close()
	raftLn, raftAdvertise, err := listen(cfg.RaftListen, cfg.RaftAdvertise)
	if err != nil {
		return err
	}
	gossip, err := cfg.Gossip.start(ctx, membership.Member{Name: cfg.NodeID, Role: membership.RoleController, APIAddress: advertise}, log)
	if err != nil {
		raftLn.Close()
		return err
	}
	if gossip != nil {
		defer gossip.Close()
	}
	var gateways func() []string
	if gossip != nil {
		gateways = func() []string { return gossip.Addresses(membership.RoleGateway) }
	}
	ccfg := controller.Config{
		Gateways: gateways,
		NodeID:   cfg.NodeID, DataDir: cfg.DataDir, LeaseDuration: cfg.LeaseDuration, WALHandoffTimeout: cfg.WALHandoff, Logger: log,
		LeaderWait:   leaderWait(cfg.LeaderWait),
		RaftListener: raftLn, RaftAdvertise: raftAdvertise, APIAddress: advertise, InitialCluster: peers,
	}
	cfg.Groups.apply(&ccfg)
	node, err := controller.Open(ctx, ccfg)
	if err != nil {
		raftLn.Close()
		return fmt.Errorf("start controller: %w", err)
	}
	defer node.Close()

	mux := http.NewServeMux()
	// Only StreamHouse's own components (and operators' shctl) call the
	// controller: incoming trace context is trusted.
	hopts := tel.HandlerOptions()
	mux.Handle(streamhousev1connect.NewAdminServiceHandler(node.Admin(), hopts...))
	mux.Handle(streamhousev1connect.NewControllerServiceHandler(node.Controller(), hopts...))
	mux.Handle(streamhousev1connect.NewClusterServiceHandler(node.Cluster(), hopts...))
	mux.Handle(streamhousev1connect.NewRoutesServiceHandler(node.Routes(), hopts...))
	mux.Handle(streamhousev1connect.NewGroupServiceHandler(node.Groups(), hopts...))
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, _ *http.Request) { metrics.WritePrometheus(w, true) })
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if node.LeaderAPIAddress() == "" && !node.IsLeader() {
			http.Error(w, "no leader", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok"))
	})
	srv := startServer(ln, node.ForwardToLeader(mux))
	announce("controller", ln)
	log.Info("controller is serving", "node", cfg.NodeID, "listen", ln.Addr().String(), "advertise", advertise, "raft", raftAdvertise)

	if join := splitList(cfg.Join); len(join) > 0 {
		if err := joinCluster(ctx, join, &v1.AddVoterRequest{Id: cfg.NodeID, RaftAddress: raftAdvertise, ApiAddress: advertise}); err != nil {
			log.Error("join cluster", "err", err)
		}
	}
	err = srv.wait(ctx)
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	return errors.Join(err, srv.shutdown(sctx), node.Close())
}

// joinCluster asks the cluster at addrs to add this node, retrying until it
// answers or ctx ends.
func joinCluster(ctx context.Context, addrs []string, req *v1.AddVoterRequest) error {
	tr, err := failover.New(addrs, nil)
	if err != nil {
		return err
	}
	defer tr.CloseIdleConnections()
	c := streamhousev1connect.NewClusterServiceClient(&http.Client{Transport: tr}, tr.URL(), connect.WithGRPC())
	for attempt := 0; ; attempt++ {
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_, err := c.AddVoter(rctx, connect.NewRequest(req))
		cancel()
		if err == nil {
			return nil
		}
		if connect.CodeOf(err) == connect.CodeInvalidArgument {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("join %v: %w (last error: %v)", addrs, ctx.Err(), err)
		case <-time.After(min(time.Duration(attempt+1)*200*time.Millisecond, 2*time.Second)):
		}
	}
}
