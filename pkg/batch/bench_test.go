package batch

import (
	"math/rand/v2"
	"testing"
)

func benchRecords() []Record {
	rng := rand.New(rand.NewPCG(1, 2))
	recs := make([]Record, 1000)
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789 {}\":,"
	for i := range recs {
		v := make([]byte, 100)
		for j := range v {
			v[j] = alphabet[rng.IntN(len(alphabet))]
		}
		recs[i] = Record{Timestamp: 1_700_000_000_000 + int64(i), Key: []byte("key-" + string(rune('a'+i%26))), Value: v}
	}
	return recs
}

func BenchmarkEncode(b *testing.B) {
	recs := benchRecords()
	for _, c := range allCodecs {
		b.Run("codec="+c.String(), func(b *testing.B) {
			b.SetBytes(100 * int64(len(recs)))
			b.ReportAllocs()
			var buf []byte
			for b.Loop() {
				var err error
				buf, err = AppendEncode(buf[:0], recs, EncodeOptions{Codec: c})
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(buf)), "batch-bytes")
		})
	}
}

func BenchmarkDecode(b *testing.B) {
	recs := benchRecords()
	for _, c := range allCodecs {
		enc, err := Encode(recs, EncodeOptions{Codec: c})
		if err != nil {
			b.Fatal(err)
		}
		b.Run("codec="+c.String(), func(b *testing.B) {
			b.SetBytes(100 * int64(len(recs)))
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := Decode(enc); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkCheck(b *testing.B) {
	enc, err := Encode(benchRecords(), EncodeOptions{Codec: CodecZstd})
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(enc)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Check(enc); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEncodeNew is Encode into a new buffer each time, as the SDK's
// producer does for every batch it sends.
func BenchmarkEncodeNew(b *testing.B) {
	recs := benchRecords()
	b.SetBytes(100 * int64(len(recs)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Encode(recs, EncodeOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}
