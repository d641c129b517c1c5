package runbooks

import (
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/pkg/objstore"
	"github.com/streamhouse/streamhouse/pkg/objstore/faultproxy"
	"github.com/streamhouse/streamhouse/pkg/objstore/s3test"
	"github.com/streamhouse/streamhouse/test/devproc"
)

// s3Args are the `streamhouse dev`/`agent` flags for an S3 store at endpoint.
func s3Args(cfg objstore.S3Config, endpoint string) []string {
	return []string{"--object-store", "s3", "--s3-endpoint", endpoint, "--s3-bucket", cfg.Bucket,
		"--s3-access-key", cfg.AccessKey, "--s3-secret-key", cfg.SecretKey, "--s3-region", cfg.Region}
}

// describeTopic runs `shctl topics describe NAME --output json` and decodes it.
func describeTopic(t *testing.T, gateway, name string) *v1.DescribeTopicResponse {
	t.Helper()
	r := shctlQuiet(t, "", "--gateway", gateway, "topics", "describe", name, "--output", "json")
	if r.Code != 0 {
		t.Fatalf("shctl topics describe %s: exit %d: %s", name, r.Code, r.Output())
	}
	var d v1.DescribeTopicResponse
	if err := protojson.Unmarshal([]byte(r.Stdout), &d); err != nil {
		t.Fatalf("shctl topics describe %s --output json: %v\n%s", name, err, r.Stdout)
	}
	return &d
}

// TestS3Throttling reproduces runbooks/s3-throttling.md: the object store
// admits 2 PUTs per second (as S3 does past a prefix's request rate) while
// the agent flushes every 20 ms. The store answers the rest 503 SlowDown:
// StreamHouseS3Throttling's expression turns true, the guard's AIMD PUT rate
// (streamhouse_agent_s3_put_rate) drops from its configured cap, and
// `shctl topics describe` shows COMMITTED END behind HIGH WATERMARK on a wal
// topic. The runbook's fix, capping the agent's PUT rate under the store's
// limit (--s3-put-rate) and flushing less often (--flush-interval), ends the
// 503s: the expression goes false again and the committed end catches up.
func TestS3Throttling(t *testing.T) {
	t.Parallel()
	s3 := s3test.Start(t)
	px, err := faultproxy.Start(s3.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { px.Close() })
	p := devproc.Start(t, bin, t.TempDir(), append(s3Args(s3, px.URL()), "--flush-interval", "20ms")...)
	gw := hostPort(p)
	if r := shctl(t, "", "--gateway", gw, "topics", "create", "clicks", "--partitions", "2", "--durability", "wal"); r.Code != 0 {
		t.Fatalf("create topic: %s", r.Output())
	}
	pr := startPrometheus(t, targets{"streamhouse": {p.Addr}})
	rule := pr.alert("StreamHouseS3Throttling", "runbooks/s3-throttling.md")
	pr.waitScraped(1)

	c := newClients(t, p.URL)
	tr := startTrickle(t, c, "clicks", 2, 10, 0, 20*time.Millisecond, v1.Acks_ACKS_WAL)
	// Healthy: uploads succeed, the expression is false.
	pr.waitFalse("StreamHouseS3Throttling before the fault", rule.Query, 30*time.Second)

	// The store admits 2 PUT/s; the agent wants about 50.
	if err := px.Set(faultproxy.Faults{PutRate: 2}); err != nil {
		t.Fatal(err)
	}
	pr.waitTrue("StreamHouseS3Throttling", rule.Query, 60*time.Second)
	// Diagnose with the metrics the runbook names.
	pr.waitTrue("AIMD PUT rate below the configured 3000/s", `streamhouse_agent_s3_put_rate < 3000`, 30*time.Second)
	pr.waitTrue("PUTs answered with an error", `sum(rate(streamhouse_agent_s3_requests_total{op="put",outcome="error"}[1m])) > 0`, 30*time.Second)
	// shctl: on a wal topic the committed end falls behind the high watermark.
	eventually(t, 30*time.Second, "shctl topics describe shows COMMITTED END behind HIGH WATERMARK", func() (bool, string) {
		d := describeTopic(t, gw, "clicks")
		for _, part := range d.Partitions {
			if part.CommittedEndOffset < part.HighWatermark {
				return true, ""
			}
		}
		return false, "committed end equals high watermark"
	})
	shctl(t, "", "--gateway", gw, "topics", "describe", "clicks")
	t.Logf("proxy while throttled: %+v", px.Stats())

	// The fix: cap the agent's PUT rate under the store's limit and flush
	// less often. A clean restart (SIGTERM) uploads what the WAL holds first.
	tr.halt()
	p.Args = append(p.Args, "--s3-put-rate", "1", "--flush-interval", "1s")
	p.Stop()
	p.Restart()
	tr = startTrickle(t, c, "clicks", 2, 10, 0, 20*time.Millisecond, v1.Acks_ACKS_WAL)
	limited := px.Stats().Injected["rate_limited"]
	// The rate window is 1m: the expression goes false once the last 503
	// has left it.
	pr.waitFalse("StreamHouseS3Throttling after the fix", rule.Query, 100*time.Second)
	t.Logf("PUTs the store answered 503 since the fix: %d", px.Stats().Injected["rate_limited"]-limited)
	tr.halt()
	if tr.ok.Load() == 0 {
		t.Fatalf("no produce accepted after the fix")
	}
	eventually(t, 30*time.Second, "committed end catches up with the high watermark", func() (bool, string) {
		d := describeTopic(t, gw, "clicks")
		for _, part := range d.Partitions {
			if part.CommittedEndOffset != part.HighWatermark {
				return false, part.String()
			}
		}
		return true, ""
	})
	codes, last := tr.errs()
	t.Logf("after the fix: %d produce requests accepted, failures by code %v (last %v); proxy %+v", tr.ok.Load(), codes, last, px.Stats())
}
