package observability

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/api/gen/streamhouse/v1/streamhousev1connect"
	"github.com/streamhouse/streamhouse/pkg/client"
	"github.com/streamhouse/streamhouse/test/devproc"
)

// metricName is the naming rule: streamhouse_<component>_<what>[_<unit>].
var metricName = regexp.MustCompile(`^streamhouse_(gateway|agent|controller)_[a-z0-9_]+$`)

// exposition is one scrape of /metrics.
type exposition struct {
	body    string
	samples map[string]float64 // series (name{labels}) -> value
	names   map[string]bool    // metric names
}

// has reports whether the metric is exported; a histogram x counts for a
// query naming x, x_bucket, x_sum or x_count.
func (e exposition) has(name string) bool {
	return e.names[name] || e.names[name+"_bucket"]
}

func scrape(ctx context.Context, hc *http.Client, url string) (exposition, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/metrics", nil)
	if err != nil {
		return exposition{}, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return exposition{}, fmt.Errorf("scrape %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return exposition{}, fmt.Errorf("scrape %s: %s", url, resp.Status)
	}
	var body strings.Builder
	e := exposition{samples: map[string]float64{}, names: map[string]bool{}}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		body.WriteString(line + "\n")
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			return exposition{}, fmt.Errorf("scrape %s: bad line %q", url, line)
		}
		series := line[:i]
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return exposition{}, fmt.Errorf("scrape %s: bad value in %q: %w", url, line, err)
		}
		e.samples[series] = v
		name, _, _ := strings.Cut(series, "{")
		e.names[name] = true
	}
	e.body = body.String()
	return e, sc.Err()
}

// waitExported scrapes url until every name in want is exported (some are
// created on first use, a heartbeat or a flush later) or 30 s pass, and
// returns the last scrape.
func waitExported(t *testing.T, hc *http.Client, url string, want []string) exposition {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		e, err := scrape(ctx, hc, url)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		missing := 0
		for _, n := range want {
			if !e.has(n) {
				missing++
			}
		}
		if missing == 0 || time.Now().After(deadline) {
			return e
		}
		time.Sleep(100 * time.Millisecond) // poll interval, not synchronisation
	}
}

// checkExposition checks what any component's /metrics must satisfy:
// Prometheus-style histograms only, and names that follow the rule.
func checkExposition(t *testing.T, who string, e exposition) {
	t.Helper()
	if strings.Contains(e.body, "vmrange=") {
		t.Errorf("%s exports a VictoriaMetrics vmrange histogram, which Prometheus's histogram_quantile cannot use: use metrics.NewPrometheusHistogram", who)
	}
	for n := range e.names {
		if strings.HasPrefix(n, "streamhouse_") && !metricName.MatchString(n) {
			t.Errorf("%s exports %s, which does not follow streamhouse_<gateway|agent|controller>_<what>_<unit>", who, n)
		}
	}
	for _, n := range []string{"go_goroutines", "go_memstats_alloc_bytes", "process_cpu_seconds_total", "process_resident_memory_bytes"} {
		if !e.has(n) {
			t.Errorf("%s does not export the runtime/process metric %s", who, n)
		}
	}
}

// workload exercises the produce and fetch paths through a gateway (and
// fails one produce on purpose), so lazily created series exist: counters
// made with GetOrCreate* appear only once used.
func workload(t *testing.T, hc *http.Client, gateway, topic string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	admin := streamhousev1connect.NewAdminServiceClient(hc, gateway)
	produce := streamhousev1connect.NewProduceServiceClient(hc, gateway)
	consume := streamhousev1connect.NewConsumeServiceClient(hc, gateway)
	if _, err := admin.CreateTopic(ctx, connect.NewRequest(&v1.CreateTopicRequest{Name: topic, Partitions: 2})); err != nil && connect.CodeOf(err) != connect.CodeAlreadyExists {
		t.Fatalf("create topic %s: %v", topic, err)
	}
	for p := range int32(2) {
		var recs []*v1.Record
		for i := range 10 {
			recs = append(recs, &v1.Record{Key: []byte(fmt.Sprint(i)), Value: []byte("observability")})
		}
		// Retry while the partition's lease is being granted (Unavailable).
		for {
			_, err := produce.Produce(ctx, connect.NewRequest(&v1.ProduceRequest{Topic: topic, Partition: &p, Records: recs, Acks: v1.Acks_ACKS_DURABLE}))
			if err == nil {
				break
			}
			if ctx.Err() != nil || connect.CodeOf(err) != connect.CodeUnavailable {
				t.Fatalf("produce to %s/%d: %v", topic, p, err)
			}
			time.Sleep(50 * time.Millisecond) // retry backoff
		}
		res, err := consume.Fetch(ctx, connect.NewRequest(&v1.FetchRequest{Topic: topic, Partition: p, Offset: 0}))
		if err != nil {
			t.Fatalf("fetch %s/%d: %v", topic, p, err)
		}
		if len(res.Msg.GetRecords()) < 10 {
			t.Fatalf("fetch %s/%d: %d records, want at least the 10 just produced", topic, p, len(res.Msg.GetRecords()))
		}
	}
	_, err := produce.Produce(ctx, connect.NewRequest(&v1.ProduceRequest{Topic: topic + "-missing", Records: []*v1.Record{{Value: []byte("x")}}}))
	if connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("produce to a missing topic: %v, want NotFound", err)
	}
	groupWorkload(t, ctx, gateway, topic)
}

