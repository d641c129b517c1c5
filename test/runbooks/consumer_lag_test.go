package runbooks

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/pkg/client"
	"github.com/streamhouse/streamhouse/test/devproc"
	"github.com/streamhouse/streamhouse/test/loadgen"
)

// produceMany writes n small records to topic with one of the SDK's
// batching producers (acks wal) and fails the test if any is not
// acknowledged.
func produceMany(t *testing.T, sdk *client.Client, topic string, n int) {
	t.Helper()
	// payment-0000000, payment-0000001, ...: keyless, so the sticky
	// partitioner fills big batches.
	l := loadgen.StartT(t, ctxT(t, 5*time.Minute), []*client.Client{sdk}, loadgen.Config{Topic: topic, Records: n, Keyless: true,
		Value: func(_, seq int) []byte { return fmt.Appendf(nil, "payment-%07d", seq) }, Acks: v1.Acks_ACKS_WAL, CountOnly: true,
		Options: []client.ProducerOption{client.BatchBytes(1 << 20), client.Linger(5 * time.Millisecond)}})
	if err := l.Wait(); err != nil {
		t.Fatalf("flush: %v", err)
	}
	if fs := l.Failures(); len(fs) > 0 {
		t.Fatalf("%d of %d records failed, first: %v", l.Failed(), n, fs[0].Err)
	}
	if l.Acked() != int64(n) {
		t.Fatalf("%d of %d records acknowledged", l.Acked(), n)
	}
}

// groupLag runs `shctl groups describe GROUP --output json` and returns
// the group's total lag and member count.
func groupLag(t *testing.T, gateway, group string) (lag int64, members int) {
	t.Helper()
	r := shctlQuiet(t, "", "--gateway", gateway, "groups", "describe", group, "--output", "json")
	if r.Code != 0 {
		t.Fatalf("shctl groups describe %s: exit %d: %s", group, r.Code, r.Output())
	}
	var d struct {
		TotalLag json.Number       `json:"totalLag"`
		Members  []json.RawMessage `json:"members"`
	}
	if err := json.Unmarshal([]byte(r.Stdout), &d); err != nil {
		t.Fatalf("shctl groups describe --output json: %v\n%s", err, r.Stdout)
	}
	if d.TotalLag != "" {
		var err error
		if lag, err = d.TotalLag.Int64(); err != nil {
			t.Fatalf("totalLag %q: %v", d.TotalLag, err)
		}
	}
	return lag, len(d.Members)
}

// TestConsumerLag reproduces runbooks/consumer-lag.md: the consumers of
// group "billing" stop (they committed the first records, then left) while
// producers write 1.1 million more records. The controller's lag for the
// group passes 1M: StreamHouseConsumerLagHigh's expression turns true, and
// `shctl groups describe` shows the lag and no members. The runbook's fix,
// starting (more) consumers in the group, drains the backlog: the lag falls
// to 0 and the expression goes false again.
func TestConsumerLag(t *testing.T) {
	t.Parallel()
	const backlog = 1_100_000
	p := devproc.Start(t, bin, t.TempDir())
	gw := hostPort(p)
	if r := shctl(t, "", "--gateway", gw, "topics", "create", "payments", "--partitions", "4", "--durability", "wal"); r.Code != 0 {
		t.Fatalf("create topic: %s", r.Output())
	}
	pr := startPrometheus(t, targets{"streamhouse": {p.Addr}})
	lagHigh := pr.alert("StreamHouseConsumerLagHigh", "runbooks/consumer-lag.md")
	pr.waitScraped(1)
	sdk, err := client.New(p.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer sdk.Close()

	// billing's consumer reads the first 1,000 records, commits and leaves.
	produceMany(t, sdk, "payments", 1000)
	consume(t, sdk, "billing", 1, 1000)
	pr.waitFalse("StreamHouseConsumerLagHigh while billing keeps up", lagHigh.Query, 30*time.Second)

	// Producers go on; nobody consumes.
	start := time.Now()
	produceMany(t, sdk, "payments", backlog)
	t.Logf("produced %d records in %v", backlog, time.Since(start).Round(time.Millisecond))
	pr.waitTrue("StreamHouseConsumerLagHigh", lagHigh.Query, 30*time.Second)
	pr.waitTrue("streamhouse_controller_group_members{group=\"billing\"} is 0", `streamhouse_controller_group_members{group="billing"} == 0`, 10*time.Second)
	// The controller learns the end offsets from the agents' lease
	// renewals, about once a second.
	var lag int64
	eventually(t, 30*time.Second, "shctl groups describe billing shows the whole backlog and no members", func() (bool, string) {
		var members int
		lag, members = groupLag(t, gw, "billing")
		return lag == backlog && members == 0, fmt.Sprintf("lag %d, %d members", lag, members)
	})
	shctl(t, "", "--gateway", gw, "groups", "describe", "billing")
	if r := shctl(t, "", "--gateway", gw, "groups", "list"); !strings.Contains(r.Stdout, "billing") || !strings.Contains(r.Stdout, fmt.Sprint(lag)) {
		t.Errorf("shctl groups list does not show billing with lag %d", lag)
	}

	// The fix: start consumers in the group; they drain the backlog.
	start = time.Now()
	consume(t, sdk, "billing", 2, backlog)
	t.Logf("2 consumers drained %d records in %v", backlog, time.Since(start).Round(time.Millisecond))
	pr.waitFalse("StreamHouseConsumerLagHigh after the consumers caught up", lagHigh.Query, 30*time.Second)
	eventually(t, 30*time.Second, "lag 0 after the consumers caught up", func() (bool, string) {
		lag, _ := groupLag(t, gw, "billing")
		return lag == 0, fmt.Sprint(lag)
	})
	shctl(t, "", "--gateway", gw, "groups", "describe", "billing")
}

// consume runs n group consumers of topic payments in group until they
// have returned want records between them (redeliveries after a rebalance
// count too), then closes them: Close commits what they read.
func consume(t *testing.T, sdk *client.Client, group string, n int, want int64) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var read atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		gc, err := sdk.NewGroupConsumer(client.GroupConsumerConfig{Group: group, Topics: []string{"payments"},
			AutoOffsetReset: client.OffsetResetEarliest, AutoCommitInterval: time.Second, MaxPollRecords: 10000})
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				recs, err := gc.Poll(ctx)
				if err == nil {
					read.Add(int64(len(recs)))
				} // else fenced (it rejoins by itself) or stopped
			}
			cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer ccancel()
			if err := gc.Close(cctx); err != nil {
				errs <- fmt.Errorf("close: %w", err)
			}
		}()
	}
	eventually(t, 3*time.Minute, fmt.Sprintf("group %s reads %d records", group, want), func() (bool, string) {
		return read.Load() >= want, fmt.Sprint(read.Load())
	})
	cancel()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
