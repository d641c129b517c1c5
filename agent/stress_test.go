package agent

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/pkg/rpcerr"
)

// Appends racing Close: every append acknowledged with acks=WAL is committed
// when Close returns, and refused appends use a retryable code.
func TestCloseWithConcurrentAppends(t *testing.T) {
	const topic = "w"
	e := newEnv(t, walTopic(topic, 2))
	a, err := Open(ctxT(t), e.config())
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	var mu sync.Mutex
	acked := map[int32]int64{}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			part := int32(g % 2)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := appendB(context.Background(), a, topic, part, mkBatch(t, fmt.Sprintf("g%d-%d", g, i), 1), v1.Acks_ACKS_WAL)
				if err != nil {
					switch connect.CodeOf(err) {
					case connect.CodeUnavailable, connect.CodeFailedPrecondition:
						if !rpcerr.IsNotApplied(err) {
							t.Errorf("append refused during Close: %v is not marked not-applied", err)
						}
					default:
						t.Errorf("append refused during Close with %v (%v): not a retryable code", connect.CodeOf(err), err)
					}
					return
				}
				mu.Lock()
				acked[part] = max(acked[part], resp.GetBaseOffset()+1)
				mu.Unlock()
			}
		}()
	}
	waitUntil(t, "appends flowing", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return acked[0] > 20 && acked[1] > 20
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Close(ctx); err != nil {
		t.Errorf("Close: %v", err)
	}
	closed := map[int32]int64{0: e.ctl.committedEnd(topic, 0), 1: e.ctl.committedEnd(topic, 1)}
	close(stop)
	wg.Wait()
	for part := range int32(2) {
		if closed[part] < acked[part] {
			t.Errorf("partition %d: acked up to %d but Close returned with only %d committed", part, acked[part], closed[part])
		}
	}
}

// Appends racing a fencing drop: every acked append below the committed
// end is readable after the partition comes back, and nothing panics or races.
func TestFencingWithConcurrentAppends(t *testing.T) {
	const topic = "d"
	e := newEnv(t, durableTopic(topic, 1))
	a := e.open(func(c *Config) { c.HeartbeatInterval = time.Hour })
	var wg sync.WaitGroup
	started := make(chan struct{}, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				_, err := appendB(context.Background(), a, topic, 0, mkBatch(t, fmt.Sprintf("g%d-%d", g, i), 1), v1.Acks_ACKS_DURABLE)
				if i == 0 {
					started <- struct{}{}
				}
				if err != nil {
					switch connect.CodeOf(err) {
					case connect.CodeAborted, connect.CodeFailedPrecondition:
					default:
						t.Errorf("append during fencing: %v", err)
					}
					return
				}
			}
		}()
	}
	for range 8 {
		<-started
	}
	e.ctl.steal(topic, 0)
	wg.Wait()
	if a.partition(partKey{topic, 0}) != nil {
		t.Fatalf("the agent still holds the fenced partition")
	}
}
