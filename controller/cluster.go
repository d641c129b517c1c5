package controller

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/hashicorp/raft"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/api/gen/streamhouse/v1/streamhousev1connect"
	"github.com/streamhouse/streamhouse/controller/fsm"
	"github.com/streamhouse/streamhouse/pkg/rpcerr"
)

// Cluster returns the node's ClusterService implementation.
func (n *Node) Cluster() streamhousev1connect.ClusterServiceHandler { return clusterService{n} }

type clusterService struct{ n *Node }

// Status answers with this node's own Raft view (it is a local procedure,
// so any voter answers, even without a leader). Its agents' heartbeat ages
// are the leader's memory: ask with ReadFromHeader set to ReadFromLeader to
// have a follower forward the request to the leader.
func (c clusterService) Status(ctx context.Context, req *connect.Request[v1.StatusRequest]) (*connect.Response[v1.StatusResponse], error) {
	n := c.n
	out := &v1.StatusResponse{NodeId: n.cfg.NodeID}
	_, leaderID := n.raft.LeaderWithID()
	out.LeaderId = string(leaderID)
	stats := n.raft.Stats()
	out.Term, _ = strconv.ParseUint(stats["term"], 10, 64)
	out.CommitIndex = n.raft.CommitIndex()
	out.AppliedIndex = n.raft.AppliedIndex()
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, connect.NewError(connect.CodeUnavailable, fmt.Errorf("read raft configuration: %w", err))
	}
	now := n.cfg.Now()
	// Heartbeats reach only the leader, and only those of its own term are
	// its own: a follower, or a heartbeat from an earlier term of this
	// node, reports -1 (not heard from since this leader took over).
	term, leading := n.raft.CurrentTerm(), n.IsLeader()
	n.fsm.Read(func(s *fsm.State) {
		for _, srv := range f.Configuration().Servers {
			out.Voters = append(out.Voters, &v1.Voter{
				Id: string(srv.ID), RaftAddress: string(srv.Address), ApiAddress: s.Controllers[string(srv.ID)],
				Leader: srv.ID == leaderID, Suffrage: srv.Suffrage.String(),
			})
		}
		held := map[string]int32{}
		for _, t := range s.Topics {
			for _, p := range t.Partitions {
				if p.LeaseValid(now.UnixMilli()) {
					held[p.Holder]++
				}
			}
		}
		n.mu.Lock()
		for id, ag := range s.Agents {
			st := &v1.AgentStatus{Id: id, Address: ag.Address, Zone: ag.Zone, Partitions: held[id], LastHeartbeatMsAgo: -1, Draining: ag.Draining}
			if at, ok := n.beats.heardThisTerm(id, term); ok && leading {
				st.LastHeartbeatMsAgo = max(now.Sub(at).Milliseconds(), 0)
			}
			out.Agents = append(out.Agents, st)
		}
		n.mu.Unlock()
	})
	sort.Slice(out.Agents, func(i, j int) bool { return out.Agents[i].Id < out.Agents[j].Id })
	if n.cfg.Gateways != nil {
		out.Gateways = n.cfg.Gateways()
	}
	return connect.NewResponse(out), nil
}

func (c clusterService) AddVoter(ctx context.Context, req *connect.Request[v1.AddVoterRequest]) (*connect.Response[v1.AddVoterResponse], error) {
	m := req.Msg
	if m.GetId() == "" || m.GetRaftAddress() == "" {
		return nil, invalid("add-voter needs the new controller's id and raft address")
	}
	if !c.n.clustered() {
		return nil, connect.NewError(connect.CodeFailedPrecondition, errors.New("this controller is a single in-memory voter (streamhouse dev); voters can only be added to a cluster of `streamhouse controller` processes"))
	}
	// A voter that cannot be reached would count toward the quorum at once
	// and could stall the cluster (a one-voter cluster would lose its leader).
	conn, err := net.DialTimeout("tcp", m.GetRaftAddress(), 3*time.Second)
	if err != nil {
		return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("cannot reach the new voter's raft address %s: %w; start it first", m.GetRaftAddress(), err))
	}
	conn.Close()
	if err := c.n.raft.AddVoter(raft.ServerID(m.GetId()), raft.ServerAddress(m.GetRaftAddress()), 0, 30*time.Second).Error(); err != nil {
		return nil, raftError("add voter", err)
	}
	if m.GetApiAddress() != "" {
		if _, err := c.n.apply(ctx, fsm.SetControllerType, fsm.SetController{ID: m.GetId(), APIAddress: m.GetApiAddress()}); err != nil {
			return nil, applyError("record controller address", err)
		}
	}
	c.n.log.InfoContext(ctx, "added voter", "id", m.GetId(), "raft_address", m.GetRaftAddress())
	return connect.NewResponse(&v1.AddVoterResponse{}), nil
}

