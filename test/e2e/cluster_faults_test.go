package e2e

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/api/gen/streamhouse/v1/streamhousev1connect"
	"github.com/streamhouse/streamhouse/pkg/client"
)

// TestZombieAgent: an agent frozen with SIGSTOP until its leases move to
// others, then resumed, must not get anything it writes late accepted or
// seen: its commits are fenced, its appends refused, and the history checks.
func TestZombieAgent(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 8 processes; not in -short")
	}
	const lease = 3 * time.Second
	// A 1 s flush interval, so the zombie is frozen with data it has not
	// committed yet, and tries to commit it when it wakes.
	c := startCluster(t, clusterOpts{lease: lease, agentArgs: []string{"--flush-interval", "1s"}})
	const partitions = 6
	cl := newClients(t, c.gateways[0].URL)
	createTopic(t, cl, "z", partitions, v1.Durability_DURABILITY_DURABLE)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	l := startLoad(t, ctx, c, "z", client.BatchBytes(8<<10), client.RequestTimeout(5*time.Second), client.Acks(v1.Acks_ACKS_DURABLE))

	zombie := c.agents[0]
	owned := heldBy(t, cl, "z", zombie.Addr)
	zombie.Pause()
	took := waitMoved(t, cl, "z", zombie.Addr, owned, 3*lease+5*time.Second)
	t.Logf("agent frozen holding %v: partitions moved after %v (lease %v)", owned, took, lease)
	l.waitAcks(2000)
	zombie.Resume()
	// Its late commit is rejected: the controllers count a fenced commit.
	for start := time.Now(); c.fencedCommits() == 0; {
		if time.Since(start) > 15*time.Second {
			t.Fatal("the resumed zombie's commit was never fenced")
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("the zombie's late commit was fenced (%d fenced sections)", c.fencedCommits())
	l.waitAcks(3000)
	res := l.stopAndCheck(partitions)
	if res.Acked == 0 {
		t.Fatal("nothing acknowledged")
	}
	for _, p := range describe(t, cl, "z").Partitions {
		if p.LeaderAddress == zombie.Addr {
			for _, o := range owned {
				if o == p.Partition {
					t.Errorf("partition %d went back to the zombie without a new grant", p.Partition)
				}
			}
		}
	}
	if log := zombie.Stderr(); !strings.Contains(log, "dropped partition") {
		t.Errorf("the zombie never dropped its partitions; stderr:\n%s", tailString(log, 3000))
	}
}

// TestRollingRestart: every agent in turn gets SIGTERM under load and is
// started again. Producers see no failure they could not retry (zero
// unknown outcomes) and nothing is lost; each agent's partitions accept
// writes elsewhere within 2 s.
func TestRollingRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 8 processes; not in -short")
	}
	c := startCluster(t, clusterOpts{lease: 10 * time.Second})
	const partitions = 6
	cl := newClients(t, c.gateways[0].URL)
	createTopic(t, cl, "r", partitions, v1.Durability_DURABILITY_DURABLE)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	l := startLoad(t, ctx, c, "r", client.BatchBytes(8<<10))
	for i, a := range c.agents {
		owned := heldBy(t, cl, "r", a.Addr)
		a.Terminate()
		took := waitMoved(t, cl, "r", a.Addr, owned, 10*time.Second)
		a.WaitExit()
		t.Logf("agent %d SIGTERM holding %v: partitions held by other agents %v after SIGTERM", i, owned, took)
		if code := a.ExitCode(); code != 0 {
			t.Errorf("agent %d exited %d after SIGTERM", i, code)
		}
		if took > 2*time.Second {
			t.Errorf("handoff took %v, target 2s; agent log:\n%s", took, tailString(a.Stderr(), 4000))
		}
		l.waitAcks(2000)
		a.Restart()
		l.waitAcks(1000)
	}
	res := l.stopAndCheck(partitions)
	if res.Failed != 0 {
		t.Errorf("%d records failed with an unknown outcome during a rolling restart; want 0", res.Failed)
	}
}

