package controller

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/api/gen/streamhouse/v1/streamhousev1connect"
	"github.com/streamhouse/streamhouse/controller/fsm"
	"github.com/streamhouse/streamhouse/pkg/rpcerr"
)

// member is one voter of a test cluster, with its API served over h2c.
type member struct {
	id      string
	dir     string
	raftLn  net.Listener
	node    *Node
	srv     *httptest.Server
	handler *swapHandler
	// leaderWait is the node's Config.LeaderWait; zero: 20s (see start).
	leaderWait time.Duration
}

type swapHandler struct {
	mu sync.Mutex
	h  http.Handler
}

func (s *swapHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	h := s.h
	s.mu.Unlock()
	if h == nil {
		http.Error(w, "starting", http.StatusServiceUnavailable)
		return
	}
	h.ServeHTTP(w, r)
}

func apiHandler(n *Node) http.Handler {
	mux := http.NewServeMux()
	mux.Handle(streamhousev1connect.NewAdminServiceHandler(n.Admin()))
	mux.Handle(streamhousev1connect.NewControllerServiceHandler(n.Controller()))
	mux.Handle(streamhousev1connect.NewClusterServiceHandler(n.Cluster()))
	return n.ForwardToLeader(mux)
}

func newMember(t *testing.T, id string) *member {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := &member{id: id, dir: t.TempDir(), raftLn: ln, handler: &swapHandler{}}
	m.srv = httptest.NewUnstartedServer(m.handler)
	m.srv.EnableHTTP2 = true
	m.srv.Config.Protocols = new(http.Protocols)
	m.srv.Config.Protocols.SetHTTP1(true)
	m.srv.Config.Protocols.SetUnencryptedHTTP2(true)
	m.srv.Start()
	return m
}

func (m *member) start(t *testing.T, peers []Peer) {
	t.Helper()
	if m.raftLn == nil {
		ln, err := net.Listen("tcp", peerAddr(peers, m.id))
		if err != nil {
			t.Fatalf("rebind raft port of %s: %v", m.id, err)
		}
		m.raftLn = ln
	}
	// A generous LeaderWait by default: an election on a loaded machine
	// (CI, -race) may take more than the default 5s, and a request held
	// through it must not fail the test. TestNoLeaderUnavailableAfterWait
	// sets a short one to see what happens when the wait runs out.
	wait := m.leaderWait
	if wait == 0 {
		wait = 20 * time.Second
	}
	n, err := Open(context.Background(), Config{NodeID: m.id, DataDir: m.dir, RaftListener: m.raftLn,
		APIAddress: m.srv.Listener.Addr().String(), InitialCluster: peers, LeaderWait: wait})
	if err != nil {
		t.Fatal(err)
	}
	m.node = n
	m.handler.mu.Lock()
	m.handler.h = apiHandler(n)
	m.handler.mu.Unlock()
}

func (m *member) stop() {
	if m.node != nil {
		m.handler.mu.Lock()
		m.handler.h = nil
		m.handler.mu.Unlock()
		m.node.Close()
		m.node = nil
		m.raftLn = nil // closed by the transport
	}
}

func peerAddr(peers []Peer, id string) string {
	for _, p := range peers {
		if p.ID == id {
			return p.RaftAddress
		}
	}
	return ""
}

