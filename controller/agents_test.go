package controller

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/api/gen/streamhouse/v1/streamhousev1connect"
)

// heartbeatAges maps agent id to StatusResponse's last_heartbeat_ms_ago.
func heartbeatAges(st *v1.StatusResponse) map[string]int64 {
	out := map[string]int64{}
	for _, a := range st.GetAgents() {
		out[a.GetId()] = a.GetLastHeartbeatMsAgo()
	}
	return out
}

// TestAgentListHeartbeatAge: the agent list shows the age of every agent's
// last heartbeat, also once the agent has been silent for longer than a
// lease (it is no longer live for lease planning, which moves its
// partitions, but the leader has heard from it and says when). An agent
// that shut down cleanly (released all its leases) is forgotten.
func TestAgentListHeartbeatAge(t *testing.T) {
	clk := &fakeClock{now: time.Unix(1_000_000, 0)}
	n, err := Open(context.Background(), Config{DataDir: t.TempDir(), Now: clk.Now, LeaseDuration: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	ctx := context.Background()
	if _, err := n.Admin().CreateTopic(ctx, connect.NewRequest(&v1.CreateTopicRequest{Name: "d", Partitions: 2})); err != nil {
		t.Fatal(err)
	}
	hb := func(agent string) int {
		t.Helper()
		res, err := n.Controller().Heartbeat(ctx, connect.NewRequest(&v1.HeartbeatRequest{AgentId: agent, Incarnation: "1", Address: agent}))
		if err != nil {
			t.Fatal(err)
		}
		return len(res.Msg.Leases)
	}
	status := func() map[string]int64 {
		t.Helper()
		st, err := n.Cluster().Status(ctx, connect.NewRequest(&v1.StatusRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		return heartbeatAges(st.Msg)
	}
	if got := hb("a1"); got != 2 {
		t.Fatalf("a1 holds %d partitions, want 2", got)
	}
	clk.Advance(time.Second)
	if got := hb("a2"); got != 0 {
		t.Fatalf("a2 holds %d partitions while a1's leases are valid, want 0", got)
	}
	if got := status(); got["a1"] != 1000 || got["a2"] != 0 {
		t.Fatalf("heartbeat ages = %v, want a1 1000 ms, a2 0 ms", got)
	}

	// a1 goes silent for longer than a lease: a2's next heartbeat takes its
	// partitions (a1 is not live for planning), and the list still says
	// how long ago a1 was heard from.
	clk.Advance(11 * time.Second)
	if got := hb("a2"); got != 2 {
		t.Fatalf("a2 holds %d partitions after a1's leases lapsed, want 2", got)
	}
	if got := status(); got["a1"] != 12000 || got["a2"] != 0 {
		t.Fatalf("heartbeat ages after a1 went silent = %v, want a1 12000 ms, a2 0 ms", got)
	}
	var m bytes.Buffer
	n.writeHeartbeatAges(&m)
	for _, want := range []string{`streamhouse_controller_agent_heartbeat_age_seconds{agent="a1"} 12`, `streamhouse_controller_agent_heartbeat_age_seconds{agent="a2"} 0`} {
		if !strings.Contains(m.String(), want+"\n") {
			t.Errorf("heartbeat age metric lacks %q:\n%s", want, m.String())
		}
	}

	// a1 comes back: it is live again and may be given partitions.
	clk.Advance(time.Second)
	hb("a1")
	if got := status(); got["a1"] != 0 || got["a2"] != 1000 {
		t.Fatalf("heartbeat ages after a1 came back = %v, want a1 0 ms, a2 1000 ms", got)
	}

	// a2 shuts down cleanly: it releases everything and is forgotten.
	if _, err := n.Controller().ReleaseLeases(ctx, connect.NewRequest(&v1.ReleaseLeasesRequest{AgentId: "a2", Incarnation: "1"})); err != nil {
		t.Fatal(err)
	}
	if got := status(); got["a2"] != -1 || got["a1"] != 0 {
		t.Fatalf("heartbeat ages after a2 released its leases = %v, want a2 -1 (forgotten), a1 0 ms", got)
	}
	if got := hb("a1"); got != 2 {
		t.Fatalf("a1 holds %d partitions after a2 left, want 2", got)
	}
}

// TestAgentListAnsweredByLeader: heartbeats live in the leader's memory, so
// the agent list is the leader's answer even when a follower is asked
// (Status with the read-from-leader header goes through the one forwarding
// middleware); a plain Status stays the asked node's own view. A new leader
// shows "not heard from" (-1) for an agent until the agent's first
// heartbeat to it.
func TestAgentListAnsweredByLeader(t *testing.T) {
	ms, _ := startThree(t)
	waitLeaderKnown(t, ms)
	hc := h2cClient()
	defer hc.CloseIdleConnections()
	ctx := context.Background()
	url := func(m *member) string { return "http://" + m.srv.Listener.Addr().String() }
	followerOf := func() *member {
		for _, m := range ms {
			if m.node != nil && !m.node.IsLeader() {
				return m
			}
		}
		return nil
	}
	var leader, follower *member
	heartbeat := func(via *member) error {
		ctl := streamhousev1connect.NewControllerServiceClient(hc, url(via))
		_, err := ctl.Heartbeat(ctx, connect.NewRequest(&v1.HeartbeatRequest{AgentId: "a1", Incarnation: "1", Address: "127.0.0.1:1"}))
		return err
	}
	status := func(via *member, fromLeader bool) (*v1.StatusResponse, error) {
		return clusterStatus(ctx, streamhousev1connect.NewClusterServiceClient(hc, url(via)), fromLeader)
	}
	// Under -race on a loaded machine the leader can change between two
	// steps (its lease is 250 ms), so each check is retried against the
	// leader of the moment; what must never happen is an answer from a
	// node that is not the leader, or no heartbeat age from the leader.
	var last string // the last answer seen, reported if the test fails
	defer func() {
		if t.Failed() {
			t.Logf("last answer: %s", last)
		}
	}()
	// leaderAnswer asks f for the leader's status: the leader of the moment
	// and its answer, or nil when there is none or another node answered.
	leaderAnswer := func(f *member) (*member, *v1.StatusResponse) {
		l := leaderOf(ms)
		if l == nil || f == nil {
			return nil, nil
		}
		st, err := status(f, true)
		if err != nil {
			last = err.Error()
			return nil, nil
		}
		last = fmt.Sprintf("answered by %s (leader %s), agents %v", st.NodeId, l.id, st.Agents)
		if st.NodeId != l.id || leaderOf(ms) != l {
			return nil, nil
		}
		return l, st
	}
	waitFor(t, 10*time.Second, "the leader's heartbeat age for a1, asked through a follower", func() bool {
		follower = followerOf()
		if follower == nil || heartbeat(follower) != nil {
			return false
		}
		l, st := leaderAnswer(follower)
		if l == nil || heartbeatAges(st)["a1"] < 0 {
			return false
		}
		leader = l
		return true
	})
	t.Logf("through follower %s: %s", follower.id, last)
	// Without the header the follower answers with its own Raft view, and
	// it has no heartbeats to report.
	st, err := status(follower, false)
	if err != nil {
		t.Fatalf("status of a follower: %v", err)
	}
	// (The follower lists the agents its FSM has applied so far, which may
	// not include a1 yet.)
	if age, ok := heartbeatAges(st)["a1"]; st.NodeId != follower.id || (ok && age != -1) {
		t.Fatalf("local status of follower %s: answered by %s (leader %s), agents %v; want the follower, and -1 for a1 if listed",
			follower.id, st.NodeId, st.LeaderId, st.Agents)
	}

	// A new leader has not heard from a1 yet: -1 until a1's next heartbeat.
	leader.stop()
	var next *member
	waitFor(t, 10*time.Second, "a new leader answering through a follower", func() bool {
		f := followerOf()
		l, _ := leaderAnswer(f)
		if l == nil || l == leader {
			return false
		}
		next, follower = l, f
		return true
	})
	st, err = status(follower, true)
	if err != nil {
		t.Fatal(err)
	}
	if got := heartbeatAges(st); st.NodeId != next.id || got["a1"] != -1 {
		t.Fatalf("new leader %s (answered by %s): heartbeat ages %v, want -1 for a1 before it heartbeats to the new leader", next.id, st.NodeId, got)
	}
	waitFor(t, 10*time.Second, "an age for a1 from the new leader after a1's heartbeat", func() bool {
		if heartbeat(follower) != nil {
			return false
		}
		l, st := leaderAnswer(follower)
		return l != nil && heartbeatAges(st)["a1"] >= 0
	})
}