// TestWALAgentRestartKeepsData: an agent of a wal topic is SIGKILLed with
// acknowledged records it has not uploaded, and restarted within
// wal_handoff_timeout: it gets its partitions back and uploads them; no
// acknowledged record is lost.
func TestWALAgentRestartKeepsData(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 8 processes; not in -short")
	}
	c := startCluster(t, clusterOpts{lease: 3 * time.Second, walHandoff: time.Minute, agentArgs: []string{"--flush-interval", "1h", "--flush-bytes", "268435456"}})
	const partitions = 6
	cl := newClients(t, c.gateways[0].URL)
	createTopic(t, cl, "w", partitions, v1.Durability_DURABILITY_WAL)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	l := startLoad(t, ctx, c, "w", client.BatchBytes(8<<10), client.Acks(v1.Acks_ACKS_WAL), client.RequestTimeout(5*time.Second))
	victim := c.agents[0]
	owned := heldBy(t, cl, "w", victim.Addr)
	for _, p := range describe(t, cl, "w").Partitions {
		if p.CommittedEndOffset != 0 {
			t.Fatalf("partition %d committed %d with a 1h flush interval", p.Partition, p.CommittedEndOffset)
		}
	}
	victim.Kill()
	// Its leases lapse (3 s) and its partitions must then wait for it
	// (handoff timeout 1 min): at no point may one go to another agent.
	checkNotMoved := func() {
		for _, p := range owned {
			if a := describe(t, cl, "w").Partitions[p].LeaderAddress; a != "" && a != victim.Addr {
				t.Fatalf("wal partition %d moved to %s before the handoff timeout", p, a)
			}
		}
	}
	waitFor(t, "the killed agent's leases to lapse", time.Minute, func() bool {
		checkNotMoved()
		for _, p := range owned {
			if describe(t, cl, "w").Partitions[p].LeaderAddress != "" {
				return false
			}
		}
		return true
	})
	// Two more lease periods in which the controller could wrongly move them.
	for end := time.Now().Add(2 * 3 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		checkNotMoved()
	}
	victim.Restart()
	for _, p := range owned {
		if a := describe(t, cl, "w").Partitions[p].LeaderAddress; a != "" && a != victim.Addr {
			t.Fatalf("wal partition %d went to %s, not back to its restarted holder", p, a)
		}
	}
	l.waitAcks(3000)
	// Stop everything gracefully so every agent uploads, then check.
	res := l.stopAndCheck(partitions)
	t.Logf("restarted holder of %v kept its partitions; %d acked records checked", owned, res.Acked)
}

func tailString(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// TestPartitionedAgent: an agent cut off from every controller (its links
// black-holed) while it still reaches S3 must stop writing before its
// leases expire, lose its partitions to others, and have whatever it tries
// to commit afterwards fenced; the history checks.
func TestPartitionedAgent(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 8 processes; not in -short")
	}
	const lease = 5 * time.Second
	c := startCluster(t, clusterOpts{lease: lease, proxyAgent0: true})
	const partitions = 6
	cl := newClients(t, c.gateways[0].URL)
	createTopic(t, cl, "n", partitions, v1.Durability_DURABILITY_DURABLE)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	l := startLoad(t, ctx, c, "n", client.BatchBytes(8<<10), client.RequestTimeout(5*time.Second))

	cut := c.agents[0]
	owned := heldBy(t, cl, "n", cut.Addr)
	for _, p := range c.proxies {
		p.Partition()
	}
	took := waitMoved(t, cl, "n", cut.Addr, owned, 3*lease+10*time.Second)
	t.Logf("agent partitioned from the controllers holding %v: partitions moved after %v (lease %v)", owned, took, lease)
	l.waitAcks(3000)
	for _, p := range c.proxies {
		p.Heal()
	}
	l.waitAcks(3000)
	l.stopAndCheck(partitions)
	if log := cut.Stderr(); !strings.Contains(log, "dropped partition") {
		t.Errorf("the partitioned agent never dropped its partitions; stderr:\n%s", tailString(log, 3000))
	}
}