// groupWorkload has a consumer group read part of topic and commit, so the
// controller exports the group's members, rebalances and lag.
func groupWorkload(t *testing.T, ctx context.Context, gateway, topic string) {
	t.Helper()
	sdk, err := client.New(gateway)
	if err != nil {
		t.Fatal(err)
	}
	defer sdk.Close()
	gc, err := sdk.NewGroupConsumer(client.GroupConsumerConfig{Group: topic + "-group", Topics: []string{topic}, ManualCommit: true, MaxPollRecords: 5, AutoOffsetReset: client.OffsetResetEarliest})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := gc.Close(ctx); err != nil {
			t.Errorf("close group consumer: %v", err)
		}
	}()
	recs, err := gc.Poll(ctx)
	for err == nil && len(recs) == 0 {
		recs, err = gc.Poll(ctx)
	}
	if err != nil {
		t.Fatalf("poll group %s-group: %v", topic, err)
	}
	if err := gc.Commit(ctx); err != nil {
		t.Fatalf("commit group %s-group: %v", topic, err)
	}
}

// referencedNames returns the metric names the dashboards and rules use,
// sorted, and for each the places that use it.
func referencedNames(t *testing.T) (names []string, refs map[string][]string) {
	t.Helper()
	refs = referencedMetrics(t)
	for n := range refs {
		names = append(names, n)
	}
	sort.Strings(names)
	return names, refs
}

// TestMetricsExported scrapes a running `streamhouse dev` (all three
// components in one process) after real produce and fetch traffic and
// checks that every metric the dashboards and alert rules name is exported.
// It also kills the process, checks that the restart reports the WAL
// recovery, and that a clean stop does not.
func TestMetricsExported(t *testing.T) {
	names, refs := referencedNames(t)
	hc := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(hc.CloseIdleConnections)
	dir := t.TempDir()
	p := devproc.Start(t, streamhouseBin(t), dir, "--metrics-partition-lag")
	workload(t, hc, p.URL, "observability")

	// A crash: the restarted agent finds its WAL open and says so.
	p.Kill()
	p.Restart()
	workload(t, hc, p.URL, "observability")
	e := waitExported(t, hc, p.URL, names)
	checkExposition(t, "streamhouse dev", e)
	for _, n := range names {
		if !e.has(n) {
			t.Errorf("metric %s is used by %s but streamhouse dev does not export it", n, strings.Join(refs[n], ", "))
		}
	}
	if v := e.samples["streamhouse_agent_wal_recoveries_total"]; v != 1 {
		t.Errorf("after kill -9 and restart: streamhouse_agent_wal_recoveries_total = %v, want 1", v)
	}
	if ts := e.samples["streamhouse_agent_wal_last_recovery_timestamp_seconds"]; time.Since(time.Unix(int64(ts), 0)) > time.Minute {
		t.Errorf("after kill -9 and restart: streamhouse_agent_wal_last_recovery_timestamp_seconds = %v, want about now", ts)
	}
	if v := e.samples[`streamhouse_gateway_produce_requests_total{topic="_unknown",code="not_found"}`]; v != 1 {
		t.Errorf(`produce to a missing topic: streamhouse_gateway_produce_requests_total{topic="_unknown",code="not_found"} = %v, want 1`, v)
	}
	if v := e.samples[`streamhouse_gateway_produce_records_total{topic="observability"}`]; v != 20 {
		t.Errorf(`streamhouse_gateway_produce_records_total{topic="observability"} = %v, want 20 (since the restart)`, v)
	}
	t.Logf("streamhouse dev exports all %d checked metric names of the dashboards and rules (%d series in all)", len(names), len(e.samples))

	// A clean stop: no recovery reported.
	p.Stop()
	p.Restart()
	e = waitExported(t, hc, p.URL, []string{"streamhouse_agent_wal_recoveries_total"})
	if v := e.samples["streamhouse_agent_wal_recoveries_total"]; v != 0 {
		t.Errorf("after a clean stop and restart: streamhouse_agent_wal_recoveries_total = %v, want 0", v)
	}
}

