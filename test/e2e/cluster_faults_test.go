package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
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
	c := startCluster(t, clusterOpts{lease: lease})
	const partitions = 6
	cl := newClients(t, c.gateways[0].URL)
	createTopic(t, cl, "z", partitions, v1.Durability_DURABILITY_DURABLE)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	l := startLoad(t, ctx, c, "z", client.BatchBytes(8<<10), client.RequestTimeout(5*time.Second))

	zombie := c.agents[0]
	owned := heldBy(t, cl, "z", zombie.Addr)
	zombie.Pause()
	took := waitMoved(t, cl, "z", zombie.Addr, owned, 3*lease+5*time.Second)
	t.Logf("agent frozen holding %v: partitions moved after %v (lease %v)", owned, took, lease)
	l.waitAcks(2000)
	zombie.Resume()
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
	time.Sleep(2 * 3 * time.Second) // its leases lapse; the partitions must wait for it
	for _, p := range owned {
		if a := describe(t, cl, "w").Partitions[p].LeaderAddress; a != "" {
			t.Fatalf("wal partition %d moved to %s before the handoff timeout", p, a)
		}
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
