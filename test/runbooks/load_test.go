package runbooks

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
)

// trickle is a producer sending a small Produce request every interval to
// each partition in turn until stopped: enough traffic for the agent to
// flush every flush interval, little enough for 2 cores.
type trickle struct {
	stop       chan struct{}
	wg         sync.WaitGroup
	ok, failed atomic.Int64
	mu         sync.Mutex
	lastErr    error
	codes      map[connect.Code]int
	stopOnce   sync.Once
	topic      string
	partitions int32
	records    int
	valueSize  int
	interval   time.Duration
	acks       v1.Acks
	produce    func(*v1.ProduceRequest) error
}

// startTrickle starts a trickle of records records (values of at least
// valueSize bytes) per request to topic through c, stopped at the end of the
// test (or by halt).
func startTrickle(t *testing.T, c clients, topic string, partitions int32, records, valueSize int, interval time.Duration, acks v1.Acks) *trickle {
	tr := &trickle{stop: make(chan struct{}), codes: map[connect.Code]int{}, topic: topic, partitions: partitions,
		records: records, valueSize: valueSize, interval: interval, acks: acks}
	tr.produce = func(req *v1.ProduceRequest) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := c.produce.Produce(ctx, connect.NewRequest(req))
		return err
	}
	tr.wg.Add(1)
	go tr.run()
	t.Cleanup(tr.halt)
	return tr
}

func (tr *trickle) run() {
	defer tr.wg.Done()
	tick := time.NewTicker(tr.interval)
	defer tick.Stop()
	for seq := 0; ; seq++ {
		select {
		case <-tr.stop:
			return
		case <-tick.C:
		}
		recs := make([]*v1.Record, tr.records)
		for i := range recs {
			v := fmt.Appendf(nil, "rec-%d-%d", seq, i)
			if len(v) < tr.valueSize {
				v = append(v, make([]byte, tr.valueSize-len(v))...)
			}
			recs[i] = &v1.Record{Value: v}
		}
		err := tr.produce(&v1.ProduceRequest{Topic: tr.topic, Partition: proto.Int32(int32(seq) % tr.partitions), Records: recs, Acks: tr.acks})
		if err != nil {
			tr.failed.Add(1)
			tr.mu.Lock()
			tr.lastErr = err
			tr.codes[connect.CodeOf(err)]++
			tr.mu.Unlock()
			continue
		}
		tr.ok.Add(1)
	}
}

// halt stops the trickle and waits for its goroutine.
func (tr *trickle) halt() {
	tr.stopOnce.Do(func() { close(tr.stop) })
	tr.wg.Wait()
}

// errs returns the failed requests by code and the last error.
func (tr *trickle) errs() (map[connect.Code]int, error) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	out := map[connect.Code]int{}
	for k, v := range tr.codes {
		out[k] = v
	}
	return out, tr.lastErr
}
