package objfile

import (
	"math/rand/v2"
	"testing"

	"github.com/streamhouse/streamhouse/pkg/batch"
)

// benchBatches returns 100 offset-contiguous batches of 1000 records with
// 100-byte values.
func benchBatches(b *testing.B, codec batch.Codec) [][]byte {
	rng := rand.New(rand.NewPCG(3, 4))
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789 {}\":,"
	out := make([][]byte, 100)
	for i := range out {
		recs := make([]batch.Record, 1000)
		for j := range recs {
			v := make([]byte, 100)
			for k := range v {
				v[k] = alphabet[rng.IntN(len(alphabet))]
			}
			recs[j] = batch.Record{Timestamp: int64(i*1000 + j), Value: v}
		}
		enc, err := batch.Encode(recs, batch.EncodeOptions{Codec: codec, BaseOffset: int64(i * 1000)})
		if err != nil {
			b.Fatal(err)
		}
		out[i] = enc
	}
	return out
}

// BenchmarkBuild builds objects of 8 partitions x 100 batches x 1000 records.
func BenchmarkBuild(b *testing.B) {
	for _, codec := range []batch.Codec{batch.CodecNone, batch.CodecZstd} {
		batches := benchBatches(b, codec)
		var total int64
		for _, x := range batches {
			total += 8 * int64(len(x))
		}
		b.Run("codec="+codec.String(), func(b *testing.B) {
			b.SetBytes(total)
			b.ReportAllocs()
			bld := NewBuilder()
			topics := []string{"topic-0", "topic-1"}
			for b.Loop() {
				// Partition by partition, as the agent's flush adds them.
				for p := range int32(8) {
					for _, x := range batches {
						if err := bld.Add(topics[p%2], p, x); err != nil {
							b.Fatal(err)
						}
					}
				}
				if _, _, err := bld.Finish(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkVerify(b *testing.B) {
	batches := benchBatches(b, batch.CodecNone)
	bld := NewBuilder()
	for _, x := range batches {
		for p := range int32(8) {
			if err := bld.Add("topic", p, x); err != nil {
				b.Fatal(err)
			}
		}
	}
	obj, _, err := bld.Finish()
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(obj)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Verify(obj); err != nil {
			b.Fatal(err)
		}
	}
}
