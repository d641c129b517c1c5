package groups_test

import (
	"context"
	"net/http"
	"slices"
	"testing"
	"time"

	"connectrpc.com/connect"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/api/gen/streamhouse/v1/streamhousev1connect"
	"github.com/streamhouse/streamhouse/pkg/client"
	"github.com/streamhouse/streamhouse/test/devproc"
)

// TestRegexAndStaticMembership: a consumer subscribed by regex picks up a
// topic created later within one metadata refresh; a static member that
// closes (epoch -2) and starts again with its instance id gets its
// partitions back without a rebalance.
func TestRegexAndStaticMembership(t *testing.T) {
	dev := devproc.Start(t, serverBin, t.TempDir(), "--group-heartbeat-interval", "100ms", "--group-session-timeout", "3s")
	hc := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(hc.CloseIdleConnections)
	admin := streamhousev1connect.NewAdminServiceClient(hc, dev.URL)
	groups := streamhousev1connect.NewGroupServiceClient(hc, dev.URL)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	create := func(name string, parts int32) {
		if _, err := admin.CreateTopic(ctx, connect.NewRequest(&v1.CreateTopicRequest{Name: name, Partitions: parts})); err != nil {
			t.Fatal(err)
		}
	}
	sdk, err := client.New(dev.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer sdk.Close()
	produce := func(topic string) {
		prod, err := sdk.NewProducer(topic)
		if err != nil {
			t.Fatal(err)
		}
		defer prod.Close()
		if r := prod.ProduceSync(ctx, client.Record{Value: []byte("hello " + topic)}); r.Err != nil {
			t.Fatal(r.Err)
		}
	}

	t.Run("regex", func(t *testing.T) {
		create("rx-a", 2)
		gc, err := sdk.NewGroupConsumer(client.GroupConsumerConfig{Group: "rx", TopicRegex: `rx-.*`, AutoOffsetReset: client.OffsetResetEarliest})
		if err != nil {
			t.Fatal(err)
		}
		defer gc.Close(ctx)
		produce("rx-a")
		if recs, err := gc.Poll(ctx); err != nil || len(recs) != 1 || recs[0].Topic != "rx-a" {
			t.Fatalf("first topic: %v %v", recs, err)
		}
		create("rx-b", 3)
		created := time.Now()
		produce("rx-b")
		recs, err := gc.Poll(ctx)
		if err != nil || len(recs) != 1 || recs[0].Topic != "rx-b" {
			t.Fatalf("new topic: %v %v", recs, err)
		}
		t.Logf("a record of a topic created after the subscription was consumed %v after the topic was created", time.Since(created).Round(time.Millisecond))
		if got := gc.Assignment(); len(got) != 5 {
			t.Fatalf("assignment %v, want the 5 partitions of rx-a and rx-b", got)
		}
	})

	t.Run("static", func(t *testing.T) {
		create("st", 4)
		s1 := startConsumer(t, "s1", dev.URL, "--group", "st", "--topics", "st", "--instance-id", "host-1")
		s2 := startConsumer(t, "s2", dev.URL, "--group", "st", "--topics", "st", "--instance-id", "host-2")
		s1.memberID(t)
		s2.memberID(t)
		var before *v1.DescribeGroupResponse
		waitFor(t, "2 stable static members", 30*time.Second, func() bool {
			before = describeGroup(groups, "st", false)
			return stableWith(before, 2)
		})
		owned := func(d *v1.DescribeGroupResponse, instance string) []int32 {
			for _, m := range d.Members {
				if m.InstanceId == instance && len(m.Assigned) == 1 {
					return slices.Clone(m.Assigned[0].Partitions)
				}
			}
			return nil
		}
		want := owned(before, "host-1")
		s1.stop(t) // leaves with epoch -2: keeps its partitions
		d := describeGroup(groups, "st", false)
		if d == nil {
			t.Fatal("describe group failed")
		}
		if d.GroupEpoch != before.GroupEpoch || len(d.Members) != 2 || !slices.Equal(owned(d, "host-1"), want) {
			t.Fatalf("after the static leave: epoch %d (was %d), members %v", d.GroupEpoch, before.GroupEpoch, d.Members)
		}
		s1b := startConsumer(t, "s1b", dev.URL, "--group", "st", "--topics", "st", "--instance-id", "host-1")
		s1b.memberID(t)
		waitFor(t, "host-1 back", 30*time.Second, func() bool {
			d = describeGroup(groups, "st", true)
			return stableWith(d, 2) && slices.Equal(owned(d, "host-1"), want)
		})
		if d.GroupEpoch != before.GroupEpoch || d.Rebalances != before.Rebalances {
			t.Fatalf("the static rejoin rebalanced: epoch %d -> %d, rebalances %d -> %d", before.GroupEpoch, d.GroupEpoch, before.Rebalances, d.Rebalances)
		}
		t.Logf("static member host-1 left and came back with partitions %v, group epoch still %d", want, d.GroupEpoch)
		s1b.stop(t)
		s2.stop(t)
	})
}