func h2cClient() *http.Client {
	tr := &http.Transport{}
	tr.Protocols = new(http.Protocols)
	tr.Protocols.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: tr}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > d {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

func leaderOf(ms []*member) *member {
	for _, m := range ms {
		if m.node != nil && m.node.IsLeader() {
			return m
		}
	}
	return nil
}

// waitLeaderKnown waits until ms has a leader whose API address every
// member knows (so forwarding to it works).
func waitLeaderKnown(t *testing.T, ms []*member) {
	t.Helper()
	waitFor(t, 10*time.Second, "a leader whose address followers know", func() bool {
		l := leaderOf(ms)
		if l == nil {
			return false
		}
		for _, m := range ms {
			if m.node.LeaderAPIAddress() != l.srv.Listener.Addr().String() {
				return false
			}
		}
		return true
	})
}

// TestThreeVoterCluster: a real Raft cluster of three over TCP elects a
// leader, replicates topics to every voter, forwards writes sent to a
// follower, survives the loss of its leader (measuring the time to a new
// one), and adds and removes voters.
func TestThreeVoterCluster(t *testing.T) {
	ms, peers := startThree(t)
	waitLeaderKnown(t, ms)
	hc := h2cClient()
	defer hc.CloseIdleConnections()
	var follower *member
	for _, m := range ms {
		if !m.node.IsLeader() {
			follower = m
		}
	}
	ctx := context.Background()
	admin := streamhousev1connect.NewAdminServiceClient(hc, "http://"+follower.srv.Listener.Addr().String(), connect.WithGRPC())
	if _, err := admin.CreateTopic(ctx, connect.NewRequest(&v1.CreateTopicRequest{Name: "orders", Partitions: 4})); err != nil {
		t.Fatalf("create topic through a follower: %v", err)
	}
	if _, err := admin.CreateTopic(ctx, connect.NewRequest(&v1.CreateTopicRequest{Name: "orders", Partitions: 4})); connect.CodeOf(err) != connect.CodeAlreadyExists {
		t.Fatalf("duplicate create through a follower = %v, want AlreadyExists", err)
	}
	waitFor(t, 5*time.Second, "the topic on every voter", func() bool {
		for _, m := range ms {
			var ok bool
			m.node.fsm.Read(func(s *fsm.State) { _, ok = s.Topics["orders"] })
			if !ok {
				return false
			}
		}
		return true
	})

	// Kill the leader; the other two elect a new one.
	old := leaderOf(ms)
	old.stop()
	took := waitFor(t, 10*time.Second, "a new leader", func() bool { l := leaderOf(ms); return l != nil && l != old })
	t.Logf("new leader %s elected %v after the old one stopped", leaderOf(ms).id, took)
	if took > 3*time.Second {
		t.Errorf("new leader took %v, want at most 3s", took)
	}
	survivor := leaderOf(ms)
	admin = streamhousev1connect.NewAdminServiceClient(hc, "http://"+survivor.srv.Listener.Addr().String())
	d, err := admin.DescribeTopic(ctx, connect.NewRequest(&v1.DescribeTopicRequest{Name: "orders"}))
	if err != nil || len(d.Msg.Partitions) != 4 {
		t.Fatalf("describe on the new leader: %v %v", d, err)
	}
	// The old leader comes back with its data and catches up.
	old.start(t, peers)
	if _, err := admin.CreateTopic(ctx, connect.NewRequest(&v1.CreateTopicRequest{Name: "later", Partitions: 1})); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the restarted voter to catch up", func() bool {
		var ok bool
		old.node.fsm.Read(func(s *fsm.State) { _, ok = s.Topics["later"] })
		return ok
	})

	// Add a fourth voter (joins with no initial cluster), then remove it.
	c4 := newMember(t, "c4")
	t.Cleanup(func() { c4.stop(); c4.srv.Close() })
	c4.start(t, nil)
	cluster := streamhousev1connect.NewClusterServiceClient(hc, "http://"+follower.srv.Listener.Addr().String())
	if _, err := cluster.AddVoter(ctx, connect.NewRequest(&v1.AddVoterRequest{Id: "c4", RaftAddress: c4.raftLn.Addr().String(), ApiAddress: c4.srv.Listener.Addr().String()})); err != nil {
		t.Fatalf("add voter: %v", err)
	}
	waitFor(t, 10*time.Second, "the new voter to receive the log", func() bool {
		var ok bool
		c4.node.fsm.Read(func(s *fsm.State) { _, ok = s.Topics["later"] })
		return ok
	})
	// A follower answers Status from its own copy of the configuration,
	// which trails the leader's; ask the leader for the committed view.
	st, err := clusterStatus(ctx, cluster, true)
	if err != nil || len(st.Voters) != 4 || st.LeaderId == "" || st.Term == 0 {
		t.Fatalf("status with 4 voters: %v %v", st, err)
	}
	if _, err := cluster.RemoveVoter(ctx, connect.NewRequest(&v1.RemoveVoterRequest{Id: "c4"})); err != nil {
		t.Fatalf("remove voter: %v", err)
	}
	if _, err := cluster.RemoveVoter(ctx, connect.NewRequest(&v1.RemoveVoterRequest{Id: "nope"})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("remove unknown voter = %v, want NotFound", err)
	}
	st, err = clusterStatus(ctx, cluster, true)
	if err != nil || len(st.Voters) != 3 {
		t.Fatalf("leader's status after removal: %v %v", st, err)
	}
	// The follower learns of the removal when the entry reaches it.
	waitFor(t, 10*time.Second, "the follower to see 3 voters", func() bool {
		st, err := clusterStatus(ctx, cluster, false)
		return err == nil && len(st.Voters) == 3
	})
}

// clusterStatus asks cc for ClusterService.Status: the answering node's own
// view, or with fromLeader the leader's (ReadFromHeader).
func clusterStatus(ctx context.Context, cc streamhousev1connect.ClusterServiceClient, fromLeader bool) (*v1.StatusResponse, error) {
	req := connect.NewRequest(&v1.StatusRequest{})
	if fromLeader {
		req.Header().Set(ReadFromHeader, ReadFromLeader)
	}
	res, err := cc.Status(ctx, req)
	if err != nil {
		return nil, err
	}
	return res.Msg, nil
}

