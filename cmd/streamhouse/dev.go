package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/streamhouse/streamhouse/agent"
	"github.com/streamhouse/streamhouse/api/gen/streamhouse/v1/streamhousev1connect"
	"github.com/streamhouse/streamhouse/controller"
	"github.com/streamhouse/streamhouse/gateway"
	"github.com/streamhouse/streamhouse/pkg/telemetry"
)

// devConfig is everything `streamhouse dev` can be told.
type devConfig struct {
	DataDir         string
	Listen          string
	LogLevel        string
	LogFormat       string
	FlushInterval   time.Duration
	FlushBytes      int
	LeaseDuration   time.Duration
	ShutdownTimeout time.Duration
	Store           storeConfig
	Groups          groupConfig
	// BackpressureMinDwell is --backpressure-min-dwell (addDwellFlag).
	BackpressureMinDwell time.Duration
	// TraceSampleRatio is --trace-sample-ratio (see tracing.go).
	TraceSampleRatio float64
}

func (c *devConfig) validate() error {
	var errs []error
	if c.DataDir == "" {
		errs = append(errs, errors.New("--data-dir must not be empty"))
	}
	if c.FlushInterval < 10*time.Millisecond {
		errs = append(errs, fmt.Errorf("--flush-interval %v is below the 10ms minimum", c.FlushInterval))
	}
	if c.FlushBytes < 64<<10 {
		errs = append(errs, fmt.Errorf("--flush-bytes %d is below the 64 KiB minimum", c.FlushBytes))
	}
	if c.LeaseDuration < 3*time.Second {
		errs = append(errs, fmt.Errorf("--lease-duration %v is below the 3s minimum", c.LeaseDuration))
	}
	errs = append(errs, c.Store.validate(), validDwell(c.BackpressureMinDwell))
	return errors.Join(errs...)
}

func newDevCommand() *cobra.Command {
	cfg := devConfig{}
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run controller, agent and gateway in one process",
		Long: `Run a whole StreamHouse in one process: a single-voter controller, one agent
and the gateway, talking through the same interfaces as in a cluster (in-process
calls stand in for the network hops). Data lives under --data-dir: the Raft log
in controller/, the WAL in agent/, and objects in objects/ unless --object-store
is s3.

The gateway serves Connect, gRPC and gRPC-web on --listen. SIGINT or SIGTERM
shuts down cleanly: the agent uploads and commits what its WAL holds first.`,
		Example: `  # Defaults: ./data, gateway on :8080
  streamhouse dev

  # Objects in an S3-compatible store
  STREAMHOUSE_S3_SECRET_KEY=... streamhouse dev --object-store s3 \
    --s3-endpoint 127.0.0.1:9000 --s3-bucket streamhouse --s3-access-key admin`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := cfg.validate(); err != nil {
				return usageError{err}
			}
			return runDev(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.DataDir, "data-dir", "./data", "directory for the Raft log, the WAL and (local store) objects")
	f.StringVar(&cfg.Listen, "listen", ":8080", "gateway address (Connect, gRPC, gRPC-web); port 0 picks a free port")
	f.StringVar(&cfg.LogLevel, "log-level", "info", "log level: debug, info, warn or error")
	f.StringVar(&cfg.LogFormat, "log-format", "text", "log format: text or json")
	f.DurationVar(&cfg.FlushInterval, "flush-interval", 250*time.Millisecond, "longest time new records wait before they are uploaded")
	f.IntVar(&cfg.FlushBytes, "flush-bytes", 16<<20, "upload early once this many bytes wait; also caps one object's size")
	f.DurationVar(&cfg.LeaseDuration, "lease-duration", 10*time.Second, "how long a partition lease lasts without renewal")
	f.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", 30*time.Second, "how long a clean shutdown may take to upload what the WAL holds")
	cfg.Store.addFlags(f)
	addDwellFlag(f, &cfg.BackpressureMinDwell)
	cfg.Groups.addFlags(f)
	addTraceFlags(f, &cfg.TraceSampleRatio, devTraceSampleRatio)
	annotateEnv(f)
	return cmd
}

func newLogger(level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, usageError{fmt.Errorf("--log-level %q: use debug, info, warn or error", level)}
	}
	opts := &slog.HandlerOptions{Level: lv}
	// LogHandler adds trace_id and span_id to records logged with the
	// context of a traced request.
	switch format {
	case "text":
		return slog.New(telemetry.LogHandler(slog.NewTextHandler(os.Stderr, opts))), nil
	case "json":
		return slog.New(telemetry.LogHandler(slog.NewJSONHandler(os.Stderr, opts))), nil
	default:
		return nil, usageError{fmt.Errorf("--log-format %q: use text or json", format)}
	}
}

