package wal

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkAppend measures group-committed appends with real fdatasync, from
// many parallel appenders that each wait for their ack before appending again.
func BenchmarkAppend(b *testing.B) {
	for _, size := range []int{1 << 10, 100 << 10} {
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			w := openT(b, Options{Dir: b.TempDir()})
			data := make([]byte, size)
			for i := range data {
				data[i] = byte(i * 7)
			}
			var ids atomic.Int32
			ctx := context.Background()
			b.SetBytes(int64(size))
			b.SetParallelism(16) // 16 x GOMAXPROCS appenders
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				part := ids.Add(1) // one partition per appender: independent offsets
				var base int64
				for pb.Next() {
					p := w.Append(Entry{Topic: "bench", Partition: part, BaseOffset: base, EndOffset: base + 1, Data: data})
					base++
					if _, err := p.Wait(ctx); err != nil {
						b.Error(err)
						return
					}
				}
			})
			elapsed := time.Since(start)
			b.StopTimer()
			st := w.Stats()
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "appends/s")
			b.ReportMetric(float64(st.Fsyncs)/float64(b.N), "fsyncs/op")
			b.ReportMetric(float64(b.N)/float64(max(st.Groups, 1)), "appends/group")
			if err := w.Close(); err != nil {
				b.Fatal(err)
			}
		})
	}
}
