package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/pkg/client"
	"github.com/streamhouse/streamhouse/pkg/objstore/faultproxy"
	"github.com/streamhouse/streamhouse/pkg/objstore/s3test"
	"github.com/streamhouse/streamhouse/pkg/rpcerr"
	"github.com/streamhouse/streamhouse/test/checker"
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
// wal producers only ever see 429 (retried), never an error; durable
// producers see 429s too, and the durable writes in flight when uploads
// start failing are answered at the agent's --durable-ack-timeout as an
// unknown outcome (deadline_exceeded: in the WAL, not committed), never a
// hang or an internal error; after the store recovers, throughput is back
// to its pre-storm level within 10 s. TestS3StormDurableBound checks the
// durable side in detail in less time.
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
		// The producers retry 429s for 10 minutes. The only other error
		// allowed is a durable write's unknown outcome at the ack bound.
		var other []loadgen.Failure
		unknown := 0
		for _, f := range l.Failures() {
			if topic == "sd" && errors.Is(f.Err, client.ErrUnknownOutcome) && connect.CodeOf(f.Err) == connect.CodeDeadlineExceeded {
				unknown++
				continue
			}
			other = append(other, f)
		}
		t.Logf("%s: %d records with an unknown outcome at the durable-ack bound", topic, unknown)
		if len(other) > 0 {
			t.Errorf("%s: %d records failed other than at the durable-ack bound (producers should see retried 429s), first: %v", topic, len(other), other[:min(3, len(other))])
		}
	}

	codes := produceCodes(t, p.URL)
	t.Logf("gateway Produce answers by code: %v; fault proxy: %+v", codes, px.Stats())
	for code, n := range codes {
		if code != "ok" && code != "resource_exhausted" && code != "deadline_exceeded" && n > 0 {
			t.Errorf("producers got %d answers with code %s; only ok, resource_exhausted (429) and deadline_exceeded (the durable-ack bound) are allowed", n, code)
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

// durableCall is what one durable produce request got.
type durableCall struct {
	start, end time.Time
	code       connect.Code // 0: ok
	retryAfter string       // the Retry-After header of a refusal
	notApplied bool
}

// TestS3StormDurableBound (issue 13, the S3-outage half): four producers
// write durable records, one request at a time each, while the object store
// (a real S3 server behind the fault proxy) answers every request 503
// SlowDown for 15 s, then 30 % of them for 10 s, then recovers; the agent's
// durable-ack bound is scaled down to 3 s by flag. It checks that
//
//   - no durable request waits longer than the bound (plus slack) for its
//     answer: admitted ones are answered by the bound, new ones are refused
//     at once;
//   - refusals are 429s (ResourceExhausted) marked not applied, with a
//     Retry-After in whole seconds, and none of their records is in the
//     log; they start as soon as uploads fail, before the breaker opens;
//   - no acknowledged record is lost or moved;
//   - the AIMD PUT rate is back near its configured limit within 20 s of
//     the store recovering;
//   - the breaker's and the throttling's transitions are logged, once per
//     transition rather than per request.
func TestS3StormDurableBound(t *testing.T) {
	const (
		partitions = 4
		bound      = 3 * time.Second
		// slack covers the gateway hop, a WAL fsync and a loaded CI
		// machine on top of the agent's bound.
		slack      = 2 * time.Second
		full       = 15 * time.Second
		partial    = 10 * time.Second
		putLimit   = 3000.0 // --s3-put-rate's default
		recoverMax = 20 * time.Second
	)
	s3 := s3test.Start(t)
	px, err := faultproxy.Start(s3.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	defer px.Close()
	p := devproc.Start(t, bin, t.TempDir(), append(s3Args(s3, px.URL()),
		"--flush-interval", "100ms", "--durable-ack-timeout", bound.String(), "--backpressure-min-dwell", "1s")...)
	cl := newClients(t, p.URL)
	createTopic(t, cl, "bd", partitions, v1.Durability_DURABILITY_DURABLE)

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	hist := checker.NewHistory()
	var (
		mu      sync.Mutex
		calls   []durableCall
		refused = map[string]bool{} // values of not-applied refusals: must not be in the log
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := range int32(partitions) {
		wg.Go(func() {
			for seq := 0; ; seq++ {
				select {
				case <-stop:
					return
				default:
				}
				var recs []*v1.Record
				var vals []string
				for i := range 5 {
					v := fmt.Sprintf("p%d-%d-%d", g, seq, i)
					vals = append(vals, v)
					recs = append(recs, &v1.Record{Value: []byte(v)})
				}
				rctx, rcancel := context.WithTimeout(ctx, time.Minute)
				c := durableCall{start: time.Now()}
				res, err := cl.produce.Produce(rctx, connect.NewRequest(&v1.ProduceRequest{
					Topic: "bd", Partition: proto.Int32(g), Records: recs, Acks: v1.Acks_ACKS_DURABLE}))
				rcancel()
				c.end = time.Now()
				var wait time.Duration
				switch {
				case err == nil && len(res.Msg.GetResults()) == 1 && res.Msg.GetResults()[0].GetError() == nil:
					base := res.Msg.GetResults()[0].GetBaseOffset()
					for i, v := range vals {
						hist.Acked(checker.Ack{Producer: int(g), Seq: seq*5 + i, Value: v, Partition: g, Offset: base + int64(i)})
					}
				case err == nil:
					t.Errorf("produce answered %v for one partition", res.Msg.GetResults())
					for _, v := range vals {
						hist.Failed(v)
					}
				default:
					c.code = connect.CodeOf(err)
					c.notApplied = rpcerr.IsNotApplied(err)
					if ce := new(connect.Error); errors.As(err, &ce) {
						c.retryAfter = ce.Meta().Get("Retry-After")
					}
					if c.code == connect.CodeResourceExhausted && c.notApplied {
						mu.Lock()
						for _, v := range vals {
							refused[v] = true
						}
						mu.Unlock()
						// Honour the hint as a client would, up to a second
						// (so the test sees the refusals go on).
						s, _ := strconv.Atoi(c.retryAfter)
						wait = min(time.Duration(s)*time.Second, time.Second)
					} else {
						for _, v := range vals {
							hist.Failed(v) // outcome unknown
						}
						wait = 100 * time.Millisecond
					}
				}
				mu.Lock()
				calls = append(calls, c)
				mu.Unlock()
				if wait > 0 {
					select {
					case <-stop:
						return
					case <-time.After(wait):
					}
				}
			}
		})
	}
	stopProducers := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopProducers()

	// The breaker's state and the PUT rate, sampled through the storm.
	type sample struct {
		at            time.Time
		breaker, rate float64
	}
	var samples []sample
	sampleFor := func(d time.Duration) {
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for end := time.Now().Add(d); time.Now().Before(end); <-tick.C {
			m := scrape(t, p.URL)
			samples = append(samples, sample{at: time.Now(), breaker: m[mBreaker], rate: m[mPutRate]})
		}
	}
	waitFor(t, "durable writes acknowledged before the storm", 30*time.Second, func() bool { a, _ := hist.Counts(); return a >= 100 })
	sampleFor(2 * time.Second)

	stormAt := time.Now()
	if err := px.Set(faultproxy.Faults{SlowDown: 1, RetryAfter: faultproxy.Duration(time.Second)}); err != nil {
		t.Fatal(err)
	}
	sampleFor(full)
	if err := px.Set(faultproxy.Faults{SlowDown: 0.3}); err != nil {
		t.Fatal(err)
	}
	sampleFor(partial)
	px.Clear()
	healed := time.Now()
	recovered := time.Duration(-1)
	for time.Since(healed) < recoverMax+5*time.Second {
		sampleFor(250 * time.Millisecond)
		if s := samples[len(samples)-1]; s.rate >= 0.9*putLimit && s.breaker == 0 {
			recovered = s.at.Sub(healed)
			break
		}
	}
	// Healthy traffic after the recovery: durable writes are accepted again.
	a0, _ := hist.Counts()
	for start := time.Now(); ; time.Sleep(50 * time.Millisecond) {
		if a, _ := hist.Counts(); a > a0+100 {
			break
		}
		if time.Since(start) > 30*time.Second {
			m := scrape(t, p.URL)
			t.Fatalf("durable writes not acknowledged 30s after the store recovered: breaker %v, PUT rate %v, PUTs ok %v / error %v, store failing %v; proxy %+v",
				m[mBreaker], m[mPutRate], m[mPutOK], m[mPutError], m["streamhouse_agent_store_failing"], px.Stats())
		}
	}
	stopProducers()

	// The answers.
	var maxWait time.Duration
	var slowest durableCall
	byCode := map[string]int{}
	var first429, breakerOpen time.Time
	var badRefusals []string
	for _, c := range calls {
		if d := c.end.Sub(c.start); d > maxWait {
			maxWait, slowest = d, c
		}
		name := "ok"
		if c.code != 0 {
			name = c.code.String()
		}
		byCode[name]++
		if c.code == connect.CodeResourceExhausted {
			if first429.IsZero() && c.start.After(stormAt) {
				first429 = c.end
			}
			if s, err := strconv.Atoi(c.retryAfter); err != nil || s < 1 || !c.notApplied {
				badRefusals = append(badRefusals, fmt.Sprintf("Retry-After %q, not applied %v", c.retryAfter, c.notApplied))
			}
		}
	}
	for _, s := range samples {
		if s.breaker == 2 && s.at.After(stormAt) {
			breakerOpen = s.at
			break
		}
	}
	var rates []string
	for _, s := range samples {
		if s.at.After(stormAt.Add(-time.Second)) {
			rates = append(rates, fmt.Sprintf("%.0f@%.0f", s.rate, s.breaker))
		}
	}
	t.Logf("PUT rate @ breaker state every 250ms from the storm on: %s", strings.Join(rates, " "))
	t.Logf("%d durable requests: %v; slowest answer %v (%v at %v into the storm); bound %v + %v slack",
		len(calls), byCode, maxWait.Round(time.Millisecond), slowest.code, slowest.start.Sub(stormAt).Round(time.Millisecond), bound, slack)
	t.Logf("first 429 %v into the storm; breaker open %v into it; PUT rate back at >= 90%% of %v %v after the store recovered",
		first429.Sub(stormAt).Round(time.Millisecond), breakerOpen.Sub(stormAt).Round(time.Millisecond), putLimit, recovered.Round(time.Millisecond))
	if maxWait > bound+slack {
		t.Errorf("a durable request waited %v for its answer (code %v), past the %v bound + %v", maxWait.Round(time.Millisecond), slowest.code, bound, slack)
	}
	if byCode[connect.CodeResourceExhausted.String()] == 0 {
		t.Error("no 429 during the storm")
	}
	if len(badRefusals) > 0 {
		t.Errorf("%d 429s without a whole-seconds Retry-After or the not-applied mark, e.g. %v", len(badRefusals), badRefusals[:min(3, len(badRefusals))])
	}
	if !breakerOpen.IsZero() && (first429.IsZero() || !first429.Before(breakerOpen)) {
		t.Errorf("durable writes were first refused at %v, not before the breaker opened at %v", first429.Sub(stormAt), breakerOpen.Sub(stormAt))
	}
	if recovered < 0 || recovered > recoverMax {
		t.Errorf("PUT rate not back near its limit within %v of the store recovering (took %v)", recoverMax, recovered)
	}

	// Nothing acknowledged is lost; nothing refused was written.
	sdk, err := client.New(p.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer sdk.Close()
	reads := readAll(t, ctx, sdk, "bd", partitions)
	res := hist.Check(reads)
	var written []string
	for _, r := range reads {
		if refused[r.Value] {
			written = append(written, r.Value)
		}
	}
	t.Logf("acked %d, outcome unknown %d (of which %d written), refused %d, read %d; proxy %+v", res.Acked, res.Failed, res.FailedPresent, len(refused), res.Read, px.Stats())
	if err := res.Err(); err != nil {
		t.Error(err)
	}
	if len(written) > 0 {
		t.Errorf("%d records of requests refused as not applied are in the log, e.g. %v", len(written), written[:min(3, len(written))])
	}

	// The transitions are logged, once each.
	logs := p.Stderr()
	for _, want := range []string{"circuit breaker open", "circuit breaker closed", "object store is throttling PUTs", "PUT rate back at its limit", "refusing acks=durable writes"} {
		if !strings.Contains(logs, want) {
			t.Errorf("no log line %q", want)
		}
	}
	guardLines := strings.Count(logs, "component=s3guard")
	opened := strings.Count(logs, "circuit breaker open;")
	t.Logf("guard log lines: %d (breaker opened %d times from closed)", guardLines, opened)
	if guardLines > 60 || opened > 5 {
		t.Errorf("%d guard log lines, %d breaker openings, for one storm: logged per request?", guardLines, opened)
	}
}
