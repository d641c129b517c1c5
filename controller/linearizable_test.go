package controller

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/anishathalye/porcupine"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/api/gen/streamhouse/v1/streamhousev1connect"
)

// commitInput / readInput are the operations on one partition's committed
// end offset, the register the object index protects.
type commitInput struct{ base, n int64 }
type commitOutput struct {
	committed bool
	end       int64
}
type readInput struct{}

// committedEndModel: a commit succeeds exactly when its base is the current
// committed end (then the end moves by n); a rejected commit reports the
// current end; a read returns the current end.
var committedEndModel = porcupine.Model{
	Init: func() any { return int64(0) },
	Step: func(state, input, output any) (bool, any) {
		end := state.(int64)
		switch in := input.(type) {
		case commitInput:
			out := output.(commitOutput)
			if out.committed {
				return in.base == end && out.end == end+in.n, end + in.n
			}
			return in.base != end && out.end == end, end
		case readInput:
			return output.(int64) == end, end
		}
		return false, end
	},
	DescribeOperation: func(input, output any) string {
		switch in := input.(type) {
		case commitInput:
			o := output.(commitOutput)
			return fmt.Sprintf("commit [%d,+%d) -> %v end %d", in.base, in.n, o.committed, o.end)
		default:
			return fmt.Sprintf("read -> %d", output)
		}
	},
}

// TestCommittedEndLinearizable: clients commit sections and read the
// committed end offset of one partition concurrently, each through a
// different voter of a three-voter cluster (followers forward to the
// leader). porcupine checks the history is linearizable: contiguity
// holds and no read sees a stale or future value.
func TestCommittedEndLinearizable(t *testing.T) {
	ms, _ := startThree(t)
	waitFor(t, 10*time.Second, "a leader known to all", func() bool {
		l := leaderOf(ms)
		if l == nil {
			return false
		}
		for _, m := range ms {
			if m.node.LeaderAPIAddress() == "" {
				return false
			}
		}
		return true
	})
	hc := h2cClient()
	defer hc.CloseIdleConnections()
	ctx := context.Background()
	url := func(i int) string { return "http://" + ms[i%3].srv.Listener.Addr().String() }
	admin := streamhousev1connect.NewAdminServiceClient(hc, url(0))
	if _, err := admin.CreateTopic(ctx, connect.NewRequest(&v1.CreateTopicRequest{Name: "lin", Partitions: 1})); err != nil {
		t.Fatal(err)
	}
	hb, err := streamhousev1connect.NewControllerServiceClient(hc, url(1)).Heartbeat(ctx,
		connect.NewRequest(&v1.HeartbeatRequest{AgentId: "a", Incarnation: "1", Address: "x"}))
	if err != nil || len(hb.Msg.Leases) != 1 {
		t.Fatalf("lease: %v %v", hb, err)
	}
	epoch := hb.Msg.Leases[0].Epoch

	start := time.Now()
	var mu sync.Mutex
	var history []porcupine.Operation
	var wg sync.WaitGroup
	for client := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctl := streamhousev1connect.NewControllerServiceClient(hc, url(client))
			adm := streamhousev1connect.NewAdminServiceClient(hc, url(client+1))
			known := int64(0)
			for i := range 40 {
				op := porcupine.Operation{ClientId: client, Call: time.Since(start).Nanoseconds()}
				if i%2 == 0 {
					n := int64(1 + (client+i)%5)
					res, err := ctl.CommitObject(ctx, connect.NewRequest(&v1.CommitObjectRequest{AgentId: "a", ObjectKey: fmt.Sprintf("o-%d-%d", client, i), ObjectSize: 100,
						Sections: []*v1.ObjectSection{{Topic: "lin", Partition: 0, Epoch: epoch, BaseOffset: known, EndOffset: known + n, Position: 0, Length: 100}}}))
					if err != nil {
						t.Errorf("commit: %v", err)
						return
					}
					r := res.Msg.Results[0]
					op.Input, op.Output = commitInput{known, n}, commitOutput{r.Committed, r.CommittedEndOffset}
					known = r.CommittedEndOffset
				} else {
					res, err := adm.DescribeTopic(ctx, connect.NewRequest(&v1.DescribeTopicRequest{Name: "lin"}))
					if err != nil {
						t.Errorf("describe: %v", err)
						return
					}
					op.Input, op.Output = readInput{}, res.Msg.Partitions[0].CommittedEndOffset
					known = res.Msg.Partitions[0].CommittedEndOffset
				}
				op.Return = time.Since(start).Nanoseconds()
				mu.Lock()
				history = append(history, op)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	res := porcupine.CheckOperationsTimeout(committedEndModel, history, 30*time.Second)
	t.Logf("%d operations through 3 voters: %v", len(history), res)
	if res != porcupine.Ok {
		t.Fatalf("history is not linearizable (%v)", res)
	}
}

// The model rejects a stale read and a commit that broke contiguity.
func TestCommittedEndModelCatchesAnomalies(t *testing.T) {
	stale := []porcupine.Operation{
		{ClientId: 0, Input: commitInput{0, 5}, Output: commitOutput{true, 5}, Call: 0, Return: 10},
		{ClientId: 1, Input: readInput{}, Output: int64(0), Call: 20, Return: 30},
	}
	if porcupine.CheckOperations(committedEndModel, stale) {
		t.Error("a read of 0 after a completed commit to 5 passed")
	}
	gap := []porcupine.Operation{
		{ClientId: 0, Input: commitInput{3, 2}, Output: commitOutput{true, 5}, Call: 0, Return: 10},
	}
	if porcupine.CheckOperations(committedEndModel, gap) {
		t.Error("a commit at 3 onto an empty partition passed")
	}
}