func runDev(ctx context.Context, cfg devConfig) error {
	log, err := newLogger(cfg.LogLevel, cfg.LogFormat)
	if err != nil {
		return err
	}
	slog.SetDefault(log)
	tel, err := startTracing(ctx, "streamhouse", cfg.TraceSampleRatio, log)
	if err != nil {
		return err
	}
	// Deferred first, so it runs last: after the agent's final flush.
	defer tel.ShutdownWithin(traceFlushTimeout, log)
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	defer ln.Close()

	ccfg := controller.Config{
		DataDir: filepath.Join(cfg.DataDir, "controller"), LeaseDuration: cfg.LeaseDuration, Logger: log,
	}
	cfg.Groups.apply(&ccfg)
	ctrl, err := controller.Open(ctx, ccfg)
	if err != nil {
		return fmt.Errorf("start controller: %w", err)
	}
	defer ctrl.Close()

	store, closeStore, err := cfg.Store.open(ctx, filepath.Join(cfg.DataDir, "objects"))
	if err != nil {
		return fmt.Errorf("open object store: %w", err)
	}
	defer closeStore()

	// In one process the agent and gateway call the controller's handlers
	// directly: for unary RPCs a Connect handler has the client's methods.
	ag, err := agent.Open(ctx, agent.Config{
		DataDir: filepath.Join(cfg.DataDir, "agent"), Address: "in-process",
		Controller: ctrl.Controller(), Store: store, KeyRoot: cfg.Store.KeyRoot,
		PrefixCount: cfg.Store.PrefixCount, FlushInterval: cfg.FlushInterval, FlushBytes: cfg.FlushBytes,
		Logger: log,
		Guard:  cfg.Store.guardConfig(), WALBudget: cfg.Store.WALBudget, NoGuard: cfg.Store.NoGuard,
		MaxInFlightBytes: cfg.Store.MaxInFlightBytes, DurableAckTimeout: cfg.Store.DurableAckTimeout,
		BackpressureMinDwell: cfg.BackpressureMinDwell,
	})
	if err != nil {
		return fmt.Errorf("start agent: %w", err)
	}
	agentClient := ag.Handler()
	gw, err := gateway.New(gateway.Config{
		Admin: ctrl.Admin(), Controller: ctrl.Controller(), Groups: ctrl.Groups(), Logger: log,
		// In one process the gateway and the agent hold the same bytes:
		// one limit (--max-inflight-bytes) for both.
		MaxInFlightBytes: cfg.Store.MaxInFlightBytes,
		HandlerOptions:   tel.PublicHandlerOptions(),
		Agents:           func(string) (streamhousev1connect.AgentServiceClient, error) { return agentClient, nil },
	})
	if err != nil {
		_ = ag.Close(context.Background())
		return fmt.Errorf("start gateway: %w", err)
	}

	// The gateway's public services, plus the controller's ClusterService so
	// `shctl cluster status` and friends work against dev too.
	mux := http.NewServeMux()
	mux.Handle("/", gw.Handler())
	mux.Handle(streamhousev1connect.NewClusterServiceHandler(ctrl.Cluster(), tel.PublicHandlerOptions()...))
	srv := startServer(ln, mux)
	announce("dev", ln) // tests and scripts read this line (--listen :0)
	log.Info("streamhouse dev is ready", "listen", ln.Addr().String(), "data_dir", cfg.DataDir, "object_store", cfg.Store.Kind)

	if err = srv.wait(ctx); err != nil {
		log.Error("gateway server failed", "err", err)
	} else {
		log.Info("shutting down: uploading what the WAL holds, then stopping")
	}
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	errs := []error{err}
	if err := srv.shutdown(sctx); err != nil {
		errs = append(errs, fmt.Errorf("stop gateway: %w", err))
	}
	if err := ag.Close(sctx); err != nil {
		errs = append(errs, fmt.Errorf("stop agent: %w", err))
	}
	if err := ctrl.Close(); err != nil {
		errs = append(errs, fmt.Errorf("stop controller: %w", err))
	}
	if err := errors.Join(errs...); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	log.Info("stopped cleanly")
	return nil
}
