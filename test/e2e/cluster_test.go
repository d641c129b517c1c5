package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
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
)

// cluster is 3 controllers, 3 agents and 2 gateways as separate processes.
type cluster struct {
	t           *testing.T
	controllers []*devproc.Proc
	agents      []*devproc.Proc
	gateways    []*devproc.Proc
	ctlAddrs    string
	hc          *http.Client
}

func startCluster(t *testing.T, leaseDuration time.Duration) *cluster {
	s3 := s3test.Start(t)
	c := &cluster{t: t, hc: &http.Client{Transport: &http.Transport{}}}
	t.Cleanup(c.hc.CloseIdleConnections)
	var raft, initial []string
	for i := range 3 {
		raft = append(raft, devproc.FreeAddr(t))
		initial = append(initial, fmt.Sprintf("c%d=%s", i+1, raft[i]))
	}
	for i := range 3 {
		c.controllers = append(c.controllers, devproc.StartCmd(t, bin, "controller",
			"--node-id", fmt.Sprintf("c%d", i+1), "--data-dir", t.TempDir(), "--raft-listen", raft[i],
			"--initial-cluster", strings.Join(initial, ","), "--lease-duration", leaseDuration.String()))
	}
	var addrs []string
	for _, p := range c.controllers {
		addrs = append(addrs, p.Addr)
	}
	c.ctlAddrs = strings.Join(addrs, ",")
	c.waitLeader(nil)
	for range 3 {
		c.agents = append(c.agents, devproc.StartCmd(t, bin, "agent", "--data-dir", t.TempDir(), "--controllers", c.ctlAddrs,
			"--flush-interval", "100ms", "--object-store", "s3", "--s3-endpoint", s3.Endpoint, "--s3-bucket", s3.Bucket,
			"--s3-access-key", s3.AccessKey, "--s3-secret-key", s3.SecretKey, "--s3-region", s3.Region))
	}
	for range 2 {
		c.gateways = append(c.gateways, devproc.StartCmd(t, bin, "gateway", "--controllers", c.ctlAddrs))
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
	c := startCluster(t, lease)
	const partitions = 6
	admin := newClients(t, c.gateways[0].URL)
	createTopic(t, admin, "f", partitions, v1.Durability_DURABILITY_DURABLE)

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	h := checker.NewHistory()
	var acked, failed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g, gw := range c.gateways {
		sdk, err := client.New(gw.URL)
		if err != nil {
			t.Fatal(err)
		}
		defer sdk.Close()
		for k := range 2 {
			id := g*2 + k
			prod, err := sdk.NewProducer("f", client.BatchBytes(8<<10), client.MaxBufferedBytes(256<<10), client.MaxRetryDuration(time.Minute))
			if err != nil {
				t.Fatal(err)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer prod.Close()
				for seq := 0; ; seq++ {
					select {
					case <-stop:
						if err := prod.Flush(ctx); err != nil {
							t.Errorf("flush: %v", err)
						}
						return
					default:
					}
					v := fmt.Sprintf("p%d-%07d", id, seq)
					prod.Produce(ctx, client.Record{Key: []byte(v), Value: []byte(v)}, func(r client.Result) {
						if r.Err != nil {
							h.Failed(v)
							failed.Add(1)
							return
						}
						acked.Add(1)
						h.Acked(checker.Ack{Producer: id, Seq: seq, Value: v, Partition: r.Partition, Offset: r.Offset})
					})
				}
			}()
		}
	}
	window := func(name string, fault func()) {
		a0, f0 := acked.Load(), failed.Load()
		fault()
		a, f := acked.Load()-a0, failed.Load()-f0
		t.Logf("%s: %d acked, %d failed during the fault (error rate %.2f%%)", name, a, f, 100*float64(f)/float64(max(a+f, 1)))
	}
	waitAcks := func(n int64) {
		target := acked.Load() + n
		for acked.Load() < target {
			if ctx.Err() != nil {
				t.Fatal("producers made no progress")
			}
			time.Sleep(10 * time.Millisecond)
		}
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
		g.Kill()
		time.Sleep(500 * time.Millisecond) // producers of this gateway see refused connections meanwhile
		g.Restart()
		waitAcks(3000)
	})

	close(stop)
	wg.Wait()
	sdk, err := client.New(c.gateways[1].URL)
	if err != nil {
		t.Fatal(err)
	}
	defer sdk.Close()
	reads := readAll(t, ctx, sdk, "f", partitions)
	res := h.Check(reads)
	t.Logf("acked %d, failed (outcome unknown) %d of which %d were written, read %d", res.Acked, res.Failed, res.FailedPresent, res.Read)
	if err := res.Err(); err != nil {
		t.Fatal(err)
	}
}
