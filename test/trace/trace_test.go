package trace

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/api/gen/streamhouse/v1/streamhousev1connect"
	"github.com/streamhouse/streamhouse/test/devproc"
	"github.com/streamhouse/streamhouse/test/trace/jaeger"
)

// Span names the test looks for (see the spans in gateway, agent,
// controller and pkg/objstore).
const (
	spanProduce      = "streamhouse.v1.ProduceService/Produce" // otelconnect server span at the gateway
	spanRoute        = "gateway.route"
	spanGatewayApp   = "gateway.append"
	spanWALAppend    = "agent.wal_append"
	spanCommitWait   = "agent.commit_wait"
	spanFlush        = "agent.flush"
	spanPut          = "objstore.put"
	spanCommitObject = "controller.commit_object"
	spanRaftApply    = "raft.apply"
)

func startJaeger(t *testing.T) *jaeger.Server {
	t.Helper()
	j, err := jaeger.Start(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		j.Stop()
		if t.Failed() {
			t.Logf("jaeger output:\n%s", j.Output())
		}
	})
	return j
}

// normID left-pads a hex id: Jaeger prints trace ids without leading zeros.
func normID(id string, n int) string {
	return strings.Repeat("0", max(0, n-len(id))) + id
}

// tree indexes one trace's spans by id and by operation name.
type tree struct {
	tr     jaeger.Trace
	byID   map[string]jaeger.Span
	byName map[string][]jaeger.Span
}

func newTree(tr jaeger.Trace) tree {
	t := tree{tr: tr, byID: map[string]jaeger.Span{}, byName: map[string][]jaeger.Span{}}
	for _, s := range tr.Spans {
		t.byID[s.SpanID] = s
		t.byName[s.OperationName] = append(t.byName[s.OperationName], s)
	}
	return t
}

// service is the service.name of the process that made sp.
func (t tree) service(sp jaeger.Span) string { return t.tr.Processes[sp.ProcessID].ServiceName }

// path is "service:operation" of sp and of each of its ancestors, up to
// the trace's root.
func (t tree) path(sp jaeger.Span) []string {
	var out []string
	for range len(t.tr.Spans) + 1 { // a cycle cannot make this loop forever
		out = append(out, t.service(sp)+":"+sp.OperationName)
		p, ok := t.byID[sp.Parent()]
		if !ok {
			break
		}
		sp = p
	}
	return out
}

// checkPaths returns a complaint for each want (a path from a span up to
// the root, as path returns it) that no span of the trace has.
func (t tree) checkPaths(wants ...[]string) []string {
	var bad []string
	for _, want := range wants {
		_, name, _ := strings.Cut(want[0], ":")
		var got [][]string
		ok := false
		for _, sp := range t.byName[name] {
			p := t.path(sp)
			if slices.Equal(p, want) {
				ok = true
				break
			}
			got = append(got, p)
		}
		if !ok {
			bad = append(bad, fmt.Sprintf("want a span with ancestry %v, have %v", want, got))
		}
	}
	return bad
}

// path builds a want for checkPaths: ops from a span up to the root, each
// "operation" (of service svc) or "service:operation".
func path(svc string, ops ...string) []string {
	out := make([]string, len(ops))
	for i, op := range ops {
		if !strings.Contains(op, ":") {
			op = svc + ":" + op
		}
		out[i] = op
	}
	return out
}

