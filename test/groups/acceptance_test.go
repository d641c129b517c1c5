package groups_test

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/api/gen/streamhouse/v1/streamhousev1connect"
	"github.com/streamhouse/streamhouse/pkg/client"
	"github.com/streamhouse/streamhouse/test/devproc"
	"github.com/streamhouse/streamhouse/test/loadgen"
)

const (
	topic      = "events"
	partitions = 12
	group      = "acceptance"
	// Short group timings so evictions happen in seconds.
	heartbeat = "200ms"
	session   = 4 * time.Second
)

// cluster is 3 controllers, 1 agent and 1 gateway, as separate processes.
type cluster struct {
	t           *testing.T
	controllers []*devproc.Proc
	agent       *devproc.Proc
	gateway     *devproc.Proc
	hc          *http.Client
}

func startCluster(t *testing.T) *cluster {
	c := &cluster{t: t, hc: &http.Client{Transport: &http.Transport{}}}
	t.Cleanup(c.hc.CloseIdleConnections)
	var raft, initial []string
	for i := range 3 {
		raft = append(raft, devproc.FreeAddr(t))
		initial = append(initial, fmt.Sprintf("c%d=%s", i+1, raft[i]))
	}
	for i := range 3 {
		c.controllers = append(c.controllers, devproc.StartCmd(t, serverBin, "controller", "--gossip-listen", "off",
			"--node-id", fmt.Sprintf("c%d", i+1), "--data-dir", t.TempDir(), "--raft-listen", raft[i],
			"--initial-cluster", strings.Join(initial, ","), "--lease-duration", "5s",
			"--group-heartbeat-interval", heartbeat, "--group-session-timeout", session.String()))
	}
	var addrs []string
	for _, p := range c.controllers {
		addrs = append(addrs, p.Addr)
	}
	ctl := strings.Join(addrs, ",")
	c.leader(nil)
	c.agent = devproc.StartCmd(t, serverBin, "agent", "--controllers", ctl, "--gossip-listen", "off", "--data-dir", t.TempDir(),
		"--flush-interval", "50ms")
	c.gateway = devproc.StartCmd(t, serverBin, "gateway", "--controllers", ctl, "--gossip-listen", "off")
	return c
}

