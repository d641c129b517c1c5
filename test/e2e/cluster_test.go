package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/api/gen/streamhouse/v1/streamhousev1connect"
	"github.com/streamhouse/streamhouse/pkg/client"
	"github.com/streamhouse/streamhouse/pkg/objstore/s3test"
	"github.com/streamhouse/streamhouse/test/checker"
	"github.com/streamhouse/streamhouse/test/devproc"
	"github.com/streamhouse/streamhouse/test/loadgen"
	"github.com/streamhouse/streamhouse/test/netproxy"
)

// cluster is 3 controllers, 3 agents and 2 gateways as separate processes.
type cluster struct {
	t           *testing.T
	controllers []*devproc.Proc
	agents      []*devproc.Proc
	gateways    []*devproc.Proc
	ctlAddrs    string
	hc          *http.Client
	proxies     []*netproxy.Proxy // agent 0 -> controllers, with proxyAgent0
}

// clusterOpts tunes startCluster.
type clusterOpts struct {
	lease      time.Duration // default 5s
	walHandoff time.Duration // default 60s
	agentArgs  []string      // extra agent flags
	// proxyAgent0 routes agent 0's traffic to the controllers through
	// proxies the test can partition (cluster.proxies).
	proxyAgent0 bool
}

func startCluster(t *testing.T, o clusterOpts) *cluster {
	if o.lease == 0 {
		o.lease = 5 * time.Second
	}
	if o.walHandoff == 0 {
		o.walHandoff = time.Minute
	}
	s3 := s3test.Start(t)
	c := &cluster{t: t, hc: &http.Client{Transport: &http.Transport{}}}
	t.Cleanup(c.hc.CloseIdleConnections)
	var raft, initial, gossip []string
	for i := range 3 {
		raft = append(raft, devproc.FreeAddr(t))
		gossip = append(gossip, devproc.FreeAddr(t))
		initial = append(initial, fmt.Sprintf("c%d=%s", i+1, raft[i]))
	}
	seeds := strings.Join(gossip, ",")
	for i := range 3 {
		c.controllers = append(c.controllers, devproc.StartCmd(t, bin, "controller",
			"--gossip-listen", gossip[i], "--seeds", seeds,
			"--node-id", fmt.Sprintf("c%d", i+1), "--data-dir", t.TempDir(), "--raft-listen", raft[i],
			"--initial-cluster", strings.Join(initial, ","), "--lease-duration", o.lease.String(),
			"--wal-handoff-timeout", o.walHandoff.String()))
	}
	var addrs []string
	for _, p := range c.controllers {
		addrs = append(addrs, p.Addr)
	}
	c.ctlAddrs = strings.Join(addrs, ",")
	c.waitLeader(nil)
	for i := range 3 {
		// Agents and gateways find the controllers through gossip alone;
		// agent 0 behind proxies is told them and gossips nothing (gossip
		// would hand it the controllers' real addresses, around the proxies).
		ctl := []string{"--seeds", seeds, "--gossip-listen", "127.0.0.1:0"}
		if i == 0 && o.proxyAgent0 {
			var via []string
			for _, p := range c.controllers {
				px := netproxy.Start(t, p.Addr)
				c.proxies = append(c.proxies, px)
				via = append(via, px.Addr())
			}
			ctl = []string{"--controllers", strings.Join(via, ","), "--gossip-listen", "off"}
		}
		args := append([]string{"--data-dir", t.TempDir()}, ctl...)
		args = append(args, "--flush-interval", "100ms", "--object-store", "s3", "--s3-endpoint", s3.Endpoint, "--s3-bucket", s3.Bucket,
			"--s3-access-key", s3.AccessKey, "--s3-secret-key", s3.SecretKey, "--s3-region", s3.Region)
		args = append(args, o.agentArgs...)
		c.agents = append(c.agents, devproc.StartCmd(t, bin, "agent", args...))
	}
	for range 2 {
		c.gateways = append(c.gateways, devproc.StartCmd(t, bin, "gateway", "--seeds", seeds, "--gossip-listen", "127.0.0.1:0"))
	}
	// Every gateway announced itself through gossip.
	for start := time.Now(); ; {
		leader, _ := c.waitLeader(nil)
		st, err := streamhousev1connect.NewClusterServiceClient(c.hc, leader.URL).Status(context.Background(), connect.NewRequest(&v1.StatusRequest{}))
		if err == nil && len(st.Msg.Gateways) == len(c.gateways) {
			break
		}
		if time.Since(start) > 20*time.Second {
			t.Fatalf("controllers do not see the gateways through gossip: %v %v", st, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return c
}

// waitLeader polls the live controllers until one of them (not old) leads,
// and returns it with the time it took.
func (c *cluster) waitLeader(old *devproc.Proc) (*devproc.Proc, time.Duration) {
	start := time.Now()
	for time.Since(start) < 30*time.Second {
		for _, p := range c.controllers {
			if p == old {
				continue
			}
			cs := streamhousev1connect.NewClusterServiceClient(c.hc, p.URL)
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			st, err := cs.Status(ctx, connect.NewRequest(&v1.StatusRequest{}))
			cancel()
			if err == nil && st.Msg.LeaderId != "" && st.Msg.LeaderId == st.Msg.NodeId {
				return p, time.Since(start)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.t.Fatal("no controller leader within 30s")
	return nil, 0
}

// waitFor polls cond every 10 ms until it holds, and fails the test if it
// does not within limit.
func waitFor(t *testing.T, what string, limit time.Duration, cond func() bool) {
	t.Helper()
	for start := time.Now(); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Since(start) > limit {
			t.Fatalf("timed out after %v waiting for %s", limit, what)
		}
	}
}

// holderOf returns the address of the agent holding a partition.
func holderOf(t *testing.T, cl clients, topic string, partition int32) string {
	d := describe(t, cl, topic)
	return d.Partitions[partition].LeaderAddress
}

// TestClusterFailover: producers write continuously (acks durable) through
// both gateways while the test SIGKILLs the controller leader, an agent and
// a gateway in turn and restarts each. The history checker must report no
// anomaly; the log gives the time to a new leader, the time until the
// killed agent's partitions accept writes again, and the produce error rate
// during each fault.
func TestClusterFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 8 processes; not in -short")
	}
	const lease = 5 * time.Second
	c := startCluster(t, clusterOpts{lease: lease})
	const partitions = 6
	admin := newClients(t, c.gateways[0].URL)
	createTopic(t, admin, "f", partitions, v1.Durability_DURABILITY_DURABLE)

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	l := startLoad(t, ctx, c, "f", client.BatchBytes(8<<10))
	h, waitAcks := l.History(), l.waitAcks
	window := func(name string, fault func()) {
		a0, f0 := l.Acked(), l.Failed()
		fault()
		a, f := l.Acked()-a0, l.Failed()-f0
		t.Logf("%s: %d acked, %d failed during the fault (error rate %.2f%%)", name, a, f, 100*float64(f)/float64(max(a+f, 1)))
	}
	waitAcks(2000)

	window("controller leader SIGKILL", func() {
		leader, _ := c.waitLeader(nil)
		leader.Kill()
		_, took := c.waitLeader(leader)
		t.Logf("controller leader killed: a new leader after %v", took)
		if took > 3*time.Second {
			t.Errorf("new controller leader took %v, target 3s", took)
		}
		waitAcks(2000)
		leader.Restart()
		waitAcks(1000)
	})

	window("agent SIGKILL", func() {
		victim := c.agents[0]
		var owned []int32
		for p := range int32(partitions) {
			if holderOf(t, admin, "f", p) == victim.Addr {
				owned = append(owned, p)
			}
		}
		victim.Kill()
		killed := time.Now()
		probe := newClients(t, c.gateways[1].URL)
		probes := 0
		for _, p := range owned {
			for {
				// A probe record, in the history like any other.
				v := fmt.Sprintf("probe-%d", probes)
				probes++
				res, err := probe.produce.Produce(ctx, connect.NewRequest(&v1.ProduceRequest{Topic: "f", Partition: proto.Int32(p),
					Records: []*v1.Record{{Value: []byte(v)}}}))
				if err == nil {
					h.Acked(checker.Ack{Producer: 1000, Seq: probes, Value: v, Partition: p, Offset: res.Msg.Results[0].BaseOffset})
					break
				}
				h.Failed(v)
				if time.Since(killed) > 3*lease+10*time.Second {
					t.Fatalf("partition %d still refuses writes %v after its agent was killed: %v", p, time.Since(killed), err)
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
		t.Logf("agent killed holding partitions %v: all moved to live agents after %v (lease %v)", owned, time.Since(killed), lease)
		if took := time.Since(killed); took > lease+2*time.Second {
			t.Errorf("partitions accepted writes again after %v, target lease + 2s = %v", took, lease+2*time.Second)
		}
		waitAcks(2000)
		victim.Restart()
		waitAcks(1000)
	})

	window("gateway SIGKILL", func() {
		g := c.gateways[0]
		refused := l.refused[0].Load()
		g.Kill()
		// The fault is only a fault if this gateway's producers meet it:
		// keep it down until its two producers have had Produce calls
		// refused (they retry them against the restarted gateway).
		waitFor(t, "the killed gateway's producers to be refused", 30*time.Second, func() bool {
			return l.refused[0].Load() >= refused+2
		})
		t.Logf("gateway down: %d Produce calls through it failed", l.refused[0].Load()-refused)
		g.Restart()
		waitAcks(3000)
	})

	l.stopAndCheck(partitions)
}

// load is producers writing continuously through every gateway of a
// cluster, recording their history (loadgen).
type load struct {
	t     *testing.T
	ctx   context.Context
	topic string
	*loadgen.Load
	clients []*client.Client
	// refused counts the Produce calls through each gateway (by index in
	// cluster.gateways) that failed: how a test sees its producers notice
	// that a gateway is gone.
	refused []*atomic.Int64
}

// startLoad starts two producers per gateway writing keyed records to
// topic until stopAndCheck, and waits for their first 2000 acks.
func startLoad(t *testing.T, ctx context.Context, c *cluster, topic string, opts ...client.ProducerOption) *load {
	l := &load{t: t, ctx: ctx, topic: topic}
	for _, gw := range c.gateways {
		refused := new(atomic.Int64)
		l.refused = append(l.refused, refused)
		sdk, err := client.New(gw.URL, client.WithConnectOptions(connect.WithInterceptors(countFailedProduce(refused))))
		if err != nil {
			t.Fatal(err)
		}
		l.clients = append(l.clients, sdk)
		t.Cleanup(func() { sdk.Close() })
	}
	opts = append([]client.ProducerOption{client.MaxBufferedBytes(256 << 10), client.MaxRetryDuration(time.Minute)}, opts...)
	// Producer i writes through gateway i % len(gateways).
	l.Load = loadgen.StartT(t, ctx, l.clients, loadgen.Config{Topic: topic, Producers: 2 * len(c.gateways), Options: opts})
	l.waitAcks(2000)
	return l
}

// countFailedProduce is a client interceptor counting failed Produce calls
// (each attempt, retries included) in n.
func countFailedProduce(n *atomic.Int64) connect.UnaryInterceptorFunc {
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			res, err := next(ctx, req)
			if err != nil && strings.HasSuffix(req.Spec().Procedure, "/Produce") {
				n.Add(1)
			}
			return res, err
		}
	}
}

// waitAcks blocks until n more records are acknowledged.
func (l *load) waitAcks(n int64) {
	l.t.Helper()
	if err := l.WaitAcked(l.ctx, l.Acked()+n); err != nil {
		l.t.Fatalf("producers made no progress: %v", err)
	}
}

// stopAndCheck stops the producers, reads the topic back and checks the
// history.
func (l *load) stopAndCheck(partitions int32) checker.Result {
	l.t.Helper()
	if err := l.Stop(); err != nil {
		l.t.Errorf("stop producers: %v", err)
	}
	for i, f := range l.Failures() {
		if i == 3 {
			break
		}
		l.t.Logf("produce failed (outcome unknown) at %s: producer %d seq %d: %v", f.At.Format("15:04:05.000"), f.Producer, f.Seq, f.Err)
	}
	reads := readAll(l.t, l.ctx, l.clients[len(l.clients)-1], l.topic, partitions)
	res := l.History().Check(reads)
	l.t.Logf("acked %d, failed (outcome unknown) %d of which %d were written, read %d", res.Acked, res.Failed, res.FailedPresent, res.Read)
	if err := res.Err(); err != nil {
		l.t.Fatal(err)
	}
	return res
}

// heldBy lists the partitions of topic whose lease the agent at addr holds.
func heldBy(t *testing.T, cl clients, topic string, addr string) []int32 {
	var out []int32
	for _, p := range describe(t, cl, topic).Partitions {
		if p.LeaderAddress == addr {
			out = append(out, p.Partition)
		}
	}
	return out
}

// waitMoved polls until none of parts is held by the agent at addr and
// every one has a holder, and returns how long that took.
func waitMoved(t *testing.T, cl clients, topic, addr string, parts []int32, limit time.Duration) time.Duration {
	start := time.Now()
	for {
		d := describe(t, cl, topic)
		moved := true
		for _, p := range parts {
			if a := d.Partitions[p].LeaderAddress; a == "" || a == addr {
				moved = false
			}
		}
		if moved {
			return time.Since(start)
		}
		if time.Since(start) > limit {
			t.Fatalf("partitions %v of %s not moved off %s within %v", parts, topic, addr, limit)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// fencedCommits sums streamhouse_controller_fenced_commits_total over the
// live controllers.
func (c *cluster) fencedCommits() int {
	n := 0
	for _, p := range c.controllers {
		resp, err := c.hc.Get(p.URL + "/metrics")
		if err != nil {
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "streamhouse_controller_fenced_commits_total "); ok {
				k, _ := strconv.Atoi(strings.TrimSpace(v))
				n += k
			}
		}
	}
	return n
}
