package e2e

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/pkg/client"
	"github.com/streamhouse/streamhouse/pkg/rpcerr"
	"github.com/streamhouse/streamhouse/test/devproc"
)

// gatewayRequests returns how many requests of a ConsumeService method the
// gateway answered, by any code.
func gatewayRequests(t *testing.T, url, method string) float64 {
	t.Helper()
	var n float64
	for series, v := range scrape(t, url) {
		if strings.HasPrefix(series, `streamhouse_gateway_requests_total{method="`+method+`",`) {
			n += v
		}
	}
	return n
}

// TestFetchPartitionsThousand: a consumer of 1,000 partitions reads them
// all with one FetchPartitions per poll (the gateway never sees a Fetch),
// its long-poll is answered by a record on any one of them, and bad
// partitions in a request get their own errors while the others are served.
func TestFetchPartitionsThousand(t *testing.T) {
	const n = 1000
	p := devproc.Start(t, bin, t.TempDir(), "--flush-interval", "50ms")
	c := newClients(t, p.URL)
	createTopic(t, c, "many", n, v1.Durability_DURABILITY_DURABLE)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sdk, err := client.New(p.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer sdk.Close()

	// Two records in every partition.
	prod, err := sdk.NewProducer("many", client.Linger(5*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	for part := range int32(n) {
		for i := range 2 {
			prod.Produce(ctx, client.Record{Value: fmt.Appendf(nil, "p%d-%d", part, i), Partition: new(part)}, func(r client.Result) {
				if r.Err != nil {
					t.Errorf("produce to %d: %v", part, r.Err)
				}
			})
		}
	}
	if err := prod.Close(); err != nil {
		t.Fatalf("producer close: %v", err)
	}
	if t.Failed() {
		t.FailNow()
	}

	fetchesBefore := gatewayRequests(t, p.URL, "Fetch")
	manyBefore := gatewayRequests(t, p.URL, "FetchPartitions")
	starts := map[client.TopicPartition]int64{}
	for part := range int32(n) {
		starts[client.TopicPartition{Topic: "many", Partition: part}] = 0
	}
	r := sdk.NewMultiReader(starts, client.MaxWait(2*time.Second))
	got := map[int32][]string{}
	records, polls := 0, 0
	for records < 2*n {
		fps, err := r.Next(ctx)
		if err != nil {
			t.Fatalf("Next after %d records: %v", records, err)
		}
		polls++
		for _, fp := range fps {
			if fp.Err != nil {
				t.Fatalf("%s/%d: %v", fp.Topic, fp.Partition, fp.Err)
			}
			for _, rec := range fp.Records {
				got[fp.Partition] = append(got[fp.Partition], string(rec.Value))
				records++
			}
		}
	}
	for part := range int32(n) {
		if want := []string{fmt.Sprintf("p%d-0", part), fmt.Sprintf("p%d-1", part)}; !slices.Equal(got[part], want) {
			t.Fatalf("partition %d: %q, want %q", part, got[part], want)
		}
	}
	t.Logf("read %d records of %d partitions in %d polls", records, n, polls)

	// Caught up everywhere: one poll waits on all 1,000 partitions, and a
	// record on any one of them answers it.
	type answer struct {
		fps []client.FetchedPartition
		err error
	}
	done := make(chan answer, 1)
	began := time.Now()
	go func() { // owns r until it answers
		for {
			fps, err := r.Next(ctx)
			if err != nil || len(fps) > 0 {
				done <- answer{fps, err}
				return
			}
		}
	}()
	late := int32(777)
	if _, err := c.produce.Produce(ctx, connect.NewRequest(&v1.ProduceRequest{Topic: "many", Partition: &late, Records: []*v1.Record{{Value: []byte("late")}}})); err != nil {
		t.Fatalf("produce the late record: %v", err)
	}
	ans := <-done
	if ans.err != nil {
		t.Fatalf("long-poll: %v", ans.err)
	}
	if len(ans.fps) != 1 || ans.fps[0].Partition != late || len(ans.fps[0].Records) != 1 || string(ans.fps[0].Records[0].Value) != "late" {
		t.Fatalf("long-poll answered %+v, want the late record of partition %d", ans.fps, late)
	}
	t.Logf("the long-poll over %d partitions answered %v after the produce began", n, time.Since(began))
	polls++

	if d := gatewayRequests(t, p.URL, "Fetch") - fetchesBefore; d != 0 {
		t.Errorf("the gateway answered %v single-partition Fetches, want 0", d)
	}
	if d := gatewayRequests(t, p.URL, "FetchPartitions") - manyBefore; d < float64(polls) || d > float64(polls)+2 {
		t.Errorf("the gateway answered %v FetchPartitions for %d polls, want one per poll", d, polls)
	}

	// Per-partition errors, the other partitions served.
	res, err := c.consume.FetchPartitions(ctx, connect.NewRequest(&v1.FetchPartitionsRequest{Partitions: []*v1.FetchPartition{
		{Topic: "many", Partition: 3, Offset: 1},
		{Topic: "many", Partition: 4, Offset: 1_000_000},
		{Topic: "many", Partition: n + 5},
		{Topic: "nope", Partition: 0},
		{Topic: "many", Partition: late, Offset: 2},
	}}))
	if err != nil {
		t.Fatalf("FetchPartitions with bad partitions: %v", err)
	}
	prs := res.Msg.GetPartitions()
	if len(prs) != 5 {
		t.Fatalf("%d answers for 5 partitions", len(prs))
	}
	wantRecords := func(pr *v1.PartitionRecords, want ...string) {
		t.Helper()
		if pr.GetError() != nil {
			t.Fatalf("%s/%d: %v", pr.GetTopic(), pr.GetPartition(), rpcerr.FromEntry(pr.GetError()))
		}
		var vals []string
		for _, rec := range pr.GetRecords() {
			vals = append(vals, string(rec.GetValue()))
		}
		if !slices.Equal(vals, want) {
			t.Fatalf("%s/%d: %q, want %q", pr.GetTopic(), pr.GetPartition(), vals, want)
		}
	}
	wantErr := func(pr *v1.PartitionRecords, code connect.Code, substr string) {
		t.Helper()
		err := rpcerr.FromEntry(pr.GetError())
		if err == nil || err.Code() != code || !strings.Contains(err.Message(), substr) {
			t.Fatalf("%s/%d: %v, want %v containing %q", pr.GetTopic(), pr.GetPartition(), err, code, substr)
		}
	}
	wantRecords(prs[0], "p3-1")
	wantErr(prs[1], connect.CodeOutOfRange, "valid offsets are 0 to 2")
	wantErr(prs[2], connect.CodeInvalidArgument, "has partitions 0 to 999")
	wantErr(prs[3], connect.CodeNotFound, `topic "nope" does not exist`)
	wantRecords(prs[4], "late")
}

// TestFetchPartitionsTruncatedAcrossAgents: in a cluster (three agents, so
// one FetchPartitions is split over several of them), the holder of a wal
// partition dies for good with records it never uploaded. After the unclean
// handoff, a MultiReader that had read them gets that partition's
// *TruncatedError with the offset to resume from, while it keeps reading the
// partitions of the live agents, and then reads the new records.
func TestFetchPartitionsTruncatedAcrossAgents(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 8 processes; not in -short")
	}
	const lease, handoff = 3 * time.Second, 4 * time.Second
	c := startCluster(t, clusterOpts{lease: lease, walHandoff: handoff, agentArgs: []string{"--flush-interval", "1h", "--flush-bytes", "268435456"}})
	cl := newClients(t, c.gateways[0].URL)
	const partitions = 6
	createTopic(t, cl, "u", partitions, v1.Durability_DURABILITY_WAL)
	victim := c.agents[0]
	lost := heldBy(t, cl, "u", victim.Addr)
	if len(lost) == 0 || len(lost) == partitions {
		t.Fatalf("the victim holds partitions %v of %d; want some, not all", lost, partitions)
	}
	p := lost[0]
	starts := map[client.TopicPartition]int64{}
	for q := range int32(partitions) {
		if q == p || !slices.Contains(lost, q) {
			starts[client.TopicPartition{Topic: "u", Partition: q}] = 0
			produceN(t, cl, "u", q, 50, v1.Acks_ACKS_WAL, fmt.Sprintf("old%d", q))
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sdk, err := client.New(c.gateways[1].URL)
	if err != nil {
		t.Fatal(err)
	}
	defer sdk.Close()
	r := sdk.NewMultiReader(starts, client.MaxWait(100*time.Millisecond))
	got := map[int32][]string{}
	var trunc *client.TruncatedError
	// readUntil polls until done holds; records go to got, a truncation to
	// trunc (any other partition error fails the test).
	readUntil := func(what string, done func() bool) {
		t.Helper()
		for !done() {
			fps, err := r.Next(ctx)
			if err != nil {
				t.Fatalf("%s: Next: %v", what, err)
			}
			for _, fp := range fps {
				var te *client.TruncatedError
				switch {
				case errors.As(fp.Err, &te):
					trunc = te
				case fp.Err != nil:
					t.Fatalf("%s: %s/%d: %v", what, fp.Topic, fp.Partition, fp.Err)
				}
				for _, rec := range fp.Records {
					got[fp.Partition] = append(got[fp.Partition], string(rec.Value))
				}
			}
		}
	}
	each := func(n int) func() bool {
		return func() bool {
			for tp := range starts {
				if len(got[tp.Partition]) < n {
					return false
				}
			}
			return true
		}
	}
	readUntil("before the crash", each(50))

	victim.Kill()
	waitMoved(t, cl, "u", victim.Addr, []int32{p}, lease+handoff+15*time.Second)
	// New records everywhere: the moved partition's reuse the lost offsets.
	for tp := range starts {
		produceN(t, cl, "u", tp.Partition, 10, v1.Acks_ACKS_WAL, fmt.Sprintf("new%d", tp.Partition))
	}
	readUntil("after the handoff", each(60))
	if trunc == nil || trunc.Partition != p || trunc.Offset != 0 {
		t.Fatalf("truncation %v, want partition %d at offset 0 (nothing was uploaded)", trunc, p)
	}
	for tp := range starts {
		q := tp.Partition
		want := []string{fmt.Sprintf("old%d-0", q), fmt.Sprintf("old%d-49", q), fmt.Sprintf("new%d-0", q), fmt.Sprintf("new%d-9", q)}
		if g := got[q]; len(g) != 60 || !slices.Equal([]string{g[0], g[49], g[50], g[59]}, want) {
			t.Fatalf("partition %d read %d records (%q ...), want old%d-0..49 then new%d-0..9", q, len(g), g[:min(len(g), 3)], q, q)
		}
	}
}