// leader polls the controllers (but old) until one leads.
func (c *cluster) leader(old *devproc.Proc) *devproc.Proc {
	c.t.Helper()
	var out *devproc.Proc
	waitFor(c.t, "a controller leader", 30*time.Second, func() bool {
		for _, p := range c.controllers {
			if p == old {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			st, err := streamhousev1connect.NewClusterServiceClient(c.hc, p.URL).Status(ctx, connect.NewRequest(&v1.StatusRequest{}))
			cancel()
			if err == nil && st.Msg.LeaderId != "" && st.Msg.LeaderId == st.Msg.NodeId {
				out = p
				return true
			}
		}
		return false
	})
	return out
}

// rebalance is the measured outcome of one membership event.
type rebalance struct {
	event    string
	took     time.Duration // trigger event to STABLE, on the coordinator's clock
	wall     time.Duration // from the test's action to the group seen stable
	moved    int           // partitions given to a new owner
	triggerT v1.AssignmentEventType
}

// measure finds, in the coordinator's history, the trigger event of member
// and the first STABLE after it.
func measure(t *testing.T, hist []*v1.AssignmentEvent, name string, typ v1.AssignmentEventType, member string, wall time.Duration) rebalance {
	t.Helper()
	start := -1
	for i, e := range hist {
		if e.Type == typ && e.MemberId == member {
			start = i
		}
	}
	if start < 0 {
		t.Fatalf("%s: no %v event of member %s in the history", name, typ, member)
	}
	r := rebalance{event: name, wall: wall, triggerT: typ}
	for _, e := range hist[start+1:] {
		if e.Type == v1.AssignmentEventType_ASSIGNMENT_EVENT_TYPE_ASSIGNED {
			for _, tp := range e.Partitions {
				r.moved += len(tp.Partitions)
			}
		}
		if e.Type == v1.AssignmentEventType_ASSIGNMENT_EVENT_TYPE_STABLE {
			r.took = time.Duration(e.TimeMs-hist[start].TimeMs) * time.Millisecond
			return r
		}
	}
	t.Fatalf("%s: the group never became stable after the %v event", name, typ)
	return r
}

// checkHistory replays the coordinator's assignment history: a partition
// may only be given to a member while no other member owns it.
func checkHistory(t *testing.T, hist []*v1.AssignmentEvent) {
	t.Helper()
	owner := map[string]string{}
	key := func(tp *v1.TopicPartitions, p int32) string { return fmt.Sprintf("%s/%d", tp.Topic, p) }
	for i, e := range hist {
		for _, tp := range e.Partitions {
			for _, p := range tp.Partitions {
				k := key(tp, p)
				switch e.Type {
				case v1.AssignmentEventType_ASSIGNMENT_EVENT_TYPE_ASSIGNED:
					if o, ok := owner[k]; ok {
						t.Fatalf("history event %d (index %d): %s given to %s while %s owns it", i, e.Index, k, e.MemberId, o)
					}
					owner[k] = e.MemberId
				case v1.AssignmentEventType_ASSIGNMENT_EVENT_TYPE_RELEASED, v1.AssignmentEventType_ASSIGNMENT_EVENT_TYPE_LEFT,
					v1.AssignmentEventType_ASSIGNMENT_EVENT_TYPE_EVICTED:
					if owner[k] != e.MemberId {
						t.Fatalf("history event %d (index %d): %s released by %s but owned by %q", i, e.Index, k, e.MemberId, owner[k])
					}
					delete(owner, k)
				case v1.AssignmentEventType_ASSIGNMENT_EVENT_TYPE_STATIC_REJOINED:
					owner[k] = e.MemberId
				}
			}
		}
	}
}

// interval is one consumer process's ownership of a partition, on its clock.
type interval struct {
	proc       string
	start, end int64
}

// checkClientOwnership checks from the consumers' own output that no two
// processes consumed a partition at overlapping times: a process owns a
// partition from its "assigned" line to its "revoked" or "lost" line (or
// its last line, when it was killed).
func checkClientOwnership(t *testing.T, procs map[string][]event) {
	t.Helper()
	byPart := map[string][]interval{}
	for name, evs := range procs {
		if len(evs) == 0 {
			continue
		}
		last := evs[len(evs)-1].Time
		open := map[string]int64{}
		for _, e := range evs {
			switch e.Ev {
			case "assigned":
				for _, p := range e.Parts {
					open[p] = e.Time
				}
			case "revoked", "lost":
				for _, p := range e.Parts {
					if s, ok := open[p]; ok {
						byPart[p] = append(byPart[p], interval{name, s, e.Time})
						delete(open, p)
					}
				}
			}
		}
		for p, s := range open {
			byPart[p] = append(byPart[p], interval{name, s, last})
		}
	}
	for p, ivs := range byPart {
		sort.Slice(ivs, func(i, j int) bool { return ivs[i].start < ivs[j].start })
		for i := 1; i < len(ivs); i++ {
			if ivs[i].start < ivs[i-1].end {
				t.Errorf("%s consumed by %s from %d while %s owned it until %d", p, ivs[i].proc, ivs[i].start, ivs[i-1].proc, ivs[i-1].end)
			}
		}
	}
}

// TestGroupAcceptance: producers write a 12-partition topic throughout;
// three consumer processes share one group while a consumer joins, one
// leaves gracefully, one is SIGKILLed, the controller leader is SIGKILLed,
// and a consumer joins the new leader's group. Every record is processed at
// least once, and more than once only after the killed consumer's last
// commit; no partition is ever owned by two members (the coordinator's
// history and the consumers' output); the log reports each rebalance's
// time and partitions moved.
func TestGroupAcceptance(t *testing.T) {
	c := startCluster(t)
	gw := c.gateway.URL
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	admin := streamhousev1connect.NewAdminServiceClient(c.hc, gw)
	groups := streamhousev1connect.NewGroupServiceClient(c.hc, gw)
	if _, err := admin.CreateTopic(ctx, connect.NewRequest(&v1.CreateTopicRequest{Name: topic, Partitions: partitions})); err != nil {
		t.Fatal(err)
	}
	sdk, err := client.New(gw)
	if err != nil {
		t.Fatal(err)
	}
	defer sdk.Close()
	// Two producers writing keyed records through the gateway throughout,
	// paced at 500 records/s each (one every 2 ms).
	prods := loadgen.StartT(t, ctx, []*client.Client{sdk}, loadgen.Config{Topic: topic, Producers: 2, Rate: 500, Tick: 2 * time.Millisecond,
		CountOnly: true, Options: []client.ProducerOption{client.Linger(5 * time.Millisecond), client.MaxRetryDuration(time.Minute)}})
	progress := func(what string, n int64) { // producers made n more acks
		target := prods.Acked() + n
		waitFor(t, what, time.Minute, func() bool { return prods.Acked() >= target })
	}
	progress("first acks", 500)

	args := []string{"--group", group, "--topics", topic, "--session-timeout", session.String()}
	procs := map[string]*consumer{}
	start := func(name string) *consumer {
		p := startConsumer(t, name, gw, args...)
		procs[name] = p
		return p
	}
	waitStable := func(what string, n int) time.Duration {
		t0 := time.Now()
		waitFor(t, what, time.Minute, func() bool { return stableWith(describeGroup(groups, group, false), n) })
		return time.Since(t0)
	}
	c1, c2 := start("c1"), start("c2")
	waitStable("c1 and c2 stable", 2)
	progress("load with 2 consumers", 500)

	// 1. A consumer joins.
	t0 := time.Now()
	c3 := start("c3")
	c3ID := c3.memberID(t)
	joinWall := time.Since(t0) + waitStable("c3 joined", 3)
	progress("load with 3 consumers", 500)

	// 2. One leaves gracefully.
	c1ID := c1.memberID(t)
	t0 = time.Now()
	c1.stop(t)
	leaveWall := time.Since(t0) + waitStable("c1 left", 2)
	progress("load after the leave", 500)

	// 3. One is SIGKILLed: evicted after its session timeout.
	c2ID := c2.memberID(t)
	t0 = time.Now()
	c2.kill()
	killWall := time.Since(t0) + waitStable("c2 evicted", 1)
	progress("load after the kill", 500)

	// 4. The controller leader is SIGKILLed.
	old := c.leader(nil)
	t0 = time.Now()
	old.Kill()
	c.leader(old)
	electWall := time.Since(t0)
	waitFor(t, "the group coordinator on the new leader", time.Minute, func() bool { return describeGroup(groups, group, false) != nil })
	coordWall := time.Since(t0)
	killedAt := t0.UnixMilli()
	waitFor(t, "c3 to commit through the new leader", time.Minute, func() bool {
		for _, e := range c3.events(t) {
			if e.Ev == "commit" && e.Time > killedAt+int64(electWall/time.Millisecond) {
				return true
			}
		}
		return false
	})
	commitWall := time.Since(t0)
	if !stableWith(describeGroup(groups, group, false), 1) {
		t.Errorf("the group is not stable with c3 alone after the leader change: %v", describeGroup(groups, group, false))
	}

	// 5. A consumer joins the group the new leader coordinates.
	t0 = time.Now()
	c4 := start("c4")
	c4ID := c4.memberID(t)
	rejoinWall := time.Since(t0) + waitStable("c4 joined after the failover", 2)
	progress("load after the failover", 500)

	if err := prods.Stop(); err != nil {
		t.Errorf("stop producers: %v", err)
	}
	t.Logf("producers: %d acked, %d failed", prods.Acked(), prods.Failed())
	desc, err := admin.DescribeTopic(ctx, connect.NewRequest(&v1.DescribeTopicRequest{Name: topic}))
	if err != nil {
		t.Fatal(err)
	}
	end := map[int32]int64{}
	var total int64
	for _, p := range desc.Msg.Partitions {
		end[p.Partition] = p.HighWatermark
		total += p.HighWatermark
	}
	if total < prods.Acked() {
		t.Fatalf("the topic holds %d records, fewer than the %d acknowledged", total, prods.Acked())
	}
	waitFor(t, "the group to catch up (lag 0)", 2*time.Minute, func() bool {
		d := describeGroup(groups, group, false)
		if d == nil || d.TotalLag != 0 {
			return false
		}
		committed := 0
		for _, p := range d.Partitions {
			if p.CommittedOffset == end[p.Partition] {
				committed++
			}
		}
		return committed == partitions
	})
	c3.stop(t)
	c4.stop(t)

	d := describeGroup(groups, group, true)
	if d == nil {
		t.Fatal("describe group failed")
	}
	if len(d.History) >= 10000 {
		t.Fatalf("the history was truncated (%d events); the check needs all of it", len(d.History))
	}
	checkHistory(t, d.History)
	out := map[string][]event{}
	for name, p := range procs {
		out[name] = p.events(t)
	}
	for name, evs := range out {
		n := 0
		for _, e := range evs {
			if (e.Ev == "poll_error" || e.Ev == "commit_error") && n < 5 {
				t.Logf("%s: %s: %s", name, e.Ev, e.Err)
				n++
			}
		}
	}
	checkClientOwnership(t, out)
	checkDelivery(t, out, end, "c2")

	for _, r := range []rebalance{
		measure(t, d.History, "join (c3)", v1.AssignmentEventType_ASSIGNMENT_EVENT_TYPE_JOINED, c3ID, joinWall),
		measure(t, d.History, "graceful leave (c1)", v1.AssignmentEventType_ASSIGNMENT_EVENT_TYPE_LEFT, c1ID, leaveWall),
		measure(t, d.History, "SIGKILL (c2), evicted", v1.AssignmentEventType_ASSIGNMENT_EVENT_TYPE_EVICTED, c2ID, killWall),
		measure(t, d.History, "join after leader SIGKILL (c4)", v1.AssignmentEventType_ASSIGNMENT_EVENT_TYPE_JOINED, c4ID, rejoinWall),
	} {
		t.Logf("rebalance %-32s %4d ms on the coordinator (trigger to stable), %5d ms wall (action to stable seen), %2d partitions moved",
			r.event, r.took.Milliseconds(), r.wall.Milliseconds(), r.moved)
	}
	t.Logf("controller leader SIGKILL: new leader in %d ms, group coordinator answering in %d ms, c3 committing again in %d ms, no rebalance",
		electWall.Milliseconds(), coordWall.Milliseconds(), commitWall.Milliseconds())
	t.Logf("history: %d events, %d rebalances; records: %d in the topic", len(d.History), d.Rebalances, total)
}

// checkDelivery: every record of the topic was processed at least once;
// a record processed twice must have been processed by the killed consumer
// at or after its last committed offset of that partition.
func checkDelivery(t *testing.T, procs map[string][]event, end map[int32]int64, killed string) {
	t.Helper()
	seen := map[int32]map[int64][]string{}
	lastCommit := map[int32]int64{}
	for name, evs := range procs {
		for _, e := range evs {
			switch e.Ev {
			case "rec":
				if seen[e.Partition] == nil {
					seen[e.Partition] = map[int64][]string{}
				}
				seen[e.Partition][e.Offset] = append(seen[e.Partition][e.Offset], name)
			case "commit":
				if name == killed {
					for k, off := range e.Offsets {
						var p int32
						fmt.Sscanf(k[strings.LastIndexByte(k, '/')+1:], "%d", &p)
						lastCommit[p] = off
					}
				}
			}
		}
	}
	var records int64
	var processed, dups, missing, badDups int
	for p, n := range end {
		records += n
		for o := int64(0); o < n; o++ {
			who := seen[p][o]
			processed += len(who)
			switch {
			case len(who) == 0:
				missing++
				if missing <= 5 {
					t.Errorf("record %s/%d@%d was never processed", topic, p, o)
				}
			case len(who) > 1:
				dups++
				byKilled := false
				for _, w := range who {
					byKilled = byKilled || w == killed
				}
				if !byKilled || o < lastCommit[p] {
					badDups++
					if badDups <= 5 {
						t.Errorf("record %s/%d@%d processed by %v (the killed consumer's last commit of the partition: %d)", topic, p, o, who, lastCommit[p])
					}
				}
			}
		}
	}
	t.Logf("delivery: %d records processed %d times; %d never (must be 0); %d more than once, all by the killed consumer after its last commit: %v",
		records, processed, missing, dups, badDups == 0)
	if missing > 0 || badDups > 0 {
		t.Fatalf("%d records never processed, %d processed twice without the killed consumer's excuse", missing, badDups)
	}
}