// TestComponentsExportTheirMetrics runs a controller, an agent and a gateway
// as separate processes, and checks that each exports every metric of its
// own component (by name prefix) that the dashboards and rules use, plus
// the Go runtime and process metrics.
func TestComponentsExportTheirMetrics(t *testing.T) {
	names, refs := referencedNames(t)
	hc := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(hc.CloseIdleConnections)
	sh := streamhouseBin(t)
	raft := devproc.FreeAddr(t)
	// A 3 s lease (the agent's 2 s safety margin needs more): the killed
	// agent below is pruned from the leader's live set after 3 s, which its
	// heartbeat age must outlive.
	ctl := devproc.StartCmd(t, sh, "controller", "--node-id", "c1", "--data-dir", t.TempDir(),
		"--raft-listen", raft, "--initial-cluster", "c1="+raft, "--gossip-listen", "off", "--lease-duration", "3s",
		"--metrics-partition-lag")
	agent := devproc.StartCmd(t, sh, "agent", "--data-dir", t.TempDir(), "--controllers", ctl.Addr,
		"--gossip-listen", "off", "--flush-interval", "100ms")
	gw := devproc.StartCmd(t, sh, "gateway", "--controllers", ctl.Addr, "--gossip-listen", "off")
	workload(t, hc, gw.URL, "components")

	byComponent := map[string][]string{}
	for _, n := range names {
		if !strings.HasPrefix(n, "streamhouse_") {
			continue
		}
		comp := strings.SplitN(n, "_", 3)[1]
		byComponent[comp] = append(byComponent[comp], n)
	}
	for _, c := range []struct {
		name string
		p    *devproc.Proc
	}{{"controller", ctl}, {"agent", agent}, {"gateway", gw}} {
		want := byComponent[c.name]
		if len(want) == 0 {
			t.Errorf("the dashboards and rules use no %s metric", c.name)
		}
		e := waitExported(t, hc, c.p.URL, want)
		checkExposition(t, c.name, e)
		for _, n := range want {
			if !e.has(n) {
				t.Errorf("%s does not export %s (used by %s)", c.name, n, strings.Join(refs[n], ", "))
			}
		}
		t.Logf("%s exports all %d %s metrics the dashboards and rules use", c.name, len(want), c.name)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e, err := scrape(ctx, hc, ctl.URL)
	if err != nil {
		t.Fatal(err)
	}
	for series, min := range map[string]float64{
		"streamhouse_controller_raft_has_leader":                   1,
		"streamhouse_controller_raft_is_leader":                    1,
		"streamhouse_controller_raft_term":                         1,
		"streamhouse_controller_raft_leader_changes_total":         1,
		"streamhouse_controller_lease_grants_total":                2, // the topic's two partitions
		"streamhouse_controller_raft_apply_duration_seconds_count": 1,
	} {
		if v, ok := e.samples[series]; !ok || v < min {
			t.Errorf("controller: %s = %v (exported %v), want at least %v", series, v, ok, min)
		}
	}

	// The agent vanishes: the leader keeps reporting it, with a growing
	// heartbeat age (what StreamHouseAgentHeartbeatMissing watches), well
	// past the lease after which it stops counting as live.
	var ages []string
	for series := range e.samples {
		if strings.HasPrefix(series, "streamhouse_controller_agent_heartbeat_age_seconds{agent=") {
			ages = append(ages, series)
		}
	}
	if len(ages) != 1 {
		t.Fatalf("controller: heartbeat age series %v, want one for the one agent", ages)
	}
	agent.Kill()
	deadline := time.Now().Add(20 * time.Second)
	for {
		e, err := scrape(ctx, hc, ctl.URL)
		if err != nil {
			t.Fatal(err)
		}
		age, ok := e.samples[ages[0]]
		if !ok {
			t.Fatalf("controller dropped %s once the agent stopped heartbeating", ages[0])
		}
		if age > 6 {
			t.Logf("killed agent: %s = %.1f s and growing", ages[0], age)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("killed agent: %s = %v, not growing", ages[0], age)
		}
		time.Sleep(200 * time.Millisecond) // poll interval
	}
}
