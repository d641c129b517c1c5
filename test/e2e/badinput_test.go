package e2e

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/test/devproc"
)

// TestBadInput sends every kind of bad request to a real `streamhouse dev`
// and checks the code, that the message says what to fix, and that nothing
// changed.
func TestBadInput(t *testing.T) {
	p := devproc.Start(t, bin, t.TempDir())
	c := newClients(t, p.URL)
	createTopic(t, c, "orders", 3, v1.Durability_DURABILITY_WAL)
	ctx := ctxT(t, time.Minute)
	if _, err := c.produce.Produce(ctx, connect.NewRequest(&v1.ProduceRequest{Topic: "orders", Partition: proto.Int32(1),
		Records: []*v1.Record{{Value: []byte("a")}, {Value: []byte("b")}}, Acks: v1.Acks_ACKS_DURABLE})); err != nil {
		t.Fatal(err)
	}
	// Committed (acks durable) and reported by a heartbeat, so the only
	// thing that could change the description now is the bad input.
	waitFor(t, "the high watermark of orders/1 to reach 2", time.Minute, func() bool {
		return describe(t, c, "orders").Partitions[1].HighWatermark == 2
	})
	before := describe(t, c, "orders")
	listBefore, err := c.admin.ListTopics(ctx, connect.NewRequest(&v1.ListTopicsRequest{}))
	if err != nil {
		t.Fatal(err)
	}

	big := bytes.Repeat([]byte("x"), 1<<20+1)
	cases := []struct {
		name string
		call func() error
		code connect.Code
		msg  string // must appear in the message
	}{
		{"produce to unknown topic", func() error {
			_, err := c.produce.Produce(ctx, connect.NewRequest(&v1.ProduceRequest{Topic: "nope", Records: []*v1.Record{{Value: []byte("a")}}}))
			return err
		}, connect.CodeNotFound, `"nope" does not exist`},
		{"fetch from unknown topic", func() error {
			_, err := c.consume.Fetch(ctx, connect.NewRequest(&v1.FetchRequest{Topic: "nope"}))
			return err
		}, connect.CodeNotFound, `"nope"`},
		{"describe unknown topic", func() error {
			_, err := c.admin.DescribeTopic(ctx, connect.NewRequest(&v1.DescribeTopicRequest{Name: "nope"}))
			return err
		}, connect.CodeNotFound, `"nope"`},
		{"delete unknown topic", func() error {
			_, err := c.admin.DeleteTopic(ctx, connect.NewRequest(&v1.DeleteTopicRequest{Name: "nope"}))
			return err
		}, connect.CodeNotFound, `"nope"`},
		{"produce to partition out of range", func() error {
			_, err := c.produce.Produce(ctx, connect.NewRequest(&v1.ProduceRequest{Topic: "orders", Partition: proto.Int32(3), Records: []*v1.Record{{Value: []byte("a")}}}))
			return err
		}, connect.CodeInvalidArgument, "0 to 2"},
		{"produce to negative partition", func() error {
			_, err := c.produce.Produce(ctx, connect.NewRequest(&v1.ProduceRequest{Topic: "orders", Partition: proto.Int32(-1), Records: []*v1.Record{{Value: []byte("a")}}}))
			return err
		}, connect.CodeInvalidArgument, "partition"},
		{"fetch partition out of range", func() error {
			_, err := c.consume.Fetch(ctx, connect.NewRequest(&v1.FetchRequest{Topic: "orders", Partition: 7}))
			return err
		}, connect.CodeInvalidArgument, "partition"},
		{"create topic with empty name", func() error {
			_, err := c.admin.CreateTopic(ctx, connect.NewRequest(&v1.CreateTopicRequest{Name: "", Partitions: 1}))
			return err
		}, connect.CodeInvalidArgument, "required"},
		{"create topic with invalid name", func() error {
			_, err := c.admin.CreateTopic(ctx, connect.NewRequest(&v1.CreateTopicRequest{Name: "bad name!", Partitions: 1}))
			return err
		}, connect.CodeInvalidArgument, "[a-zA-Z0-9._-]"},
		{"create topic with too long name", func() error {
			_, err := c.admin.CreateTopic(ctx, connect.NewRequest(&v1.CreateTopicRequest{Name: strings.Repeat("a", 250), Partitions: 1}))
			return err
		}, connect.CodeInvalidArgument, "249"},
		{"create topic with zero partitions", func() error {
			_, err := c.admin.CreateTopic(ctx, connect.NewRequest(&v1.CreateTopicRequest{Name: "zero", Partitions: 0}))
			return err
		}, connect.CodeInvalidArgument, "partitions must be between 1"},
		{"create topic with negative partitions", func() error {
			_, err := c.admin.CreateTopic(ctx, connect.NewRequest(&v1.CreateTopicRequest{Name: "neg", Partitions: -4}))
			return err
		}, connect.CodeInvalidArgument, "got -4"},
		{"create a topic that exists", func() error {
			_, err := c.admin.CreateTopic(ctx, connect.NewRequest(&v1.CreateTopicRequest{Name: "orders", Partitions: 9}))
			return err
		}, connect.CodeAlreadyExists, `"orders"`},
		{"produce a record over max_record_bytes", func() error {
			_, err := c.produce.Produce(ctx, connect.NewRequest(&v1.ProduceRequest{Topic: "orders", Partition: proto.Int32(1),
				Records: []*v1.Record{{Value: []byte("fine")}, {Value: big}}}))
			return err
		}, connect.CodeInvalidArgument, "max_record_bytes"},
		{"produce with records and batch", func() error {
			_, err := c.produce.Produce(ctx, connect.NewRequest(&v1.ProduceRequest{Topic: "orders", Partition: proto.Int32(1),
				Records: []*v1.Record{{Value: []byte("a")}}, Batch: []byte("junk")}))
			return err
		}, connect.CodeInvalidArgument, "batch"},
		{"produce a corrupt batch", func() error {
			_, err := c.produce.Produce(ctx, connect.NewRequest(&v1.ProduceRequest{Topic: "orders", Partition: proto.Int32(1), Batch: bytes.Repeat([]byte{7}, 80)}))
			return err
		}, connect.CodeInvalidArgument, "batch"},
		{"produce nothing", func() error {
			_, err := c.produce.Produce(ctx, connect.NewRequest(&v1.ProduceRequest{Topic: "orders"}))
			return err
		}, connect.CodeInvalidArgument, "record"},
		{"fetch below the start offset", func() error {
			_, err := c.consume.Fetch(ctx, connect.NewRequest(&v1.FetchRequest{Topic: "orders", Partition: 1, Offset: -1}))
			return err
		}, connect.CodeOutOfRange, "0 to 2"},
		{"fetch above the high watermark", func() error {
			_, err := c.consume.Fetch(ctx, connect.NewRequest(&v1.FetchRequest{Topic: "orders", Partition: 1, Offset: 3}))
			return err
		}, connect.CodeOutOfRange, "0 to 2"},
	}
	for _, tc := range cases {
		err := tc.call()
		if got := connect.CodeOf(err); got != tc.code {
			t.Errorf("%s: code %v (%v), want %v", tc.name, got, err, tc.code)
			continue
		}
		if !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: message %q does not mention %q", tc.name, err.Error(), tc.msg)
		}
	}

	after := describe(t, c, "orders")
	if !proto.Equal(before, after) {
		t.Errorf("bad input changed the topic:\nbefore %v\nafter  %v", before, after)
	}
	listAfter, err := c.admin.ListTopics(ctx, connect.NewRequest(&v1.ListTopicsRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(listBefore.Msg, listAfter.Msg) {
		t.Errorf("bad input changed the topic list:\nbefore %v\nafter  %v", listBefore.Msg, listAfter.Msg)
	}
	res, err := c.consume.Fetch(ctx, connect.NewRequest(&v1.FetchRequest{Topic: "orders", Partition: 1}))
	if err != nil || len(res.Msg.Records) != 2 {
		t.Fatalf("after the bad input the partition holds %v (%v), want the 2 good records", res, err)
	}
}
