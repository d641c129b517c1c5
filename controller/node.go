// Package controller is StreamHouse's metadata service: a Raft-replicated
// FSM (package fsm) of topics, partition leases, the object index,
// committed end offsets and consumer groups, served over the AdminService,
// ControllerService, ClusterService and GroupService Connect contracts.
//
// Writes go through Raft on the leader. A cluster has three or five voters
// (streamhouse dev runs one); a request that reaches a follower is
// forwarded to the leader, in one place (Node.ForwardToLeader). What only
// the leader knows, such as agents' heartbeats, lives in its memory and is
// learnt again by a new leader within a heartbeat interval.
package controller

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
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
	// WALHandoffTimeout is how long a wal topic's partition waits for a
	// vanished holder to come back before it moves uncleanly. Default 60s.
	WALHandoffTimeout time.Duration
	// Logger receives structured logs. Default slog.Default().
	Logger *slog.Logger
	// Now is the clock used to stamp leases. Default time.Now. Tests replace it.
	Now func() time.Time

	// RaftAddress is the TCP address Raft listens on (host:port; port 0
	// picks one). Empty runs a single voter on an in-memory transport, as
	// `streamhouse dev` does.
	RaftAddress string
	// RaftAdvertise is the Raft address other voters dial; default the
	// bound RaftAddress (which must then not be a wildcard).
	RaftAdvertise string
	// APIAddress is the advertised address of this node's Connect API;
	// followers forward writes to the leader's.
	APIAddress string
	// InitialCluster lists every voter of a new cluster. A node whose data
	// directory holds no Raft state bootstraps with it (every member is
	// given the same list). Empty with RaftAddress set: the node waits to
	// be added by AddVoter (join).
	InitialCluster []Peer
	// Gateways, when set, lists the gateways' API addresses (from gossip)
	// for ClusterService.Status.
	Gateways func() []string
	// RaftListener, when set, is used for Raft instead of binding
	// RaftAddress (tests bind port 0 first to learn the address).
	RaftListener net.Listener

	// GroupHeartbeatInterval is how often consumer group members are told
	// to heartbeat. Default 3s.
	GroupHeartbeatInterval time.Duration
	// GroupSessionTimeout evicts a group member silent for longer, unless
	// it asks for another. Default 45s; at least twice the interval.
	GroupSessionTimeout time.Duration
	// GroupMaxSessionTimeout bounds what members may ask for. Default 30m.
	GroupMaxSessionTimeout time.Duration
	// MetricsPartitionLag exports per-partition group lag series
	// (streamhouse_controller_group_partition_lag_records).
	MetricsPartitionLag bool
	// LeaderWait is how long a follower holds a request while it knows no
	// leader (an election, or a new leader whose API address has not
	// reached this node yet) before answering Unavailable, so that a
	// leader change is a pause for clients rather than an error (Consul's
	// rpc_hold_timeout). Default 5s; negative answers at once.
	LeaderWait time.Duration
}

// clustered reports whether the node runs Raft over TCP (a cluster) rather
// than as a single in-memory voter.
func (n *Node) clustered() bool { return n.cfg.RaftAddress != "" || n.cfg.RaftListener != nil }

