package client

import (
	"bytes"
	"context"
	"sync/atomic"
	"testing"
	"time"

	streamhousev1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
)

// MaxRequestBytes bounds the batches packed into one request: four
// partitions' batches of about 200 KB each go in one request under the
// default 1 MiB, and in one request each under a 300 KB limit.
func TestMaxRequestBytes(t *testing.T) {
	for _, tc := range []struct {
		name     string
		opts     []ProducerOption
		requests int64
		limit    int
	}{
		{"default", nil, 1, DefaultMaxRequestBytes},
		{"300KB", []ProducerOption{MaxRequestBytes(300 << 10)}, 4, 300 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, c := startFake(t, 4)
			var biggest atomic.Int64
			g.beforeAppend = func(_ int64, req *streamhousev1.ProduceRequest) error {
				n := 0
				for _, b := range req.GetBatches() {
					n += len(b.GetBatch())
				}
				if int64(n) > biggest.Load() {
					biggest.Store(int64(n))
				}
				return nil
			}
			p := newProducer(t, c, append([]ProducerOption{Linger(time.Hour)}, tc.opts...)...)
			var col collector
			val := bytes.Repeat([]byte("v"), 1000)
			for i := range 800 { // 200 records of 1 KB per partition
				part := int32(i % 4)
				p.Produce(context.Background(), Record{Value: val, Partition: &part}, col.cb(i))
			}
			if err := p.Flush(context.Background()); err != nil {
				t.Fatal(err)
			}
			if len(col.errs()) != 0 {
				t.Fatalf("errors %v", col.errs())
			}
			if n := g.produceCalls.Load(); n != tc.requests {
				t.Errorf("%d produce requests, want %d", n, tc.requests)
			}
			if b := biggest.Load(); b > int64(tc.limit) {
				t.Errorf("a request carried %d bytes of batches, limit %d", b, tc.limit)
			}
		})
	}
}

// MaxInFlightRequests bounds the requests in flight at once, whatever the
// number of partitions with a batch ready.
func TestMaxInFlightRequests(t *testing.T) {
	g, c := startFake(t, 8)
	var inflight, peak atomic.Int64
	gate := make(chan struct{})
	g.beforeAppend = func(int64, *streamhousev1.ProduceRequest) error {
		n := inflight.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		<-gate
		inflight.Add(-1)
		return nil
	}
	// One batch per request (each about 60 KB, the limit 64 KB), so eight
	// ready partitions would be eight requests at once without the bound.
	p := newProducer(t, c, Linger(time.Hour), MaxRequestBytes(64<<10), MaxInFlightRequests(2))
	var col collector
	val := bytes.Repeat([]byte("v"), 1000)
	for i := range 480 {
		part := int32(i % 8)
		p.Produce(context.Background(), Record{Value: val, Partition: &part}, col.cb(i))
	}
	flushed := make(chan error, 1)
	go func() { flushed <- p.Flush(context.Background()) }()
	deadline := time.Now().Add(10 * time.Second)
	for inflight.Load() < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("%d requests in flight, want 2", inflight.Load())
		}
		time.Sleep(time.Millisecond)
	}
	close(gate)
	if err := <-flushed; err != nil {
		t.Fatal(err)
	}
	if n := peak.Load(); n != 2 {
		t.Errorf("peak %d requests in flight, want MaxInFlightRequests 2", n)
	}
	if g.produceCalls.Load() < 8 || len(col.errs()) != 0 {
		t.Errorf("%d requests, errors %v; want 8 requests, none failed", g.produceCalls.Load(), col.errs())
	}
}