// TestWALAgentNeverReturns: the holder of a wal partition dies for good with
// acknowledged records it never uploaded. After wal_handoff_timeout the
// partition moves uncleanly: that tail (and only that) is lost, new records
// reuse its offsets, and a consumer who had read the lost records is told
// (TruncatedError with the offset to resume from) instead of silently
// reading two different records at one offset.
func TestWALAgentNeverReturns(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 8 processes; not in -short")
	}
	const lease, handoff = 3 * time.Second, 4 * time.Second
	c := startCluster(t, clusterOpts{lease: lease, walHandoff: handoff, agentArgs: []string{"--flush-interval", "1h", "--flush-bytes", "268435456"}})
	cl := newClients(t, c.gateways[0].URL)
	const partitions = 6
	createTopic(t, cl, "u", partitions, v1.Durability_DURABILITY_WAL)
	victim := c.agents[0]
	lost := heldBy(t, cl, "u", victim.Addr)
	if len(lost) == 0 {
		t.Fatal("the victim holds no partition")
	}
	p := lost[0]
	var kept int32 = -1
	for q := range int32(partitions) {
		if !slices.Contains(lost, q) {
			kept = q
		}
	}
	produceN(t, cl, "u", p, 500, v1.Acks_ACKS_WAL, "old")
	produceN(t, cl, "u", kept, 300, v1.Acks_ACKS_WAL, "kept")

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sdk, err := client.New(c.gateways[1].URL)
	if err != nil {
		t.Fatal(err)
	}
	defer sdk.Close()
	r := sdk.NewReader("u", p, 0, client.MaxWait(0))
	for r.Offset() < 500 {
		if _, err := r.Next(ctx); err != nil {
			t.Fatalf("read before the crash: %v", err)
		}
	}
	victim.Kill()
	killed := time.Now()
	took := waitMoved(t, cl, "u", victim.Addr, []int32{p}, lease+handoff+15*time.Second)
	t.Logf("wal partition %d moved uncleanly %v after its holder died (lease %v + handoff %v)", p, time.Since(killed), lease, handoff)
	if took < handoff {
		t.Errorf("partition moved after %v, before the %v handoff timeout", took, handoff)
	}
	produceN(t, cl, "u", p, 100, v1.Acks_ACKS_WAL, "new")

	_, err = r.Next(ctx)
	var trunc *client.TruncatedError
	if !errors.As(err, &trunc) {
		t.Fatalf("the consumer of the lost records got %v, want a TruncatedError", err)
	}
	t.Logf("consumer told: %v", trunc)
	if trunc.Offset != 0 {
		t.Fatalf("truncated at %d, want 0 (nothing was uploaded)", trunc.Offset)
	}
	var got []string
	for len(got) < 100 {
		recs, err := r.Next(ctx)
		if err != nil {
			t.Fatalf("read after the truncation: %v", err)
		}
		for _, rec := range recs {
			got = append(got, string(rec.Value))
		}
	}
	if got[0] != "new-0" || got[99] != "new-99" {
		t.Fatalf("after resuming the consumer read %q ... %q, want new-0 ... new-99", got[0], got[99])
	}
	recs, err := fetchAll(t, cl, "u", kept)
	if err != nil || len(recs) != 300 {
		t.Fatalf("partition %d of a live agent: %d records (%v), want all 300", kept, len(recs), err)
	}
}

// TestDrainAgent: a drained agent uploads what it holds, hands its
// partitions to the others without losing or failing a write, and gets
// none back until undrained.
func TestDrainAgent(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 8 processes; not in -short")
	}
	c := startCluster(t, clusterOpts{lease: 5 * time.Second})
	const partitions = 6
	cl := newClients(t, c.gateways[0].URL)
	createTopic(t, cl, "d", partitions, v1.Durability_DURABILITY_WAL)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	l := startLoad(t, ctx, c, "d", client.BatchBytes(8<<10))
	victim := c.agents[0]
	owned := heldBy(t, cl, "d", victim.Addr)
	leader, _ := c.waitLeader(nil)
	cs := streamhousev1connect.NewClusterServiceClient(c.hc, leader.URL)
	st, err := cs.Status(ctx, connect.NewRequest(&v1.StatusRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	var id string
	for _, a := range st.Msg.Agents {
		if a.Address == victim.Addr {
			id = a.Id
		}
	}
	start := time.Now()
	if _, err := cs.DrainAgent(ctx, connect.NewRequest(&v1.DrainAgentRequest{AgentId: id})); err != nil {
		t.Fatal(err)
	}
	took := waitMoved(t, cl, "d", victim.Addr, owned, 15*time.Second)
	t.Logf("drained agent handed over %v in %v", owned, took)
	l.waitAcks(3000)
	if got := heldBy(t, cl, "d", victim.Addr); len(got) != 0 {
		t.Fatalf("a draining agent holds %v", got)
	}
	if _, err := cs.DrainAgent(ctx, connect.NewRequest(&v1.DrainAgentRequest{AgentId: id, Undrain: true})); err != nil {
		t.Fatal(err)
	}
	res := l.stopAndCheck(partitions)
	if res.Failed != 0 {
		t.Errorf("%d records failed during a drain; want 0", res.Failed)
	}
	t.Logf("drain requested %v before the check finished", time.Since(start))
}
