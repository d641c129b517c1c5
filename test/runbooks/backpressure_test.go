package runbooks

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/pkg/objstore/faultproxy"
	"github.com/streamhouse/streamhouse/pkg/objstore/s3test"
	"github.com/streamhouse/streamhouse/test/devproc"
)

// TestProducerBackpressure reproduces runbooks/producer-backpressure.md:
// the object store goes down (every request answered 503) under a steady
// write load, with a 4 MiB WAL budget. The agent's un-uploaded bytes pass
// 80 % of the budget and it refuses writes with ResourceExhausted (HTTP
// 429): StreamHouseProducerBackpressure, StreamHouseWALDiskUsageHigh and
// StreamHouseProducerFailures turn true, and `shctl produce` fails with the
// message the runbook quotes. The fix (the store is reachable again) drains
// the WAL: backpressure turns off, `shctl produce` succeeds and the alert
// expressions go false.
func TestProducerBackpressure(t *testing.T) {
	t.Parallel()
	const budget = 4 << 20
	s3 := s3test.Start(t)
	px, err := faultproxy.Start(s3.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { px.Close() })
	p := devproc.Start(t, bin, t.TempDir(), append(s3Args(s3, px.URL()), "--flush-interval", "100ms",
		"--wal-budget", fmt.Sprint(budget))...)
	gw := hostPort(p)
	if r := shctl(t, "", "--gateway", gw, "topics", "create", "events", "--partitions", "2", "--durability", "wal"); r.Code != 0 {
		t.Fatalf("create topic: %s", r.Output())
	}
	pr := startPrometheus(t, targets{"streamhouse": {p.Addr}})
	backpressure := pr.alert("StreamHouseProducerBackpressure", "runbooks/producer-backpressure.md")
	diskHigh := pr.alert("StreamHouseWALDiskUsageHigh", "runbooks/producer-backpressure.md")
	diskCritical := pr.alert("StreamHouseWALDiskUsageCritical", "runbooks/producer-backpressure.md")
	failures := pr.alert("StreamHouseProducerFailures", "runbooks/producer-backpressure.md")
	pr.waitScraped(1)

	c := newClients(t, p.URL)
	// About 2.5 MB/s: 50 records of 500 bytes every 10 ms.
	tr := startTrickle(t, c, "events", 2, 50, 500, 10*time.Millisecond, v1.Acks_ACKS_WAL)
	pr.waitFalse("StreamHouseProducerBackpressure while the store is up", backpressure.Query, 30*time.Second)
	pr.waitFalse("StreamHouseWALDiskUsageHigh while the store is up", diskHigh.Query, 30*time.Second)

	// The store goes down.
	if err := px.Set(faultproxy.Faults{SlowDown: 1, RetryAfter: faultproxy.Duration(time.Second)}); err != nil {
		t.Fatal(err)
	}
	pr.waitTrue("StreamHouseProducerBackpressure", backpressure.Query, 60*time.Second)
	pr.waitTrue("StreamHouseWALDiskUsageHigh", diskHigh.Query, 30*time.Second)
	pr.waitTrue("StreamHouseProducerFailures", failures.Query, 30*time.Second)
	if res, err := pr.query(diskCritical.Query); err != nil {
		t.Fatal(err)
	} else {
		t.Logf("StreamHouseWALDiskUsageCritical (WAL past 90%% of its budget) while refusing: %v", res)
	}
	// The metrics the runbook has the operator read.
	for _, q := range []string{
		`streamhouse_agent_backpressure`,
		`streamhouse_agent_wal_uncommitted_bytes`,
		`streamhouse_agent_wal_disk_bytes / streamhouse_agent_wal_budget_bytes`,
		`sum by (code) (rate(streamhouse_gateway_produce_requests_total[1m]))`,
		`streamhouse_agent_s3_breaker_state`,
		`sum by (op, outcome) (rate(streamhouse_agent_s3_requests_total[1m]))`,
	} {
		res, err := pr.query(q)
		if err != nil || len(res) == 0 {
			t.Errorf("diagnostic query %s: %v %v", q, res, err)
			continue
		}
		t.Logf("%s = %v", q, res)
	}
	codes, last := tr.errs()
	if codes[connect.CodeResourceExhausted] == 0 {
		t.Fatalf("no ResourceExhausted answer while the store is down (failures %v, last %v)", codes, last)
	}
	t.Logf("producers refused: %v, e.g. %v", codes, last)
	// shctl produce gives up after --timeout with the 429's message.
	r := shctl(t, "x\ny\n", "--gateway", gw, "--timeout", "3s", "produce", "events", "--partition", "0", "--acks", "wal")
	if r.Code == 0 || !strings.Contains(r.Stderr, "resource_exhausted") || !strings.Contains(r.Stderr, "WAL") {
		t.Errorf("shctl produce with backpressure on: exit %d, %q; want a failure naming resource_exhausted and the WAL", r.Code, r.Stderr)
	}
	// shctl topics describe: nothing is uploaded, COMMITTED END stays behind.
	d := describeTopic(t, gw, "events")
	for _, part := range d.Partitions {
		if part.CommittedEndOffset >= part.HighWatermark {
			t.Errorf("partition %d: committed end %d, high watermark %d; want the committed end behind while the store is down",
				part.Partition, part.CommittedEndOffset, part.HighWatermark)
		}
	}
	shctl(t, "", "--gateway", gw, "topics", "describe", "events")

	// The fix: the store is back. The agent uploads its backlog, backpressure
	// turns off and writes are accepted again.
	px.Clear()
	eventually(t, 60*time.Second, "backpressure off", func() (bool, string) {
		v, ok := pr.value(`max(streamhouse_agent_backpressure)`)
		return ok && v == 0, fmt.Sprint(v)
	})
	okBefore := tr.ok.Load()
	eventually(t, 30*time.Second, "writes accepted again", func() (bool, string) {
		return tr.ok.Load() > okBefore+10, fmt.Sprint(tr.ok.Load() - okBefore)
	})
	r = shctl(t, "x\ny\n", "--gateway", gw, "--timeout", "10s", "produce", "events", "--partition", "0", "--acks", "wal")
	if r.Code != 0 || !strings.Contains(r.Stderr+r.Stdout, "produced 2 records to events (0 failed)") {
		t.Errorf("shctl produce after the fix: exit %d: %s", r.Code, r.Output())
	}
	pr.waitFalse("StreamHouseWALDiskUsageHigh after the fix", diskHigh.Query, 30*time.Second)
	// The rate windows are a minute: they go false once the last 429 has left it.
	tr.halt()
	eventually(t, 30*time.Second, "shctl topics describe shows everything uploaded", func() (bool, string) {
		for _, part := range describeTopic(t, gw, "events").Partitions {
			if part.CommittedEndOffset != part.HighWatermark {
				return false, part.String()
			}
		}
		return true, ""
	})
	pr.waitFalse("StreamHouseProducerBackpressure after the fix", backpressure.Query, 100*time.Second)
	t.Logf("proxy: %+v", px.Stats())
}
