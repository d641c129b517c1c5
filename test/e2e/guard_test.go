package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/pkg/client"
	"github.com/streamhouse/streamhouse/pkg/objstore"
	"github.com/streamhouse/streamhouse/pkg/objstore/faultproxy"
	"github.com/streamhouse/streamhouse/pkg/objstore/s3test"
	"github.com/streamhouse/streamhouse/test/devproc"
	"github.com/streamhouse/streamhouse/test/loadgen"
)

// Series names of the agent's object-store metrics (served at the gateway's
// /metrics in `streamhouse dev`).
const (
	mPutOK         = `streamhouse_agent_s3_requests_total{op="put",outcome="ok"}`
	mPutError      = `streamhouse_agent_s3_requests_total{op="put",outcome="error"}`
	mPutThrottled  = `streamhouse_agent_s3_throttled_total{op="put"}`
	mPutRate       = `streamhouse_agent_s3_put_rate`
	mBreaker       = `streamhouse_agent_s3_breaker_state`
	mBackpressure  = `streamhouse_agent_backpressure`
	mUncommitted   = `streamhouse_agent_wal_uncommitted_bytes`
	mWritesRefused = `streamhouse_agent_writes_refused_total`
)

// scrape reads every sample of the gateway's /metrics, keyed by the series
// as written (name plus labels).
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatalf("scrape metrics: %v", err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[line[:i]] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("scrape metrics: %v", err)
	}
	return out
}

// s3Args are the `streamhouse dev` flags for an S3 store at endpoint.
func s3Args(cfg objstore.S3Config, endpoint string) []string {
	return []string{"--object-store", "s3", "--s3-endpoint", endpoint, "--s3-bucket", cfg.Bucket,
		"--s3-access-key", cfg.AccessKey, "--s3-secret-key", cfg.SecretKey, "--s3-region", cfg.Region}
}

// measurementWindow waits out d. The caller measures a rate or samples a
// level over d: the time passing is the measurement, not a wait for
// something to happen.
func measurementWindow(d time.Duration) { time.Sleep(d) }