// startThree starts a three-voter cluster of members, stopped at the end of
// the test, and returns them with the initial cluster.
func startThree(t *testing.T) ([]*member, []Peer) {
	ms := []*member{newMember(t, "c1"), newMember(t, "c2"), newMember(t, "c3")}
	var peers []Peer
	for _, m := range ms {
		peers = append(peers, Peer{ID: m.id, RaftAddress: m.raftLn.Addr().String()})
	}
	for _, m := range ms {
		m.start(t, peers)
	}
	t.Cleanup(func() {
		for _, m := range ms {
			m.stop()
			m.srv.Close()
		}
	})
	return ms, peers
}

// TestFollowerHoldsRequestsWithoutLeader: a request that reaches a follower
// while no leader is known is held (Config.LeaderWait) and completes once an
// election brings one, instead of failing; with no leader for the whole
// wait it fails Unavailable, marked not applied.
func TestFollowerHoldsRequestsWithoutLeader(t *testing.T) {
	ms, peers := startThree(t)
	waitLeaderKnown(t, ms)
	var survivor *member
	var gone []*member
	for _, m := range ms {
		if survivor == nil && !m.node.IsLeader() {
			survivor = m
		} else {
			gone = append(gone, m)
		}
	}
	// Quorum lost: the survivor forgets the leader after its heartbeat timeout.
	for _, m := range gone {
		m.stop()
	}
	waitFor(t, 10*time.Second, "the survivor to know no leader", func() bool {
		return survivor.node.LeaderAPIAddress() == "" && !survivor.node.IsLeader()
	})
	hc := h2cClient()
	defer hc.CloseIdleConnections()
	admin := streamhousev1connect.NewAdminServiceClient(hc, "http://"+survivor.srv.Listener.Addr().String())

	// A request with a deadline shorter than the wait ends at its deadline.
	short, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	_, err := admin.CreateTopic(short, connect.NewRequest(&v1.CreateTopicRequest{Name: "early", Partitions: 1}))
	cancel()
	if connect.CodeOf(err) != connect.CodeDeadlineExceeded {
		t.Fatalf("create with a 200ms deadline and no leader = %v, want DeadlineExceeded", err)
	}
	waitFor(t, 10*time.Second, "the cancelled request to be let go", func() bool { return survivor.node.awaitingLeader.Load() == 0 })

	// A request held while the election happens completes.
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, err := admin.CreateTopic(ctx, connect.NewRequest(&v1.CreateTopicRequest{Name: "held", Partitions: 1}))
		done <- err
	}()
	waitFor(t, 10*time.Second, "the request to be held", func() bool { return survivor.node.awaitingLeader.Load() == 1 })
	gone[0].start(t, peers)
	if err := <-done; err != nil {
		t.Fatalf("create held through an election: %v", err)
	}
	if n := survivor.node.awaitingLeader.Load(); n != 0 {
		t.Errorf("%d requests still counted as held", n)
	}
}

// TestNoLeaderUnavailableAfterWait: without any leader for the whole of
// Config.LeaderWait, a follower answers Unavailable marked not applied.
func TestNoLeaderUnavailableAfterWait(t *testing.T) {
	ms := []*member{newMember(t, "c1"), newMember(t, "c2")}
	peers := []Peer{{ID: "c1", RaftAddress: ms[0].raftLn.Addr().String()}, {ID: "c2", RaftAddress: ms[1].raftLn.Addr().String()}}
	// Only c1 of a two-voter cluster runs: it can never elect a leader.
	ms[1].raftLn.Close()
	ms[0].leaderWait = 300 * time.Millisecond
	ms[0].start(t, peers)
	t.Cleanup(func() { ms[0].stop(); ms[0].srv.Close(); ms[1].srv.Close() })

	hc := h2cClient()
	defer hc.CloseIdleConnections()
	admin := streamhousev1connect.NewAdminServiceClient(hc, "http://"+ms[0].srv.Listener.Addr().String())
	start := time.Now()
	_, err := admin.CreateTopic(context.Background(), connect.NewRequest(&v1.CreateTopicRequest{Name: "t", Partitions: 1}))
	if connect.CodeOf(err) != connect.CodeUnavailable || !rpcerr.IsNotApplied(err) || !strings.Contains(err.Error(), "no controller leader") {
		t.Fatalf("create with no leader = %v, want Unavailable, not applied, naming the missing leader", err)
	}
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Errorf("answered after %v, before the 300ms LeaderWait", took)
	}
}