// Peer is one voter of an initial cluster.
type Peer struct {
	ID          string
	RaftAddress string
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
	if c.WALHandoffTimeout == 0 {
		c.WALHandoffTimeout = 60 * time.Second
	}
	if c.LeaderWait == 0 {
		c.LeaderWait = 5 * time.Second
	}
	if c.WALHandoffTimeout < 0 {
		return fmt.Errorf("controller: wal handoff timeout %v is negative", c.WALHandoffTimeout)
	}
	if c.LeaseDuration < time.Second {
		return fmt.Errorf("controller: lease duration %v is below the 1s minimum", c.LeaseDuration)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if err := c.groupDefaults(); err != nil {
		return err
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
	trans raft.Transport
	stop  chan struct{}
	wg    sync.WaitGroup

	// progress holds the WAL end offsets agents report in heartbeats; it is
	// leader memory, not replicated (a new leader learns it within a heartbeat).
	mu       sync.Mutex
	progress map[partKey]int64
	beats    heartbeats // agent heartbeats (agents.go)

	metrics  *metrics.Set   // per-node gauges (registerNodeMetrics)
	observer *raft.Observer // counts leader changes
	// awaitingLeader counts requests held by ForwardToLeader until a
	// leader is known (streamhouse_controller_requests_awaiting_leader).
	awaitingLeader atomic.Int64

	groups *groupCoord // consumer group coordinator (group_service.go)

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
	n := &Node{cfg: cfg, log: cfg.Logger.With("component", "controller", "node", cfg.NodeID), fsm: fsm.New(),
		progress: map[partKey]int64{}, stop: make(chan struct{})}
	if err := n.startRaft(); err != nil {
		n.Close()
		return nil, err
	}
	n.registerNodeMetrics()
	n.wg.Add(1)
	go n.watchLeadership()
	n.groups = newGroupCoord(n)
	n.wg.Add(1)
	go n.groups.run()
	if !n.clustered() {
		if err := n.waitLeader(ctx); err != nil {
			n.Close()
			return nil, err
		}
	}
	return n, nil
}

// Start returns a node that is part of a cluster; it may or may not lead.
// It is Open under its cluster name, for readers of cmd code.
var Start = Open

// watchLeadership records this node's API address in the FSM whenever it
// becomes leader, so followers know where to forward.
func (n *Node) watchLeadership() {
	defer n.wg.Done()
	for {
		select {
		case <-n.stop:
			return
		case isLeader := <-n.raft.LeaderCh():
			if !isLeader {
				n.log.Info("lost leadership")
				continue
			}
			n.log.Info("became the Raft leader")
			n.resetHeartbeats()
			if err := n.raft.Barrier(10 * time.Second).Error(); err != nil {
				n.log.Warn("barrier after election", "err", err)
				continue
			}
			if n.cfg.APIAddress != "" {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				if _, err := n.apply(ctx, fsm.SetControllerType, fsm.SetController{ID: n.cfg.NodeID, APIAddress: n.cfg.APIAddress}); err != nil {
					n.log.Warn("record leader address", "err", err)
				}
				cancel()
			}
		}
	}
}

// IsLeader reports whether this node is the Raft leader now.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// LeaderAPIAddress returns the API address of the current leader, or "".
func (n *Node) LeaderAPIAddress() string {
	_, id := n.raft.LeaderWithID()
	if id == "" {
		return ""
	}
	var addr string
	n.fsm.Read(func(s *fsm.State) { addr = s.Controllers[string(id)] })
	return addr
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
	// Short timeouts: a single voter elects itself after one heartbeat
	// timeout, and a cluster replaces a dead leader in about a second.
	rc.HeartbeatTimeout = 500 * time.Millisecond
	rc.ElectionTimeout = 500 * time.Millisecond
	rc.LeaderLeaseTimeout = 250 * time.Millisecond
	rc.SnapshotThreshold = 4096
	// Keep few entries after a snapshot: commits carry many sections each,
	// and a voter far behind is better served by the snapshot.
	rc.TrailingLogs = 256

	var addr raft.ServerAddress
	if !n.clustered() {
		rc.HeartbeatTimeout, rc.ElectionTimeout, rc.LeaderLeaseTimeout = 200*time.Millisecond, 200*time.Millisecond, 100*time.Millisecond
		a, trans := raft.NewInmemTransport(raft.ServerAddress(n.cfg.NodeID))
		addr, n.trans = a, trans
	} else {
		trans, err := newTCPTransport(n.cfg.RaftListener, n.cfg.RaftAddress, n.cfg.RaftAdvertise, hlog)
		if err != nil {
			return err
		}
		addr, n.trans = trans.LocalAddr(), trans
	}
	existing, err := raft.HasExistingState(logs, logs, snaps)
	if err != nil {
		return fmt.Errorf("inspect raft state: %w", err)
	}
	r, err := raft.NewRaft(rc, n.fsm, logs, logs, snaps, n.trans)
	if err != nil {
		return fmt.Errorf("start raft: %w", err)
	}
	n.raft = r
	if existing {
		return nil
	}
	var servers []raft.Server
	switch {
	case !n.clustered():
		servers = []raft.Server{{ID: rc.LocalID, Address: addr}}
	case len(n.cfg.InitialCluster) > 0:
		self := false
		for _, p := range n.cfg.InitialCluster {
			servers = append(servers, raft.Server{ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.RaftAddress)})
			self = self || p.ID == n.cfg.NodeID
		}
		if !self {
			return fmt.Errorf("initial cluster does not list this node's id %q", n.cfg.NodeID)
		}
	default:
		n.log.Info("no Raft state and no initial cluster: waiting to be added as a voter", "raft_address", addr)
		return nil
	}
	f := r.BootstrapCluster(raft.Configuration{Servers: servers})
	if err := f.Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
		return fmt.Errorf("bootstrap raft: %w", err)
	}
	n.log.Info("bootstrapped a new controller cluster", "voters", len(servers), "dir", raftDir)
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
	start := time.Now()
	span := startApplySpan(ctx, t, len(data))
	f := n.raft.Apply(data, timeout)
	err = f.Error()
	endSpan(span, err)
	applyDuration.UpdateDuration(start)
	if err != nil {
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
		if n.stop != nil {
			close(n.stop)
		}
		if n.raft != nil {
			n.unregisterNodeMetrics()
			errs = append(errs, n.raft.Shutdown().Error())
		}
		n.wg.Wait()
		// Close pooled outbound connections too: the peers' handlers of
		// those connections only exit when they see them close.
		if nt, ok := n.trans.(*raft.NetworkTransport); ok {
			nt.CloseStreams()
		}
		if c, ok := n.trans.(io.Closer); ok && c != nil {
			errs = append(errs, c.Close())
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
