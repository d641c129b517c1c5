package controller

import (
	"context"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
)

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// TestWALHandoff: a wal partition whose holder vanished waits
// wal_handoff_timeout for it (a restarted holder gets it back, with a new
// epoch); only after the timeout does another agent get it. A durable
// partition moves as soon as the lease lapses.
func TestWALHandoff(t *testing.T) {
	clk := &fakeClock{now: time.Unix(1_000_000, 0)}
	n, err := Open(context.Background(), Config{DataDir: t.TempDir(), Now: clk.Now, LeaseDuration: 10 * time.Second, WALHandoffTimeout: 60 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		d    v1.Durability
	}{{"w", v1.Durability_DURABILITY_WAL}, {"d", v1.Durability_DURABILITY_DURABLE}} {
		if _, err := n.Admin().CreateTopic(ctx, connect.NewRequest(&v1.CreateTopicRequest{Name: tc.name, Partitions: 1, Durability: tc.d})); err != nil {
			t.Fatal(err)
		}
	}
	hb := func(agent, inc string) map[string]int64 {
		t.Helper()
		res, err := n.Controller().Heartbeat(ctx, connect.NewRequest(&v1.HeartbeatRequest{AgentId: agent, Incarnation: inc, Address: agent,
			Progress: []*v1.PartitionProgress{{Topic: "w", Partition: 0, WalEndOffset: 42}}}))
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]int64{}
		for _, l := range res.Msg.Leases {
			out[l.Topic.Name] = l.Epoch
		}
		return out
	}
	if got := hb("a", "1"); len(got) != 2 {
		t.Fatalf("a holds %v, want both partitions", got)
	}
	hb("b", "1")
	clk.Advance(11 * time.Second) // a's leases lapse; b is alive
	got := hb("b", "1")
	if _, ok := got["w"]; ok {
		t.Fatalf("b got the wal partition before the handoff timeout: %v", got)
	}
	if _, ok := got["d"]; !ok {
		t.Fatalf("b did not get the durable partition after its lease lapsed: %v", got)
	}
	clk.Advance(20 * time.Second)
	hb("b", "1")
	if got := hb("a", "2"); got["w"] != 2 { // a restarted in time: it keeps the partition, new epoch
		t.Fatalf("restarted holder got %v, want the wal partition at epoch 2", got)
	}
	clk.Advance(11 * time.Second) // a vanishes again
	hb("b", "1")
	clk.Advance(30 * time.Second)
	if got := hb("b", "1"); got["w"] != 0 {
		t.Fatalf("b got the wal partition %v before the timeout", got)
	}
	before := uncleanHandoffs.Get()
	clk.Advance(31 * time.Second)
	if got := hb("b", "1"); got["w"] != 3 {
		t.Fatalf("after the handoff timeout b holds %v, want the wal partition at epoch 3", got)
	}
	if uncleanHandoffs.Get() != before+1 {
		t.Fatalf("unclean handoffs counted %d, want %d", uncleanHandoffs.Get(), before+1)
	}
}

// TestSpreadByZone: free partitions go to the least loaded zone first, then
// the least loaded agent in it.
func TestSpreadByZone(t *testing.T) {
	clk := &fakeClock{now: time.Unix(1_000_000, 0)}
	n, err := Open(context.Background(), Config{DataDir: t.TempDir(), Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	ctx := context.Background()
	hb := func(agent, zone string) int {
		t.Helper()
		res, err := n.Controller().Heartbeat(ctx, connect.NewRequest(&v1.HeartbeatRequest{AgentId: agent, Incarnation: "1", Address: agent, Zone: zone}))
		if err != nil {
			t.Fatal(err)
		}
		return len(res.Msg.Leases)
	}
	// Zone a has two agents, zone b one: b's agent should get half.
	hb("a1", "a")
	hb("a2", "a")
	hb("b1", "b")
	if _, err := n.Admin().CreateTopic(ctx, connect.NewRequest(&v1.CreateTopicRequest{Name: "z", Partitions: 12})); err != nil {
		t.Fatal(err)
	}
	got := map[string]int{"a1": hb("a1", "a"), "a2": hb("a2", "a"), "b1": hb("b1", "b")}
	if got["b1"] != 6 || got["a1"]+got["a2"] != 6 || got["a1"] != 3 {
		t.Fatalf("leases by agent = %v, want zone b's one agent 6 and zone a's two agents 3 each", got)
	}
}
