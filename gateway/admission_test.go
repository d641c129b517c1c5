package gateway

import (
	"fmt"
	"log/slog"
	"testing"

	"connectrpc.com/connect"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/api/gen/streamhouse/v1/streamhousev1connect"
	"github.com/streamhouse/streamhouse/gateway/gatewaytest"
	"github.com/streamhouse/streamhouse/pkg/rpcerr"
)

// Past MaxInFlightBytes a produce request is refused in every protocol with
// ResourceExhausted, marked not applied, with a Retry-After, before its
// batches reach an agent; once the held request is answered, the next one
// is admitted.
func TestProduceInFlightLimit(t *testing.T) {
	agent := newFakeAgent("agent")
	ctl := newFakeController(agent)
	ctl.addTopic(&v1.TopicInfo{Name: "t", Partitions: 2}, agentAddr)
	hold, held := make(chan struct{}), make(chan struct{}, 1)
	agent.setHooks(func(e *v1.AppendEntry) error {
		if e.GetPartition() == 0 {
			held <- struct{}{}
			<-hold
		}
		return nil
	}, nil)
	g, err := New(Config{
		Admin: ctl, Controller: ctl, MaxInFlightBytes: 64,
		Agents: func(addr string) (streamhousev1connect.AgentServiceClient, error) {
			if addr != agentAddr {
				return nil, fmt.Errorf("unknown agent address %q", addr)
			}
			return agent, nil
		},
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := gatewaytest.Serve(t, g.Handler())
	client := streamhousev1connect.NewProduceServiceClient(srv.Client, srv.URL)
	done := make(chan error, 1)
	go func() {
		_, err := client.Produce(ctxT(t), connect.NewRequest(&v1.ProduceRequest{Batches: []*v1.ProduceBatch{{Topic: "t", Partition: 0, Batch: encodeT(t, "held")}}}))
		done <- err
	}()
	<-held
	for _, p := range protocols {
		c := streamhousev1connect.NewProduceServiceClient(srv.Client, srv.URL, p.opts...)
		_, err := c.Produce(ctxT(t), connect.NewRequest(&v1.ProduceRequest{Batches: []*v1.ProduceBatch{{Topic: "t", Partition: 1, Batch: encodeT(t, "refused")}}}))
		if connect.CodeOf(err) != connect.CodeResourceExhausted || !rpcerr.IsNotApplied(err) || rpcerr.RetryAfter(err) <= 0 {
			t.Errorf("%s: %v (not applied %v, retry after %v), want a not-applied resource_exhausted with a Retry-After",
				p.name, err, rpcerr.IsNotApplied(err), rpcerr.RetryAfter(err))
		}
	}
	for _, c := range agent.appendCalls() {
		if c.GetPartition() == 1 {
			t.Errorf("a refused request reached the agent")
		}
	}
	close(hold)
	if err := <-done; err != nil {
		t.Fatalf("held produce: %v", err)
	}
	if _, err := client.Produce(ctxT(t), connect.NewRequest(&v1.ProduceRequest{Batches: []*v1.ProduceBatch{{Topic: "t", Partition: 1, Batch: encodeT(t, "admitted")}}})); err != nil {
		t.Fatalf("produce after the held one was answered: %v", err)
	}
}