// waitTrace polls Jaeger until one of service's traces passes check (no
// complaints) and returns it; it fails the test with the complaints about
// the best candidate when none does within a minute.
func waitTrace(t *testing.T, j *jaeger.Server, service string, check func(tree) []string) tree {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var last []string
	for {
		trs, err := j.Traces(ctx, service, 100)
		if err != nil && ctx.Err() == nil {
			last = []string{err.Error()}
		}
		for _, tr := range trs {
			tt := newTree(tr)
			bad := check(tt)
			if len(bad) == 0 {
				return tt
			}
			if last == nil || len(bad) < len(last) {
				last = bad
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no trace of %s in Jaeger passes the checks within a minute (%d traces); best candidate: %v", service, len(trs), last)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func produce(ctx context.Context, c streamhousev1connect.ProduceServiceClient, topic, key string) error {
	_, err := c.Produce(ctx, connect.NewRequest(&v1.ProduceRequest{
		Topic: topic, Acks: v1.Acks_ACKS_DURABLE,
		Records: []*v1.Record{{Key: []byte(key), Value: []byte("value of " + key)}},
	}))
	return err
}

// TestDevDurableProduceIsOneTrace is the acceptance test of tracing: a
// `streamhouse dev` exporting to a real Jaeger at sample ratio 1; one
// produce with acks durable is one trace holding the gateway's routing, the
// agent's WAL append, the flush with its S3 PUT, and the controller's
// commit through Raft, each under the right parent. Its log lines carry the
// trace's ids. The spans are exported by the SIGTERM shutdown: the batch
// interval is set far beyond the test's length.
func TestDevDurableProduceIsOneTrace(t *testing.T) {
	j := startJaeger(t)
	for _, kv := range j.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "600000") // ms
	dev := devproc.Start(t, bin, t.TempDir(), "--trace-sample-ratio", "1", "--flush-interval", "50ms",
		"--log-level", "debug", "--log-format", "json")
	hc := &http.Client{Transport: &http.Transport{}}
	defer hc.CloseIdleConnections()
	admin := streamhousev1connect.NewAdminServiceClient(hc, dev.URL)
	prod := streamhousev1connect.NewProduceServiceClient(hc, dev.URL)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := admin.CreateTopic(ctx, connect.NewRequest(&v1.CreateTopicRequest{Name: "traced", Partitions: 1})); err != nil {
		t.Fatal(err)
	}
	if err := produce(ctx, prod, "traced", "k0"); err != nil {
		t.Fatal(err)
	}
	hc.CloseIdleConnections()
	dev.Stop()
	if code := dev.ExitCode(); code != 0 {
		t.Fatalf("streamhouse dev exited with %d after SIGTERM", code)
	}

	// Every span under the right parent. In dev the gateway calls the
	// agent, and the agent the controller, in process: no RPC spans between.
	const svc = "streamhouse"
	tt := waitTrace(t, j, svc, func(tt tree) []string {
		return tt.checkPaths(
			path(svc, spanProduce),
			path(svc, spanRoute, spanProduce),
			path(svc, spanWALAppend, spanGatewayApp, spanProduce),
			path(svc, spanCommitWait, spanGatewayApp, spanProduce),
			// The flush joins the trace of a durable append it carries.
			path(svc, spanPut, spanFlush, spanGatewayApp, spanProduce),
			path(svc, spanRaftApply, spanCommitObject, spanFlush, spanGatewayApp, spanProduce),
		)
	})
	for _, s := range tt.tr.Spans {
		t.Logf("span %-40s %s parent=%s %dµs", s.OperationName, s.SpanID, s.Parent(), s.Duration)
	}

	// The flush starts after the produce's WAL append, and the produce is
	// answered only after the controller committed the flush's object.
	flush, wal, top := tt.byName[spanFlush][0], tt.byName[spanWALAppend][0], tt.byName[spanProduce][0]
	commit := tt.byName[spanCommitObject][0]
	if flush.StartTime < wal.StartTime || commit.StartTime+commit.Duration > top.StartTime+top.Duration {
		t.Errorf("flush starts at %d, before the WAL append at %d, or the commit ends at %d, after the produce at %d",
			flush.StartTime, wal.StartTime, commit.StartTime+commit.Duration, top.StartTime+top.Duration)
	}

	// The gateway's debug line about the produce carries the trace's ids.
	traceID := normID(tt.tr.TraceID, 32)
	found := false
	sc := bufio.NewScanner(strings.NewReader(dev.Stderr()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var rec map[string]any
		if json.Unmarshal(sc.Bytes(), &rec) != nil || rec["msg"] != "produce" {
			continue
		}
		if id, _ := rec["trace_id"].(string); id == traceID {
			found = true
			if rec["span_id"] != normID(top.SpanID, 16) {
				t.Errorf("produce log line span_id %v, want the Produce span %s", rec["span_id"], top.SpanID)
			}
		}
	}
	if !found {
		t.Errorf("no \"produce\" log line with trace_id %s in:\n%s", traceID, dev.Stderr())
	}
}

// TestDevFlushLinksOtherProduces: many durable produces share one flush;
// the flush is in the trace of one of them and linked from the others'.
func TestDevFlushLinksOtherProduces(t *testing.T) {
	j := startJaeger(t)
	for _, kv := range j.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	// A long flush interval so the concurrent produces meet in one flush.
	dev := devproc.Start(t, bin, t.TempDir(), "--trace-sample-ratio", "1", "--flush-interval", "500ms")
	hc := &http.Client{Transport: &http.Transport{}}
	defer hc.CloseIdleConnections()
	admin := streamhousev1connect.NewAdminServiceClient(hc, dev.URL)
	prod := streamhousev1connect.NewProduceServiceClient(hc, dev.URL)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := admin.CreateTopic(ctx, connect.NewRequest(&v1.CreateTopicRequest{Name: "shared", Partitions: 1})); err != nil {
		t.Fatal(err)
	}
	const n = 8
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { errs[i] = produce(ctx, prod, "shared", fmt.Sprint("k", i)) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	// Some trace holds a flush span with links (FOLLOWS_FROM references)
	// to other produces' traces.
	tt := waitTrace(t, j, "streamhouse", func(tt tree) []string {
		for _, f := range tt.byName[spanFlush] {
			for _, r := range f.References {
				if r.RefType == "FOLLOWS_FROM" && normID(r.TraceID, 32) != normID(tt.tr.TraceID, 32) {
					return nil
				}
			}
		}
		return []string{"no flush span linking another trace"}
	})
	f := tt.byName[spanFlush][0]
	links := 0
	for _, r := range f.References {
		if r.RefType == "FOLLOWS_FROM" {
			links++
		}
	}
	t.Logf("flush span %s in trace %s links %d other produces", f.SpanID, tt.tr.TraceID, links)
}

// TestClusterTraceCrossesProcesses: a controller, an agent and a gateway as
// separate processes, each exporting to the same Jaeger. One durable
// produce is one trace across all three: the W3C trace context travels in
// the Connect calls gateway -> agent and agent -> controller, and the
// otelconnect client and server spans sit between each process's own. The
// agent exports over OTLP/gRPC, the others over OTLP/HTTP.
func TestClusterTraceCrossesProcesses(t *testing.T) {
	j := startJaeger(t)
	for _, kv := range j.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	traced := []string{"--trace-sample-ratio", "1", "--gossip-listen", "off"}
	raft := devproc.FreeAddr(t)
	ctl := devproc.StartCmd(t, bin, "controller", append([]string{"--node-id", "c1", "--data-dir", t.TempDir(),
		"--raft-listen", raft, "--initial-cluster", "c1=" + raft}, traced...)...)
	// The agent exports over OTLP/gRPC, the others over OTLP/HTTP (a
	// child process takes the environment at its start).
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+j.OTLPGRPC)
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
	devproc.StartCmd(t, bin, "agent", append([]string{"--data-dir", t.TempDir(), "--controllers", ctl.Addr,
		"--flush-interval", "50ms"}, traced...)...)
	for _, kv := range j.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	gw := devproc.StartCmd(t, bin, "gateway", append([]string{"--controllers", ctl.Addr}, traced...)...)

	hc := &http.Client{Transport: &http.Transport{}}
	defer hc.CloseIdleConnections()
	admin := streamhousev1connect.NewAdminServiceClient(hc, gw.URL)
	prod := streamhousev1connect.NewProduceServiceClient(hc, gw.URL)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := admin.CreateTopic(ctx, connect.NewRequest(&v1.CreateTopicRequest{Name: "traced", Partitions: 1})); err != nil {
		t.Fatal(err)
	}
	// The partition gets its agent at the agent's next heartbeat: retry
	// the refusals that say nothing was written.
	for {
		err := produce(ctx, prod, "traced", "k0")
		if err == nil {
			break
		}
		if c := connect.CodeOf(err); (c != connect.CodeUnavailable && c != connect.CodeFailedPrecondition) || ctx.Err() != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	const (
		g         = "streamhouse-gateway:"
		a         = "streamhouse-agent:"
		c         = "streamhouse-controller:"
		appendRPC = "streamhouse.v1.AgentService/Append"
		commitRPC = "streamhouse.v1.ControllerService/CommitObject"
	)
	// From the agent's server span up: the gateway's client span, its
	// gateway.append, the Produce server span (the root).
	toRoot := []string{a + appendRPC, g + appendRPC, g + spanGatewayApp, g + spanProduce}
	tt := waitTrace(t, j, "streamhouse-gateway", func(tt tree) []string {
		return tt.checkPaths(
			[]string{g + spanProduce},
			[]string{g + spanRoute, g + spanProduce},
			append([]string{a + spanWALAppend}, toRoot...),
			append([]string{a + spanPut, a + spanFlush}, toRoot...),
			append([]string{c + spanRaftApply, c + spanCommitObject, c + commitRPC, a + commitRPC, a + spanFlush}, toRoot...),
		)
	})
	for _, s := range tt.tr.Spans {
		t.Logf("span %-60s parent=%s", strings.Join(tt.path(s)[:1], ""), s.Parent())
	}
}
