// Package controller is StreamHouse's metadata service: a Raft-replicated
// FSM (package fsm) of topics, partition leases, the object index and
// committed end offsets, served over the AdminService and ControllerService
// Connect contracts.
//
// Writes go through Raft on the leader. This issue runs a single voter; the
// distributed-core issue adds more voters and forwarding to the leader.
package controller

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftwal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"

	"github.com/streamhouse/streamhouse/controller/fsm"
)

// Config configures a controller node. Zero values take the defaults noted.
type Config struct {
	// NodeID is this voter's stable Raft id. Default "controller-0".
	NodeID string
	// DataDir holds the Raft log (raft-wal) and snapshots. Required.
	DataDir string
	// LeaseDuration is how long a partition lease lasts from the agent's
	// heartbeat. Default 10s.
	LeaseDuration time.Duration
	// Logger receives structured logs. Default slog.Default().
	Logger *slog.Logger
	// Now is the clock used to stamp leases. Default time.Now. Tests replace it.
	Now func() time.Time
}

func (c *Config) setDefaults() error {
	if c.DataDir == "" {
		return errors.New("controller: DataDir is required")
	}
	if c.NodeID == "" {
		c.NodeID = "controller-0"
	}
	if c.LeaseDuration == 0 {
		c.LeaseDuration = 10 * time.Second
	}
	if c.LeaseDuration < time.Second {
		return fmt.Errorf("controller: lease duration %v is below the 1s minimum", c.LeaseDuration)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}

// Node is one controller voter with its FSM and services.
type Node struct {
	cfg   Config
	log   *slog.Logger
	fsm   *fsm.FSM
	raft  *raft.Raft
	logs  *raftwal.WAL
	meta  *metadb.BoltMetaDB
	trans *raft.InmemTransport

	// progress holds the WAL end offsets agents report in heartbeats; it is
	// leader memory, not replicated (a new leader learns it within a heartbeat).
	mu       sync.Mutex
	progress map[partKey]int64
	live     map[string]time.Time // agent id -> last heartbeat

	closeOnce sync.Once
	closeErr  error
}

type partKey struct {
	topic     string
	partition int32
}

// Open starts a single-voter controller on cfg.DataDir, bootstrapping a new
// cluster when the directory holds no Raft state, and waits until it leads.
func Open(ctx context.Context, cfg Config) (*Node, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, log: cfg.Logger.With("component", "controller"), fsm: fsm.New(),
		progress: map[partKey]int64{}, live: map[string]time.Time{}}
	if err := n.startRaft(); err != nil {
		n.Close()
		return nil, err
	}
	if err := n.waitLeader(ctx); err != nil {
		n.Close()
		return nil, err
	}
	return n, nil
}

func (n *Node) startRaft() error {
	raftDir := filepath.Join(n.cfg.DataDir, "raft")
	if err := os.MkdirAll(filepath.Join(raftDir, "wal"), 0o755); err != nil {
		return fmt.Errorf("create raft dir: %w", err)
	}
	hlog := hclog.New(&hclog.LoggerOptions{Name: "raft", Level: hclog.Warn, Output: os.Stderr})
	// raft-wal's Close leaves its metadata DB open (and flock'ed), so we own
	// the DB and close it ourselves; otherwise a reopen in the same process hangs.
	n.meta = &metadb.BoltMetaDB{}
	logs, err := raftwal.Open(filepath.Join(raftDir, "wal"), raftwal.WithLogger(hlog), raftwal.WithMetaStore(n.meta))
	if err != nil {
		return fmt.Errorf("open raft log %s: %w", raftDir, err)
	}
	n.logs = logs
	snaps, err := raft.NewFileSnapshotStoreWithLogger(raftDir, 2, hlog)
	if err != nil {
		return fmt.Errorf("open raft snapshots %s: %w", raftDir, err)
	}
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(n.cfg.NodeID)
	rc.Logger = hlog
	// A single voter elects itself after one heartbeat timeout; keep it short
	// so `streamhouse dev` starts fast.
	rc.HeartbeatTimeout = 200 * time.Millisecond
	rc.ElectionTimeout = 200 * time.Millisecond
	rc.LeaderLeaseTimeout = 100 * time.Millisecond
	rc.SnapshotThreshold = 4096

	addr, trans := raft.NewInmemTransport(raft.ServerAddress(n.cfg.NodeID))
	n.trans = trans
	existing, err := raft.HasExistingState(logs, logs, snaps)
	if err != nil {
		return fmt.Errorf("inspect raft state: %w", err)
	}
	r, err := raft.NewRaft(rc, n.fsm, logs, logs, snaps, trans)
	if err != nil {
		return fmt.Errorf("start raft: %w", err)
	}
	n.raft = r
	if !existing {
		f := r.BootstrapCluster(raft.Configuration{Servers: []raft.Server{{ID: rc.LocalID, Address: addr}}})
		if err := f.Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
			return fmt.Errorf("bootstrap raft: %w", err)
		}
		n.log.Info("bootstrapped a new controller cluster", "node", n.cfg.NodeID, "dir", raftDir)
	}
	return nil
}

func (n *Node) waitLeader(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for n.raft.State() != raft.Leader {
		select {
		case <-ctx.Done():
			return fmt.Errorf("controller did not become leader: %w", ctx.Err())
		case <-t.C:
		}
	}
	// Barrier: every entry of earlier terms is applied before we serve reads.
	if err := n.raft.Barrier(10 * time.Second).Error(); err != nil {
		return fmt.Errorf("raft barrier: %w", err)
	}
	return nil
}

// errNotLeader is returned for writes on a node that is not the leader.
var errNotLeader = errors.New("this controller is not the Raft leader")

// apply replicates one command and returns the FSM's result.
func (n *Node) apply(ctx context.Context, t fsm.MessageType, cmd any) (any, error) {
	data, err := fsm.Encode(t, cmd)
	if err != nil {
		return nil, err
	}
	timeout := 10 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	f := n.raft.Apply(data, timeout)
	if err := f.Error(); err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
			return nil, fmt.Errorf("%w: %v", errNotLeader, err)
		}
		return nil, fmt.Errorf("raft apply: %w", err)
	}
	return f.Response(), nil
}

// Snapshot forces a Raft snapshot (and log compaction); for tests and admin.
func (n *Node) Snapshot() error {
	return n.raft.Snapshot().Error()
}

// Close stops Raft and closes the log store. It is idempotent.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		var errs []error
		if n.raft != nil {
			errs = append(errs, n.raft.Shutdown().Error())
		}
		if n.trans != nil {
			errs = append(errs, n.trans.Close())
		}
		if n.logs != nil {
			errs = append(errs, n.logs.Close())
		}
		if n.meta != nil {
			errs = append(errs, n.meta.Close())
		}
		n.closeErr = errors.Join(errs...)
	})
	return n.closeErr
}

var _ io.Closer = (*Node)(nil)
