package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/pkg/client"
	"github.com/streamhouse/streamhouse/pkg/objstore/faultproxy"
	"github.com/streamhouse/streamhouse/pkg/objstore/s3test"
	"github.com/streamhouse/streamhouse/test/devproc"
	"github.com/streamhouse/streamhouse/test/loadgen"
)

// stormPhase is how long each storm phase lasts: 60s as the issue asks, or
// STREAMHOUSE_STORM_SECONDS for a quicker local run.
func stormPhase() time.Duration {
	if s, err := strconv.Atoi(os.Getenv("STREAMHOUSE_STORM_SECONDS")); err == nil && s > 0 {
		return time.Duration(s) * time.Second
	}
	return 60 * time.Second
}

// TestS3Storm: producers write steadily to a wal and a durable topic while
// the object store answers 100% 503 SlowDown for a phase, then 30% for a
// phase, then recovers. No acknowledged record may be lost or duplicated;
// producers only ever see 429 (retried), never a timeout or an internal
// error; after the store recovers, throughput is back to its pre-storm
// level within 10 s.
func TestS3Storm(t *testing.T) {
	if testing.Short() {
		t.Skip("two minutes of storm; not in -short")
	}
	s3 := s3test.Start(t)
	px, err := faultproxy.Start(s3.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	defer px.Close()
	p := devproc.Start(t, bin, t.TempDir(), "--object-store", "s3", "--s3-endpoint", px.URL(), "--s3-bucket", s3.Bucket,
		"--s3-access-key", s3.AccessKey, "--s3-secret-key", s3.SecretKey, "--s3-region", s3.Region,
		"--flush-interval", "100ms", "--wal-budget", fmt.Sprint(4<<20))
	cl := newClients(t, p.URL)
	const partitions = 4
	createTopic(t, cl, "sw", partitions, v1.Durability_DURABILITY_WAL)
	createTopic(t, cl, "sd", partitions, v1.Durability_DURABILITY_DURABLE)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	sdk, err := client.New(p.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer sdk.Close()
	// Two producers per topic at a steady 2,000 records/s each; ids 0-1
	// write sw, 2-3 sd.
	loads := map[string]*loadgen.Load{}
	for ti, topic := range []string{"sw", "sd"} {
		loads[topic] = loadgen.StartT(t, ctx, []*client.Client{sdk}, loadgen.Config{Topic: topic, Producers: 2, FirstID: ti * 2,
			Rate: 2000, Options: []client.ProducerOption{client.BatchBytes(16 << 10), client.MaxBufferedBytes(512 << 10),
				client.RequestTimeout(5 * time.Minute), client.MaxRetryDuration(10 * time.Minute)}})
	}
	acked := func() int64 { return loads["sw"].Acked() + loads["sd"].Acked() }
	// rate samples acks per second over d.
	rate := func(d time.Duration) float64 {
		a0 := acked()
		measurementWindow(d)
		return float64(acked()-a0) / d.Seconds()
	}
	rate(2 * time.Second) // warm up
	var base []float64
	for range 5 {
		base = append(base, rate(time.Second))
	}
	sort.Float64s(base)
	baseline := base[2]
	t.Logf("pre-storm throughput: %.0f records/s (median of 5 one-second samples)", baseline)

	phase := stormPhase()
	if err := px.Set(faultproxy.Faults{SlowDown: 1, RetryAfter: faultproxy.Duration(time.Second)}); err != nil {
		t.Fatal(err)
	}
	t.Logf("storm: 100%% 503 SlowDown for %v", phase)
	during := rate(phase)
	if err := px.Set(faultproxy.Faults{SlowDown: 0.3}); err != nil {
		t.Fatal(err)
	}
	t.Logf("storm: 30%% 503 SlowDown for %v (throughput during 100%%: %.0f records/s)", phase, during)
	during = rate(phase)
	px.Clear()
	t.Logf("store healthy again (throughput during 30%%: %.0f records/s)", during)
	healed := time.Now()
	recovered := time.Duration(-1)
	for time.Since(healed) < 30*time.Second {
		if r := rate(time.Second); r >= 0.9*baseline {
			recovered = time.Since(healed)
			t.Logf("throughput back to %.0f records/s (>= 90%% of %.0f) %v after the store recovered", r, baseline, recovered)
			break
		}
	}
	if recovered < 0 || recovered > 10*time.Second {
		t.Errorf("throughput did not recover to the pre-storm level within 10s (took %v)", recovered)
	}
	for topic, l := range loads {
		if err := l.Stop(); err != nil {
			t.Errorf("%s: stop producers: %v", topic, err)
		}
		// The producers retry 429s for 10 minutes: any error is one they
		// should never have seen.
		if n := l.Failed(); n > 0 {
			fs := l.Failures()
			t.Errorf("%s: %d records failed (producers should only ever see retried 429s), first: %v", topic, n, fs[:min(3, len(fs))])
		}
	}

	codes := produceCodes(t, p.URL)
	t.Logf("gateway Produce answers by code: %v; fault proxy: %+v", codes, px.Stats())
	for code, n := range codes {
		if code != "ok" && code != "resource_exhausted" && n > 0 {
			t.Errorf("producers got %d answers with code %s; only ok and resource_exhausted (429) are allowed", n, code)
		}
	}
	if codes["resource_exhausted"] == 0 {
		t.Errorf("no 429 during a 100%% storm: backpressure never engaged")
	}
	for topic, l := range loads {
		res := l.History().Check(readAll(t, ctx, sdk, topic, partitions))
		t.Logf("%s: acked %d, failed %d, read %d", topic, res.Acked, res.Failed, res.Read)
		if err := res.Err(); err != nil {
			t.Errorf("%s: %v", topic, err)
		}
	}
}

// produceCodes scrapes the gateway's Produce answers by code from /metrics.
func produceCodes(t *testing.T, url string) map[string]int {
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]int{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, `streamhouse_gateway_requests_total{method="Produce",code="`) {
			continue
		}
		rest := strings.TrimPrefix(line, `streamhouse_gateway_requests_total{method="Produce",code="`)
		code, val, _ := strings.Cut(rest, `"} `)
		n, _ := strconv.Atoi(val)
		out[code] += n
	}
	return out
}
