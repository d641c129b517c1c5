package client

import (
	"bytes"
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkProduce produces 100-byte values through the fake gateway over
// loopback h2c (the fake checks each batch and discards it) and reports
// records per second.
func BenchmarkProduce(b *testing.B) {
	for _, keyed := range []bool{false, true} {
		b.Run(fmt.Sprintf("keyed=%v", keyed), func(b *testing.B) {
			g := newFakeGateway("t", 8)
			g.discard = true
			srv := serveFake(b, g, "127.0.0.1:0")
			c := newTestClient(b, srv.URL)
			p, err := c.NewProducer("t")
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			val := bytes.Repeat([]byte("x"), 100)
			keys := make([][]byte, 1024)
			for i := range keys {
				keys[i] = []byte(fmt.Sprintf("key-%d", i))
			}
			var failed atomic.Int64
			cb := func(r Result) {
				if r.Err != nil {
					failed.Add(1)
				}
			}
			ctx := context.Background()
			b.SetBytes(int64(len(val)))
			b.ResetTimer()
			start := time.Now()
			for i := 0; b.Loop(); i++ {
				r := Record{Value: val}
				if keyed {
					r.Key = keys[i%len(keys)]
				}
				p.Produce(ctx, r, cb)
			}
			if err := p.Flush(ctx); err != nil {
				b.Fatal(err)
			}
			el := time.Since(start)
			b.StopTimer()
			if failed.Load() > 0 {
				b.Fatalf("%d records failed", failed.Load())
			}
			b.ReportMetric(float64(g.appended.Load())/el.Seconds(), "records/s")
			b.ReportMetric(float64(g.appended.Load())/float64(max(g.produceCalls.Load(), 1)), "records/request")
		})
	}
}