func (c clusterService) RemoveVoter(ctx context.Context, req *connect.Request[v1.RemoveVoterRequest]) (*connect.Response[v1.RemoveVoterResponse], error) {
	id := req.Msg.GetId()
	if id == "" {
		return nil, invalid("remove-voter needs the controller's id")
	}
	f := c.n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, raftError("read configuration", err)
	}
	found := false
	for _, s := range f.Configuration().Servers {
		found = found || string(s.ID) == id
	}
	if !found {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("controller %q is not a voter", id))
	}
	if err := c.n.raft.RemoveServer(raft.ServerID(id), 0, 30*time.Second).Error(); err != nil {
		return nil, raftError("remove voter", err)
	}
	if _, err := c.n.apply(ctx, fsm.SetControllerType, fsm.SetController{ID: id}); err != nil {
		c.n.log.WarnContext(ctx, "forget removed controller's address", "id", id, "err", err)
	}
	c.n.log.InfoContext(ctx, "removed voter", "id", id)
	return connect.NewResponse(&v1.RemoveVoterResponse{}), nil
}

// Snapshot writes a Raft snapshot on this node (the leader, through the
// forwarding middleware) and compacts its log.
func (c clusterService) Snapshot(ctx context.Context, req *connect.Request[v1.SnapshotRequest]) (*connect.Response[v1.SnapshotResponse], error) {
	if err := c.n.Snapshot(); err != nil {
		return nil, connect.NewError(connect.CodeInternal, fmt.Errorf("snapshot: %w", err))
	}
	return connect.NewResponse(&v1.SnapshotResponse{Index: c.n.raft.AppliedIndex()}), nil
}

// DrainAgent marks an agent draining or not.
func (c clusterService) DrainAgent(ctx context.Context, req *connect.Request[v1.DrainAgentRequest]) (*connect.Response[v1.DrainAgentResponse], error) {
	id := req.Msg.GetAgentId()
	if id == "" {
		return nil, invalid("drain needs the agent's id (see ClusterService.Status)")
	}
	res, err := c.n.apply(ctx, fsm.SetDrainingType, fsm.SetDraining{AgentID: id, Draining: !req.Msg.GetUndrain()})
	if err == nil {
		err, _ = res.(error)
	}
	if err != nil {
		return nil, applyError("drain agent", err)
	}
	c.n.log.InfoContext(ctx, "agent drain changed", "agent", id, "draining", !req.Msg.GetUndrain())
	return connect.NewResponse(&v1.DrainAgentResponse{}), nil
}

// ReleasePartition takes a lease away at once and hands the partition to a
// live agent (with a new epoch, which fences the old holder).
func (c clusterService) ReleasePartition(ctx context.Context, req *connect.Request[v1.ReleasePartitionRequest]) (*connect.Response[v1.ReleasePartitionResponse], error) {
	m := req.Msg
	if err := ValidateTopicName(m.GetTopic()); err != nil {
		return nil, invalid("%v", err)
	}
	res, err := c.n.apply(ctx, fsm.ForceReleaseType, fsm.ForceRelease{Topic: m.GetTopic(), Partition: m.GetPartition()})
	if err == nil {
		err, _ = res.(error)
	}
	if err != nil {
		return nil, applyError("release partition", err)
	}
	prev, _ := res.(string)
	c.n.log.WarnContext(ctx, "lease released by an operator", "topic", m.GetTopic(), "partition", m.GetPartition(), "previous_holder", prev)
	if err := c.n.assignFree(ctx); err != nil {
		c.n.log.WarnContext(ctx, "hand the partition to an agent; it is taken at the next heartbeat", "err", err)
	}
	return connect.NewResponse(&v1.ReleasePartitionResponse{PreviousHolder: prev}), nil
}

func raftError(op string, err error) error {
	if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
		return connect.NewError(connect.CodeUnavailable, fmt.Errorf("%s: %w: %v", op, errNotLeader, err))
	}
	return connect.NewError(connect.CodeInternal, fmt.Errorf("%s: %w", op, err))
}

// forwardedHeader marks a request a follower forwarded, so a node that is
// not the leader either never forwards it twice.
const forwardedHeader = "Streamhouse-Forwarded-By"

// localProcedures are answered by whichever node receives them, unless
// the request asks for the leader (ReadFromHeader).
var localProcedures = map[string]bool{
	streamhousev1connect.ClusterServiceStatusProcedure: true,
}