// TestStoreRateLimit: the object store admits only N object PUTs per second
// (the fault proxy answers the rest 503 SlowDown, as S3 does past a
// prefix's limit) while producers write enough to want far more PUTs (a
// 10 ms flush interval). The agent does not know N: AIMD must find it. Its
// successful PUT rate settles just under N (within 10 %) without sustained
// 503s, and no acknowledged record is lost or duplicated.
func TestStoreRateLimit(t *testing.T) {
	const (
		n          = 5.0 // PUT/s the store admits (well under what the uploader can do, ~12/s under -race on 2 cores)
		settle     = 20 * time.Second
		window     = 16 * time.Second
		partitions = 8
	)
	s3 := s3test.Start(t)
	px, err := faultproxy.Start(s3.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	defer px.Close()
	p := devproc.Start(t, bin, t.TempDir(), append(s3Args(s3, px.URL()), "--flush-interval", "10ms", "--flush-bytes", "65536")...)
	cl := newClients(t, p.URL)
	createTopic(t, cl, "rl", partitions, v1.Durability_DURABILITY_WAL)
	// A token bucket of N/s with a burst of 2, like any real limiter (S3's
	// included) has some burst: with a burst of 1, PUTs paced exactly at N/s
	// by the agent reach the proxy with tens of ms of jitter on this loaded
	// 2-core machine (race detector, loopback HTTP), and every pair that
	// arrives closer than 1/N is refused however well the agent paces.
	if err := px.Set(faultproxy.Faults{PutRate: n, PutBurst: 2}); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	sdk, err := client.New(p.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer sdk.Close()
	// 2 producers x 1,000 records/s: data for every 10 ms flush, so the
	// uploader wants ~100 PUT/s, five times what the store admits.
	load := loadgen.StartT(t, ctx, []*client.Client{sdk}, loadgen.Config{Topic: "rl", Producers: 2, Rate: 1000,
		Options: []client.ProducerOption{client.BatchBytes(16 << 10), client.MaxBufferedBytes(1 << 20), client.MaxRetryDuration(4 * time.Minute)}})

	type sample struct {
		at                     time.Time
		ok, errs, limited, fwd float64
		rate                   float64
	}
	take := func() sample {
		m := scrape(t, p.URL)
		st := px.Stats()
		return sample{at: time.Now(), ok: m[mPutOK], errs: m[mPutError], limited: float64(st.Injected["rate_limited"]),
			fwd: float64(st.Requests[faultproxy.OpPut]), rate: m[mPutRate]}
	}
	s0 := take()
	measurementWindow(settle) // AIMD finds the rate; the window below measures where it settled
	samples := []sample{take()}
	for range int(window / time.Second) {
		measurementWindow(time.Second)
		samples = append(samples, take())
	}
	if err := load.Stop(); err != nil {
		t.Errorf("stop producers: %v", err)
	}

	first, last := samples[0], samples[len(samples)-1]
	secs := last.at.Sub(first.at).Seconds()
	okRate := (last.ok - first.ok) / secs
	t.Logf("settling (%v): %.0f PUTs ok, %.0f answered 503 by the proxy; AIMD PUT rate now %.1f/s",
		settle, first.ok-s0.ok, first.limited-s0.limited, first.rate)
	var perSec []string
	for i := 1; i < len(samples); i++ {
		a, b := samples[i-1], samples[i]
		d := b.at.Sub(a.at).Seconds()
		perSec = append(perSec, fmt.Sprintf("%.0f/%.0f@%.0f", (b.ok-a.ok)/d, (b.limited-a.limited)/d, b.rate))
	}
	t.Logf("per second over the window (ok PUT/s / 503 per s @ AIMD rate): %s", strings.Join(perSec, " "))
	mid := samples[len(samples)/2]
	lateSecs := last.at.Sub(mid.at).Seconds()
	late503 := last.limited - mid.limited
	lateOK := last.ok - mid.ok
	t.Logf("store admits N = %.0f PUT/s: agent's successful PUT rate over %.0fs = %.2f/s (%.1f%% of N); "+
		"503s in the window %.0f (%.2f/s), in its last half %.0f (%.2f/s, %.1f%% of PUT attempts)",
		n, secs, okRate, 100*okRate/n, last.limited-first.limited, (last.limited-first.limited)/secs,
		late503, late503/lateSecs, 100*late503/max(1, late503+lateOK))

	// Within 10 % under N; above N only by what the proxy's burst (2
	// tokens) can let through once over the window.
	burst := 2.0
	if okRate < 0.9*n || okRate > n+burst/secs {
		t.Errorf("successful PUT rate %.2f/s, want within [%.1f, %.2f] (N = %.0f)", okRate, 0.9*n, n+burst/secs, n)
	}
	// No sustained 503s: throttling is a brief probe now and then, not a
	// steady share of the traffic.
	if frac := late503 / max(1, late503+lateOK); frac > 0.1 {
		t.Errorf("%.1f%% of PUT attempts in the last half of the window were answered 503: sustained throttling", 100*frac)
	}

	res := load.History().Check(readAll(t, ctx, sdk, "rl", partitions))
	t.Logf("acked %d, failed %d, read %d; proxy %+v", res.Acked, res.Failed, res.Read, px.Stats())
	if err := res.Err(); err != nil {
		t.Error(err)
	}
	if res.Failed > 0 {
		fs := load.Failures()
		t.Errorf("%d records failed: a rate-limited store should slow uploads, not fail writes; first: %v", res.Failed, fs[:min(3, len(fs))])
	}
}

// dirSize is the total size of the regular files under dir.
func dirSize(dir string) int64 {
	var n int64
	_ = filepath.Walk(dir, func(_ string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() {
			n += info.Size()
		}
		return nil
	})
	return n
}

// TestWALBudgetWithStoreDown: with the object store down for good (every
// request answered 503 SlowDown) and a 4 MiB WAL budget, producers keep
// trying. The agent answers writes with ResourceExhausted (HTTP 429 and a
// Retry-After header), keeps serving reads of what its WAL holds, and its
// WAL levels off at or below the budget. When the store comes back,
// everything acknowledged is uploaded and readable and backpressure turns
// off.
func TestWALBudgetWithStoreDown(t *testing.T) {
	const (
		budget     = 4 << 20
		partitions = 4
		down       = 20 * time.Second
	)
	s3 := s3test.Start(t)
	px, err := faultproxy.Start(s3.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	defer px.Close()
	dir := t.TempDir()
	p := devproc.Start(t, bin, dir, append(s3Args(s3, px.URL()), "--flush-interval", "100ms", "--wal-budget", fmt.Sprint(budget))...)
	cl := newClients(t, p.URL)
	createTopic(t, cl, "wb", partitions, v1.Durability_DURABILITY_WAL)
	segDir := filepath.Join(dir, "agent", "wal", "segments")
	diskBefore := dirSize(segDir)

	if err := px.Set(faultproxy.Faults{SlowDown: 1, RetryAfter: faultproxy.Duration(time.Second)}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	sdk, err := client.New(p.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer sdk.Close()
	// 4 producers x 10,000 records/s: the budget's 80 % fills in a few
	// seconds. A short MaxRetryDuration makes
	// the 429s visible as failed records.
	load := loadgen.StartT(t, ctx, []*client.Client{sdk}, loadgen.Config{Topic: "wb", Producers: 4, Rate: 10000,
		Options: []client.ProducerOption{client.BatchBytes(64 << 10), client.MaxBufferedBytes(1 << 20),
			client.RequestTimeout(10 * time.Second), client.MaxRetryDuration(2 * time.Second)}})

	var uncommitted, disk []int64
	var maxUn, maxDisk int64
	var bpSeen bool
	deadline := time.Now().Add(down)
	var rawChecked, fetchChecked bool
	// The outage is a measurement window: sample the WAL's level every
	// 500 ms for all of it (it must level off, not just stay under once).
	sample := time.NewTicker(500 * time.Millisecond)
	defer sample.Stop()
	for time.Now().Before(deadline) {
		<-sample.C
		m := scrape(t, p.URL)
		un, d := int64(m[mUncommitted]), dirSize(segDir)
		uncommitted, disk = append(uncommitted, un), append(disk, d)
		maxUn, maxDisk = max(maxUn, un), max(maxDisk, d)
		if m[mBackpressure] == 1 {
			bpSeen = true
		}
		if bpSeen && !rawChecked {
			rawChecked = true
			checkRefused(t, cl, p.URL)
		}
		if bpSeen && !fetchChecked {
			fetchChecked = true
			res, err := cl.consume.Fetch(ctxT(t, 30*time.Second), connect.NewRequest(&v1.FetchRequest{Topic: "wb", Partition: 0, Offset: 0}))
			if err != nil {
				t.Errorf("fetch from the WAL while the store is down: %v", err)
			} else if len(res.Msg.Records) == 0 {
				t.Errorf("fetch from the WAL while the store is down returned no records (high watermark %d)", res.Msg.HighWatermark)
			} else {
				t.Logf("fetch while the store is down: %d records from offset 0, high watermark %d", len(res.Msg.Records), res.Msg.HighWatermark)
			}
		}
	}
	if !bpSeen {
		t.Fatalf("backpressure never turned on with the store down (uncommitted bytes %v)", uncommitted)
	}
	mib := func(v int64) string { return fmt.Sprintf("%.2f", float64(v)/(1<<20)) }
	var unS, diskS []string
	for i := range uncommitted {
		unS, diskS = append(unS, mib(uncommitted[i])), append(diskS, mib(disk[i]))
	}
	t.Logf("WAL uncommitted MiB every 500ms: %s", strings.Join(unS, " "))
	t.Logf("WAL segments on disk MiB every 500ms: %s (%s MiB before the outage)", strings.Join(diskS, " "), mib(diskBefore))
	tailUn := slices.Clone(uncommitted[len(uncommitted)/2:])
	slices.Sort(tailUn)
	m := scrape(t, p.URL)
	codes := produceCodes(t, p.URL)
	t.Logf("budget %s MiB (429 above %s MiB, accepted again below %s MiB): uncommitted levelled at %s MiB (median of the last half), max %s MiB; segments on disk max %s MiB",
		mib(budget), mib(budget*8/10), mib(budget*6/10), mib(tailUn[len(tailUn)/2]), mib(maxUn), mib(maxDisk))
	t.Logf("while down: acked %d, failed (429 past the SDK's 2s retry budget) %d; gateway Produce answers by code %v; agent writes refused %.0f; breaker state %.0f; proxy %+v",
		load.Acked(), load.Failed(), codes, m[mWritesRefused], m[mBreaker], px.Stats())
	if maxUn > budget {
		t.Errorf("WAL uncommitted bytes reached %d, past the %d budget", maxUn, budget)
	}
	if maxDisk-diskBefore > budget {
		t.Errorf("WAL segments grew by %d bytes on disk, past the %d budget", maxDisk-diskBefore, budget)
	}
	if codes["resource_exhausted"] == 0 {
		t.Errorf("no ResourceExhausted answers while the store was down")
	}
	for code, n := range codes {
		if code != "ok" && code != "resource_exhausted" && n > 0 {
			t.Errorf("%d Produce answers with code %s; only ok and resource_exhausted are expected", n, code)
		}
	}

	// Heal the store: the backlog uploads, backpressure turns off, writes
	// are accepted again.
	px.Clear()
	healed := time.Now()
	var off map[string]float64
	waitFor(t, "backpressure off after the store recovered", 40*time.Second, func() bool {
		off = scrape(t, p.URL)
		return off[mBackpressure] == 0
	})
	t.Logf("backpressure off %v after the store recovered (uncommitted %s MiB, breaker %.0f)",
		time.Since(healed).Round(time.Millisecond), mib(int64(off[mUncommitted])), off[mBreaker])
	// Writes are accepted again: poll for fresh acks rather than wait a
	// fixed time and hope.
	a0, offAt := load.Acked(), time.Now()
	waitFor(t, "writes acknowledged after backpressure turned off", 30*time.Second, func() bool { return load.Acked() > a0+100 })
	t.Logf("accepted again: more than 100 records acked %v after backpressure turned off", time.Since(offAt).Round(time.Millisecond))
	if err := load.Stop(); err != nil {
		t.Errorf("stop producers: %v", err)
	}
	// Wait for everything acknowledged to be uploaded, then read it back
	// (a timeout is reported below with the bytes left).
	for start := time.Now(); time.Since(start) < 30*time.Second; time.Sleep(200 * time.Millisecond) {
		if scrape(t, p.URL)[mUncommitted] == 0 {
			break
		}
	}
	m = scrape(t, p.URL)
	res := load.History().Check(readAll(t, ctx, sdk, "wb", partitions))
	t.Logf("after healing: acked %d, failed %d (of which %d written after all), read %d; uncommitted %s MiB, segments on disk %s MiB, PUT ok %.0f / error %.0f",
		res.Acked, res.Failed, res.FailedPresent, res.Read, mib(int64(m[mUncommitted])), mib(dirSize(segDir)), m[mPutOK], m[mPutError])
	if err := res.Err(); err != nil {
		t.Error(err)
	}
	if m[mUncommitted] != 0 {
		t.Errorf("%.0f bytes still not uploaded 30s after the store recovered", m[mUncommitted])
	}
}

// checkRefused sends one Produce through the Connect client (it must fail
// with ResourceExhausted) and one as a raw Connect-JSON POST (it must get
// HTTP 429 with a Retry-After header). Backpressure is on when it is called.
func checkRefused(t *testing.T, cl clients, url string) {
	t.Helper()
	_, err := cl.produce.Produce(ctxT(t, 30*time.Second), connect.NewRequest(&v1.ProduceRequest{
		Topic: "wb", Partition: proto.Int32(1), Records: []*v1.Record{{Value: []byte("refused-connect")}}, Acks: v1.Acks_ACKS_WAL}))
	if connect.CodeOf(err) != connect.CodeResourceExhausted {
		t.Errorf("Produce with backpressure on = %v, want ResourceExhausted", err)
	} else {
		var ce *connect.Error
		ra := ""
		if e, ok := err.(*connect.Error); ok {
			ce = e
			ra = ce.Meta().Get("Retry-After")
		}
		t.Logf("Connect client: %v (Retry-After %q)", err, ra)
	}
	body := `{"topic":"wb","partition":1,"records":[{"value":"cmF3"}],"acks":"ACKS_WAL"}`
	req, _ := http.NewRequestWithContext(ctxT(t, 30*time.Second), http.MethodPost, url+"/streamhouse.v1.ProduceService/Produce", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := cl.http.Do(req)
	if err != nil {
		t.Errorf("raw produce: %v", err)
		return
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	t.Logf("raw HTTP produce: %d, Retry-After %q, body %s", resp.StatusCode, resp.Header.Get("Retry-After"), b)
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Errorf("raw HTTP produce with backpressure on: status %d, Retry-After %q; want 429 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
}

// TestGuardOverhead: produce throughput with the object-store protections
// on and off (--s3-no-guard), both deployments in one run against the same
// S3 server, alternating rounds, medians compared. Timing is not asserted
// (CI machines are noisy and -race distorts it); the ratio is logged for the
// issue's note (target: on within 10 % of off). Run without -race and with
// STREAMHOUSE_E2E_NORACE=1 for figures worth quoting.
//
// Each deployment is one controller, one agent and one gateway as separate
// processes: `streamhouse dev` does not pass --s3-no-guard to its agent (it
// accepts the flag and ignores it), `streamhouse agent` does. The test
// checks the flag took effect: after the rounds, the store answers every
// PUT 503 SlowDown for a moment, and only the guarded agent may count
// throttled PUTs (the unguarded one sends them straight to the store).
func TestGuardOverhead(t *testing.T) {
	const (
		rounds     = 3
		phase      = 2 * time.Second
		partitions = 8
	)
	s3 := s3test.Start(t)
	type deployment struct {
		name    string
		px      *faultproxy.Proxy
		agent   *devproc.Proc
		gateway *devproc.Proc
		sdk     *client.Client
	}
	var deps []*deployment
	for _, cfg := range []struct {
		name string
		args []string
	}{{"on", nil}, {"off", []string{"--s3-no-guard"}}} {
		px, err := faultproxy.Start(s3.Endpoint)
		if err != nil {
			t.Fatal(err)
		}
		defer px.Close()
		raft := devproc.FreeAddr(t)
		ctl := devproc.StartCmd(t, bin, "controller", "--node-id", "c1", "--data-dir", t.TempDir(), "--raft-listen", raft,
			"--initial-cluster", "c1="+raft, "--gossip-listen", "off")
		args := append([]string{"--data-dir", t.TempDir(), "--controllers", ctl.Addr, "--gossip-listen", "off", "--key-root", "guard-" + cfg.name},
			s3Args(s3, px.URL())...)
		ag := devproc.StartCmd(t, bin, "agent", append(args, cfg.args...)...)
		gw := devproc.StartCmd(t, bin, "gateway", "--controllers", ctl.Addr, "--gossip-listen", "off")
		c := newClients(t, gw.URL)
		createTopic(t, c, "gw", partitions, v1.Durability_DURABILITY_WAL)
		createTopic(t, c, "gd", partitions, v1.Durability_DURABILITY_DURABLE)
		sdk, err := client.New(gw.URL)
		if err != nil {
			t.Fatal(err)
		}
		defer sdk.Close()
		deps = append(deps, &deployment{name: cfg.name, px: px, agent: ag, gateway: gw, sdk: sdk})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	// run produces as fast as 4 producers can for phase and returns records/s.
	value := []byte(strings.Repeat("v", 100))
	run := func(d *deployment, topic string) float64 {
		start := time.Now()
		load := loadgen.StartT(t, ctx, []*client.Client{d.sdk}, loadgen.Config{Topic: topic, Producers: 4, Keyless: true,
			Value: func(int, int) []byte { return value }, CountOnly: true})
		measurementWindow(phase)
		if err := load.Stop(); err != nil {
			t.Errorf("guard %s, %s: %v", d.name, topic, err)
		}
		if n := load.Failed(); n > 0 {
			t.Errorf("guard %s, %s: %d records failed, first: %v", d.name, topic, n, load.Failures()[0].Err)
		}
		return float64(load.Acked()) / time.Since(start).Seconds()
	}
	results := map[string][]float64{}
	for r := range rounds {
		for _, topic := range []string{"gw", "gd"} {
			// Alternate which goes first, so warm-up and drift favour neither.
			order := []*deployment{deps[0], deps[1]}
			if r%2 == 1 {
				order[0], order[1] = order[1], order[0]
			}
			for _, d := range order {
				results[d.name+"/"+topic] = append(results[d.name+"/"+topic], run(d, topic))
			}
		}
	}
	median := func(v []float64) float64 {
		v = slices.Clone(v)
		sort.Float64s(v)
		return v[len(v)/2]
	}
	for _, topic := range []string{"gw", "gd"} {
		on, off := median(results["on/"+topic]), median(results["off/"+topic])
		if on == 0 || off == 0 {
			t.Errorf("%s: no throughput (on %.0f, off %.0f records/s)", topic, on, off)
			continue
		}
		kind := map[string]string{"gw": "acks=wal", "gd": "acks=durable"}[topic]
		t.Logf("%s, %d rounds of %v, 4 producers, 100-byte values: guard on %.0f records/s %v, off %.0f records/s %v; median on/off = %.3f",
			kind, rounds, phase, on, fmtRates(results["on/"+topic]), off, fmtRates(results["off/"+topic]), on/off)
	}

	// The flag took effect: a moment of 503s on every PUT is seen (and
	// retried) by the guard, and bypasses it with --s3-no-guard.
	for _, d := range deps {
		if err := d.px.Set(faultproxy.Faults{Ops: []faultproxy.Op{faultproxy.OpPut}, SlowDown: 1, Duration: faultproxy.Duration(500 * time.Millisecond)}); err != nil {
			t.Fatal(err)
		}
		c := newClients(t, d.gateway.URL)
		produceN(t, c, "gd", 0, 10, v1.Acks_ACKS_DURABLE, "probe")
		m := scrape(t, d.agent.URL)
		t.Logf("guard %s: PUT ok %.0f, error %.0f; guard counted %.0f throttled PUTs; proxy %+v",
			d.name, m[mPutOK], m[mPutError], m[mPutThrottled], d.px.Stats())
		switch {
		case m[mPutError] == 0:
			t.Errorf("guard %s: the store's 503s never reached the agent", d.name)
		case d.name == "on" && m[mPutThrottled] == 0:
			t.Errorf("guard on: PUTs answered 503 but the guard counted no throttling")
		case d.name == "off" && m[mPutThrottled] != 0:
			t.Errorf("guard off (--s3-no-guard): the guard still saw %.0f throttled PUTs", m[mPutThrottled])
		}
	}
}

func fmtRates(v []float64) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = fmt.Sprintf("%.0f", x)
	}
	return "[" + strings.Join(s, " ") + "]"
}