// ReadFromHeader set to ReadFromLeader on a request to a local procedure
// (ClusterService.Status) has a follower forward it to the leader like any
// other RPC, for answers that only the leader's memory holds: the agents'
// heartbeat ages (`shctl agents list`). Without a known leader the answer
// is Unavailable.
const (
	ReadFromHeader = "Streamhouse-Read-From"
	ReadFromLeader = "leader"
)

// ForwardToLeader wraps the node's API handler: a request to a node that is
// not the Raft leader is proxied, whole and unchanged, to the leader's API
// address. This is the one place forwarding happens, for every RPC; the
// handlers behind it can assume they run on the leader. While no leader is
// known the request is held for up to Config.LeaderWait (or its own
// deadline); after that the answer is Unavailable, marked not applied, which
// clients retry.
func (n *Node) ForwardToLeader(next http.Handler) http.Handler {
	transport := &http.Transport{}
	protocols := new(http.Protocols)
	protocols.SetUnencryptedHTTP2(true)
	transport.Protocols = protocols
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		local := localProcedures[r.URL.Path] && r.Header.Get(ReadFromHeader) != ReadFromLeader
		if !strings.HasPrefix(r.URL.Path, "/streamhouse.v1.") || local {
			next.ServeHTTP(w, r)
			return
		}
		if by := r.Header.Get(forwardedHeader); by != "" && !n.IsLeader() {
			// One hop only: two nodes with stale views of the leader must
			// not bounce a request between them.
			writeNotApplied(w, r, fmt.Errorf("controller %s forwarded this request here as to the leader, but leadership has moved on; retry", by))
			return
		}
		leader, self := n.awaitLeader(r.Context())
		if self {
			next.ServeHTTP(w, r)
			return
		}
		if leader == "" {
			writeNotApplied(w, r, fmt.Errorf("no controller leader is known (waited up to %v for an election); retry", n.cfg.LeaderWait))
			return
		}
		target := &url.URL{Scheme: "http", Host: leader}
		proxy := &httputil.ReverseProxy{
			Rewrite: func(pr *httputil.ProxyRequest) {
				pr.SetURL(target)
				pr.Out.Header.Set(forwardedHeader, n.cfg.NodeID)
			},
			Transport:     transport,
			FlushInterval: -1, // stream every message (RoutesService.Watch) at once
			ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
				writeUnavailable(w, r, fmt.Sprintf("forward to leader at %s: %v", leader, err))
			},
		}
		proxy.ServeHTTP(w, r)
	})
}

// awaitLeader returns where a request should go: to this node (self), or
// to the leader's API address. While neither is known it checks again
// every 20 ms, for up to Config.LeaderWait or until ctx ends or the node
// stops, and then returns "" and false.
func (n *Node) awaitLeader(ctx context.Context) (addr string, self bool) {
	if addr, self, ok := n.leaderNow(); ok || n.cfg.LeaderWait <= 0 {
		return addr, self
	}
	n.awaitingLeader.Add(1)
	defer n.awaitingLeader.Add(-1)
	deadline := time.NewTimer(n.cfg.LeaderWait)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return "", false
		case <-deadline.C:
			return "", false
		case <-n.stop:
			return "", false
		case <-tick.C:
		}
		if addr, self, ok := n.leaderNow(); ok {
			return addr, self
		}
	}
}

// leaderNow reports whether this node leads (self) or else the leader's API
// address; ok is false while neither is known.
func (n *Node) leaderNow() (addr string, self, ok bool) {
	if n.IsLeader() {
		return "", true, true
	}
	addr = n.LeaderAPIAddress()
	return addr, false, addr != ""
}

// writeNotApplied answers with a Connect Unavailable error marked not
// applied (rpcerr.NotApplied: safe for any client to retry), in the
// request's protocol.
func writeNotApplied(w http.ResponseWriter, r *http.Request, err error) {
	_ = connect.NewErrorWriter().Write(w, r, rpcerr.NotApplied(connect.CodeUnavailable, err))
}

// writeUnavailable answers with a Connect Unavailable error in the
// request's protocol (a connect.ErrorWriter picks the format).
func writeUnavailable(w http.ResponseWriter, r *http.Request, msg string) {
	ew := connect.NewErrorWriter()
	_ = ew.Write(w, r, connect.NewError(connect.CodeUnavailable, errors.New(msg)))
}

// verifyLeader makes a read linearizable: it confirms with a quorum that
// this node still leads before the caller reads local state.
func (n *Node) verifyLeader() error {
	if err := n.raft.VerifyLeader().Error(); err != nil {
		return connect.NewError(connect.CodeUnavailable, fmt.Errorf("confirm leadership for a linearizable read: %w", err))
	}
	return nil
}
